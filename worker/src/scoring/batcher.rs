//! The size-or-linger batcher: gathers up to `batch_max` records, or what
//! arrived within `linger` of the batch's first record, or what was there
//! when the source said it had nothing more buffered (`drained` of
//! [`Work::Records`]).
//!
//! It reads time only through a [`Clock`] and records only through a
//! [`WorkSource`], so its tests run under a paused clock that moves only
//! while the batcher waits (no broker, no sleeps).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use crate::codec::Transaction;
use crate::message::{DeadLetter, Incoming, Record, StateOp, Work};

/// What the batcher takes from the source channel, one at a time.
#[derive(Debug)]
pub enum Item {
    Score(Incoming),
    /// Not scored: applied to state in order with the records.
    Side(Side),
    /// The source had nothing more buffered at this point.
    Drained,
}

/// What the scoring stage applies to state between records.
#[derive(Debug)]
pub enum Side {
    /// An earlier record of this partition, into customer state (no output).
    Replay(i32, Transaction),
    /// A record the source could not decode or accept: its dead letter.
    Dead(DeadLetter),
    State(StateOp),
}

/// Unpacks one message of the source channel into `pending`.
fn unpack(w: Work, pending: &mut VecDeque<Item>) {
    match w {
        Work::Records { records, drained } => {
            pending.extend(records.into_iter().map(|r| match r {
                Record::Score(i) => Item::Score(i),
                Record::Replay(p, tx) => Item::Side(Side::Replay(p, tx)),
                Record::Dead(d) => Item::Side(Side::Dead(d)),
            }));
            if drained {
                pending.push_back(Item::Drained);
            }
        }
        Work::State(op) => pending.push_back(Item::Side(Side::State(op))),
    }
}

/// Where the batcher reads the time.
pub trait Clock {
    fn now(&self) -> Instant;
}

/// The monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Where the batcher takes records from.
pub trait WorkSource {
    /// The next item, waiting at most `d`.
    fn recv_timeout(&mut self, d: Duration) -> Result<Item, RecvTimeoutError>;
    /// The next item if one is there now.
    fn try_recv(&mut self) -> Result<Item, TryRecvError>;
    /// Items already unpacked and waiting here (not in the channel).
    fn has_pending(&self) -> bool;
    /// `item` is the next one again.
    fn put_back(&mut self, item: Item);
}

/// The scoring stage's end of the source channel: unpacks [`Work`] into
/// [`Item`]s.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Work>,
    pending: VecDeque<Item>,
}

impl Inbox {
    pub fn new(rx: Receiver<Work>) -> Self {
        Self {
            rx,
            pending: VecDeque::new(),
        }
    }
}

impl WorkSource for Inbox {
    fn recv_timeout(&mut self, d: Duration) -> Result<Item, RecvTimeoutError> {
        loop {
            if let Some(i) = self.pending.pop_front() {
                return Ok(i);
            }
            unpack(self.rx.recv_timeout(d)?, &mut self.pending);
        }
    }

    fn try_recv(&mut self) -> Result<Item, TryRecvError> {
        loop {
            if let Some(i) = self.pending.pop_front() {
                return Ok(i);
            }
            unpack(self.rx.try_recv()?, &mut self.pending);
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn put_back(&mut self, item: Item) {
        self.pending.push_front(item);
    }
}

/// What one call to [`Batcher::gather`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// A batch is ready (the input may have closed right after it: `open`).
    Batch { open: bool },
    /// Nothing arrived within the idle wait (a moment to fold in labels).
    Idle,
    /// The input closed with nothing gathered.
    Closed,
}

/// Size-or-linger batching.
#[derive(Debug, Clone, Copy)]
pub struct Batcher {
    pub batch_max: usize,
    pub linger: Duration,
    /// Longest to wait for a batch's first record before reporting
    /// [`Gathered::Idle`].
    pub idle: Duration,
}

impl Batcher {
    pub const IDLE: Duration = Duration::from_millis(50);

    pub fn new(batch_max: usize, linger: Duration) -> Self {
        Self {
            batch_max,
            linger,
            idle: Self::IDLE,
        }
    }

