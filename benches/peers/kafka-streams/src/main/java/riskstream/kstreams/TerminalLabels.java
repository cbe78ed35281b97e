package riskstream.kstreams;

import java.nio.ByteBuffer;
import java.util.Arrays;

import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * One terminal's labelled transactions, sorted by event time: the value of the
 * global {@code terminal-labels} store. Event time, fraud or not, and a 64-bit
 * fingerprint of the transaction id (a label read twice counts once).
 *
 * <p>Wire format (RocksDB only: a global store restores from its source topic):
 * version byte 1, int count, then per label long time, long id, byte fraud.
 */
final class TerminalLabels {
    private static final byte VERSION = 1;
    private static final int ENTRY = 8 + 8 + 1;

    long[] time;
    long[] id;
    boolean[] fraud;
    int n;

    TerminalLabels(int capacity) {
        int c = Math.max(capacity, 4);
        time = new long[c];
        id = new long[c];
        fraud = new boolean[c];
    }

    void dropFront(int k) {
        if (k <= 0) {
            return;
        }
        int left = n - k;
        System.arraycopy(time, k, time, 0, left);
        System.arraycopy(id, k, id, 0, left);
        System.arraycopy(fraud, k, fraud, 0, left);
        n = left;
    }

    void insert(int p, long t, long idHash, boolean isFraud) {
        if (n == time.length) {
            int c = n * 2;
            time = Arrays.copyOf(time, c);
            id = Arrays.copyOf(id, c);
            fraud = Arrays.copyOf(fraud, c);
        }
        int tail = n - p;
        System.arraycopy(time, p, time, p + 1, tail);
        System.arraycopy(id, p, id, p + 1, tail);
        System.arraycopy(fraud, p, fraud, p + 1, tail);
        time[p] = t;
        id[p] = idHash;
        fraud[p] = isFraud;
        n++;
    }

    static final Serializer<TerminalLabels> SERIALIZER = (topic, h) -> {
        if (h == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.allocate(1 + 4 + h.n * ENTRY);
        b.put(VERSION).putInt(h.n);
        for (int i = 0; i < h.n; i++) {
            b.putLong(h.time[i]).putLong(h.id[i]).put((byte) (h.fraud[i] ? 1 : 0));
        }
        return b.array();
    };

    static final Deserializer<TerminalLabels> DESERIALIZER = (topic, bytes) -> {
        if (bytes == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        byte v = b.get();
        if (v != VERSION) {
            throw new IllegalStateException("terminal labels version " + v + ", expected " + VERSION);
        }
        int n = b.getInt();
        TerminalLabels h = new TerminalLabels(n + 1);
        for (int i = 0; i < n; i++) {
            h.time[i] = b.getLong();
            h.id[i] = b.getLong();
            h.fraud[i] = b.get() != 0;
        }
        h.n = n;
        return h;
    };

    static final Serde<TerminalLabels> SERDE = Serdes.serdeFrom(SERIALIZER, DESERIALIZER);
}
