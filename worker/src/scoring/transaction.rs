//! Exactly-once: where the scoring stage ends each transaction.
//!
//! The sink writes whatever it receives into the open transaction; the
//! scoring stage, which sees every record and state change in order,
//! decides where a transaction ends and which input offsets it covers:
//! every record handed to the sink before the [`SinkItem::Commit`], each
//! partition up to the offset after its last one. The changelog flushes
//! that travel in the same transactions may trail those offsets, never
//! lead them: a restore replays the input between. A transaction ends
//! every `commit_interval`, when `max_records` records are in it, and at a
//! revoke's barrier; an aborted one is rewound ([`StateOp::Rewind`]).
//!
//! [`StateOp::Rewind`]: crate::message::StateOp::Rewind

use std::time::{Duration, Instant};

use crate::message::SinkItem;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The open transaction, as the scoring stage sees it.
#[derive(Debug)]
pub(crate) struct OpenTransaction {
    interval: Duration,
    max_records: usize,
    /// When the first record of the open transaction was handed on.
    opened: Option<Instant>,
    records: usize,
    /// Next offset to read, per partition, since the last commit.
    offsets: HashMap<i32, i64>,
    /// What the last commits carried, per partition (an idle position
    /// already there opens no transaction).
    committed: HashMap<i32, i64>,
    /// A revoke waits for this barrier.
    barrier: Option<u64>,
    /// The sink must hear that this rewind is done before anything new.
    rewound: Option<u64>,
}

impl OpenTransaction {
    pub(crate) fn new(interval: Duration, max_records: usize) -> Self {
        Self {
            interval,
            max_records: max_records.max(1),
            opened: None,
            records: 0,
            offsets: HashMap::default(),
            committed: HashMap::default(),
            barrier: None,
            rewound: None,
        }
    }

    /// The record at `offset` of `partition` was handed to the sink (its
    /// output, or its dead letter), after every earlier one.
    #[inline]
    pub(crate) fn handed(&mut self, partition: i32, offset: i64) {
        self.opened.get_or_insert_with(Instant::now);
        self.records += 1;
        let next = self.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// Something without an input offset (changelog records) went into
    /// the transaction: it is due like any other.
    pub(crate) fn wrote(&mut self) {
        self.opened.get_or_insert_with(Instant::now);
    }

    /// `partition`'s position with nothing before it in flight: past
    /// upstream transaction markers behind its last record.
    pub(crate) fn position(&mut self, partition: i32, next: i64) {
        let known = self
            .offsets
            .get(&partition)
            .or(self.committed.get(&partition));
        if known.is_some_and(|k| *k >= next) {
            return;
        }
        self.offsets.insert(partition, next);
        self.opened.get_or_insert_with(Instant::now);
    }

    /// A revoke asks for a commit now.
    pub(crate) fn barrier(&mut self, id: u64) {
        self.barrier = Some(id);
    }

    pub(crate) fn barrier_pending(&self) -> bool {
        self.barrier.is_some()
    }

    /// `partitions` were given up (their offsets were committed at the
    /// revoke's barrier) or rewound (nothing since the last commit counts).
    pub(crate) fn forget(&mut self, partitions: &[i32]) {
        self.offsets.retain(|p, _| !partitions.contains(p));
        self.committed.retain(|p, _| !partitions.contains(p));
    }

    /// Rewind `id` was applied to state.
    pub(crate) fn rewound(&mut self, id: u64) {
        self.rewound = Some(id);
    }

    /// The marker that ends the discarded stretch, if a rewind was applied.
    pub(crate) fn take_rewound(&mut self) -> Option<SinkItem> {
        self.rewound.take().map(SinkItem::Rewound)
    }

    /// Whether the transaction should end now (`force`: the input closed).
    pub(crate) fn due(&self, force: bool) -> bool {
        if self.barrier.is_some() {
            return true;
        }
        let Some(opened) = self.opened else {
            return false;
        };
        force || self.records >= self.max_records || opened.elapsed() >= self.interval
    }

    /// Ends the transaction: the commit the sink carries out.
    pub(crate) fn commit(&mut self) -> SinkItem {
        self.opened = None;
        self.records = 0;
        let mut offsets: Vec<(i32, i64)> = self.offsets.drain().collect();
        offsets.sort_unstable();
        self.committed.extend(offsets.iter().copied());
        SinkItem::Commit {
            offsets,
            barrier: self.barrier.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(item: SinkItem) -> (Vec<(i32, i64)>, Option<u64>) {
        match item {
            SinkItem::Commit { offsets, barrier } => (offsets, barrier),
            other => panic!("not a commit: {other:?}"),
        }
    }

    #[test]
    fn a_commit_covers_each_partition_up_to_after_its_last_record() {
        let mut t = OpenTransaction::new(Duration::from_secs(3600), 3);
        assert!(!t.due(true), "nothing handed on: nothing to commit");
        t.handed(0, 5);
        t.handed(1, 9);
        assert!(!t.due(false));
        t.handed(0, 7);
        assert!(t.due(false), "max_records reached");
        assert_eq!(offsets(t.commit()), (vec![(0, 8), (1, 10)], None));
        assert!(!t.due(true));
    }

    #[test]
    fn a_barrier_commits_even_an_empty_transaction_and_forgotten_partitions_go() {
        let mut t = OpenTransaction::new(Duration::from_secs(3600), 100);
        t.handed(2, 1);
        t.handed(3, 4);
        t.position(3, 10);
        t.position(3, 6);
        t.position(4, 2);
        t.forget(&[2]);
        t.barrier(7);
        assert!(t.due(false));
        assert_eq!(offsets(t.commit()), (vec![(3, 10), (4, 2)], Some(7)));
        t.barrier(8);
        // A position already committed opens nothing.
        t.position(4, 2);
        assert_eq!(offsets(t.commit()), (vec![], Some(8)));
        assert!(!t.due(true));
    }

    #[test]
    fn changelog_records_alone_open_a_transaction_that_ends() {
        let mut t = OpenTransaction::new(Duration::ZERO, 100);
        assert!(!t.due(false));
        t.wrote();
        assert!(t.due(false), "else a restore waits on it for ever");
        assert_eq!(offsets(t.commit()), (vec![], None));
    }

    #[test]
    fn the_interval_ends_a_transaction() {
        let mut t = OpenTransaction::new(Duration::ZERO, 100);
        t.handed(0, 0);
        assert!(t.due(false));
        t.rewound(4);
        assert!(matches!(t.take_rewound(), Some(SinkItem::Rewound(4))));
        assert!(t.take_rewound().is_none());
    }
}
