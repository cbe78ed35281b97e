//! Per-partition low watermark of handled records.
//!
//! The source registers every offset it hands downstream; the sink marks an
//! offset done once its output (scored record or dead letter) is delivered.
//! Batches complete out of order, so the offset that may be committed is the
//! end of the contiguous done prefix: everything below it was delivered.

use std::collections::VecDeque;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct PartitionState {
    /// In-flight offsets in consumption order, with their done flag.
    pending: VecDeque<(i64, bool)>,
}

/// Shared between the source thread (register, revoke) and the sink (complete).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: Mutex<HashMap<i32, PartitionState>>,
    /// Signalled whenever records complete, so a revoke can wait for a drain.
    drained: Condvar,
    /// Set once the sink has stopped: nothing can complete any more, so
    /// waiting for a drain returns at once.
    closed: std::sync::atomic::AtomicBool,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, PartitionState>> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain integers; the data is still consistent enough to go on.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `offset` of `partition` went downstream.
    pub fn register(&self, partition: i32, offset: i64) {
        self.lock()
            .entry(partition)
            .or_default()
            .pending
            .push_back((offset, false));
    }

    /// Marks `offset` delivered. Returns the highest offset whose every
    /// predecessor (since the last return) is delivered, if it advanced:
    /// store it for commit (librdkafka commits it + 1).
    pub fn complete(&self, partition: i32, offset: i64) -> Option<i64> {
        let mut parts = self.lock();
        let st = parts.get_mut(&partition)?;
        if let Ok(i) = st.pending.binary_search_by_key(&offset, |(o, _)| *o) {
            st.pending[i].1 = true;
        }
        let mut last = None;
        while let Some(&(o, true)) = st.pending.front() {
            last = Some(o);
            st.pending.pop_front();
        }
        if st.pending.is_empty() {
            self.drained.notify_all();
        }
        last
    }

    /// Records in flight for these partitions.
    pub fn in_flight(&self, partitions: &[i32]) -> usize {
        let parts = self.lock();
        partitions
            .iter()
            .filter_map(|p| parts.get(p))
            .map(|s| s.pending.len())
            .sum()
    }

    /// Records in flight over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.lock().values().map(|s| s.pending.len()).sum()
    }

    /// No delivery will settle any more (the sink has stopped).
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.drained.notify_all();
    }

    /// Blocks until nothing is in flight for `partitions`, or `timeout`, or
    /// the tracker is closed. Returns whether they drained.
    pub fn wait_drained(&self, partitions: &[i32], timeout: Duration) -> bool {
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
    pub fn remove(&self, partitions: &[i32]) {
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
        let t = OffsetTracker::new();
        for o in [10, 11, 12, 14] {
            t.register(0, o);
        }
        t.register(1, 5);
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
        let t = std::sync::Arc::new(OffsetTracker::new());
        t.register(3, 1);
        assert!(!t.wait_drained(&[3], Duration::from_millis(20)));
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            t2.complete(3, 1);
        });
        assert!(t.wait_drained(&[3], Duration::from_secs(5)));
        h.join().unwrap();
    }
}
