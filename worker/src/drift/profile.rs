//! The time profile and calibration of a drift reference, built from the
//! training rows with their event times (`riskstream train`, `riskstream
//! models reference`):
//!
//! - **volume**: how the reference's records spread over the 168 hours of
//!   the week, so the expected value of a window follows the hours it covers;
//! - **cycles**: per variable, whether its mean depends on the hour of the
//!   day or of the week (an F-test on the reference); such variables are
//!   judged against the reference of the same hours (the night flag against
//!   the night hours' share of the traffic, not against the daily mean);
//! - **calibration**: per variable and window scale, the between-window
//!   variance of the mean beyond sampling noise (`tau2`) and the dispersion
//!   of the bins' χ² (mean and variance), measured on the windows of the
//!   reference period ending on every slice (quarter hour). Day-to-day variation of real traffic is larger than
//!   sampling noise; the thresholds account for it instead of a hand-set
//!   minimum effect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, FisherSnedecor};

use super::summary::{
    hour_index, hour_of_day, hour_of_slice, hour_of_week, slice_index, Slice, HOURS_PER_WEEK,
    SLICES_PER_HOUR,
};

/// Window scales (hours) calibrated when a reference is built; a configured
/// scale must be one of them.
pub const CALIBRATED_SCALES_H: [u64; 9] = [1, 2, 3, 4, 6, 8, 12, 24, 48];
/// Reference windows with fewer records are left out of the calibration.
pub const MIN_CALIBRATION_RECORDS: u64 = 30;
/// Smallest expected count per bin for the bins' χ² to be computed at all.
pub const MIN_EXPECTED_PER_BIN: f64 = 5.0;
/// Fewest reference windows that calibrate a bins test at a scale.
pub const MIN_CHI2_WINDOWS: u64 = 20;
/// A cycle is kept when its F-test p-value is below this (the reference
/// holds hundreds of thousands of rows: only clear cycles pass).
const CYCLE_PVALUE: f64 = 1e-9;

/// What a variable's mean depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cycle {
    None,
    /// The hour of the day (24 buckets).
    Daily,
    /// The hour of the week (168 buckets).
    Weekly,
}

impl Cycle {
    pub fn bucket(self, hour: i64) -> usize {
        match self {
            Cycle::None => 0,
            Cycle::Daily => hour_of_day(hour),
            Cycle::Weekly => hour_of_week(hour),
        }
    }
}

/// Count, mean and (population) variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub var: f64,
}

/// Calibration of one variable at one window scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleCalibration {
    pub scale_seconds: u64,
    /// Reference windows (one ending on every hour) used.
    pub windows: u64,
    /// Variance of a window's mean beyond sampling noise, in the variable's units².
    pub tau2: f64,
    /// Mean χ² of the bins over the degrees of freedom (1 without a bins test).
    pub phi: f64,
    /// Mean and variance of the bins' χ² over the reference windows large
    /// enough for the test (at least [`MIN_EXPECTED_PER_BIN`] expected per
    /// bin), and how many there were: the null is the χ² scaled to these
    /// two moments (Satterthwaite), which follows heavier tails than φ·χ².
    #[serde(default)]
    pub chi2_mean: f64,
    #[serde(default)]
    pub chi2_var: f64,
    #[serde(default)]
    pub chi2_windows: u64,
    /// Largest |z| (after calibration) and χ² over the reference windows (for reading).
    pub max_abs_z: f64,
    pub max_chi2: f64,
}

/// The profile of one watched variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarProfile {
    pub mean: f64,
    pub var: f64,
    /// Skewness of single values (the mean tests' thresholds correct for it).
    pub skew: f64,
    pub cycle: Cycle,
    /// Moments per bucket of the cycle (empty without one).
    pub buckets: Vec<Moments>,
    /// Bin edges and the reference's share per bin, for the distribution
    /// test (empty: binary or cyclic variables, judged by their mean).
    pub bin_edges: Vec<f64>,
    pub bin_shares: Vec<f64>,
    pub calibration: Vec<ScaleCalibration>,
}

impl VarProfile {
    pub fn has_bins(&self) -> bool {
        self.bin_shares.len() >= 2
    }

    pub fn calibration_at(&self, scale_seconds: u64) -> Option<&ScaleCalibration> {
        self.calibration
            .iter()
            .find(|c| c.scale_seconds == scale_seconds)
    }
}

