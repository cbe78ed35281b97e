package riskstream.kstreams;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * The job, one transaction at a time: decode -> customer windows (read, update,
 * write back the task's {@code customer-windows} store) -> terminal features (the
 * global {@code terminal-labels} store) -> standardise -> MLP -> flag -> one scored
 * record to {@link Main#SCORED}, keyed by the customer id like the input (so
 * riskstream's output key), stamped with the transaction's event time.
 * Undecodable or invalid records go to {@link Main#DEAD_LETTERS} with the input's
 * headers plus riskstream's {@code riskstream.*} ones, or are counted and skipped
 * when there is no dead-letter topic.
 *
 * <p>One instance per task (input partition), driven by one stream thread: the
 * codec, the scorer's buffers and the feature vector are its own.
 */
final class ScoringProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    private final Model model;
    private final Model.Scorer scorer;
    private final WireCodec codec;
    private final Settings settings;
    private final double[] features = new double[Features.N_FEATURES];
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, CustomerHistory> customers;
    private ReadOnlyKeyValueStore<String, TerminalLabels> terminals;

    /** What every instance shares: the parsed model, the schemas' directory, the topics. */
    record Settings(Model model, java.io.File schemas, String inputTopic, boolean deadLetters) {}

    ScoringProcessor(Settings settings) {
        this.settings = settings;
        this.model = settings.model();
        this.scorer = model.scorer();
        try {
            this.codec = new WireCodec(settings.schemas());
        } catch (java.io.IOException e) {
            throw new IllegalStateException("cannot read the schemas in " + settings.schemas(), e);
        }
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.customers = context.getStateStore(Main.CUSTOMER_STORE);
        this.terminals = context.getStateStore(Main.LABEL_STORE);
        // The lookups above drop what no window reaches for the customers they
        // touch; once a day of stream time (this task's newest event time, so a
        // lagging partition never loses history it needs) customers with nothing
        // left in 30 days are deleted (a tombstone in the changelog).
        context.schedule(Duration.ofDays(1), PunctuationType.STREAM_TIME, this::sweep);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        WireCodec.Transaction tx;
        try {
            tx = codec.decodeTransaction(record.key(), record.value());
        } catch (WireCodec.DecodeException e) {
            deadLetter(record, e);
            return;
        }
        // Customer windows: read, update, write back (the store's cache absorbs
        // repeated writes of a busy customer between commits).
        CustomerHistory h = customers.get(tx.customerId());
        if (h == null) {
            h = new CustomerHistory(4);
        }
        Features.observeTransaction(h, tx.transactionId(), tx.eventTime(), tx.amount(), features);
        customers.put(tx.customerId(), h);
        Features.terminalFeatures(terminals.get(tx.terminalId()), tx.eventTime(), features);
        float score = scorer.score(features);

        GenericRecord out = new GenericData.Record(codec.scored);
        out.put("transaction_id", tx.transactionId());
        out.put("event_time", tx.eventTime());
        out.put("customer_id", tx.customerId());
        out.put("terminal_id", tx.terminalId());
        out.put("amount", tx.amount());
        out.put("currency", tx.currency());
        out.put("score", score);
        out.put("is_fraud", score >= model.threshold);
        out.put("threshold", model.threshold);
        out.put("model_name", model.name);
        out.put("model_version", model.version);
        out.put("scored_at", System.currentTimeMillis());
        context.forward(new Record<>(record.key(), codec.encodeScored(out), tx.eventTime(), new RecordHeaders()),
                Main.SCORED);
    }

    private void deadLetter(Record<byte[], byte[]> record, WireCodec.DecodeException e) {
        Progress.deadLetter();
        RecordMetadata m = context.recordMetadata().orElseThrow();
        if (!settings.deadLetters()) {
            // Counted and skipped (no dead-letter topic): the offset moves on.
            Progress.handled();
            System.err.printf("kstreams-peer: record skipped (partition %d offset %d): %s: %s%n",
                    m.partition(), m.offset(), e.reason, e.getMessage());
            return;
        }
        Headers headers = new RecordHeaders(record.headers().toArray());
        headers.add("riskstream.reason", utf8(e.reason));
        headers.add("riskstream.error", utf8(e.getMessage()));
        headers.add("riskstream.source.topic", utf8(m.topic()));
        headers.add("riskstream.source.partition", utf8(Integer.toString(m.partition())));
        headers.add("riskstream.source.offset", utf8(Long.toString(m.offset())));
        context.forward(record.withHeaders(headers), Main.DEAD_LETTERS);
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** Deletes the customers whose newest transaction is 30 days before stream time or older. */
    private void sweep(long streamTime) {
        long cut = streamTime - Features.CUSTOMER_HORIZON_MS;
        List<String> idle = new ArrayList<>();
        try (KeyValueIterator<String, CustomerHistory> it = customers.all()) {
            while (it.hasNext()) {
                KeyValue<String, CustomerHistory> kv = it.next();
                if (kv.value.newest() <= cut) {
                    idle.add(kv.key);
                }
            }
        }
        for (String k : idle) {
            customers.delete(k);
        }
    }
}
