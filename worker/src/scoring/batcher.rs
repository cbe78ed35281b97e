//! The size-or-linger batcher: gathers up to `batch_max` records, or what
//! arrived within `linger` of the batch's first record, or what was there
//! when the source said it had nothing more buffered ([`Work::Drained`]).
//!
//! It reads time only through a [`Clock`] and records only through a
//! [`WorkSource`], so its tests run under a paused clock that moves only
//! while the batcher waits (no broker, no sleeps).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use crate::message::{Incoming, Work};

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
    fn recv_timeout(&mut self, d: Duration) -> Result<Work, RecvTimeoutError>;
    /// The next item if one is there now.
    fn try_recv(&mut self) -> Result<Work, TryRecvError>;
    /// Items already unpacked and waiting here (not in the channel).
    fn has_pending(&self) -> bool;
}

/// The scoring stage's end of the source channel: unpacks [`Work::Many`].
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Work>,
    pending: VecDeque<Work>,
}

impl Inbox {
    pub fn new(rx: Receiver<Work>) -> Self {
        Self {
            rx,
            pending: VecDeque::new(),
        }
    }

    fn unpack(&mut self, w: Work) -> Work {
        match w {
            Work::Many(items) => {
                self.pending.extend(items);
                self.pending.pop_front().unwrap_or(Work::Many(Vec::new()))
            }
            w => w,
        }
    }
}

impl WorkSource for Inbox {
    fn recv_timeout(&mut self, d: Duration) -> Result<Work, RecvTimeoutError> {
        match self.pending.pop_front() {
            Some(w) => Ok(w),
            None => self.rx.recv_timeout(d).map(|w| self.unpack(w)),
        }
    }

    fn try_recv(&mut self) -> Result<Work, TryRecvError> {
        match self.pending.pop_front() {
            Some(w) => Ok(w),
            None => self.rx.try_recv().map(|w| self.unpack(w)),
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
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
    /// into state (no output) and state ownership changes go to `side` as
    /// they come, in order with the records.
    pub fn gather(
        &self,
        inbox: &mut impl WorkSource,
        clock: &impl Clock,
        batch: &mut Vec<Incoming>,
        side: &mut impl FnMut(Work),
    ) -> Gathered {
        // The first record: wait for it, replaying history meanwhile.
        loop {
            match inbox.recv_timeout(self.idle) {
                Ok(Work::Score(i)) => {
                    batch.push(i);
                    break;
                }
                Ok(w @ (Work::Replay(..) | Work::State(_))) => side(w),
                // Only an empty `Many` can get here: nothing to do.
                Ok(Work::Many(_) | Work::Drained) => {}
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
                Ok(Work::Score(i)) => batch.push(i),
                Ok(w @ (Work::Replay(..) | Work::State(_))) => side(w),
                Ok(Work::Many(_)) => {}
                // The source has nothing more: score what we have now.
                Ok(Work::Drained) if !inbox.has_pending() => break,
                Ok(Work::Drained) => {}
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
    use crate::codec::Transaction;
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
        pending: VecDeque<Work>,
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

        fn take(&mut self) -> Work {
            let (_, w) = self.items.pop_front().expect("an item is due");
            match w {
                Work::Many(v) => {
                    self.pending.extend(v);
                    self.pending.pop_front().unwrap_or(Work::Drained)
                }
                w => w,
            }
        }
    }

    impl WorkSource for Script {
        fn recv_timeout(&mut self, d: Duration) -> Result<Work, RecvTimeoutError> {
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

        fn try_recv(&mut self) -> Result<Work, TryRecvError> {
            self.recv_timeout(Duration::ZERO).map_err(|e| match e {
                RecvTimeoutError::Timeout => TryRecvError::Empty,
                RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
            })
        }

        fn has_pending(&self) -> bool {
            !self.pending.is_empty()
        }
    }

    fn paused() -> Paused {
        Paused {
            t0: Instant::now(),
            now: Rc::new(Cell::new(Duration::ZERO)),
        }
    }

    /// A record consumed at `ms` on the paused clock.
    fn rec(clock: &Paused, ms: u64, offset: i64) -> Work {
        Work::Score(Incoming {
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
        let burst = Work::Many(vec![rec(&c, 0, 0), rec(&c, 0, 1), Work::Drained]);
        let mut s = Script::new(&c, vec![(0, burst), (50, rec(&c, 50, 2))], false);
        let b = Batcher::new(100, Duration::from_millis(20));
        assert_eq!(gather(&b, &mut s, &c).1, vec![0, 1]);
        assert_eq!(c.now.get(), Duration::ZERO, "no linger wait after Drained");
    }

    #[test]
    fn a_drained_marker_with_records_behind_it_does_not_cut_the_batch() {
        let c = paused();
        let burst = Work::Many(vec![rec(&c, 0, 0), Work::Drained, rec(&c, 0, 1)]);
        let mut s = Script::new(&c, vec![(0, burst)], false);
        let b = Batcher::new(100, Duration::from_millis(5));
        assert_eq!(gather(&b, &mut s, &c).1, vec![0, 1]);
    }

    #[test]
    fn replays_are_applied_while_gathering_and_idle_and_close_are_reported() {
        let c = paused();
        let tx = match rec(&c, 0, 9) {
            Work::Score(i) => i.tx,
            _ => unreachable!(),
        };
        let items = vec![
            (0, Work::Replay(0, tx.clone())),
            (1, rec(&c, 1, 0)),
            (2, Work::Replay(0, tx)),
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
}