/// The reference's profile: volume over the week and every variable's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Records per hour of the week, per occurrence of that hour in the
    /// reference period (168 values, Monday 00:00 UTC first).
    pub volume: Vec<f64>,
    pub first_hour: i64,
    pub last_hour: i64,
    pub vars: BTreeMap<String, VarProfile>,
}

/// One variable's training values with what its profile needs.
pub struct Column<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
    /// Bin edges of the reference (empty for binary variables).
    pub bin_edges: Vec<f64>,
    pub binary: bool,
}

/// Expected mean and per-record variance of a window under the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub mean: f64,
    pub var: f64,
}

impl Profile {
    /// Builds the profile of `columns` whose rows happened at `times` (ms).
    pub fn build(columns: &[Column<'_>], times: &[i64]) -> Self {
        let (first, last) = match (times.iter().min(), times.iter().max()) {
            (Some(a), Some(b)) => (hour_index(*a), hour_index(*b)),
            _ => (0, 0),
        };
        let hours: Vec<i64> = times.iter().map(|t| hour_index(*t)).collect();
        let volume = volume_of(&hours, first, last);
        let mut vars = BTreeMap::new();
        for c in columns {
            let vp = var_profile(c, &hours);
            vars.insert(c.name.to_string(), vp);
        }
        let mut p = Profile {
            volume,
            first_hour: first,
            last_hour: last,
            vars,
        };
        let slices = p.slices_of(columns, times);
        for (k, c) in columns.iter().enumerate() {
            let cal: Vec<ScaleCalibration> = CALIBRATED_SCALES_H
                .iter()
                .map(|&h| calibrate(&p, &p.vars[c.name], k, &slices, h))
                .collect();
            if let Some(v) = p.vars.get_mut(c.name) {
                v.calibration = cal;
            }
        }
        p
    }

    /// The reference period as slices (every one, empty ones included).
    fn slices_of(&self, columns: &[Column<'_>], times: &[i64]) -> Vec<Slice> {
        let bins: Vec<usize> = columns
            .iter()
            .map(|c| self.vars[c.name].bin_shares.len())
            .collect();
        let first = self.first_hour * SLICES_PER_HOUR;
        let last = (self.last_hour + 1) * SLICES_PER_HOUR - 1;
        let mut slices: Vec<Slice> = (first..=last).map(|i| Slice::empty(i, &bins)).collect();
        for (r, t) in times.iter().enumerate() {
            let s = &mut slices[(slice_index(*t) - first) as usize];
            s.records += 1;
            for (k, c) in columns.iter().enumerate() {
                let x = c.values[r];
                let vp = &self.vars[c.name];
                let bin = vp
                    .has_bins()
                    .then(|| super::stats::bin_of(&vp.bin_edges, x));
                s.vars[k].add(x, bin);
            }
        }
        slices
    }

    /// Expected mean and variance of `v` over the slices `slices`, weighting
    /// each by the reference's volume at its hour of the week.
    pub fn expected(&self, v: &VarProfile, slices: impl Iterator<Item = i64>) -> Expected {
        let mut m = Mixture::default();
        for i in slices {
            m.add(self.mixture_of(v, i));
        }
        m.expected(v)
    }

    /// One slice's share of [`Self::expected`]: its weight (the reference's
    /// volume at its hour of the week) and its bucket's weighted moments.
    /// Nothing for a variable without a cycle (its expectation is constant).
    pub fn mixture_of(&self, v: &VarProfile, slice: i64) -> Mixture {
        if v.cycle == Cycle::None || v.buckets.is_empty() {
            return Mixture::default();
        }
        let h = hour_of_slice(slice);
        let b = v
            .buckets
            .get(v.cycle.bucket(h))
            .copied()
            .unwrap_or_default();
        Mixture::part(self.volume_at(h), b.mean, b.var)
    }

    /// The reference's records per occurrence of `hour`'s hour of the week.
    fn volume_at(&self, hour: i64) -> f64 {
        self.volume.get(hour_of_week(hour)).copied().unwrap_or(0.0)
    }
}

/// Weighted first and second moments of a mixture of slices' buckets:
/// added as slices enter a window and subtracted as they leave.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mixture {
    w: f64,
    m1: f64,
    m2: f64,
}

impl Mixture {
    /// One part of weight `w` with this mean and variance.
    pub fn part(w: f64, mean: f64, var: f64) -> Self {
        Self {
            w,
            m1: w * mean,
            m2: w * (var + mean * mean),
        }
    }

