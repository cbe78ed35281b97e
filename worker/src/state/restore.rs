//! Reading one changelog partition from its start to its end: after
//! compaction one record per live customer, so the cost follows the state,
//! not the input topic's retention.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::record::{self, CustomerState};
use super::StateError;
use crate::features::CustomerTx;
use crate::kafka::client_config;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// What a changelog partition held.
#[derive(Debug, Default)]
pub struct Restored {
    /// Live customers and their histories (tombstoned ones left out).
    pub customers: Vec<(String, Vec<CustomerTx>)>,
    /// The highest input offset any record says it covers.
    pub covers: Option<i64>,
    /// Changelog records read (live, superseded and tombstones).
    pub records: u64,
    /// Records that did not decode (skipped, counted).
    pub bad: u64,
    pub elapsed: Duration,
}

/// Reads changelog partitions (one at a time) with its own consumer,
/// outside any group.
pub struct Restorer {
    consumer: BaseConsumer<crate::kafka::ReadToEnd>,
    topic: String,
    fingerprint: u64,
    timeout: Duration,
}

impl Restorer {
    /// `timeout`: longest one partition's read may take.
    pub fn new(
        brokers: &str,
        kafka: &BTreeMap<String, String>,
        group: &str,
        topic: &str,
        fingerprint: u64,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let mut c = client_config(brokers, kafka);
        c.set("group.id", format!("{group}.restore"));
        // What the read relies on, over the user's options: the end of the
        // partition is an event (where the read stops), only committed
        // records are state, and a start offset retention has passed
        // meanwhile starts at the first record still held.
        c.set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", crate::kafka::READ_TO_END_FETCH_WAIT_MS)
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        let consumer = c
            .create_with_context(crate::kafka::ReadToEnd::CHANGELOG)
            .map_err(StateError::Client)?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            fingerprint,
            timeout,
        })
    }

    /// The low watermark of `topic`'s `partition` (None, logged, when the
    /// broker does not answer).
    pub fn low_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        crate::kafka::low_watermark(self.consumer.client(), topic, partition)
    }

    /// Reads `partition` from its low watermark to its end (the high
    /// watermark, or the last stable offset where a transaction is open).
    pub fn read(&self, partition: i32) -> Result<Restored, StateError> {
        let t0 = Instant::now();
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
            .map_err(|source| StateError::Watermarks {
                topic: self.topic.clone(),
                partition,
                source,
            })?;
        let mut out = Restored::default();
        if high <= low {
            out.elapsed = t0.elapsed();
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(low))
            .map_err(StateError::Client)?;
        self.consumer.assign(&tpl).map_err(StateError::Client)?;
        let mut latest: HashMap<String, Option<Vec<CustomerTx>>> = HashMap::default();
        loop {
            if t0.elapsed() > self.timeout {
                let _ = self.consumer.unassign();
                return Err(StateError::RestoreTimeout {
                    topic: self.topic.clone(),
                    partition,
                    read: out.records,
                    waited: self.timeout,
                });
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    self.take(partition, &m, &mut out, &mut latest);
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                // Offsets below `high` need not all be records (transaction
                // markers, records compaction removed): the end is where the
                // consumer's position reaches the end of the partition, which
                // librdkafka reports as this event.
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "changelog read error (retrying)");
                }
                None => {}
            }
        }
        let _ = self.consumer.unassign();
        out.customers = latest
            .into_iter()
            .filter_map(|(k, v)| v.map(|t| (k, t)))
            .collect();
        out.elapsed = t0.elapsed();
        Ok(out)
    }

    /// Folds one changelog record into `latest` (the newest state per key; a
    /// tombstone is `None`) and the read's counts.
    fn take(
        &self,
        partition: i32,
        m: &BorrowedMessage<'_>,
        out: &mut Restored,
        latest: &mut HashMap<String, Option<Vec<CustomerTx>>>,
    ) {
        out.records += 1;
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            out.bad += 1;
            return;
        };
        match m.payload() {
            None => {
                latest.insert(key.to_string(), None);
            }
            Some(p) => match record::decode(self.fingerprint, p) {
                Ok(CustomerState {
                    covers_offset,
                    transactions,
                    ..
                }) => {
                    out.covers = Some(out.covers.map_or(covers_offset, |c| c.max(covers_offset)));
                    latest.insert(key.to_string(), Some(transactions));
                }
                Err(e) => {
                    tracing::debug!(partition, offset = m.offset(), error = %e, "changelog record skipped");
                    out.bad += 1;
                }
            },
        }
    }
}
