//! Input guard: the bounds a decoded transaction must meet before it may
//! touch state, beyond what the schema can say.
//!
//! - amounts: finite, not negative (the codec), at most `max_amount`;
//! - ids: at most `max_id_bytes` bytes each (state is keyed by them);
//! - event times: not before `event_time_min`, not more than
//!   `event_time_max_future` ahead of the wall clock, and not more than
//!   `event_time_max_ahead` ahead of the partition's event-time clock, so no
//!   single record can move eviction or drift windows. A partition whose
//!   records really jumped ahead (a replay with a gap) is resynchronised
//!   after `resync_after` consecutive far-ahead records, counted and logged.
//!
//! Every refusal is a [`DecodeError`] with a stable reason: the record goes
//! to the dead-letter topic like any other bad record.

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

use std::time::Duration;

use crate::codec::{DecodeError, Transaction};

/// The resolved bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLimits {
    /// Largest accepted amount (default 1,000,000: the handbook's largest is
    /// a few hundred; sums over 30 days of such amounts stay finite).
    pub max_amount: f64,
    /// Longest transaction, customer or terminal id, in bytes (default 1,024).
    pub max_id_bytes: usize,
    /// Earliest accepted event time, epoch ms (default 2000-01-01T00:00Z).
    pub event_time_min_ms: i64,
    /// Furthest ahead of the wall clock (default 1 day; 0 = unchecked).
    pub event_time_max_future: Duration,
    /// Furthest ahead of the partition's event-time clock (default 7 days;
    /// 0 = unchecked).
    pub event_time_max_ahead: Duration,
    /// Consecutive far-ahead records after which a partition's clock jumps
    /// to them (default 1,000).
    pub resync_after: u32,
}

/// 2000-01-01T00:00:00Z in epoch milliseconds.
pub const Y2000_MS: i64 = 946_684_800_000;

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_amount: Self::DEFAULT_MAX_AMOUNT,
            max_id_bytes: Self::DEFAULT_MAX_ID_BYTES,
            event_time_min_ms: Self::DEFAULT_EVENT_TIME_MIN_MS,
            event_time_max_future: Self::DEFAULT_EVENT_TIME_MAX_FUTURE,
            event_time_max_ahead: Self::DEFAULT_EVENT_TIME_MAX_AHEAD,
            resync_after: Self::DEFAULT_RESYNC_AFTER,
        }
    }
}

impl InputLimits {
    pub const DEFAULT_MAX_AMOUNT: f64 = 1_000_000.0;
    pub const DEFAULT_MAX_ID_BYTES: usize = 1024;
    pub const DEFAULT_EVENT_TIME_MIN_MS: i64 = Y2000_MS;
    pub const DEFAULT_EVENT_TIME_MAX_FUTURE: Duration = Duration::from_secs(86_400);
    pub const DEFAULT_EVENT_TIME_MAX_AHEAD: Duration = Duration::from_secs(7 * 86_400);
    pub const DEFAULT_RESYNC_AFTER: u32 = 1000;
}

/// Per-partition event-time clock of the guard.
#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    /// Latest accepted event time.
    latest: i64,
    /// Consecutive records refused for being far ahead, and the earliest of them.
    ahead_run: u32,
    ahead_min: i64,
}

/// What a check decided beyond accept/refuse (for counters and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    No,
    /// The partition's clock jumped forward after a run of far-ahead records.
    Jumped {
        partition: i32,
        by_ms: i64,
    },
}

/// The guard itself: limits plus one clock per input partition.
#[derive(Debug)]
pub struct InputGuard {
    limits: InputLimits,
    clocks: HashMap<i32, Clock>,
}

fn too_long(field: &'static str, len: usize, max: usize) -> DecodeError {
    DecodeError::Invalid {
        field,
        detail: format!("{len} bytes, longer than the {max}-byte limit (max_id_bytes)"),
    }
}

impl InputGuard {
    pub fn new(limits: InputLimits) -> Self {
        Self {
            limits,
            clocks: HashMap::default(),
        }
    }

