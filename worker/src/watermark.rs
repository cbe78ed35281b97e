//! The event-time watermark: the latest event time seen on each input
//! partition, and the slowest live partition's as the point every
//! partition has passed. Scoring caps the feature engine's eviction clock
//! by it (over the consumer's assignment); drift closes its slices by it
//! (scoring's, handed over with each batch, or its own over the partitions
//! it has seen when it runs alone, as `riskstream drift` does).
//!
//! Partitions are Kafka's (small, from 0): the clocks are a table indexed
//! by partition, so noting a record reads no clock and hashes nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Event-time progress of one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The latest event time seen.
    newest: i64,
    /// Seen since the wall clock was last stamped.
    touched: bool,
    /// When (wall clock) it was last seen.
    seen: Instant,
}

/// The latest event time of every input partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionClocks {
    /// By partition; None: not seen. (Crate-visible so that scoring can
    /// build one around its assignment with `..Default::default()`.)
    pub(crate) clocks: Vec<Option<Clock>>,
    /// When an assigned partition was first found without records.
    pub(crate) unseen_since: std::collections::HashMap<i32, Instant>,
    /// The consumer's assignment (shared with its rebalance callbacks).
    pub assigned: Arc<Mutex<Vec<i32>>>,
}

impl PartitionClocks {
    /// An assigned partition silent this long stops holding the assignment's
    /// watermark back.
    pub const SILENT: Duration = Duration::from_secs(600);

    fn slot(&mut self, partition: i32) -> Option<&mut Option<Clock>> {
        let i = usize::try_from(partition).ok()?;
        if i >= self.clocks.len() {
            self.clocks.resize(i + 1, None);
        }
        self.clocks.get_mut(i)
    }

    /// Notes a record; the wall clock of its partition is stamped by the
    /// next [`Self::watermark`]. A partition below zero (not Kafka's) is
    /// ignored.
    #[inline]
    pub fn saw(&mut self, partition: i32, event_time: i64) {
        match self.slot(partition) {
            Some(Some(c)) => {
                c.newest = c.newest.max(event_time);
                c.touched = true;
            }
            Some(slot) => {
                *slot = Some(Clock {
                    newest: event_time,
                    touched: true,
                    seen: Instant::now(),
                })
            }
            None => {}
        }
    }

    /// Notes a record seen at `now` (wall clock).
    #[inline]
    pub fn saw_at(&mut self, partition: i32, event_time: i64, now: Instant) {
        if let Some(slot) = self.slot(partition) {
            let c = slot.get_or_insert(Clock {
                newest: event_time,
                touched: false,
                seen: now,
            });
            c.newest = c.newest.max(event_time);
            c.seen = now;
        }
    }

    /// The assignment's watermark: the slowest live assigned partition's
    /// latest event time; `i64::MIN` (nothing passed) while an assigned
    /// partition has not been seen yet; None when none is live.
    pub fn watermark(&mut self) -> Option<i64> {
        let assigned = self.assigned.lock().map(|a| a.clone()).unwrap_or_default();
        let now = Instant::now();
        for c in self.clocks.iter_mut().flatten() {
            if std::mem::take(&mut c.touched) {
                c.seen = now;
            }
        }
        let mut wm: Option<i64> = None;
        for p in assigned {
            let clock = usize::try_from(p)
                .ok()
                .and_then(|i| self.clocks.get(i).copied().flatten());
            match clock {
                Some(c) if now.duration_since(c.seen) < Self::SILENT => {
                    wm = Some(wm.map_or(c.newest, |w| w.min(c.newest)));
                }
                Some(_) => {}
                None => {
                    let since = *self.unseen_since.entry(p).or_insert_with(Instant::now);
                    if since.elapsed() < Self::SILENT {
                        return Some(i64::MIN);
                    }
                }
            }
        }
        wm
    }

    /// The watermark of the partitions seen (no assignment): the slowest
    /// one's latest event time among those seen within `idle` of `now`
    /// and not behind `floor`; None when none is.
    pub fn slowest_seen(&self, now: Instant, idle: Duration, floor: i64) -> Option<i64> {
        self.clocks
            .iter()
            .flatten()
            .filter(|c| c.newest >= floor && now.duration_since(c.seen) <= idle)
            .map(|c| c.newest)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_live_partition_holds_the_watermark() {
        let mut c = PartitionClocks::default();
        *c.assigned.lock().unwrap() = vec![0, 1];
        c.saw(0, 100);
        // Partition 1 is assigned but not seen: nothing has passed.
        assert_eq!(c.watermark(), Some(i64::MIN));
        c.saw(1, 50);
        c.saw(0, 200);
        assert_eq!(c.watermark(), Some(50));
        // Without an assignment: the partitions seen, idle ones and those
        // behind the floor left out.
        let t = Instant::now();
        let mut d = PartitionClocks::default();
        d.saw_at(0, 100, t);
        d.saw_at(3, 40, t);
        assert_eq!(d.slowest_seen(t, Duration::from_secs(30), 0), Some(40));
        assert_eq!(d.slowest_seen(t, Duration::from_secs(30), 50), Some(100));
        let later = t + Duration::from_secs(31);
        d.saw_at(0, 120, later);
        assert_eq!(d.slowest_seen(later, Duration::from_secs(30), 0), Some(120));
        d.saw(-1, 0);
        assert_eq!(d.slowest_seen(later, Duration::from_secs(30), 0), Some(120));
    }
}