    pub fn add(&mut self, o: Mixture) {
        self.w += o.w;
        self.m1 += o.m1;
        self.m2 += o.m2;
    }

    pub fn subtract(&mut self, o: Mixture) {
        self.w -= o.w;
        self.m1 -= o.m1;
        self.m2 -= o.m2;
    }

    /// The mixture's mean and variance; the variable's overall ones when
    /// the weights sum to nothing (no cycle, or hours the reference never saw).
    pub fn expected(&self, v: &VarProfile) -> Expected {
        if self.w <= 1e-12 {
            return Expected {
                mean: v.mean,
                var: v.var,
            };
        }
        let mean = self.m1 / self.w;
        Expected {
            mean,
            var: (self.m2 / self.w - mean * mean).max(0.0),
        }
    }
}

/// Records per hour of the week, per occurrence of that hour in `first..=last`.
fn volume_of(hours: &[i64], first: i64, last: i64) -> Vec<f64> {
    let mut count = vec![0u64; HOURS_PER_WEEK];
    let mut occurrences = vec![0u64; HOURS_PER_WEEK];
    for h in hours {
        count[hour_of_week(*h)] += 1;
    }
    for h in first..=last {
        occurrences[hour_of_week(h)] += 1;
    }
    count
        .iter()
        .zip(&occurrences)
        .map(|(&c, &o)| if o == 0 { 0.0 } else { c as f64 / o as f64 })
        .collect()
}

/// Moments of `values` grouped by `bucket`.
fn bucket_moments(values: &[f64], hours: &[i64], cycle: Cycle, n_buckets: usize) -> Vec<Moments> {
    let mut acc = vec![(0u64, 0.0f64, 0.0f64); n_buckets];
    for (x, h) in values.iter().zip(hours) {
        let a = &mut acc[cycle.bucket(*h)];
        a.0 += 1;
        a.1 += x;
        a.2 += x * x;
    }
    acc.into_iter()
        .map(|(n, s, s2)| {
            if n == 0 {
                return Moments::default();
            }
            let mean = s / n as f64;
            Moments {
                n,
                mean,
                var: (s2 / n as f64 - mean * mean).max(0.0),
            }
        })
        .collect()
}

/// Between- and within-bucket sums of squares.
fn sums_of_squares(buckets: &[Moments], mean: f64) -> (f64, f64) {
    buckets.iter().fold((0.0, 0.0), |(b, w), m| {
        (
            b + m.n as f64 * (m.mean - mean).powi(2),
            w + m.n as f64 * m.var,
        )
    })
}

/// p-value of an F statistic; an exact fit (no within variance) with
/// between variance is a certain cycle.
fn f_pvalue(between: f64, df1: f64, within: f64, df2: f64, total: f64) -> f64 {
    if between <= 1e-9 * total || df1 <= 0.0 || df2 <= 0.0 {
        return 1.0;
    }
    if within <= 1e-9 * total {
        return 0.0;
    }
    let f = (between / df1) / (within / df2);
    FisherSnedecor::new(df1, df2).map_or(1.0, |d| d.sf(f))
}

/// The cycle a variable's mean follows, by nested F-tests: hour of the day
/// against none, then hour of the week against hour of the day.
fn cycle_of(values: &[f64], hours: &[i64], mean: f64) -> (Cycle, Vec<Moments>) {
    let n = values.len() as f64;
    let daily = bucket_moments(values, hours, Cycle::Daily, 24);
    let weekly = bucket_moments(values, hours, Cycle::Weekly, HOURS_PER_WEEK);
    let (bd, wd) = sums_of_squares(&daily, mean);
    let (bw, ww) = sums_of_squares(&weekly, mean);
    let total = bd + wd;
    let p_daily = f_pvalue(bd, 23.0, wd, n - 24.0, total);
    let p_weekly_over_daily = f_pvalue((bw - bd).max(0.0), 144.0, ww, n - 168.0, total);
    let p_weekly = f_pvalue(bw, 167.0, ww, n - 168.0, total);
    if p_daily < CYCLE_PVALUE && p_weekly_over_daily >= CYCLE_PVALUE {
        (Cycle::Daily, daily)
    } else if p_weekly < CYCLE_PVALUE {
        (Cycle::Weekly, weekly)
    } else {
        (Cycle::None, Vec::new())
    }
}

/// Moments, skewness, cycle and bins of one column (calibration comes later).
fn var_profile(c: &Column<'_>, hours: &[i64]) -> VarProfile {
    let n = c.values.len().max(1) as f64;
    let mean = c.values.iter().sum::<f64>() / n;
    let var = c.values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let m3 = c.values.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n;
    let skew = if var > 0.0 { m3 / var.powf(1.5) } else { 0.0 };
    let (cycle, buckets) = cycle_of(&c.values, hours, mean);
    let (bin_edges, bin_shares) = if c.binary || cycle != Cycle::None || c.bin_edges.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let mut counts = vec![0u64; c.bin_edges.len() + 1];
        for x in &c.values {
            counts[super::stats::bin_of(&c.bin_edges, *x)] += 1;
        }
        let shares = counts.iter().map(|&k| k as f64 / n).collect();
        (c.bin_edges.clone(), shares)
    };
    VarProfile {
        mean,
        var,
        skew,
        cycle,
        buckets,
        bin_edges,
        bin_shares,
        calibration: Vec::new(),
    }
}

