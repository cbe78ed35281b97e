//! Commits: the one place that decides when an input offset is committed.
//!
//! Every record the source hands on is registered here; the sink reports
//! each delivery (scored record, dead letter) and each acknowledged
//! changelog flush; [`Commits`] stores the end of every partition's
//! contiguous done prefix ([`tracker::OffsetTracker`]) in the input
//! consumer, and librdkafka's auto-commit commits what is stored. Besides
//! that, offsets are committed synchronously at three moments, all here: a
//! revoke (after the revoked partitions drained), shutdown (the final
//! commit), and an idle partition's position (past the transaction markers
//! and aborted records behind its last record).
//!
//! Nothing else in the crate stores or commits an input offset.
//!
//! Under exactly-once ([`Guarantee::ExactlyOnce`]) none of that runs: the
//! scoring stage ends each transaction with the offsets it covers
//! ([`crate::message::SinkItem::Commit`]) and the sink commits them in the
//! transaction with [`Commits::transaction_offsets`]. What is shared here is
//! the coordination: a revoke's commit barrier ([`Commits::barrier`],
//! [`Commits::wait_barrier`]) and the rewind after an abort
//! ([`Commits::request_rewind`], [`Commits::rewind_due`]).

mod tracker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata,
};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use tracker::OffsetTracker;

/// What readers of the outputs are guaranteed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Outputs are acknowledged before their input offsets are committed:
    /// a crash or a lost partition may score records again.
    #[value(alias = "at_least_once")]
    #[serde(alias = "at-least-once")]
    AtLeastOnce,
    /// One Kafka transaction per commit interval carries the outputs, the
    /// dead letters, the changelog records and the input offsets:
    /// `read_committed` readers see every input once.
    #[value(alias = "exactly_once")]
    #[serde(alias = "exactly-once")]
    ExactlyOnce,
}

impl Guarantee {
    pub const DEFAULT: Guarantee = Guarantee::AtLeastOnce;

    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

/// The `[delivery]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub guarantee: Guarantee,
    /// Exactly-once: a transaction is committed at least this often.
    pub commit_interval: Duration,
}

impl DeliveryConfig {
    pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

    pub fn exactly_once(&self) -> bool {
        self.guarantee == Guarantee::ExactlyOnce
    }
}

/// What [`Commits`] needs of the input consumer.
pub(crate) trait OffsetStore: Send + Sync {
    /// Stores `offset` of `partition` for the next commit (librdkafka
    /// commits it + 1).
    fn store(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()>;
    /// Commits what is stored now, waiting for the broker's answer.
    fn commit_stored(&self) -> KafkaResult<()>;
    /// The group generation and member the offsets are committed as (a
    /// transaction's offsets are refused once they are stale: KIP-447).
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
}

impl<C: ConsumerContext + 'static> OffsetStore for BaseConsumer<C> {
    fn store(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
        self.store_offset(topic, partition, offset)
    }

    fn commit_stored(&self) -> KafkaResult<()> {
        self.commit_consumer_state(CommitMode::Sync)
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        Consumer::group_metadata(self)
    }
}

/// Exactly-once coordination between the source, scoring and the sink.
#[derive(Debug, Default)]
struct Transactions {
    /// Rewinds asked for (by the sink after an abort, by the source after a
    /// lost assignment or a revoke whose commit failed) and performed (by
    /// the source). The sink discards what it receives, and commits
    /// nothing, while a rewind it has not seen the end of is pending.
    requested: AtomicU64,
    performed: AtomicU64,
    /// Barriers handed out; the last one finished and whether it committed.
    barriers: AtomicU64,
    finished: Mutex<(u64, bool)>,
    finished_cv: Condvar,
}

/// Offsets of the input topic: registered, settled, stored, committed.
/// Shared by the source (and its rebalance callbacks), the scoring stage
/// (changelog flushes begun), the sink (deliveries settled) and shutdown.
pub struct Commits {
    topic: String,
    /// Exactly-once: the tracker is unused (transactions carry the offsets).
    exactly_once: bool,
    txn: Transactions,
    tracker: OffsetTracker,
    /// The input consumer, attached once it exists (its context holds
    /// this, so the link back is weak).
    consumer: OnceLock<Weak<dyn OffsetStore>>,
}

impl Commits {
    pub fn new(input_topic: &str, guarantee: Guarantee) -> Self {
        Self {
            topic: input_topic.to_string(),
            exactly_once: guarantee == Guarantee::ExactlyOnce,
            txn: Transactions::default(),
            tracker: OffsetTracker::default(),
            consumer: OnceLock::new(),
        }
    }

