package riskstream.kstreams;

import java.nio.ByteBuffer;

import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * One customer's transactions of the last 30 days, oldest first: the value of the
 * {@code customer-windows} store (RocksDB, changelogged). What the windows need of
 * each transaction: its event time, amount, a 64-bit fingerprint of its id
 * (redelivery detection) and whether its amount was over 3x the customer's earlier
 * 30-day mean (the high-amount flag). Parallel arrays, as riskstream's
 * {@code CustomerTx} deque.
 *
 * <p>Wire format (changelog and RocksDB): version byte 1, int count, then per
 * transaction long time, double amount, long id, byte high: 25 bytes each.
 */
final class CustomerHistory {
    private static final byte VERSION = 1;
    private static final int ENTRY = 8 + 8 + 8 + 1;

    long[] time;
    double[] amount;
    long[] id;
    boolean[] high;
    int n;

    CustomerHistory(int capacity) {
        int c = Math.max(capacity, 4);
        time = new long[c];
        amount = new double[c];
        id = new long[c];
        high = new boolean[c];
    }

    /** Drops the {@code k} oldest entries. */
    void dropFront(int k) {
        if (k <= 0) {
            return;
        }
        int left = n - k;
        System.arraycopy(time, k, time, 0, left);
        System.arraycopy(amount, k, amount, 0, left);
        System.arraycopy(id, k, id, 0, left);
        System.arraycopy(high, k, high, 0, left);
        n = left;
    }

    /** Inserts an entry at {@code p} (high unset). */
    void insert(int p, long t, double a, long idHash) {
        if (n == time.length) {
            int c = n * 2;
            time = java.util.Arrays.copyOf(time, c);
            amount = java.util.Arrays.copyOf(amount, c);
            id = java.util.Arrays.copyOf(id, c);
            high = java.util.Arrays.copyOf(high, c);
        }
        int tail = n - p;
        System.arraycopy(time, p, time, p + 1, tail);
        System.arraycopy(amount, p, amount, p + 1, tail);
        System.arraycopy(id, p, id, p + 1, tail);
        System.arraycopy(high, p, high, p + 1, tail);
        time[p] = t;
        amount[p] = a;
        id[p] = idHash;
        high[p] = false;
        n++;
    }

    long newest() {
        return n == 0 ? Long.MIN_VALUE : time[n - 1];
    }

    static final Serializer<CustomerHistory> SERIALIZER = (topic, h) -> {
        if (h == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.allocate(1 + 4 + h.n * ENTRY);
        b.put(VERSION).putInt(h.n);
        for (int i = 0; i < h.n; i++) {
            b.putLong(h.time[i]).putDouble(h.amount[i]).putLong(h.id[i]).put((byte) (h.high[i] ? 1 : 0));
        }
        return b.array();
    };

    static final Deserializer<CustomerHistory> DESERIALIZER = (topic, bytes) -> {
        if (bytes == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        byte v = b.get();
        if (v != VERSION) {
            throw new IllegalStateException("customer history version " + v + ", expected " + VERSION);
        }
        int n = b.getInt();
        // Room for one more: the record being scored is usually appended.
        CustomerHistory h = new CustomerHistory(n + 1);
        for (int i = 0; i < n; i++) {
            h.time[i] = b.getLong();
            h.amount[i] = b.getDouble();
            h.id[i] = b.getLong();
            h.high[i] = b.get() != 0;
        }
        h.n = n;
        return h;
    };

    static final Serde<CustomerHistory> SERDE = Serdes.serdeFrom(SERIALIZER, DESERIALIZER);
}
