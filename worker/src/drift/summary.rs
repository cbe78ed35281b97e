//! Mergeable summaries of drift windows. The unit is a quarter of an
//! event-time hour (a [`Slice`]): per watched variable, the count, sum and
//! sum of squares (mean tests) and the counts on the reference's bins
//! (distribution test). Every window is the sum of its slices, and the
//! summaries of several instances for the same slice add up the same way,
//! so a verdict on merged slices is the verdict on all the traffic.

use serde::{Deserialize, Serialize};

/// One hour of event time, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One slice of event time (a quarter of an hour): windows end on every slice.
pub const SLICE_MS: i64 = 900_000;
/// Slices per hour.
pub const SLICES_PER_HOUR: i64 = HOUR_MS / SLICE_MS;
/// Hours in a week: the buckets of the weekly profile.
pub const HOURS_PER_WEEK: usize = 168;

/// The hour (since the Unix epoch) that holds `event_time_ms`.
pub fn hour_index(event_time_ms: i64) -> i64 {
    event_time_ms.div_euclid(HOUR_MS)
}

/// The slice (since the Unix epoch) that holds `event_time_ms`.
pub fn slice_index(event_time_ms: i64) -> i64 {
    event_time_ms.div_euclid(SLICE_MS)
}

/// The hour (since the epoch) a slice belongs to.
pub fn hour_of_slice(slice: i64) -> i64 {
    slice.div_euclid(SLICES_PER_HOUR)
}

/// Hour of the day, 0..24 (UTC, like the features' night flag).
pub fn hour_of_day(hour: i64) -> usize {
    hour.rem_euclid(24) as usize
}

/// Hour of the week, 0..168, from Monday 00:00 UTC (1970-01-01 was a Thursday).
pub fn hour_of_week(hour: i64) -> usize {
    (hour + 72).rem_euclid(HOURS_PER_WEEK as i64) as usize
}

/// Count, sum, sum of squares and bin counts of one variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VarSummary {
    pub n: u64,
    pub sum: f64,
    pub sumsq: f64,
    /// Counts on the reference's bins; empty when the variable has no bins test.
    pub bins: Vec<u64>,
}

impl VarSummary {
    pub fn with_bins(n_bins: usize) -> Self {
        Self {
            bins: vec![0; n_bins],
            ..Self::default()
        }
    }

    /// Adds one value; `bin` is its bin index when the variable has bins.
    #[inline]
    pub fn add(&mut self, x: f64, bin: Option<usize>) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
        if let Some(c) = bin.and_then(|b| self.bins.get_mut(b)) {
            *c += 1;
        }
    }

    /// Adds another summary of the same variable (another hour or instance).
    pub fn merge(&mut self, o: &VarSummary) {
        self.n += o.n;
        self.sum += o.sum;
        self.sumsq += o.sumsq;
        if self.bins.len() < o.bins.len() {
            self.bins.resize(o.bins.len(), 0);
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a += b;
        }
    }

    /// Takes away a summary merged earlier (a slice leaving a window).
    pub fn subtract(&mut self, o: &VarSummary) {
        self.n = self.n.saturating_sub(o.n);
        self.sum -= o.sum;
        self.sumsq -= o.sumsq;
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a = a.saturating_sub(*b);
        }
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.sum / self.n as f64
        }
    }
}

/// One slice of event time: a summary per watched variable, in the
/// monitor's variable order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// Slice index since the epoch ([`slice_index`]).
    pub index: i64,
    pub records: u64,
    pub vars: Vec<VarSummary>,
}

impl Slice {
    /// An empty slice with `bins[i]` bins for variable i.
    pub fn empty(index: i64, bins: &[usize]) -> Self {
        Self {
            index,
            records: 0,
            vars: bins.iter().map(|&b| VarSummary::with_bins(b)).collect(),
        }
    }

    /// Adds another summary of the same slice and variables.
    pub fn merge(&mut self, o: &Slice) {
        self.records += o.records;
        for (a, b) in self.vars.iter_mut().zip(&o.vars) {
            a.merge(b);
        }
    }
}

/// A deterministic uniform draw in [0, 1) (splitmix64 of i and salt), for
/// the drift modules' tests.
#[cfg(test)]
pub(crate) fn test_uniform(i: u64, salt: u64) -> f64 {
    let mut x = i
        .wrapping_add(salt.wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_summaries_equal_the_summary_of_all_values() {
        let values: Vec<(f64, usize)> = (0..100u32)
            .map(|i| (f64::from(i) * 0.5, (i % 4) as usize))
            .collect();
        let mut all = VarSummary::with_bins(4);
        let (mut a, mut b) = (VarSummary::with_bins(4), VarSummary::with_bins(4));
        for (k, (x, bin)) in values.iter().enumerate() {
            all.add(*x, Some(*bin));
            if k % 3 == 0 { &mut a } else { &mut b }.add(*x, Some(*bin));
        }
        a.merge(&b);
        assert_eq!(a.n, all.n);
        assert_eq!(a.bins, all.bins);
        assert!((a.sum - all.sum).abs() < 1e-9 && (a.sumsq - all.sumsq).abs() < 1e-6);
        assert!((a.mean() - 24.75).abs() < 1e-12);
    }

    #[test]
    fn calendar_buckets_follow_utc() {
        // 2018-08-20 was a Monday.
        let monday = hour_index(1_534_723_200_000);
        assert_eq!(hour_of_week(monday), 0);
        assert_eq!(hour_of_week(monday + 5 * 24 + 13), 5 * 24 + 13);
        assert_eq!(hour_of_day(monday + 30), 6);
        assert_eq!(hour_index(-1), -1);
        assert_eq!(
            hour_of_slice(slice_index(1_534_723_200_000 + 59 * 60_000)),
            monday
        );
        assert_eq!(slice_index(1_534_723_200_000 + 15 * 60_000), 4 * monday + 1);
    }
}
