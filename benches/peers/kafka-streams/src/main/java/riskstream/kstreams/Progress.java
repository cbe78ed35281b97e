package riskstream.kstreams;

import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.producer.ProducerInterceptor;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;

/**
 * What the run did, for --max-records and the summary line: records handled
 * counts a scored record or a dead letter once the broker acknowledged it (as
 * riskstream counts delivered outputs), or a skipped record at once. One per
 * JVM: the processors of every stream thread and the producers' I/O threads
 * report here.
 */
final class Progress {
    static final AtomicLong HANDLED = new AtomicLong();
    static final AtomicLong DEAD_LETTERS = new AtomicLong();
    static final AtomicLong LABELS = new AtomicLong();
    static final AtomicLong BAD_LABELS = new AtomicLong();
    /** Released when --max-records are handled, the client fails or the JVM is asked to stop. */
    static final CountDownLatch STOP = new CountDownLatch(1);
    static volatile long target = Long.MAX_VALUE;
    static volatile String outputTopic = "";
    static volatile String dlqTopic = "";
    /** Wall clock (ms) and monotonic clock (ns) of the first handled record; monotonic of the last. */
    static volatile long firstMillis;
    static volatile long firstNanos;
    static volatile long lastNanos;

    private Progress() {}

    static void handled() {
        long now = System.nanoTime();
        long n = HANDLED.incrementAndGet();
        if (n == 1) {
            firstMillis = System.currentTimeMillis();
            firstNanos = now;
        }
        lastNanos = now;
        if (n >= target) {
            STOP.countDown();
        }
    }

    static void deadLetter() {
        DEAD_LETTERS.incrementAndGet();
    }

    static void label() {
        LABELS.incrementAndGet();
    }

    static void badLabel() {
        BAD_LABELS.incrementAndGet();
    }

    /**
     * Counts the outputs the broker acknowledged (scored records and dead letters,
     * not the changelog's): installed as the stream threads' producer interceptor.
     */
    public static final class Deliveries implements ProducerInterceptor<byte[], byte[]> {
        @Override
        public ProducerRecord<byte[], byte[]> onSend(ProducerRecord<byte[], byte[]> record) {
            return record;
        }

        @Override
        public void onAcknowledgement(RecordMetadata metadata, Exception exception) {
            if (exception == null && metadata != null
                    && (metadata.topic().equals(outputTopic) || metadata.topic().equals(dlqTopic))) {
                handled();
            }
        }

        @Override
        public void close() {}

        @Override
        public void configure(Map<String, ?> configs) {}
    }
}
