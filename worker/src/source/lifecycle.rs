//! One input partition's life in this instance, in one place:
//!
//! ```text
//! assigned ─► restoring ─► replaying ─► scoring ─► revoked
//!            (changelog    (records      (records
//!             read while    before the    scored)
//!             paused)       commit: state
//!                           only, no output)
//! ```
//!
//! With the state changelog on, an assigned partition is paused while its
//! changelog is read ([`Phase::Restoring`]); it replays only where the
//! changelog trails the committed offset or is missing. With state off, a
//! partition with a committed offset replays its whole history. The first
//! record after a resume is checked against the resume offset
//! ([`Resumed`]): retention may have deleted records the restore needed.
//!
//! The rebalance callbacks and the source's loop run on the source thread;
//! readiness reads [`Partitions::rebuilding`] from another. The source
//! asks [`Partitions::route`] for every record: without the lock while
//! every partition is simply scoring.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Where a partition is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Paused while its changelog is read by restore `generation` (a revoke
    /// makes a late result of that read stale).
    Restoring {
        generation: u64,
    },
    /// Records below `until` (the committed offset) rebuild customer state
    /// without output.
    Replaying {
        until: i64,
    },
    Scoring,
}

/// Where a restored partition resumed, and the group's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resumed {
    pub(crate) from: i64,
    pub(crate) committed: i64,
}

impl Resumed {
    /// The records from the resume offset up to `first` (the first one the
    /// topic still holds), split at the committed offset: (scored before,
    /// never scored).
    pub(crate) fn deleted_before(self, first: i64) -> (i64, i64) {
        let state_only = (first.min(self.committed) - self.from).max(0);
        let unscored = (first - self.from.max(self.committed)).max(0);
        (state_only, unscored)
    }
}

/// What the source does with a polled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Fetched before its partition's pause took hold: fetched again on resume.
    Skip,
    /// History before the committed offset: into customer state, no output.
    Replay,
    Score,
}

#[derive(Debug)]
struct Life {
    phase: Phase,
    /// Set at a resume, until the partition's first record.
    resumed: Option<Resumed>,
}

impl Life {
    const SCORING: Life = Life {
        phase: Phase::Scoring,
        resumed: None,
    };

    fn usual(&self) -> bool {
        self.phase == Phase::Scoring && self.resumed.is_none()
    }
}

#[derive(Debug, Default)]
struct Inner {
    parts: HashMap<i32, Life>,
    generation: u64,
    /// Revoked since the source last asked (it forgets their clocks).
    revoked: Vec<i32>,
}

/// The life of every partition this instance is assigned.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    inner: Mutex<Inner>,
    /// Partitions not simply scoring: while 0, records route without the lock.
    unusual: AtomicUsize,
}