    /// The consumer whose offsets these are.
    pub(crate) fn attach<C: OffsetStore + 'static>(&self, consumer: &Arc<C>) {
        let weak: Weak<dyn OffsetStore> = Arc::downgrade(consumer) as Weak<dyn OffsetStore>;
        let _ = self.consumer.set(weak);
    }

    fn store(&self, partition: i32, offset: i64) {
        let Some(c) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        if let Err(e) = c.store(&self.topic, partition, offset) {
            tracing::debug!(partition, offset, error = %e, "offset not stored (partition no longer assigned)");
        }
    }

    /// `offset` of `partition` went downstream; `stateful`: it changes
    /// customer state, so it also waits for the changelog flush covering it.
    #[inline]
    pub fn register(&self, partition: i32, offset: i64, stateful: bool) {
        if self.exactly_once {
            return;
        }
        self.tracker.register(partition, offset, stateful);
    }

    /// The scoring stage begins a changelog flush of `partition` covering
    /// every state change up to `covers`; its sequence number.
    pub fn flush_begun(&self, partition: i32, covers: i64) -> u64 {
        if self.exactly_once {
            return 0;
        }
        self.tracker.flush_begun(partition, covers)
    }

    /// The record at `offset` is done: its output (or dead letter) was
    /// delivered, or it has none to wait for.
    #[inline]
    pub fn delivered(&self, partition: i32, offset: i64) {
        if self.exactly_once {
            return;
        }
        if let Some(o) = self.tracker.complete(partition, offset) {
            self.store(partition, o);
        }
    }

    /// Every record of changelog flush `seq` of `partition` is acknowledged.
    pub fn flush_acked(&self, partition: i32, seq: u64) {
        if self.exactly_once {
            return;
        }
        if let Some(o) = self.tracker.flush_acked(partition, seq) {
            self.store(partition, o);
        }
    }

    /// Stores the positions of partitions with nothing in flight: past
    /// their last record, the offsets of an upstream transactional
    /// producer's commit and abort markers and of aborted records
    /// (`read_committed` skips them) would otherwise stay as lag for ever.
    /// The caller passes only partitions that are scoring (not restoring
    /// or replaying).
    pub(crate) fn store_idle(&self, positions: &TopicPartitionList) {
        for e in positions.elements_for_topic(&self.topic) {
            let (p, Offset::Offset(at)) = (e.partition(), e.offset()) else {
                continue;
            };
            // Stored again at each idle turn: a delivery settled meanwhile
            // may have stored its own, lower offset.
            if at > 0 && self.tracker.in_flight(&[p]) == 0 {
                self.store(p, at - 1);
            }
        }
    }

    /// Revoked partitions: waits up to `drain` for their records in flight,
    /// commits what is stored and forgets them. Whether they drained.
    pub(crate) fn revoke(&self, partitions: &[i32], drain: Duration) -> bool {
        let drained = self.tracker.wait_drained(partitions, drain);
        if let Some(c) = self.consumer.get().and_then(Weak::upgrade) {
            if let Err(e) = c.commit_stored() {
                tracing::debug!(error = %e, "commit on revoke");
            }
        }
        self.tracker.remove(partitions);
        drained
    }

    /// Shutdown: every delivery has settled (or was abandoned); commits
    /// what is stored now.
    pub(crate) fn commit_final(&self, handled: u64) {
        if self.exactly_once {
            tracing::info!(handled, "the last transaction carried the final offsets");
            return;
        }
        let in_flight = self.tracker.total_in_flight();
        let Some(c) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        match c.commit_stored() {
            Ok(()) => tracing::info!(handled, in_flight, "final offsets committed"),
            // Auto-commit already committed everything stored.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {
                tracing::info!(handled, in_flight, "all offsets were already committed")
            }
            Err(e) => {
                tracing::warn!(error = %e, "final commit failed; the next owner may re-score the last records")
            }
        }
    }

    /// Records in flight over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.tracker.total_in_flight()
    }

    /// No delivery will settle any more (the sink has stopped): a revoke
    /// waits for nothing.
    pub(crate) fn close(&self) {
        self.tracker.close();
    }

    /// The sink has stopped ([`Commits::close`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.tracker.is_closed()
    }

    /// Whether offsets travel in transactions.
    pub(crate) fn exactly_once(&self) -> bool {
        self.exactly_once
    }

    /// Exactly-once: the offsets of a transaction (partition, next offset
    /// to read) as the producer sends them, with the consumer's group
    /// metadata; None once the consumer is gone.
    pub(crate) fn transaction_offsets(
        &self,
        offsets: &[(i32, i64)],
    ) -> Option<(TopicPartitionList, ConsumerGroupMetadata)> {
        let c = self.consumer.get().and_then(Weak::upgrade)?;
        let meta = c.group_metadata()?;
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (p, next) in offsets {
            // `add_partition_offset` fails only for an invalid offset.
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next));
        }
        Some((tpl, meta))
    }

    /// Exactly-once: the open transaction must not commit; the source
    /// rewinds every assigned partition to its committed offset and state.
    /// The rewind's number.
    pub(crate) fn request_rewind(&self) -> u64 {
        self.txn.requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// For the source: the rewind to perform now, if one was asked for
    /// since the last (taken once).
    pub(crate) fn rewind_due(&self) -> Option<u64> {
        let requested = self.txn.requested.load(Ordering::Acquire);
        let performed = self.txn.performed.swap(requested, Ordering::AcqRel);
        (requested > performed).then_some(requested)
    }

    /// For the sink: the newest rewind asked for.
    pub(crate) fn rewinds_requested(&self) -> u64 {
        self.txn.requested.load(Ordering::Acquire)
    }

    /// A revoke's commit barrier: its number (scoring commits a
    /// transaction covering everything before it; the sink reports it).
    pub(crate) fn barrier(&self) -> u64 {
        self.txn.barriers.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The sink finished barrier `id`: `committed` or not.
    pub(crate) fn barrier_done(&self, id: u64, committed: bool) {
        let mut f = self.txn.finished.lock().unwrap_or_else(|e| e.into_inner());
        if id >= f.0 {
            *f = (id, committed);
        }
        self.txn.finished_cv.notify_all();
    }

    /// Waits up to `timeout` for barrier `id`; whether its transaction
    /// committed.
    pub(crate) fn wait_barrier(&self, id: u64, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut f = self.txn.finished.lock().unwrap_or_else(|e| e.into_inner());
        while f.0 < id {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.tracker.is_closed() {
                return false;
            }
            f = self
                .txn
                .finished_cv
                .wait_timeout(f, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        f.1
    }
}
