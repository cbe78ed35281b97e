package riskstream.kstreams;

import java.nio.charset.StandardCharsets;

/**
 * The feature engine of riskstream (worker/src/features/mod.rs), on the two store
 * values: 19 features in riskstream's order, of which the model picks its inputs.
 *
 * <ul>
 * <li>per-customer windows (1, 7, 30 days, current transaction included) and the
 *     amount against the customer's earlier 30 days, from {@link CustomerHistory};</li>
 * <li>per-terminal counts and fraud rates over (t - 7 - n days, t - 7 days] from
 *     {@link TerminalLabels} (the label delay is 7 days of event time).</li>
 * </ul>
 *
 * Sums run over the same transactions in the same chronological order as
 * riskstream's single pass, in double, so the features are bit-identical.
 */
final class Features {
    static final long DAY_MS = 86_400_000L;
    static final long DELAY_MS = 7 * DAY_MS;
    static final long CUSTOMER_HORIZON_MS = 30 * DAY_MS;
    static final long TERMINAL_HORIZON_MS = (7 + 30) * DAY_MS;
    static final long[] WINDOW_DAYS = {1, 7, 30};
    static final double HIGH_AMOUNT_RATIO = 3.0;
    /** riskstream's caps: most transactions per customer, most labels per terminal (newest win). */
    static final int MAX_CUSTOMER_HISTORY = 4096;
    static final int MAX_TERMINAL_LABELS = 16_384;
    static final int N_FEATURES = 19;

    static final String[] NAMES = {
        "TX_AMOUNT",
        "TX_DURING_WEEKEND",
        "TX_DURING_NIGHT",
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
        "TERMINAL_ID_NB_TX_1DAY_WINDOW",
        "TERMINAL_ID_RISK_1DAY_WINDOW",
        "TERMINAL_ID_NB_TX_7DAY_WINDOW",
        "TERMINAL_ID_RISK_7DAY_WINDOW",
        "TERMINAL_ID_NB_TX_30DAY_WINDOW",
        "TERMINAL_ID_RISK_30DAY_WINDOW",
        "CUSTOMER_ID_AMOUNT_RATIO_30DAY",
        "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY",
        "CUSTOMER_ID_AMOUNT_RATIO_MAX_30DAY",
        "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY",
    };

    private Features() {}

    /** A transaction id's 64-bit fingerprint (FNV-1a of its UTF-8 bytes). */
    static long idHash(String id) {
        long h = 0xcbf29ce484222325L;
        for (byte b : id.getBytes(StandardCharsets.UTF_8)) {
            h ^= (b & 0xff);
            h *= 0x100000001b3L;
        }
        return h;
    }

