//! Per-partition low watermark of handled records ([`super::Commits`]
//! stores and commits what it finds done).
//!
//! The source registers every offset it hands downstream; the sink marks an
//! offset done once its output (scored record or dead letter) is delivered.
//! Batches complete out of order, so the offset that may be committed is the
//! end of the contiguous done prefix: everything below it was delivered.
//!
//! With the state changelog on, a record that changed customer state is
//! done only when, besides its output, the changelog flush that covers it
//! is acknowledged: flushes are begun in order by the scoring stage
//! ([`OffsetTracker::flush_begun`]), acknowledged in any order by the sink
//! ([`OffsetTracker::flush_acked`]), and a partition's covered offset only
//! moves past a flush once it and every earlier one are acknowledged.

use std::collections::VecDeque;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct PartitionState {
    /// In-flight offsets in consumption order: (offset, delivered, needs
    /// its state change acknowledged in the changelog).
    pending: VecDeque<(i64, bool, bool)>,
    /// Every state change of records below this offset is in the changelog.
    covered_end: i64,
    /// Changelog flushes begun and not yet folded into `covered`, in
    /// order: (sequence number, offset covered, acknowledged).
    flushes: VecDeque<(u64, i64, bool)>,
    next_flush: u64,
}

impl PartitionState {
    /// Pops the done prefix; its last offset if it advanced.
    fn pop_done(&mut self) -> Option<i64> {
        let mut last = None;
        while let Some(&(o, true, stateful)) = self.pending.front() {
            if stateful && o >= self.covered_end {
                break;
            }
            last = Some(o);
            self.pending.pop_front();
        }
        last
    }
}

/// Shared between the source thread (register, revoke) and the sink (complete).
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    parts: Mutex<HashMap<i32, PartitionState>>,
    /// Signalled whenever records complete, so a revoke can wait for a drain.
    drained: Condvar,
    /// Set once the sink has stopped: nothing can complete any more, so
    /// waiting for a drain returns at once.
    closed: std::sync::atomic::AtomicBool,
}

impl OffsetTracker {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, PartitionState>> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain integers; the data is still consistent enough to go on.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `offset` of `partition` went downstream; `stateful`:
    /// it changes customer state, so it waits for the changelog too.
    pub(crate) fn register(&self, partition: i32, offset: i64, stateful: bool) {
        self.lock()
            .entry(partition)
            .or_default()
            .pending
            .push_back((offset, false, stateful));
    }

    /// The scoring stage begins a changelog flush of `partition` covering
    /// every state change up to `covers`; its sequence number.
    pub(crate) fn flush_begun(&self, partition: i32, covers: i64) -> u64 {
        let mut parts = self.lock();
        let st = parts.entry(partition).or_default();
        let seq = st.next_flush;
        st.next_flush += 1;
        st.flushes.push_back((seq, covers, false));
        seq
    }

    /// Every record of flush `seq` of `partition` is acknowledged. Returns
    /// the new end of the committable prefix, if it advanced.
    pub(crate) fn flush_acked(&self, partition: i32, seq: u64) -> Option<i64> {
        let mut parts = self.lock();
        let st = parts.get_mut(&partition)?;
        if let Some(f) = st.flushes.iter_mut().find(|f| f.0 == seq) {
            f.2 = true;
        }
        while let Some(&(_, covers, true)) = st.flushes.front() {
            st.covered_end = st.covered_end.max(covers + 1);
            st.flushes.pop_front();
        }
        let last = st.pop_done();
        if st.pending.is_empty() {
            self.drained.notify_all();
        }
        last
    }

    /// Marks `offset` delivered. Returns the highest offset whose every
    /// predecessor (since the last return) is delivered, if it advanced:
    /// store it for commit (librdkafka commits it + 1).
    pub(crate) fn complete(&self, partition: i32, offset: i64) -> Option<i64> {
        let mut parts = self.lock();
        let st = parts.get_mut(&partition)?;
        if let Ok(i) = st.pending.binary_search_by_key(&offset, |(o, _, _)| *o) {
            st.pending[i].1 = true;
        }
        let last = st.pop_done();
        if st.pending.is_empty() {
            self.drained.notify_all();
        }
        last
    }

