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

mod tracker;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use tracker::OffsetTracker;

/// What [`Commits`] needs of the input consumer.
pub(crate) trait OffsetStore: Send + Sync {
    /// Stores `offset` of `partition` for the next commit (librdkafka
    /// commits it + 1).
    fn store(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()>;
    /// Commits what is stored now, waiting for the broker's answer.
    fn commit_stored(&self) -> KafkaResult<()>;
}

impl<C: ConsumerContext + 'static> OffsetStore for BaseConsumer<C> {
    fn store(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
        self.store_offset(topic, partition, offset)
    }

    fn commit_stored(&self) -> KafkaResult<()> {
        self.commit_consumer_state(CommitMode::Sync)
    }
}

/// Offsets of the input topic: registered, settled, stored, committed.
/// Shared by the source (and its rebalance callbacks), the scoring stage
/// (changelog flushes begun), the sink (deliveries settled) and shutdown.
pub struct Commits {
    topic: String,
    tracker: OffsetTracker,
    /// The input consumer, attached once it exists (its context holds
    /// this, so the link back is weak).
    consumer: OnceLock<Weak<dyn OffsetStore>>,
}

impl Commits {
    pub fn new(input_topic: &str) -> Self {
        Self {
            topic: input_topic.to_string(),
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
        self.tracker.register(partition, offset, stateful);
    }

    /// The scoring stage begins a changelog flush of `partition` covering
    /// every state change up to `covers`; its sequence number.
    pub fn flush_begun(&self, partition: i32, covers: i64) -> u64 {
        self.tracker.flush_begun(partition, covers)
    }

    /// The record at `offset` is done: its output (or dead letter) was
    /// delivered, or it has none to wait for.
    #[inline]
    pub fn delivered(&self, partition: i32, offset: i64) {
        if let Some(o) = self.tracker.complete(partition, offset) {
            self.store(partition, o);
        }
    }

    /// Every record of changelog flush `seq` of `partition` is acknowledged.
    pub fn flush_acked(&self, partition: i32, seq: u64) {
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
}