/// Bin shares floored so an empty reference bin keeps χ² finite.
pub const SHARE_FLOOR: f64 = 1e-4;

/// Pearson's χ² of `counts` against the reference `shares`.
pub fn chi2_of(counts: &[u64], shares: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts
        .iter()
        .zip(shares)
        .map(|(&o, &r)| {
            let e = n * r.max(SHARE_FLOOR);
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

/// Population stability index of `counts` against `shares` (effect size).
pub fn psi_of(counts: &[u64], shares: &[f64]) -> f64 {
    let n = counts.iter().sum::<u64>().max(1) as f64;
    counts
        .iter()
        .zip(shares)
        .map(|(&o, &r)| {
            let c = (o as f64 / n).max(SHARE_FLOOR);
            let r = r.max(SHARE_FLOOR);
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// One slice-stepped reference window of variable `k`: its deviation from
/// the expected mean (leave-one-out for cyclic variables: each hour's
/// bucket mean without that hour), sampling variance and χ².
struct RefWindow {
    diff: f64,
    sampling_var: f64,
    chi2: Option<f64>,
}

fn reference_windows(
    p: &Profile,
    v: &VarProfile,
    k: usize,
    slices: &[Slice],
    h: u64,
) -> Vec<RefWindow> {
    let h = h as usize * SLICES_PER_HOUR as usize;
    let mut out = Vec::new();
    if slices.len() < h {
        return out;
    }
    for end in h - 1..slices.len() {
        let win = &slices[end + 1 - h..=end];
        let n: u64 = win.iter().map(|s| s.vars[k].n).sum();
        if n < MIN_CALIBRATION_RECORDS {
            continue;
        }
        let sum: f64 = win.iter().map(|s| s.vars[k].sum).sum();
        let e = loo_expected(p, v, k, win);
        let min_share = v.bin_shares.iter().copied().fold(f64::INFINITY, f64::min);
        let testable = v.has_bins() && n as f64 * min_share >= MIN_EXPECTED_PER_BIN;
        let chi2 = testable.then(|| {
            let mut counts = vec![0u64; v.bin_shares.len()];
            for s in win {
                for (c, x) in counts.iter_mut().zip(&s.vars[k].bins) {
                    *c += x;
                }
            }
            chi2_of(&counts, &v.bin_shares)
        });
        out.push(RefWindow {
            diff: sum / n as f64 - e.mean,
            sampling_var: e.var / n as f64,
            chi2,
        });
    }
    out
}

/// Expected mean of a reference window, each hour's bucket mean taken
/// without that hour's own records.
fn loo_expected(p: &Profile, v: &VarProfile, k: usize, win: &[Slice]) -> Expected {
    if v.cycle == Cycle::None || v.buckets.is_empty() {
        return p.expected(v, std::iter::empty());
    }
    let mut m = Mixture::default();
    for s in win {
        let hour = hour_of_slice(s.index);
        let b = v
            .buckets
            .get(v.cycle.bucket(hour))
            .copied()
            .unwrap_or_default();
        let rest = b.n.saturating_sub(s.vars[k].n);
        let mean = if rest == 0 {
            b.mean
        } else {
            (b.mean * b.n as f64 - s.vars[k].sum) / rest as f64
        };
        m.add(Mixture::part(p.volume_at(hour), mean, b.var));
    }
    m.expected(v)
}

/// τ² and φ of variable `k` at `h` hours from the reference windows.
fn calibrate(p: &Profile, v: &VarProfile, k: usize, slices: &[Slice], h: u64) -> ScaleCalibration {
    let ws = reference_windows(p, v, k, slices, h);
    let m = ws.len().max(1) as f64;
    let tau2 = (ws
        .iter()
        .map(|w| w.diff * w.diff - w.sampling_var)
        .sum::<f64>()
        / m)
        .max(0.0);
    let dof = (v.bin_shares.len() as f64 - 1.0).max(1.0);
    let x2: Vec<f64> = ws.iter().filter_map(|w| w.chi2).collect();
    let k = x2.len().max(1) as f64;
    let chi2_mean = x2.iter().sum::<f64>() / k;
    let chi2_var = x2.iter().map(|x| (x - chi2_mean).powi(2)).sum::<f64>() / k;
    let phi = if x2.is_empty() { 1.0 } else { chi2_mean / dof };
    let max_abs_z = ws
        .iter()
        .map(|w| {
            let t = w.sampling_var + tau2;
            if t > 0.0 {
                w.diff.abs() / t.sqrt()
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max);
    let max_chi2 = x2.iter().copied().fold(0.0, f64::max);
    ScaleCalibration {
        scale_seconds: h * 3600,
        windows: ws.len() as u64,
        tau2,
        phi,
        chi2_mean,
        chi2_var,
        chi2_windows: x2.len() as u64,
        max_abs_z,
        max_chi2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::summary::HOUR_MS;

    use crate::drift::summary::test_uniform as u;

    #[test]
    fn a_night_flag_follows_the_day_and_an_amount_has_no_cycle() {
        // 28 days, 30 records an hour at night, 80 by day.
        let (mut times, mut night, mut amount) = (Vec::new(), Vec::new(), Vec::new());
        let mut i = 0u64;
        for h in 0..28 * 24i64 {
            let per_hour = if (h % 24) < 6 { 30 } else { 80 };
            for k in 0..per_hour {
                times.push(h * HOUR_MS + k * (HOUR_MS / per_hour));
                night.push(f64::from(u8::from(h % 24 < 6)));
                amount.push(10.0 + 80.0 * u(i, 1));
                i += 1;
            }
        }
        let cols = [
            Column {
                name: "NIGHT",
                values: night,
                bin_edges: Vec::new(),
                binary: true,
            },
            Column {
                name: "AMOUNT",
                values: amount,
                bin_edges: (1..10).map(|d| 10.0 + 8.0 * f64::from(d)).collect(),
                binary: false,
            },
        ];
        let p = Profile::build(&cols, &times);
        assert_eq!(p.vars["NIGHT"].cycle, Cycle::Daily);
        assert_eq!(p.vars["AMOUNT"].cycle, Cycle::None);
        assert!(p.vars["AMOUNT"].has_bins() && !p.vars["NIGHT"].has_bins());
        // A whole day: the night share is the volume share of the night hours.
        let day = p.expected(&p.vars["NIGHT"], 0..96);
        assert!((day.mean - 180.0 / 1620.0).abs() < 1e-9, "{day:?}");
        // One night hour: certainly night, no variance.
        let hour = p.expected(&p.vars["NIGHT"], 8..12);
        assert_eq!((hour.mean, hour.var), (1.0, 0.0));
        // Uniform amounts vary by sampling only: τ² ≈ 0, φ ≈ 1.
        let c = p.vars["AMOUNT"].calibration_at(3600).unwrap();
        assert_eq!(c.windows, 28 * 96 - 3, "{c:?}");
        assert!(c.tau2 < 3.0, "{c:?}");
        assert!(c.phi < 1.3, "{c:?}");
        // A well-behaved χ²: mean near its 9 degrees of freedom, variance near 18.
        assert!(
            (6.0..12.0).contains(&c.chi2_mean) && (9.0..36.0).contains(&c.chi2_var),
            "{c:?}"
        );
    }
}
