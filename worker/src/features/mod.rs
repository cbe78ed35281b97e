//! Features: the one feature engine used online (`run`) and offline
//! (`train`, `evaluate`, `score`).
//!
//! It computes the handbook's 15 model inputs in event time:
//! - per-customer windows (1, 7, 30 days, current transaction included) from
//!   the transaction stream itself;
//! - per-terminal counts and fraud rates over (t − 7 − n days, t − 7 days]
//!   from the delayed label-feedback stream.
//!
//! State is bounded: customer history older than 30 days and label history
//! older than 37 days (relative to the eviction clock) is dropped. Offline
//! the clock is the newest event seen; online, where partitions are consumed
//! unevenly, the scoring thread caps it at the slowest partition's event
//! time ([`FeatureEngine::set_clock_limit`]) so a lagging partition never
//! loses history it still needs.
//! Re-observing a transaction already in a customer's history (at-least-once
//! redelivery, state rebuild after a rebalance) does not count it twice and
//! returns the same features it had the first time.

use std::collections::VecDeque;

/// Fx hashing: the keys are ids from our own topics, not attacker-chosen
/// map keys, and SipHash was 4 % of the worker's CPU. hashbrown for
/// `entry_ref`: one hash and lookup per record, the key allocated only for
/// a new customer or terminal.
type HashMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;
use std::hash::{Hash, Hasher};

/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;
/// Label delay of the terminal features.
pub const DELAY_DAYS: i64 = 7;
/// Window lengths in days.
pub const WINDOWS: [i64; 3] = [1, 7, 30];
/// Longest customer window: customer history older than this is dropped.
pub const CUSTOMER_HORIZON_MS: i64 = 30 * DAY_MS;
/// Longest terminal window including the delay.
pub const TERMINAL_HORIZON_MS: i64 = (DELAY_DAYS + 30) * DAY_MS;
/// Number of features the engine computes.
pub const N_FEATURES: usize = 19;
/// An amount this many times the customer's mean counts as unusually high.
const HIGH_AMOUNT_RATIO: f64 = 3.0;
/// The first 15 are the handbook's published inputs.
pub const N_PUBLISHED: usize = 15;
/// Most transactions kept per customer (the newest win). A hostile or
/// broken producer can send one customer millions of records; the cap
/// bounds state and makes a record's feature cost O(cap) whatever the
/// history. The handbook's busiest customer has a few hundred in 30 days.
pub const MAX_CUSTOMER_HISTORY: usize = 4096;
/// Most labelled transactions kept per terminal (newest win).
pub const MAX_TERMINAL_LABELS: usize = 16_384;

/// Features in order: the handbook's 15 (same names), then ours.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
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
    // Ours: how unusual the amount is for this customer, against the
    // customer's earlier transactions of the last 30 days (current excluded).
    "CUSTOMER_ID_AMOUNT_RATIO_30DAY",
    "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY",
    "CUSTOMER_ID_AMOUNT_RATIO_MAX_30DAY",
    "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY",
];

/// Which inputs are binary (0/1), for drift statistics.
pub const BINARY_FEATURES: [bool; N_FEATURES] = [
    false, true, true, false, false, false, false, false, false, false, false, false, false, false,
    false, false, false, false, false,
];

/// Calendar inputs and the period of their cycle in seconds: their share
/// follows the clock, so drift is judged only over windows spanning a
/// whole cycle (weekend: a week; night: a day).
pub fn calendar_period_seconds(name: &str) -> Option<i64> {
    match name {
        "TX_DURING_WEEKEND" => Some(7 * 86_400),
        "TX_DURING_NIGHT" => Some(86_400),
        _ => None,
    }
}

/// How much history a feature's value reads, before its own record:
/// transactions of its customer, labels of its terminal (the delay
/// included); 0 where it reads none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lookback {
    pub customers_ms: i64,
    pub labels_ms: i64,
}

impl Lookback {
    /// What a model reading all of `features` needs.
    pub fn of_all<'a>(features: impl Iterator<Item = &'a str>) -> Self {
        features.map(lookback).fold(Self::default(), |a, b| Self {
            customers_ms: a.customers_ms.max(b.customers_ms),
            labels_ms: a.labels_ms.max(b.labels_ms),
        })
    }
}

