package riskstream.peer;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** {@code produce}: JSON lines to Avro records in Kafka transactions, committed or aborted. */
final class Produce {
    private Produce() {}

    static int run(Args args) throws Exception {
        Framing framing = Framing.of(args);
        String topic = args.get("topic");
        String keyField = args.get("key-field", "customer_id");
        int batch = (int) args.getLong("batch", 100);
        long abortEvery = args.getLong("abort-every", 0);
        List<String> lines = Files.readAllLines(Path.of(args.get("input")), StandardCharsets.UTF_8);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("brokers"));
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, args.get("transactional-id"));
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        AtomicReference<Exception> failed = new AtomicReference<>();
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            producer.initTransactions();
            for (int first = 0, txn = 1; first < lines.size(); first += batch, txn++) {
                int count = Math.min(batch, lines.size() - first);
                producer.beginTransaction();
                for (String line : lines.subList(first, first + count)) {
                    JsonNode json = Json.MAPPER.readTree(line);
                    GenericRecord record = Json.toRecord(framing.schema, json);
                    byte[] key = json.get(keyField).asText().getBytes(StandardCharsets.UTF_8);
                    producer.send(new ProducerRecord<>(topic, key, framing.encode(record)), (md, e) -> {
                        if (e != null) {
                            failed.compareAndSet(null, e);
                        }
                    });
                }
                // Flushed first, so an aborted transaction's records are in the
                // log (between its begin and its abort marker), not just dropped.
                producer.flush();
                if (failed.get() != null) {
                    throw failed.get();
                }
                boolean abort = abortEvery > 0 && txn % abortEvery == 0;
                if (abort) {
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                }
                ObjectNode out = Json.NODES.objectNode();
                out.put("txn", txn).put("outcome", abort ? "abort" : "commit")
                        .put("first", first).put("count", count);
                System.out.println(out);
            }
        }
        return 0;
    }
}