    /// Gathers one batch into `batch` (empty on entry). Records to replay
    /// into state (no output) and dead letters go to `side` as they come;
    /// a state change ends a batch that holds records (it is applied at the
    /// start of the next one), so every record before it is scored first.
    pub fn gather(
        &self,
        inbox: &mut impl WorkSource,
        clock: &impl Clock,
        batch: &mut Vec<Incoming>,
        side: &mut impl FnMut(Side),
    ) -> Gathered {
        // The first record: wait for it, replaying history meanwhile.
        loop {
            match inbox.recv_timeout(self.idle) {
                Ok(Item::Score(i)) => {
                    batch.push(i);
                    break;
                }
                Ok(Item::Side(s)) => side(s),
                Ok(Item::Drained) => {}
                Err(RecvTimeoutError::Timeout) => return Gathered::Idle,
                Err(RecvTimeoutError::Disconnected) => return Gathered::Closed,
            }
        }
        let deadline = batch[0].consumed_at + self.linger;
        while batch.len() < self.batch_max {
            let wait = deadline.saturating_duration_since(clock.now());
            let got = if wait.is_zero() {
                inbox.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                inbox.recv_timeout(wait)
            };
            match got {
                Ok(Item::Score(i)) => batch.push(i),
                Ok(Item::Side(s @ Side::State(_))) => {
                    inbox.put_back(Item::Side(s));
                    break;
                }
                Ok(Item::Side(s)) => side(s),
                // The source has nothing more: score what we have now.
                Ok(Item::Drained) if !inbox.has_pending() => break,
                Ok(Item::Drained) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Gathered::Batch { open: false },
            }
        }
        Gathered::Batch { open: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A paused clock: time moves only when the batcher waits.
    #[derive(Clone)]
    struct Paused {
        t0: Instant,
        now: Rc<Cell<Duration>>,
    }

    impl Clock for Paused {
        fn now(&self) -> Instant {
            self.t0 + self.now.get()
        }
    }

    /// Items that arrive at given times on the paused clock; the channel
    /// closes after the last one when `close` is set.
    struct Script {
        clock: Paused,
        items: VecDeque<(Duration, Work)>,
        close: bool,
        pending: VecDeque<Item>,
    }

    impl Script {
        fn new(clock: &Paused, items: Vec<(u64, Work)>, close: bool) -> Self {
            Self {
                clock: clock.clone(),
                items: items
                    .into_iter()
                    .map(|(ms, w)| (Duration::from_millis(ms), w))
                    .collect(),
                close,
                pending: VecDeque::new(),
            }
        }

        fn take(&mut self) -> Item {
            let (_, w) = self.items.pop_front().expect("an item is due");
            unpack(w, &mut self.pending);
            self.pending.pop_front().unwrap_or(Item::Drained)
        }
    }

    impl WorkSource for Script {
        fn recv_timeout(&mut self, d: Duration) -> Result<Item, RecvTimeoutError> {
            if let Some(w) = self.pending.pop_front() {
                return Ok(w);
            }
            let now = self.clock.now.get();
            match self.items.front() {
                Some((at, _)) if *at <= now + d => {
                    self.clock.now.set((*at).max(now));
                    Ok(self.take())
                }
                None if self.close => Err(RecvTimeoutError::Disconnected),
                _ => {
                    self.clock.now.set(now + d);
                    Err(RecvTimeoutError::Timeout)
                }
            }
        }

        fn try_recv(&mut self) -> Result<Item, TryRecvError> {
            self.recv_timeout(Duration::ZERO).map_err(|e| match e {
                RecvTimeoutError::Timeout => TryRecvError::Empty,
                RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
            })
        }

        fn has_pending(&self) -> bool {
            !self.pending.is_empty()
        }

        fn put_back(&mut self, item: Item) {
            self.pending.push_front(item);
        }
    }

    fn paused() -> Paused {
        Paused {
            t0: Instant::now(),
            now: Rc::new(Cell::new(Duration::ZERO)),
        }
    }

    /// One record consumed at `ms` on the paused clock, handed over alone.
    fn rec(clock: &Paused, ms: u64, offset: i64) -> Work {
        records(vec![score(clock, ms, offset)], false)
    }

    fn records(records: Vec<Record>, drained: bool) -> Work {
        Work::Records { records, drained }
    }

    /// A record consumed at `ms` on the paused clock.
    fn score(clock: &Paused, ms: u64, offset: i64) -> Record {
        Record::Score(Incoming {
            partition: 0,
            offset,
            tx: Transaction {
                transaction_id: offset.to_string(),
                event_time: 1_600_000_000_000,
                customer_id: "c".into(),
                terminal_id: "t".into(),
                amount: 1.0,
                currency: "EUR".into(),
            },
            consumed_at: clock.t0 + Duration::from_millis(ms),
            produced_at: None,
        })
    }

    fn gather(b: &Batcher, s: &mut Script, clock: &Paused) -> (Gathered, Vec<i64>, usize) {
        let mut batch = Vec::new();
        let mut replayed = 0;
        let g = b.gather(s, clock, &mut batch, &mut |_| replayed += 1);
        (g, batch.iter().map(|i| i.offset).collect(), replayed)
    }

    #[test]
    fn a_full_batch_is_scored_at_once() {
        let c = paused();
        let items = (0..5).map(|o| (0, rec(&c, 0, o))).collect();
        let mut s = Script::new(&c, items, false);
        let b = Batcher::new(3, Duration::from_millis(5));
        assert_eq!(
            gather(&b, &mut s, &c),
            (Gathered::Batch { open: true }, vec![0, 1, 2], 0)
        );
        // No time passed: size, not linger, closed it.
        assert_eq!(c.now.get(), Duration::ZERO);
        assert_eq!(gather(&b, &mut s, &c).1, vec![3, 4]);
    }

    #[test]
    fn linger_closes_a_partial_batch_after_the_first_record_waited_it_out() {
        let c = paused();
        let items = vec![
            (10, rec(&c, 10, 0)),
            (13, rec(&c, 13, 1)),
            (40, rec(&c, 40, 2)),
        ];
        let mut s = Script::new(&c, items, false);
        let b = Batcher::new(100, Duration::from_millis(5));
        let (g, offsets, _) = gather(&b, &mut s, &c);
        assert_eq!((g, offsets), (Gathered::Batch { open: true }, vec![0, 1]));
        // Closed at the first record's consume time + linger, not later.
        assert_eq!(c.now.get(), Duration::from_millis(15));
        assert_eq!(gather(&b, &mut s, &c).1, vec![2]);
    }

    #[test]
    fn a_drained_burst_is_scored_without_waiting_for_the_linger() {
        let c = paused();
        let burst = records(vec![score(&c, 0, 0), score(&c, 0, 1)], true);
        let mut s = Script::new(&c, vec![(0, burst), (50, rec(&c, 50, 2))], false);
        let b = Batcher::new(100, Duration::from_millis(20));
        assert_eq!(gather(&b, &mut s, &c).1, vec![0, 1]);
        assert_eq!(c.now.get(), Duration::ZERO, "no linger wait after Drained");
    }

    #[test]
    fn a_burst_without_the_drained_mark_waits_out_the_linger() {
        let c = paused();
        let burst = records(vec![score(&c, 0, 0), score(&c, 0, 1)], false);
        let mut s = Script::new(&c, vec![(0, burst), (3, rec(&c, 3, 2))], false);
        let b = Batcher::new(100, Duration::from_millis(5));
        assert_eq!(gather(&b, &mut s, &c).1, vec![0, 1, 2]);
        assert_eq!(c.now.get(), Duration::from_millis(5));
    }

    #[test]
    fn replays_are_applied_while_gathering_and_idle_and_close_are_reported() {
        let c = paused();
        let tx = match score(&c, 0, 9) {
            Record::Score(i) => i.tx,
            _ => unreachable!(),
        };
        let items = vec![
            (0, records(vec![Record::Replay(0, tx.clone())], false)),
            (1, rec(&c, 1, 0)),
            (2, records(vec![Record::Replay(0, tx)], false)),
        ];
        let mut s = Script::new(&c, items, true);
        let b = Batcher::new(100, Duration::from_millis(5));
        assert_eq!(
            gather(&b, &mut s, &c),
            (Gathered::Batch { open: false }, vec![0], 2)
        );
        assert_eq!(gather(&b, &mut s, &c).0, Gathered::Closed);
        let mut s = Script::new(&c, vec![], false);
        let before = c.now.get();
        assert_eq!(gather(&b, &mut s, &c).0, Gathered::Idle);
        assert_eq!(c.now.get() - before, Batcher::IDLE);
    }

    #[test]
    fn a_state_change_ends_the_batch_and_opens_the_next_one() {
        let c = paused();
        let items = vec![
            (0, rec(&c, 0, 0)),
            (0, Work::State(StateOp::Revoke(vec![0]))),
            (0, rec(&c, 0, 1)),
        ];
        let mut s = Script::new(&c, items, true);
        let b = Batcher::new(100, Duration::from_millis(5));
        // Scored before the change is applied, without waiting the linger.
        assert_eq!(
            gather(&b, &mut s, &c),
            (Gathered::Batch { open: true }, vec![0], 0)
        );
        assert_eq!(c.now.get(), Duration::ZERO);
        // The change is applied first, then the record after it.
        assert_eq!(
            gather(&b, &mut s, &c),
            (Gathered::Batch { open: false }, vec![1], 1)
        );
    }
}