/// The history feature `name` reads (unknown names: none).
pub fn lookback(name: &str) -> Lookback {
    let days = |d: i64| d * DAY_MS;
    let customers = |d: i64| Lookback {
        customers_ms: days(d),
        labels_ms: 0,
    };
    let labels = |d: i64| Lookback {
        customers_ms: 0,
        labels_ms: days(DELAY_DAYS + d),
    };
    match name {
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW" | "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW" => customers(1),
        "CUSTOMER_ID_NB_TX_7DAY_WINDOW" | "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW" => customers(7),
        "CUSTOMER_ID_NB_TX_30DAY_WINDOW"
        | "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"
        | "CUSTOMER_ID_AMOUNT_RATIO_30DAY"
        | "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"
        | "CUSTOMER_ID_AMOUNT_RATIO_MAX_30DAY" => customers(30),
        // 14 days of flags, each against the 30 days before it.
        "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY" => customers(44),
        "TERMINAL_ID_NB_TX_1DAY_WINDOW" | "TERMINAL_ID_RISK_1DAY_WINDOW" => labels(1),
        "TERMINAL_ID_NB_TX_7DAY_WINDOW" | "TERMINAL_ID_RISK_7DAY_WINDOW" => labels(7),
        "TERMINAL_ID_NB_TX_30DAY_WINDOW" | "TERMINAL_ID_RISK_30DAY_WINDOW" => labels(30),
        _ => Lookback::default(),
    }
}

/// The earliest event times the engine's state reaches back to since it
/// started: of transactions (streamed, replayed or restored from the
/// changelog) and of labels. A window reaching back before them is still
/// filling (warm-up after a cold start), not a change in the data; a
/// customer first seen after them is genuinely new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    pub customers: Option<i64>,
    pub labels: Option<i64>,
}

impl History {
    /// Whether a value at event time `t` that reads `need` had all of it.
    pub fn covers(&self, need: Lookback, t: i64) -> bool {
        let since =
            |h: Option<i64>, ms: i64| ms == 0 || h.is_some_and(|h| t.saturating_sub(ms) >= h);
        since(self.customers, need.customers_ms) && since(self.labels, need.labels_ms)
    }

    fn saw(slot: &mut Option<i64>, t: i64) {
        *slot = Some(slot.map_or(t, |h| h.min(t)));
    }
}

/// One feature vector.
pub type FeatureVector = [f64; N_FEATURES];

/// The fields of a transaction the engine reads.
#[derive(Debug, Clone, Copy)]
pub struct TxRef<'a> {
    pub transaction_id: &'a str,
    pub event_time: i64,
    pub customer_id: &'a str,
    pub terminal_id: &'a str,
    pub amount: f64,
}

/// The fields of a label the engine reads.
#[derive(Debug, Clone, Copy)]
pub struct LabelRef<'a> {
    pub transaction_id: &'a str,
    pub terminal_id: &'a str,
    pub event_time: i64,
    pub is_fraud: bool,
}

/// One transaction in a customer's history: what the windows need of it
/// (also the unit of the state changelog, see `state`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerTx {
    pub time: i64,
    pub amount: f64,
    /// The transaction id's fingerprint (redelivery detection).
    pub id: u64,
    /// Its amount was over 3× the customer's earlier 30-day mean.
    pub high: bool,
}

/// A customer's history and the input partition it was last seen on (the
/// partition whose changelog holds it).
#[derive(Debug, Default)]
struct Customer {
    partition: i32,
    txs: VecDeque<CustomerTx>,
}

#[derive(Debug, Clone, Copy)]
struct TerminalTx {
    time: i64,
    fraud: bool,
    id: u64,
}

/// Stateful feature computation.
#[derive(Debug, Default)]
pub struct FeatureEngine {
    customers: HashMap<String, Customer>,
    terminals: HashMap<String, VecDeque<TerminalTx>>,
    /// Newest event time seen (transactions or labels).
    newest: i64,
    /// Cap on the eviction clock (online: the slowest partition's event time).
    clock_limit: Option<i64>,
    /// Observations since the last full eviction sweep.
    since_sweep: usize,
    /// Entries dropped because a cap bit: (customer history, terminal labels),
    /// since the last [`FeatureEngine::take_cap_hits`].
    cap_hits: (u64, u64),
    /// Customers whose history emptied in a sweep, with their partition,
    /// kept only while [`FeatureEngine::track_evictions`] is on (the state
    /// changelog writes a tombstone for each).
    evicted: Option<Vec<(i32, String)>>,
    history: History,
}

