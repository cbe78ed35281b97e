package riskstream.kstreams;

import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Maintains the global {@code terminal-labels} store from the labels topic
 * (every partition, on every instance: each instance scores transactions of any
 * terminal). Kafka Streams bootstraps a global store to the end of its topic
 * before any task processes a record, through this processor (4.1 reprocesses
 * on restore for {@code Topology#addGlobalStore}), and keeps folding labels in on
 * the global thread while tasks run.
 *
 * <p>Labels are keyed by customer id; the store is keyed by terminal id: the
 * topic is not the store's changelog, which is why the fold is a processor and
 * not a plain {@code globalTable}.
 *
 * <p>Eviction runs on the label stream's own clock: a global store is read-only
 * to the tasks, so the transaction clock that riskstream evicts by is not
 * available here. A terminal's labels with an event time 38 days (the 37-day
 * reach of its windows, plus a day) or more before the newest label's
 * {@code reported_at} are dropped when that terminal gets a label.
 */
final class LabelFold implements Processor<byte[], byte[], Void, Void> {
    /** How far back from a label's report time the store keeps a terminal's labels. */
    static final long RETENTION_MS = Features.TERMINAL_HORIZON_MS + Features.DAY_MS;

    private final java.io.File schemas;
    private WireCodec codec;
    private KeyValueStore<String, TerminalLabels> store;

    LabelFold(java.io.File schemas) {
        this.schemas = schemas;
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
        store = context.getStateStore(Main.LABEL_STORE);
        try {
            codec = new WireCodec(schemas);
        } catch (java.io.IOException e) {
            throw new IllegalStateException("cannot read the schemas in " + schemas, e);
        }
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        WireCodec.Label l;
        try {
            l = codec.decodeLabel(record.value());
        } catch (WireCodec.DecodeException e) {
            // Labels are feedback: an undecodable one is skipped, as riskstream does.
            Progress.badLabel();
            return;
        }
        TerminalLabels h = store.get(l.terminalId());
        if (h == null) {
            h = new TerminalLabels(4);
        }
        if (Features.observeLabel(h, l.transactionId(), l.eventTime(), l.isFraud(), l.reportedAt() - RETENTION_MS)) {
            store.put(l.terminalId(), h);
        }
        Progress.label();
    }
}