    /// Records in flight for these partitions.
    pub(crate) fn in_flight(&self, partitions: &[i32]) -> usize {
        let parts = self.lock();
        partitions
            .iter()
            .filter_map(|p| parts.get(p))
            .map(|s| s.pending.len())
            .sum()
    }

    /// Records in flight over all partitions.
    pub(crate) fn total_in_flight(&self) -> usize {
        self.lock().values().map(|s| s.pending.len()).sum()
    }

    /// No delivery will settle any more (the sink has stopped).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.drained.notify_all();
    }

    /// Blocks until nothing is in flight for `partitions`, or `timeout`, or
    /// the tracker is closed. Returns whether they drained.
    pub(crate) fn wait_drained(&self, partitions: &[i32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut parts = self.lock();
        loop {
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return partitions
                    .iter()
                    .filter_map(|p| parts.get(p))
                    .all(|s| s.pending.is_empty());
            }
            let n: usize = partitions
                .iter()
                .filter_map(|p| parts.get(p))
                .map(|s| s.pending.len())
                .sum();
            if n == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Wake up periodically: completions on other partitions notify too.
            let wait = (deadline - now).min(Duration::from_millis(50));
            parts = self
                .drained
                .wait_timeout(parts, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Forgets partitions that were revoked.
    pub(crate) fn remove(&self, partitions: &[i32]) {
        let mut parts = self.lock();
        for p in partitions {
            parts.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_delivered_prefix() {
        let t = OffsetTracker::default();
        for o in [10, 11, 12, 14] {
            t.register(0, o, false);
        }
        t.register(1, 5, false);
        assert_eq!(t.complete(0, 11), None, "10 is not delivered yet");
        assert_eq!(t.complete(0, 14), None);
        assert_eq!(t.complete(0, 10), Some(11));
        assert_eq!(t.in_flight(&[0]), 2);
        assert_eq!(t.complete(0, 12), Some(14), "gaps in offsets are fine");
        assert_eq!(t.in_flight(&[0]), 0);
        assert_eq!(t.in_flight(&[1]), 1);
        assert_eq!(t.complete(7, 1), None, "unknown partition");
    }

    #[test]
    fn wait_drained_returns_when_the_partition_empties() {
        let t = std::sync::Arc::new(OffsetTracker::default());
        t.register(3, 1, false);
        assert!(!t.wait_drained(&[3], Duration::from_millis(20)));
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            t2.complete(3, 1);
        });
        assert!(t.wait_drained(&[3], Duration::from_secs(5)));
        h.join().unwrap();
    }

    #[test]
    fn a_stateful_record_waits_for_every_earlier_changelog_flush() {
        let t = OffsetTracker::default();
        for o in 0..4 {
            t.register(0, o, o != 1);
        }
        let f1 = t.flush_begun(0, 0);
        let f2 = t.flush_begun(0, 3);
        assert_eq!(
            t.complete(0, 0),
            None,
            "delivered, its state not yet durable"
        );
        assert_eq!(
            t.complete(0, 1),
            None,
            "a dead letter behind a waiting record"
        );
        assert_eq!(t.flush_acked(0, f2), None, "flush 2 acked before flush 1");
        assert_eq!(t.flush_acked(0, f1), Some(1));
        assert_eq!(t.complete(0, 2), Some(2), "covered by flush 2");
        assert_eq!(t.in_flight(&[0]), 1);
        assert_eq!(t.complete(0, 3), Some(3));
        t.register(0, 4, true);
        assert_eq!(t.complete(0, 4), None, "no flush covers it yet");
        let f3 = t.flush_begun(0, 4);
        assert_eq!(t.flush_acked(0, f3), Some(4));
    }
}