impl Partitions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recount(&self, inner: &Inner) {
        let n = inner.parts.values().filter(|l| !l.usual()).count();
        self.unusual.store(n, Ordering::Release);
    }

    fn set(&self, partition: i32, f: impl FnOnce(&mut Life)) {
        let mut g = self.lock();
        f(g.parts.entry(partition).or_insert(Life::SCORING));
        self.recount(&g);
    }

    /// What to do with the record at `offset` of `partition`, and, for the
    /// first record after a resume, where it resumed (to check for records
    /// deleted meanwhile).
    #[inline]
    pub(crate) fn route(&self, partition: i32, offset: i64) -> (Route, Option<Resumed>) {
        if self.unusual.load(Ordering::Acquire) == 0 {
            return (Route::Score, None);
        }
        let mut g = self.lock();
        let Some(life) = g.parts.get_mut(&partition) else {
            return (Route::Score, None);
        };
        let out = match life.phase {
            Phase::Restoring { .. } => return (Route::Skip, None),
            Phase::Replaying { until } if offset < until => (Route::Replay, life.resumed.take()),
            Phase::Replaying { .. } => {
                life.phase = Phase::Scoring;
                tracing::info!(
                    partition,
                    "customer state rebuilt; scoring resumes at the committed offset"
                );
                (Route::Score, life.resumed.take())
            }
            Phase::Scoring => (Route::Score, life.resumed.take()),
        };
        self.recount(&g);
        out
    }

    /// These partitions are paused while one read of their changelogs; its
    /// generation.
    pub(crate) fn restoring(&self, partitions: &[i32]) -> u64 {
        let mut g = self.lock();
        g.generation += 1;
        let generation = g.generation;
        for p in partitions {
            g.parts.insert(
                *p,
                Life {
                    phase: Phase::Restoring { generation },
                    resumed: None,
                },
            );
        }
        self.recount(&g);
        generation
    }

    /// Read `generation` of `partition`'s changelog finished: true if the
    /// partition is still waiting for it (not revoked since); it scores
    /// from now on unless [`Self::replay`] says otherwise.
    pub(crate) fn restored(&self, partition: i32, generation: u64) -> bool {
        let mut g = self.lock();
        let Some(life) = g.parts.get_mut(&partition) else {
            return false;
        };
        if life.phase != (Phase::Restoring { generation }) {
            return false;
        }
        life.phase = Phase::Scoring;
        self.recount(&g);
        true
    }

    /// Records of `partition` below `until` are replayed, not scored. A
    /// bound already set and not yet reached stays if higher (a fallback
    /// replay from the start keeps a changelog gap's).
    pub(crate) fn replay(&self, partition: i32, until: i64) {
        self.set(partition, |life| {
            life.phase = match life.phase {
                Phase::Replaying { until: u } => Phase::Replaying {
                    until: u.max(until),
                },
                _ => Phase::Replaying { until },
            };
        });
    }

    /// `partition` resumes as `r` says: its first record is checked.
    pub(crate) fn resumed(&self, partition: i32, r: Resumed) {
        self.set(partition, |life| life.resumed = Some(r));
    }

    /// These partitions are assigned and score from their committed offset.
    pub(crate) fn assigned(&self, partitions: &[i32]) {
        let mut g = self.lock();
        for p in partitions {
            g.parts.entry(*p).or_insert(Life::SCORING);
        }
        self.recount(&g);
    }

    /// These partitions were revoked: forgotten (a late restore result of
    /// theirs is stale).
    pub(crate) fn revoke(&self, partitions: &[i32]) {
        let mut g = self.lock();
        for p in partitions {
            g.parts.remove(p);
        }
        g.revoked.extend_from_slice(partitions);
        self.recount(&g);
    }

    /// Partitions revoked since the last call.
    pub(crate) fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut self.lock().revoked)
    }

    /// Whether `partition` is paused for its restore.
    pub(crate) fn is_restoring(&self, partition: i32) -> bool {
        self.unusual.load(Ordering::Acquire) > 0
            && self
                .lock()
                .parts
                .get(&partition)
                .is_some_and(|l| matches!(l.phase, Phase::Restoring { .. }))
    }

    /// Whether some partition is being restored.
    pub(crate) fn any_restoring(&self) -> bool {
        self.unusual.load(Ordering::Acquire) > 0
            && self
                .lock()
                .parts
                .values()
                .any(|l| matches!(l.phase, Phase::Restoring { .. }))
    }

    /// Whether some partition is restoring, replaying, or waiting for its
    /// first record after a resume.
    pub(crate) fn settling(&self) -> bool {
        self.unusual.load(Ordering::Acquire) > 0
    }

    /// Partitions replaying, with their bounds.
    pub(crate) fn replaying(&self) -> Vec<(i32, i64)> {
        if self.unusual.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.lock()
            .parts
            .iter()
            .filter_map(|(p, l)| match l.phase {
                Phase::Replaying { until } => Some((*p, until)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_goes_from_restoring_through_replaying_to_scoring() {
        let p = Partitions::default();
        assert_eq!(p.route(0, 5), (Route::Score, None), "unknown: scored");
        let g = p.restoring(&[0, 1]);
        assert!(p.any_restoring());
        assert_eq!(p.route(0, 5).0, Route::Skip);
        assert_eq!(p.route(2, 5).0, Route::Score, "other partitions score on");
        assert!(p.restored(0, g));
        assert!(!p.restored(0, g), "taken once");
        p.replay(0, 10);
        let r = Resumed {
            from: 8,
            committed: 10,
        };
        p.resumed(0, r);
        assert_eq!(
            p.route(0, 8),
            (Route::Replay, Some(r)),
            "first record checked"
        );
        assert_eq!(p.route(0, 9), (Route::Replay, None));
        assert_eq!(p.replaying(), vec![(0, 10)]);
        assert_eq!(p.route(0, 10), (Route::Score, None));
        assert!(p.replaying().is_empty());
        assert!(p.settling(), "partition 1 still restoring");
        p.revoke(&[1]);
        assert!(!p.restored(1, g), "a revoked partition's restore is stale");
        assert!(!p.settling());
        assert_eq!(p.take_revoked(), vec![1]);
        assert!(p.take_revoked().is_empty());
    }

    #[test]
    fn a_later_replay_bound_only_raises() {
        let p = Partitions::default();
        p.replay(3, 100);
        p.replay(3, 40);
        assert_eq!(p.replaying(), vec![(3, 100)]);
    }

    #[test]
    fn records_deleted_before_a_resume_split_at_the_commit() {
        let r = |from, committed| Resumed { from, committed };
        assert_eq!(r(100, 100).deleted_before(160), (0, 60), "all unscored");
        assert_eq!(
            r(80, 100).deleted_before(160),
            (20, 60),
            "trailing changelog"
        );
        assert_eq!(r(80, 100).deleted_before(90), (10, 0), "inside the gap");
        assert_eq!(
            r(0, 50).deleted_before(40),
            (40, 0),
            "replay from the start"
        );
        assert_eq!(r(100, 100).deleted_before(100), (0, 0));
    }
}