/// A transaction id's 64-bit fingerprint (duplicate detection within one
/// customer's or terminal's history, where a collision is ~1e-16 likely).
fn id_hash(id: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

/// FNV-1a (64 bit) of a key: the same on every instance, platform and
/// release (std's hasher is seeded per process). Its low bits mix poorly
/// for short keys: callers fold the high bits in.
pub fn fnv1a(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The value of `key`, created when missing; allocates the key only then.
fn entry<'a, T: Default>(map: &'a mut HashMap<String, T>, key: &str) -> &'a mut T {
    map.entry_ref(key).or_default()
}

/// Evicts what no window can reach any more from a customer's history and
/// returns the position of `tx` in it: where it already is (replay), or
/// after every transaction not later than it (inserted, `high` unset).
/// Counts entries dropped by the cap in `cap_hits`.
#[inline]
fn place_in_history(
    hist: &mut VecDeque<CustomerTx>,
    tx: &TxRef<'_>,
    id: u64,
    cap_hits: &mut u64,
) -> usize {
    while hist
        .front()
        .is_some_and(|h| h.time <= tx.event_time - CUSTOMER_HORIZON_MS)
    {
        hist.pop_front();
    }
    if let Some(p) = hist.iter().rposition(|h| h.id == id) {
        return p;
    }
    while hist.len() >= MAX_CUSTOMER_HISTORY {
        hist.pop_front();
        *cap_hits += 1;
    }
    let p = hist.partition_point(|h| h.time <= tx.event_time);
    hist.insert(
        p,
        CustomerTx {
            time: tx.event_time,
            amount: tx.amount,
            id,
            high: false,
        },
    );
    p
}

/// The accumulators of one pass over a customer's history up to the current
/// transaction: every window at once (each accumulator sees its values in
/// the same order as a pass per window would: results are bit-identical).
struct CustomerScan {
    /// Count and amount sum per window of [`WINDOWS`], current included.
    wn: [u32; 3],
    wsum: [f64; 3],
    /// Earlier transactions of the last 30 days (current excluded): count,
    /// sum, sum of squares and max of their amounts.
    n: u32,
    sum: f64,
    sq: f64,
    max: f64,
    /// Earlier high-amount transactions of the last 14 days.
    high: u32,
    /// Start of the 14-day window (exclusive).
    from_14: i64,
}

impl CustomerScan {
    #[inline]
    fn of(hist: &VecDeque<CustomerTx>, pos: usize, t: i64) -> Self {
        let from = WINDOWS.map(|days| t - days * DAY_MS);
        let from_30 = t - CUSTOMER_HORIZON_MS;
        let mut s = Self {
            wn: [0; 3],
            wsum: [0.0; 3],
            n: 0,
            sum: 0.0,
            sq: 0.0,
            max: 0.0,
            high: 0,
            from_14: t - 14 * DAY_MS,
        };
        for (i, h) in hist.range(..=pos).enumerate() {
            for (w, &start) in from.iter().enumerate() {
                if h.time > start {
                    s.wn[w] += 1;
                    s.wsum[w] += h.amount;
                }
            }
            if i != pos && h.time > from_30 {
                s.n += 1;
                s.sum += h.amount;
                s.sq += h.amount * h.amount;
                s.max = s.max.max(h.amount);
            }
            // The current transaction's own flag is counted by the caller.
            if i != pos && h.high && h.time > s.from_14 {
                s.high += 1;
            }
        }
        s
    }

    /// Features 3..=8: count and mean amount per customer window.
    #[inline]
    fn write_windows(&self, f: &mut FeatureVector) {
        for w in 0..WINDOWS.len() {
            f[3 + 2 * w] = f64::from(self.wn[w]);
            f[4 + 2 * w] = if self.wn[w] == 0 {
                0.0
            } else {
                self.wsum[w] / f64::from(self.wn[w])
            };
        }
    }

    /// Features 15..=17: the amount against the earlier 30-day mean, as a
    /// z-score, and against the earlier 30-day max.
    #[inline]
    fn write_amount_profile(&self, amount: f64, f: &mut FeatureVector) {
        if self.n > 0 {
            let n = f64::from(self.n);
            let mean = self.sum / n;
            f[15] = if mean > 0.0 { amount / mean } else { 1.0 };
            let var = (self.sq / n - mean * mean).max(0.0);
            f[16] = if self.n >= 2 && var > 1e-12 {
                ((amount - mean) / var.sqrt()).clamp(-50.0, 50.0)
            } else {
                0.0
            };
            f[17] = if self.max > 0.0 {
                amount / self.max
            } else {
                1.0
            };
        } else {
            f[15] = 1.0;
            f[16] = 0.0;
            f[17] = 1.0;
        }
    }
}

