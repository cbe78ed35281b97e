package riskstream.peer;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * {@code consume} and {@code consume-dlq}: a topic from the beginning of every
 * partition to its end, one JSON line per record.
 */
final class Consume {
    private Consume() {}

    static int run(Args args, boolean deadLetters) throws Exception {
        // Dead letters are decoded only when a schema is named; records always.
        Framing framing = deadLetters && args.get("schema", null) == null ? null : Framing.of(args);
        String topic = args.get("topic");
        long max = args.getLong("max", Long.MAX_VALUE);
        long timeoutMs = args.getLong("timeout-ms", 30_000);

        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("brokers"));
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, args.get("isolation", "read_committed"));
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        long records = 0;
        long failed = 0;
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            // No group: every partition is assigned and read from offset 0 up to
            // the end offsets of now (for read_committed, the last stable offsets).
            List<TopicPartition> parts = consumer.partitionsFor(topic, Duration.ofMillis(timeoutMs))
                    .stream().map(i -> new TopicPartition(topic, i.partition())).toList();
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> end = consumer.endOffsets(parts);
            long idleSince = System.currentTimeMillis();
            while (records < max && !atEnd(consumer, end)
                    && System.currentTimeMillis() - idleSince < timeoutMs) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    ObjectNode line = deadLetters ? deadLetter(r, framing) : scored(r, framing);
                    failed += line.has("error") ? 1 : 0;
                    System.out.println(line);
                    idleSince = System.currentTimeMillis();
                    if (++records >= max) {
                        break;
                    }
                }
            }
            System.err.println(summary(consumer, end, records, failed));
        }
        return failed == 0 ? 0 : 1;
    }

    /** A record: coordinates, key, and its value decoded (or why it is not). */
    private static ObjectNode scored(ConsumerRecord<byte[], byte[]> r, Framing framing) {
        ObjectNode line = coordinates(r);
        try {
            line.set("value", Json.fromAvro(framing.decode(r.value())));
        } catch (Exception e) {
            line.put("error", e.toString());
        }
        return line;
    }

    /**
     * A dead letter: coordinates, key, headers as text, the payload as base64
     * and, with a schema, the payload decoded or why it does not decode (which
     * is the reason of many dead letters, so not an error of this command).
     */
    private static ObjectNode deadLetter(ConsumerRecord<byte[], byte[]> r, Framing framing) {
        ObjectNode line = coordinates(r);
        ObjectNode headers = line.putObject("headers");
        for (Header h : r.headers()) {
            headers.put(h.key(), h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8));
        }
        line.put("value_base64", r.value() == null ? null : Base64.getEncoder().encodeToString(r.value()));
        if (framing != null) {
            try {
                line.set("decoded", Json.fromAvro(framing.decode(r.value())));
            } catch (Exception e) {
                line.put("decode_error", e.toString());
            }
        }
        return line;
    }

    private static ObjectNode coordinates(ConsumerRecord<byte[], byte[]> r) {
        ObjectNode line = Json.NODES.objectNode();
        line.put("partition", r.partition()).put("offset", r.offset()).put("timestamp", r.timestamp());
        line.put("key", r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8));
        return line;
    }

    private static boolean atEnd(KafkaConsumer<?, ?> consumer, Map<TopicPartition, Long> end) {
        return end.entrySet().stream().allMatch(e -> consumer.position(e.getKey()) >= e.getValue());
    }

    /** Counts, and per partition the final position and the end read to. */
    private static ObjectNode summary(KafkaConsumer<?, ?> consumer, Map<TopicPartition, Long> end,
                                      long records, long failed) {
        ObjectNode s = Json.NODES.objectNode();
        s.put("records", records).put("failed", failed);
        ObjectNode positions = s.putObject("positions");
        ObjectNode ends = s.putObject("end");
        end.forEach((tp, o) -> {
            positions.put(Integer.toString(tp.partition()), consumer.position(tp));
            ends.put(Integer.toString(tp.partition()), o);
        });
        return s;
    }
}