    /** First index in [0, n) whose time is greater than {@code t} (times sorted). */
    static int after(long[] times, int n, long t) {
        int lo = 0;
        int hi = n;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (times[mid] <= t) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    /**
     * Adds a transaction to its customer's history (evicting what no window reaches
     * any more) and writes features 0..8 and 15..18 into {@code f}. A transaction
     * already in the history (at-least-once redelivery) is not added twice and gets
     * the features it had the first time.
     */
    static void observeTransaction(CustomerHistory h, String txId, long t, double amount, double[] f) {
        // Evict what no window can reach any more.
        h.dropFront(after(h.time, h.n, t - CUSTOMER_HORIZON_MS));
        long id = idHash(txId);
        int pos = -1;
        for (int i = h.n - 1; i >= 0; i--) {
            if (h.id[i] == id) {
                pos = i;
                break;
            }
        }
        if (pos < 0) {
            if (h.n >= MAX_CUSTOMER_HISTORY) {
                h.dropFront(h.n - MAX_CUSTOMER_HISTORY + 1);
            }
            pos = after(h.time, h.n, t);
            h.insert(pos, t, amount, id);
        }
        f[0] = amount;
        f[1] = isWeekend(t) ? 1.0 : 0.0;
        f[2] = isNight(t) ? 1.0 : 0.0;
        // One pass over the history up to the current transaction.
        long s1 = t - DAY_MS;
        long s7 = t - 7 * DAY_MS;
        long s30 = t - CUSTOMER_HORIZON_MS;
        long s14 = t - 14 * DAY_MS;
        int n1 = 0, n7 = 0, n30 = 0, n = 0, high = 0;
        double sum1 = 0, sum7 = 0, sum30 = 0, sum = 0, sq = 0, max = 0;
        for (int i = 0; i <= pos; i++) {
            long ti = h.time[i];
            double a = h.amount[i];
            if (ti > s1) {
                n1++;
                sum1 += a;
            }
            if (ti > s7) {
                n7++;
                sum7 += a;
            }
            if (ti > s30) {
                n30++;
                sum30 += a;
            }
            if (i != pos && ti > s30) {
                n++;
                sum += a;
                sq += a * a;
                max = Math.max(max, a);
            }
            if (i != pos && h.high[i] && ti > s14) {
                high++;
            }
        }
        f[3] = n1;
        f[4] = n1 == 0 ? 0.0 : sum1 / n1;
        f[5] = n7;
        f[6] = n7 == 0 ? 0.0 : sum7 / n7;
        f[7] = n30;
        f[8] = n30 == 0 ? 0.0 : sum30 / n30;
        if (n > 0) {
            double mean = sum / n;
            f[15] = mean > 0.0 ? amount / mean : 1.0;
            double var = Math.max(sq / n - mean * mean, 0.0);
            f[16] = n >= 2 && var > 1e-12 ? Math.min(Math.max((amount - mean) / Math.sqrt(var), -50.0), 50.0) : 0.0;
            f[17] = max > 0.0 ? amount / max : 1.0;
        } else {
            f[15] = 1.0;
            f[16] = 0.0;
            f[17] = 1.0;
        }
        // This transaction's own high-amount flag, now that f[15] is known.
        h.high[pos] = f[15] > HIGH_AMOUNT_RATIO;
        if (h.high[pos] && h.time[pos] > s14) {
            high++;
        }
        f[18] = high;
    }

    /** Features 9..14: label counts and fraud rates of the terminal, 7 days delayed. */
    static void terminalFeatures(TerminalLabels labels, long t, double[] f) {
        long end = t - DELAY_MS;
        int hi = labels == null ? 0 : after(labels.time, labels.n, end);
        for (int w = 0; w < WINDOW_DAYS.length; w++) {
            int k = 0;
            int frauds = 0;
            if (labels != null) {
                int lo = after(labels.time, hi, end - WINDOW_DAYS[w] * DAY_MS);
                for (int i = lo; i < hi; i++) {
                    k++;
                    frauds += labels.fraud[i] ? 1 : 0;
                }
            }
            f[9 + 2 * w] = k;
            f[10 + 2 * w] = k == 0 ? 0.0 : (double) frauds / k;
        }
    }

    /**
     * Folds a label into its terminal's history: idempotent per transaction id;
     * labels at or before {@code cut} (event time) are dropped, and never added.
     * Returns false when nothing changed.
     */
    static boolean observeLabel(TerminalLabels h, String txId, long eventTime, boolean fraud, long cut) {
        if (eventTime <= cut) {
            return false;
        }
        h.dropFront(after(h.time, h.n, cut));
        long id = idHash(txId);
        for (int i = 0; i < h.n; i++) {
            if (h.id[i] == id) {
                return false;
            }
        }
        if (h.n >= MAX_TERMINAL_LABELS) {
            h.dropFront(h.n - MAX_TERMINAL_LABELS + 1);
        }
        h.insert(after(h.time, h.n, eventTime), eventTime, id, fraud);
        return true;
    }

    /** Saturday and Sunday, UTC (1970-01-01 was a Thursday). */
    static boolean isWeekend(long ms) {
        return Math.floorMod(Math.floorDiv(ms, DAY_MS) + 3, 7) >= 5;
    }

    /** UTC hour 0..6. */
    static boolean isNight(long ms) {
        return Math.floorMod(ms, DAY_MS) / 3_600_000 <= 6;
    }
}