    /// Checks `tx` from `partition` at wall-clock time `now_ms`; on success
    /// the partition's clock has advanced to it.
    pub fn check(
        &mut self,
        partition: i32,
        tx: &Transaction,
        now_ms: i64,
    ) -> Result<Resync, DecodeError> {
        let l = &self.limits;
        for (field, id) in [
            ("transaction_id", &tx.transaction_id),
            ("customer_id", &tx.customer_id),
            ("terminal_id", &tx.terminal_id),
        ] {
            if id.len() > l.max_id_bytes {
                return Err(too_long(field, id.len(), l.max_id_bytes));
            }
        }
        if tx.currency.len() > l.max_id_bytes {
            return Err(too_long("currency", tx.currency.len(), l.max_id_bytes));
        }
        // The codec already refused non-finite and negative amounts.
        // NaN never gets here (the codec refused it), so `>` is the whole test.
        if tx.amount > l.max_amount || tx.amount.is_nan() {
            return Err(DecodeError::InvalidAmount(format!(
                "{} is above the maximum {} (max_amount)",
                tx.amount, l.max_amount
            )));
        }
        let t = tx.event_time;
        if t < l.event_time_min_ms {
            return Err(DecodeError::EventTimeOutOfRange(format!(
                "{t} is before the earliest accepted time {} (event_time_min_ms)",
                l.event_time_min_ms
            )));
        }
        let future = l.event_time_max_future.as_millis() as i64;
        if future > 0 && t > now_ms.saturating_add(future) {
            return Err(DecodeError::EventTimeOutOfRange(format!(
                "{t} is {} ms ahead of the wall clock (event_time_max_future_ms {future})",
                t - now_ms
            )));
        }
        let ahead = l.event_time_max_ahead.as_millis() as i64;
        let resync_after = l.resync_after;
        let clock = self.clocks.entry(partition).or_default();
        if clock.latest == 0 || ahead == 0 || t <= clock.latest.saturating_add(ahead) {
            clock.latest = clock.latest.max(t);
            clock.ahead_run = 0;
            return Ok(Resync::No);
        }
        // Far ahead of this partition's clock.
        clock.ahead_min = if clock.ahead_run == 0 {
            t
        } else {
            clock.ahead_min.min(t)
        };
        clock.ahead_run += 1;
        if clock.ahead_run >= resync_after {
            let by_ms = clock.ahead_min - clock.latest;
            clock.latest = clock
                .ahead_min
                .max(t.min(clock.ahead_min.saturating_add(ahead)));
            clock.ahead_run = 0;
            return Ok(Resync::Jumped { partition, by_ms });
        }
        Err(DecodeError::EventTimeOutOfRange(format!(
            "{t} is {} ms ahead of partition {partition}'s event-time clock {} (event_time_max_ahead_ms {ahead})",
            t - clock.latest,
            clock.latest
        )))
    }

    /// Forgets the clocks of partitions no longer assigned.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.clocks.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_522_540_800_000; // 2018-04-01

    fn tx(t: i64, amount: f64) -> Transaction {
        Transaction {
            transaction_id: "1".into(),
            event_time: t,
            customer_id: "c".into(),
            terminal_id: "t".into(),
            amount,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn handbook_times_and_amounts_pass_at_any_wall_clock() {
        let mut g = InputGuard::new(InputLimits::default());
        let now = T0 + 3000 * DAY; // replaying 2018 data years later
        for d in 0..183 {
            assert_eq!(g.check(0, &tx(T0 + d * DAY, 57.0), now), Ok(Resync::No));
        }
    }

    #[test]
    fn absurd_amounts_are_refused_with_their_reason() {
        let mut g = InputGuard::new(InputLimits::default());
        let e = g.check(0, &tx(T0, 1e308), T0).unwrap_err();
        assert_eq!(e.reason(), "invalid_amount");
        assert!(g.check(0, &tx(T0, 1_000_000.0), T0).is_ok());
    }

    #[test]
    fn far_future_and_ancient_times_are_refused_and_do_not_move_the_clock() {
        let mut g = InputGuard::new(InputLimits::default());
        assert!(g.check(0, &tx(T0, 1.0), T0).is_ok());
        let year_3000 = 32_503_680_000_000;
        let e = g.check(0, &tx(year_3000, 1.0), T0).unwrap_err();
        assert_eq!(e.reason(), "event_time_out_of_range");
        assert_eq!(
            g.check(0, &tx(1000, 1.0), T0).unwrap_err().reason(),
            "event_time_out_of_range"
        );
        // Even with the wall-clock bound off, the partition clock refuses it.
        let mut g = InputGuard::new(InputLimits {
            event_time_max_future: Duration::ZERO,
            ..InputLimits::default()
        });
        assert!(g.check(0, &tx(T0, 1.0), T0).is_ok());
        assert!(g.check(0, &tx(year_3000, 1.0), T0).is_err());
        assert!(g.check(0, &tx(T0 + DAY, 1.0), T0).is_ok());
        assert_eq!(
            g.clocks[&0].latest,
            T0 + DAY,
            "the refused record moved nothing"
        );
        // Another partition has its own clock.
        assert!(g.check(1, &tx(T0 + 100 * DAY, 1.0), T0).is_ok());
    }

    #[test]
    fn a_real_jump_resynchronises_after_a_run() {
        let mut g = InputGuard::new(InputLimits {
            resync_after: 3,
            ..InputLimits::default()
        });
        let now = T0 + 1000 * DAY;
        assert!(g.check(0, &tx(T0, 1.0), now).is_ok());
        let later = T0 + 30 * DAY;
        assert!(g.check(0, &tx(later, 1.0), now).is_err());
        assert!(g.check(0, &tx(later + 1, 1.0), now).is_err());
        assert_eq!(
            g.check(0, &tx(later + 2, 1.0), now),
            Ok(Resync::Jumped {
                partition: 0,
                by_ms: 30 * DAY
            })
        );
        assert_eq!(g.check(0, &tx(later + 3, 1.0), now), Ok(Resync::No));
    }

    #[test]
    fn long_ids_are_refused() {
        let mut g = InputGuard::new(InputLimits::default());
        let mut t = tx(T0, 1.0);
        t.transaction_id = "x".repeat(999_950);
        let e = g.check(0, &t, T0).unwrap_err();
        assert_eq!(e.reason(), "invalid_field");
        assert!(e.to_string().contains("transaction_id"), "{e}");
    }
}