/// 1 on Saturday and Sunday (UTC).
pub fn is_weekend(ms: i64) -> bool {
    // Measured hot path: plain integer arithmetic on epoch ms, not calendar logic.
    // 1970-01-01 was a Thursday: (days + 3) % 7 gives Monday = 0.
    let dow = (ms.div_euclid(DAY_MS) + 3).rem_euclid(7);
    dow >= 5
}

/// 1 when the UTC hour is 0..=6.
pub fn is_night(ms: i64) -> bool {
    // Measured hot path: plain integer arithmetic on epoch ms, not calendar logic.
    ms.rem_euclid(DAY_MS) / 3_600_000 <= 6
}

impl FeatureEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a transaction to its customer's history and returns its features.
    pub fn observe_transaction(&mut self, tx: TxRef<'_>) -> FeatureVector {
        self.observe_transaction_on(0, tx)
    }

    /// [`FeatureEngine::observe_transaction`] for a record of this input
    /// partition (online: the customer's state belongs to it).
    pub fn observe_transaction_on(&mut self, partition: i32, tx: TxRef<'_>) -> FeatureVector {
        self.tick(tx.event_time);
        History::saw(&mut self.history.customers, tx.event_time);
        let id = id_hash(tx.transaction_id);
        let customer = entry(&mut self.customers, tx.customer_id);
        customer.partition = partition;
        let hist = &mut customer.txs;
        let pos = place_in_history(hist, &tx, id, &mut self.cap_hits.0);
        let mut f = [0.0; N_FEATURES];
        f[0] = tx.amount;
        f[1] = f64::from(u8::from(is_weekend(tx.event_time)));
        f[2] = f64::from(u8::from(is_night(tx.event_time)));
        let mut scan = CustomerScan::of(hist, pos, tx.event_time);
        scan.write_windows(&mut f);
        scan.write_amount_profile(tx.amount, &mut f);
        // This transaction's own high-amount flag, set now that f[15] is known.
        hist[pos].high = f[15] > HIGH_AMOUNT_RATIO;
        if hist[pos].high && hist[pos].time > scan.from_14 {
            scan.high += 1;
        }
        f[18] = f64::from(scan.high);
        self.terminal_features(tx.terminal_id, tx.event_time, &mut f);
        f
    }

    /// Customer-state replay without output (state rebuild after a rebalance).
    pub fn replay_transaction(&mut self, partition: i32, tx: TxRef<'_>) {
        let _ = self.observe_transaction_on(partition, tx);
    }

    /// A customer's history, oldest first.
    pub fn customer_state(&self, customer: &str) -> Option<&VecDeque<CustomerTx>> {
        self.customers.get(customer).map(|c| &c.txs)
    }

    /// Replaces a customer's history with one restored from the changelog
    /// (sorted by time, at most [`MAX_CUSTOMER_HISTORY`] kept, newest win).
    pub fn restore_customer(&mut self, partition: i32, customer: &str, txs: &[CustomerTx]) {
        if let Some(&last) = txs.last() {
            self.newest = self.newest.max(last.time);
        }
        if let Some(first) = txs.iter().map(|t| t.time).min() {
            History::saw(&mut self.history.customers, first);
        }
        let c = entry(&mut self.customers, customer);
        c.partition = partition;
        c.txs.clear();
        let skip = txs.len().saturating_sub(MAX_CUSTOMER_HISTORY);
        c.txs.extend(txs[skip..].iter().copied());
        c.txs.make_contiguous().sort_by_key(|t| t.time);
    }

    /// Forgets every customer of these partitions (revoked: another
    /// instance owns their state now). Returns how many were dropped.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let before = self.customers.len();
        self.customers
            .retain(|_, c| !partitions.contains(&c.partition));
        before - self.customers.len()
    }

    /// Forgets the evictions of `partitions`' customers not yet taken
    /// (their state is being read again: an eviction before it is void).
    pub fn forget_evictions(&mut self, partitions: &[i32]) {
        if let Some(e) = self.evicted.as_mut() {
            e.retain(|(p, _)| !partitions.contains(p));
        }
    }

    /// Keeps (or stops keeping) the customers whose history emptied in a
    /// sweep, for [`FeatureEngine::take_evicted`].
    pub fn track_evictions(&mut self, on: bool) {
        self.evicted = on.then(Vec::new);
    }

    /// Customers (partition, id) whose history emptied since the last call.
    pub fn take_evicted(&mut self) -> Vec<(i32, String)> {
        self.evicted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn terminal_features(&self, terminal: &str, t: i64, f: &mut FeatureVector) {
        let end = t - DELAY_DAYS * DAY_MS;
        let hist = self.terminals.get(terminal);
        for (w, days) in WINDOWS.iter().enumerate() {
            let start = end - days * DAY_MS;
            let (mut n, mut frauds) = (0u32, 0u32);
            if let Some(hist) = hist {
                // Sorted by time: binary-search the window, then count it.
                let lo = hist.partition_point(|h| h.time <= start);
                let hi = hist.partition_point(|h| h.time <= end);
                for h in hist.range(lo..hi.max(lo)) {
                    n += 1;
                    frauds += u32::from(h.fraud);
                }
            }
            f[9 + 2 * w] = f64::from(n);
            f[10 + 2 * w] = if n == 0 {
                0.0
            } else {
                f64::from(frauds) / f64::from(n)
            };
        }
    }

    /// Adds a label to its terminal's history (idempotent per transaction id).
    pub fn observe_label(&mut self, label: LabelRef<'_>) {
        History::saw(&mut self.history.labels, label.event_time);
        if label.event_time <= self.eviction_clock().saturating_sub(TERMINAL_HORIZON_MS) {
            return;
        }
        let id = id_hash(label.transaction_id);
        let hist = entry(&mut self.terminals, label.terminal_id);
        if hist.iter().any(|h| h.id == id) {
            return;
        }
        while hist.len() >= MAX_TERMINAL_LABELS {
            hist.pop_front();
            self.cap_hits.1 += 1;
        }
        let p = hist.partition_point(|h| h.time <= label.event_time);
        hist.insert(
            p,
            TerminalTx {
                time: label.event_time,
                fraud: label.is_fraud,
                id,
            },
        );
    }

    /// How far back the state reaches (see [`History`]).
    pub fn history(&self) -> History {
        self.history
    }

    /// Caps the eviction clock: nothing newer than `limit` minus a horizon
    /// is dropped (online: the slowest partition's latest event time).
    pub fn set_clock_limit(&mut self, limit: i64) {
        self.clock_limit = Some(limit);
    }

    /// The time eviction measures the horizons from.
    fn eviction_clock(&self) -> i64 {
        self.clock_limit.map_or(self.newest, |l| l.min(self.newest))
    }

    fn tick(&mut self, t: i64) {
        self.newest = self.newest.max(t);
        self.since_sweep += 1;
        if self.since_sweep >= 100_000 {
            self.sweep();
        }
    }

    /// Drops every customer and terminal entry that no window can reach.
    pub fn sweep(&mut self) {
        self.since_sweep = 0;
        let clock = self.eviction_clock();
        let c_cut = clock.saturating_sub(CUSTOMER_HORIZON_MS);
        let evicted = &mut self.evicted;
        self.customers.retain(|k, c| {
            while c.txs.front().is_some_and(|x| x.time <= c_cut) {
                c.txs.pop_front();
            }
            if c.txs.is_empty() {
                if let Some(e) = evicted.as_mut() {
                    e.push((c.partition, k.clone()));
                }
            }
            !c.txs.is_empty()
        });
        let t_cut = clock.saturating_sub(TERMINAL_HORIZON_MS);
        self.terminals.retain(|_, h| {
            while h.front().is_some_and(|x| x.time <= t_cut) {
                h.pop_front();
            }
            !h.is_empty()
        });
    }

    /// (customers, customer entries, terminals, label entries) held.
    /// Entries dropped by the caps since the last call: (customer, terminal).
    pub fn take_cap_hits(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.cap_hits)
    }

    pub fn state_size(&self) -> (usize, usize, usize, usize) {
        (
            self.customers.len(),
            self.customers.values().map(|c| c.txs.len()).sum(),
            self.terminals.len(),
            self.terminals.values().map(VecDeque::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests;
