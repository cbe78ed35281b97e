//! State: the customer-feature state made durable in Kafka itself.
//!
//! Each group keeps a compacted changelog topic, co-partitioned with the
//! input (default `<input>.state.<group>`, created by `run` with the
//! input's partition count), keyed by customer: after each batch the
//! changed customers are noted ([`Changelog::note`]) and, at most once per
//! `flush_interval`, their whole 30-day history is written
//! ([`record`], `schemas/customer_state.avsc`) to the partition of the
//! input record that changed it, each record carrying the input offset it
//! covers; customers whose history emptied get a tombstone, so compaction
//! keeps one record per live customer. An input offset is committed only
//! once the changelog flush covering it is acknowledged (see
//! `source::offsets`).
//!
//! On assignment ([`restore::Restorer`]) the changelog partition is read
//! from start to end and the input resumes at its committed offset: no
//! replay of the input's history. Where the changelog cannot cover the
//! committed offset (first start with this state, deleted changelog, a
//! lagging one) the source falls back to replaying what the input topic
//! still holds, logs it and counts it.

pub mod record;
pub mod restore;

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::codec::HEADER_LEN;
use crate::features::FeatureEngine;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
type KeySet = hashbrown::HashMap<String, (), rustc_hash::FxBuildHasher>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state changelog's client failed")]
    Client(#[source] KafkaError),
    #[error("cannot read the watermarks of {topic}/{partition}")]
    Watermarks {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("reading {topic}/{partition} took longer than {waited:?} ({read} records read)")]
    RestoreTimeout {
        topic: String,
        partition: i32,
        read: u64,
        waited: Duration,
    },
}

/// The state stage's settings.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Write and restore the changelog (off: every assignment replays the
    /// input partition's retained history instead).
    pub enabled: bool,
    pub topic: String,
    /// Changed customers are written at most once per this interval.
    pub flush_interval: Duration,
    /// Longest a partition's changelog read may take before the source
    /// falls back to replaying the input.
    pub restore_timeout: Duration,
}

impl StateConfig {
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(1000);
    pub const DEFAULT_RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

    /// The default changelog topic of a group.
    pub fn default_topic(input: &str, group: &str) -> String {
        format!("{input}.state.{group}")
    }

    /// Cross-field checks; problems are appended to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if self.enabled && self.topic.is_empty() {
            errors.push("state.topic: must not be empty".into());
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.flush_interval) {
            errors.push("state.flush_interval_ms: must be in 10..=60000".into());
        }
    }
}

/// One partition's changelog records for the sink: (customer, payload or
/// tombstone), and the input offset they cover (None: nothing committable
/// waits for them, e.g. state rebuilt by a replay).
#[derive(Debug)]
pub struct Draft {
    pub partition: i32,
    pub covers: Option<i64>,
    pub records: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Debug, Default)]
struct Dirty {
    keys: KeySet,
    covers: Option<i64>,
}

/// The changed customers since the last flush, per partition (the scoring
/// stage's side of the changelog).
#[derive(Debug)]
pub struct Changelog {
    header: [u8; HEADER_LEN],
    interval: Duration,
    dirty: HashMap<i32, Dirty>,
    last_flush: Instant,
}

impl Changelog {
    pub fn new(header: [u8; HEADER_LEN], interval: Duration) -> Self {
        Self {
            header,
            interval,
            dirty: HashMap::default(),
            last_flush: Instant::now(),
        }
    }

    /// A record of `partition` changed `customer`; `offset`: the input
    /// offset whose commit waits for it (None for a replayed record).
    #[inline]
    pub fn note(&mut self, partition: i32, customer: &str, offset: Option<i64>) {
        let d = self.dirty.entry(partition).or_default();
        d.keys.entry_ref(customer).or_insert(());
        if let Some(o) = offset {
            d.covers = Some(d.covers.map_or(o, |c| c.max(o)));
        }
    }

    /// What `partitions` changed since the last flush is not written (an
    /// aborted transaction's changes: the state is read again instead).
    pub fn forget(&mut self, partitions: &[i32]) {
        self.dirty.retain(|p, _| !partitions.contains(p));
    }

    /// Whether the flush interval has passed.
    pub fn due(&self) -> bool {
        !self.dirty.is_empty() && self.last_flush.elapsed() >= self.interval
    }

    /// The changed customers' current state (tombstones for those whose
    /// history emptied), per partition; forgets them.
    pub fn drain(&mut self, engine: &mut FeatureEngine) -> Vec<Draft> {
        self.last_flush = Instant::now();
        for (p, key) in engine.take_evicted() {
            self.dirty.entry(p).or_default().keys.insert(key, ());
        }
        let mut out = Vec::with_capacity(self.dirty.len());
        for (partition, d) in self.dirty.drain() {
            let covers = d.covers.unwrap_or(-1);
            let records = d
                .keys
                .into_iter()
                .map(|(key, ())| {
                    let payload = match engine.customer_state(&key) {
                        Some(txs) if !txs.is_empty() => {
                            let mut buf = Vec::new();
                            record::encode(&self.header, &key, covers, txs.iter(), &mut buf);
                            Some(buf)
                        }
                        _ => None,
                    };
                    (key, payload)
                })
                .collect();
            out.push(Draft {
                partition,
                covers: d.covers,
                records,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::TxRef;

    #[test]
    fn a_flush_writes_each_changed_customer_once_with_the_offset_it_covers() {
        let codec = crate::codec::Codec::new().unwrap();
        let known = codec.customer_state_schema();
        let mut engine = FeatureEngine::new();
        engine.track_evictions(true);
        let mut log = Changelog::new(known.header(), Duration::ZERO);
        let t0 = 1_533_081_600_000;
        for (i, c) in ["a", "b", "a"].iter().enumerate() {
            let id = format!("t{i}");
            engine.observe_transaction_on(
                3,
                TxRef {
                    transaction_id: &id,
                    event_time: t0 + i as i64,
                    customer_id: c,
                    terminal_id: "m",
                    amount: 10.0,
                },
            );
            log.note(3, c, Some(100 + i as i64));
        }
        let drafts = log.drain(&mut engine);
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].covers, Some(102));
        let mut recs = drafts[0].records.clone();
        recs.sort();
        assert_eq!(recs.len(), 2, "coalesced per customer");
        let a = record::decode(known.fingerprint, recs[0].1.as_ref().unwrap()).unwrap();
        assert_eq!(a.covers_offset, 102);
        assert_eq!(a.transactions.len(), 2);
        // Restored into a fresh engine, features continue identically.
        let mut fresh = FeatureEngine::new();
        fresh.restore_customer(3, "a", &a.transactions);
        let next = TxRef {
            transaction_id: "t9",
            event_time: t0 + 10,
            customer_id: "a",
            terminal_id: "m",
            amount: 50.0,
        };
        assert_eq!(
            fresh.observe_transaction_on(3, next),
            engine.observe_transaction_on(3, next)
        );
        assert!(log.drain(&mut engine).is_empty(), "nothing changed since");
        // A month later "b" is evicted by the sweep: a tombstone.
        engine.observe_transaction_on(
            3,
            TxRef {
                transaction_id: "late",
                event_time: t0 + 40 * crate::features::DAY_MS,
                customer_id: "c",
                terminal_id: "m",
                amount: 1.0,
            },
        );
        engine.sweep();
        let drafts = log.drain(&mut engine);
        assert_eq!(drafts.len(), 1, "both on partition 3");
        let tomb: Vec<_> = drafts[0]
            .records
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        assert!(tomb.contains(&"b") && tomb.contains(&"a"), "{tomb:?}");
    }
}
