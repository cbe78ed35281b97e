//! The drift monitor. Records go into event-time slices of a quarter hour
//! ([`Slice`], mergeable); when a slice is complete (every active
//! partition's event time has passed it) it closes, and windows of every
//! configured scale (default 1 h, 6 h and 24 h) ending with that slice are
//! judged against the reference:
//!
//! - **mean test**: z = (window mean − expected mean) / √(σ²/n + τ²), where
//!   the expected mean and σ² follow the hours the window covers (cyclic
//!   variables: the reference of the same hours, weighted by the
//!   reference's traffic over the week) and τ² is the reference's
//!   window-to-window variance at that scale; thresholds at the normal
//!   quantile of the false-alarm budget, widened on the long tail by the
//!   Cornish–Fisher term of the variable's skewness;
//! - **distribution test** (continuous variables without a cycle): Pearson's
//!   χ² over the reference's decile bins, divided by its dispersion φ on
//!   the reference, against the χ² quantile of the budget.
//!
//! The budget (default one false alarm per model per year) is split over
//! every test the monitor makes in a year (variables × scales × tests × 35,040
//! quarter-hourly evaluations: Bonferroni). An alert is raised by the first window
//! over a threshold and cleared after `clear_after` evaluations in a row with
//! none over. Used by the worker's sidecar and by `riskstream drift`, so
//! both judge the same windows the same way.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use super::profile::{
    chi2_of, psi_of, Mixture, Profile, ScaleCalibration, VarProfile, CALIBRATED_SCALES_H,
    MIN_CHI2_WINDOWS, MIN_EXPECTED_PER_BIN,
};
use super::reference::{Reference, FLAGGED, SCORE};
use super::stats::bin_of;
use super::summary::{slice_index, Slice, VarSummary, SLICE_MS};
use super::DriftError;
use crate::features::{lookback, FeatureVector, History, Lookback, BINARY_FEATURES, FEATURE_NAMES};
use crate::watermark::PartitionClocks;
/// Evaluations in a year (one per quarter hour): the budget's denominator.
pub const EVALUATIONS_PER_YEAR: f64 = 8760.0 * 4.0;
/// Above this skewness of a window's mean (|skew| / √n) the normal
/// approximation is not trusted and the mean is not judged.
const MAX_MEAN_SKEW: f64 = 1.0;

/// Scales, budget and hysteresis (resolved from config; defaults in
/// [`DriftSettings::default`] and explained in the README).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// Window lengths judged every quarter hour, seconds (multiples of an
    /// hour the reference is calibrated for).
    pub scales: Vec<u64>,
    /// False alarms allowed per model per year, over all variables and scales.
    pub false_alarms_per_year: f64,
    /// Windows with fewer records are reported but not judged.
    pub min_records: u64,
    /// An alert clears after this many evaluations (quarter hours) in a row
    /// with no scale over a threshold.
    pub clear_after: u32,
    /// A slice closes at the latest when the newest record is this far past
    /// its end; records for a closed slice are counted as late, not sampled.
    pub max_lateness_seconds: u64,
    /// A partition without records for this long (wall clock) no longer holds slices open.
    pub idle_partition_seconds: u64,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            scales: Self::DEFAULT_SCALES.to_vec(),
            false_alarms_per_year: Self::DEFAULT_FALSE_ALARMS_PER_YEAR,
            min_records: Self::DEFAULT_MIN_RECORDS,
            clear_after: Self::DEFAULT_CLEAR_AFTER,
            max_lateness_seconds: Self::DEFAULT_MAX_LATENESS_SECONDS,
            idle_partition_seconds: Self::DEFAULT_IDLE_PARTITION_SECONDS,
        }
    }
}

impl DriftSettings {
    pub const DEFAULT_SCALES: [u64; 3] = [3600, 6 * 3600, 24 * 3600];
    pub const DEFAULT_FALSE_ALARMS_PER_YEAR: f64 = 1.0;
    pub const DEFAULT_MIN_RECORDS: u64 = 100;
    pub const DEFAULT_CLEAR_AFTER: u32 = 24;
    pub const DEFAULT_MAX_LATENESS_SECONDS: u64 = 60 * 86_400;
    pub const DEFAULT_IDLE_PARTITION_SECONDS: u64 = 30;

    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.scales.is_empty() {
            e.push("drift: scales must name at least one window length".into());
        }
        for s in &self.scales {
            if s % 3600 != 0 || !CALIBRATED_SCALES_H.contains(&(s / 3600)) {
                e.push(format!(
                    "drift: scale {s} s is not one the reference is calibrated for (hours: {CALIBRATED_SCALES_H:?})"
                ));
            }
        }
        if !(self.false_alarms_per_year > 0.0 && self.false_alarms_per_year.is_finite()) {
            e.push("drift: false_alarms_per_year must be a positive number".into());
        }
        if self.clear_after == 0 {
            e.push("drift: clear_after must be at least 1".into());
        }
        e
    }

    fn max_scale_slices(&self) -> usize {
        self.scales
            .iter()
            .map(|s| (*s as i64 * 1000 / SLICE_MS) as usize)
            .max()
            .unwrap_or(1)
    }
}

/// "1h", "6h", "24h": the scale label of gauges and reports.
pub fn scale_label(seconds: u64) -> String {
    format!("{}h", seconds / 3600)
}

/// One variable at one scale in one evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScaleStats {
    pub scale_seconds: u64,
    pub records: u64,
    /// False when the window held too few records (or is not yet full).
    pub judged: bool,
    pub mean: f64,
    /// The reference's mean for the hours this window covers.
    pub expected_mean: f64,
    /// (mean − expected) / reference std: the effect size of a mean shift.
    pub effect: f64,
    pub z: f64,
    pub z_low: f64,
    pub z_high: f64,
    /// Bins' χ² and its threshold (calibrated on the reference).
    pub chi2: Option<f64>,
    pub chi2_limit: Option<f64>,
    /// Population stability index over the bins: the effect size of a distribution shift.
    pub psi: Option<f64>,
    /// "mean" and/or "distribution" when over their thresholds.
    pub over: Vec<&'static str>,
}

impl ScaleStats {
    /// The largest statistic / threshold ratio (over 1: over a threshold).
    pub fn exceedance(&self) -> f64 {
        if !self.judged {
            return 0.0;
        }
        let m = if self.z >= 0.0 {
            self.z / self.z_high
        } else {
            self.z / self.z_low
        };
        let d = match (self.chi2, self.chi2_limit) {
            (Some(x), Some(l)) if l > 0.0 => x / l,
            _ => 0.0,
        };
        m.max(d)
    }
}

/// Statistics of one variable in one evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VarStats {
    pub name: String,
    pub kind: &'static str,
    pub scales: Vec<ScaleStats>,
    /// The tests over their thresholds, as "mean@6h" / "distribution@1h".
    pub over: Vec<String>,
    /// Whether this variable is in alert after this evaluation.
    pub alerting: bool,
}

impl VarStats {
    /// The scale most over (or nearest to) its threshold.
    pub fn worst_scale(&self) -> Option<&ScaleStats> {
        self.scales
            .iter()
            .max_by(|a, b| a.exceedance().total_cmp(&b.exceedance()))
    }
}

/// One evaluation: the slice (quarter hour) that closed and every window ending with it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowReport {
    pub index: u64,
    /// The slice that closed, [start, end) in ms.
    pub start_event_time: i64,
    pub end_event_time: i64,
    /// Event time at which the slice was closed (the monitor's watermark).
    pub decided_at: i64,
    /// Records in the slice.
    pub records: u64,
    /// Whether any variable was judged at any scale.
    pub judged: bool,
    pub vars: Vec<VarStats>,
    pub flagged_rate: f64,
    pub reference_flagged_rate: f64,
    /// Records that came after their slice had closed, since the start.
    pub late_records: u64,
    pub raised: Vec<String>,
    pub cleared: Vec<String>,
    pub active: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Feature(usize),
    Score,
    Flagged,
}

#[derive(Debug, Clone)]
struct Var {
    name: String,
    source: Source,
    kind: &'static str,
    profile: VarProfile,
    /// Calibration per configured scale, in the settings' order.
    calibration: Vec<ScaleCalibration>,
    /// χ² threshold of the bins test per scale (None: no bins test there).
    chi2_limit: Vec<Option<f64>>,
    /// The history its values read: until the worker's state reaches that
    /// far back, they are not sampled and windows holding them not judged.
    needs: Lookback,
    under_run: u32,
    alerting: bool,
}

/// Hour slices, windows and alert state over a fixed list of variables.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    settings: DriftSettings,
    vars: Vec<Var>,
    profile_volume: Profile,
    bins: Vec<usize>,
    z_crit: f64,
    reference_flagged: f64,
    open: BTreeMap<i64, Slice>,
    /// The last slices closed, contiguous, newest last (as many as the longest scale).
    closed: VecDeque<Slice>,
    /// Per scale, the running totals of its window over `closed`.
    windows: Vec<WindowTotals>,
    last_closed: Option<i64>,
    /// Event-time progress of every partition pushed from.
    clocks: PartitionClocks,
    /// The scoring thread's watermark (slowest assigned partition), which
    /// knows partitions not seen here yet; None: use `clocks`.
    external: Option<i64>,
    newest: i64,
    now: Instant,
    late: u64,
    index: u64,
    /// Closed slices not yet taken by [`DriftMonitor::drain_slices`] (for
    /// the merged verdict across instances); None: not kept.
    export: Option<Vec<Slice>>,
    /// How far back the feature state reaches ([`Self::set_history`]).
    history: History,
}

impl DriftMonitor {
    /// Watches the named features (engine feature names), the score and the
    /// flagged rate against `reference`, which must carry a profile
    /// calibrated for the configured scales.
    pub fn new(
        reference: &Reference,
        features: &[String],
        settings: DriftSettings,
    ) -> Result<Self, DriftError> {
        let errors = settings.validate();
        if !errors.is_empty() {
            return Err(DriftError::Invalid(errors.join("; ")));
        }
        let profile = reference.profile.clone().ok_or_else(|| {
            DriftError::Invalid(
                "the reference has no time profile (written before drift calibration): rebuild it with `riskstream models reference`".into(),
            )
        })?;
        let mut vars = vars_of(features, &profile, &settings)?;
        let tests: usize = vars
            .iter()
            .map(|v| settings.scales.len() * (1 + usize::from(v.profile.has_bins())))
            .sum();
        let alpha = settings.false_alarms_per_year / (tests as f64 * EVALUATIONS_PER_YEAR);
        let normal = Normal::standard();
        let z_crit = normal.inverse_cdf(1.0 - alpha / 2.0);
        for v in &mut vars {
            v.chi2_limit = v
                .calibration
                .iter()
                .map(|c| chi2_limit(&v.profile, c, alpha))
                .collect();
        }
        let bins: Vec<usize> = vars.iter().map(|v| v.profile.bin_shares.len()).collect();
        let windows = settings
            .scales
            .iter()
            .map(|&s| WindowTotals::new((s as i64 * 1000 / SLICE_MS) as usize, &bins))
            .collect();
        let mut volume_only = profile;
        volume_only.vars.clear();
        Ok(Self {
            settings,
            vars,
            profile_volume: volume_only,
            bins,
            z_crit,
            reference_flagged: reference.flagged_rate,
            open: BTreeMap::new(),
            closed: VecDeque::new(),
            windows,
            last_closed: None,
            clocks: PartitionClocks::default(),
            external: None,
            newest: i64::MIN,
            now: Instant::now(),
            late: 0,
            index: 0,
            export: None,
            history: History::default(),
        })
    }

    /// Keeps every closed slice (empty ones included) for [`Self::drain_slices`].
    pub fn export_slices(mut self) -> Self {
        self.export = Some(Vec::new());
        self
    }

    /// The slices closed since the last call, oldest first.
    pub fn drain_slices(&mut self, out: &mut Vec<Slice>) {
        if let Some(e) = &mut self.export {
            out.append(e);
        }
    }

    /// Adds a whole slice (the merged summary of several instances); slices
    /// must come in order: one at or before the last closed is ignored.
    pub fn push_slice(&mut self, slice: Slice, decided_at: i64, out: &mut Vec<WindowReport>) {
        if self.last_closed.is_some_and(|c| slice.index <= c) || slice.vars.len() != self.vars.len()
        {
            return;
        }
        self.newest = self.newest.max((slice.index + 1) * SLICE_MS);
        self.close_slice(slice, decided_at, out);
    }

    pub fn settings(&self) -> &DriftSettings {
        &self.settings
    }

    /// Names of the watched variables, in report order.
    pub fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|v| v.name.as_str()).collect()
    }

    /// The two-sided normal threshold every mean test starts from.
    pub fn z_threshold(&self) -> f64 {
        self.z_crit
    }

    /// Records that came after their slice had closed.
    pub fn late_records(&self) -> u64 {
        self.late
    }

    /// How far back the feature state reaches now (the scoring thread's
    /// engine, or the offline one's): a variable's value is sampled only
    /// when the history it reads was all there.
    pub fn set_history(&mut self, history: History) {
        self.history = history;
    }

    /// The event time from which each variable still warming up at event
    /// time `t` is sampled (None: its history has not begun), for the log.
    pub fn warming_up(&self, t: i64) -> Vec<(&str, Option<i64>)> {
        // Sampled from the latest of its needs' starts; None until each
        // needed history has begun.
        let from = |h: Option<i64>, ms: i64| match ms {
            0 => Some(i64::MIN),
            _ => h.map(|h| h.saturating_add(ms)),
        };
        self.vars
            .iter()
            .filter(|v| v.needs != Lookback::default())
            .filter(|v| !self.history.covers(v.needs, t))
            .map(|v| {
                let c = from(self.history.customers, v.needs.customers_ms);
                let l = from(self.history.labels, v.needs.labels_ms);
                (v.name.as_str(), c.zip(l).map(|(c, l)| c.max(l)))
            })
            .collect()
    }

    /// The wall clock of the batch being pushed (partition idleness).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The event-time watermark after a batch was pushed, from the scoring
    /// thread, which knows the whole assignment (a partition not seen yet
    /// holds slices open: a backlog is consumed unevenly); closes what it
    /// passed. `Some(i64::MIN)` holds everything (up to the lateness bound).
    pub fn set_watermark(&mut self, watermark: Option<i64>, out: &mut Vec<WindowReport>) {
        self.external = watermark;
        self.advance(out);
    }

    /// Adds one scored record of `partition`; reports of the slices it
    /// closed go to `out`.
    pub fn push(
        &mut self,
        fv: &FeatureVector,
        score: f32,
        flagged: bool,
        event_time: i64,
        partition: i32,
        out: &mut Vec<WindowReport>,
    ) {
        let h = slice_index(event_time);
        if self.last_closed.is_some_and(|c| h <= c) {
            self.late += 1;
            return;
        }
        let bins = &self.bins;
        let slice = self.open.entry(h).or_insert_with(|| Slice::empty(h, bins));
        slice.records += 1;
        for (v, s) in self.vars.iter().zip(slice.vars.iter_mut()) {
            if !self.history.covers(v.needs, event_time) {
                continue;
            }
            let x = match v.source {
                Source::Feature(j) => fv[j],
                Source::Score => f64::from(score),
                Source::Flagged => f64::from(u8::from(flagged)),
            };
            let bin = (!s.bins.is_empty()).then(|| bin_of(&v.profile.bin_edges, x));
            s.add(x, bin);
        }
        self.newest = self.newest.max(event_time);
        self.clocks.saw_at(partition, event_time, self.now);
        self.advance(out);
    }

    /// Closes every open slice that all active partitions have passed.
    fn advance(&mut self, out: &mut Vec<WindowReport>) {
        let Some(&oldest) = self.open.keys().next() else {
            return;
        };
        if oldest >= slice_index(self.newest) {
            return;
        }
        let floor = self
            .newest
            .saturating_sub(self.settings.max_lateness_seconds as i64 * 1000);
        let idle = std::time::Duration::from_secs(self.settings.idle_partition_seconds);
        let own = || {
            self.clocks
                .slowest_seen(self.now, idle, floor)
                .unwrap_or(self.newest)
        };
        let watermark = self.external.unwrap_or_else(own).max(floor);
        while let Some(entry) = self.open.first_entry() {
            if (entry.key() + 1) * SLICE_MS > watermark {
                break;
            }
            let slice = entry.remove();
            self.close_slice(slice, watermark, out);
        }
    }

    /// Closes every open slice (shutdown, model switch).
    pub fn finish(&mut self, out: &mut Vec<WindowReport>) {
        let at = self.newest;
        while let Some((_, slice)) = self.open.pop_first() {
            self.close_slice(slice, at, out);
        }
    }

    /// Files a closed slice (after the empty slices before it) and judges
    /// the windows ending with each.
    fn close_slice(&mut self, slice: Slice, decided_at: i64, out: &mut Vec<WindowReport>) {
        let max_h = self.settings.max_scale_slices();
        if let Some(last) = self.last_closed {
            if slice.index - last > max_h as i64 {
                // A gap longer than the longest window: start the windows over.
                self.closed.clear();
                for w in &mut self.windows {
                    w.clear();
                }
            } else {
                for g in last + 1..slice.index {
                    let empty = Slice::empty(g, &self.bins);
                    self.file(empty, max_h);
                    out.push(self.evaluate(decided_at));
                }
            }
        }
        self.last_closed = Some(slice.index);
        self.file(slice, max_h);
        out.push(self.evaluate(decided_at));
    }

    fn file(&mut self, slice: Slice, max_h: usize) {
        if let Some(e) = &mut self.export {
            e.push(slice.clone());
        }
        self.closed.push_back(slice);
        for w in &mut self.windows {
            w.advance(&self.closed, &self.vars, &self.profile_volume);
        }
        while self.closed.len() > max_h {
            self.closed.pop_front();
        }
    }

    /// Judges every variable at every scale for the windows ending with the
    /// newest closed slice, and updates alert states.
    fn evaluate(&mut self, decided_at: i64) -> WindowReport {
        let (mut raised, mut cleared, mut active) = (Vec::new(), Vec::new(), Vec::new());
        let mut stats = Vec::with_capacity(self.vars.len());
        let last = self
            .closed
            .back()
            .cloned()
            .unwrap_or_else(|| Slice::empty(0, &self.bins));
        for k in 0..self.vars.len() {
            let scales: Vec<ScaleStats> = (0..self.settings.scales.len())
                .map(|i| self.judge(k, i))
                .collect();
            let v = &mut self.vars[k];
            let over: Vec<String> = scales
                .iter()
                .flat_map(|s| {
                    let h = s.scale_seconds / 3600;
                    s.over.iter().map(move |t| format!("{t}@{h}h"))
                })
                .collect();
            if !over.is_empty() {
                v.under_run = 0;
                if !v.alerting {
                    v.alerting = true;
                    raised.push(v.name.clone());
                }
            } else if scales.iter().any(|s| s.judged) {
                v.under_run += 1;
                if v.alerting && v.under_run >= self.settings.clear_after {
                    v.alerting = false;
                    cleared.push(v.name.clone());
                }
            }
            if v.alerting {
                active.push(v.name.clone());
            }
            stats.push(VarStats {
                name: v.name.clone(),
                kind: v.kind,
                scales,
                over,
                alerting: v.alerting,
            });
        }
        let flagged = self
            .vars
            .iter()
            .position(|v| matches!(v.source, Source::Flagged))
            .and_then(|k| last.vars.get(k))
            .map_or(0.0, |s| if s.n == 0 { 0.0 } else { s.mean() });
        let report = WindowReport {
            index: self.index,
            start_event_time: last.index * SLICE_MS,
            end_event_time: (last.index + 1) * SLICE_MS,
            decided_at,
            records: last.records,
            judged: stats.iter().any(|v| v.scales.iter().any(|s| s.judged)),
            vars: stats,
            flagged_rate: flagged,
            reference_flagged_rate: self.reference_flagged,
            late_records: self.late,
            raised,
            cleared,
            active,
        };
        self.index += 1;
        report
    }

    /// Variable `k` at scale `i` over the last closed slices.
    fn judge(&self, k: usize, i: usize) -> ScaleStats {
        let w = &self.windows[i];
        let full = self.closed.len() >= w.len;
        let v = &self.vars[k];
        let e = w.expected[k].expected(&v.profile);
        // A slice with records this variable did not sample was still
        // warming up: the window is not judged until it has left.
        let full = full && w.partial[k] == 0;
        judge_window(v, i, self.settings.scales[i], &w.vars[k], e, full, self)
    }
}

/// One scale's window as running totals: the sum of its slices per
/// variable and the reference moments of their hours, updated as a slice
/// enters and the oldest leaves, so judging a window does not walk its
/// slices. Rebuilt from the slices once per window length, so rounding in
/// the subtractions cannot accumulate.
#[derive(Debug, Clone)]
struct WindowTotals {
    /// Slices in a full window.
    len: usize,
    vars: Vec<VarSummary>,
    expected: Vec<Mixture>,
    /// Per variable, the window's slices with records it did not sample.
    partial: Vec<u32>,
    /// Slices added since the last rebuild.
    since_rebuild: usize,
}

impl WindowTotals {
    fn new(len: usize, bins: &[usize]) -> Self {
        Self {
            len,
            vars: bins.iter().map(|&b| VarSummary::with_bins(b)).collect(),
            expected: vec![Mixture::default(); bins.len()],
            partial: vec![0; bins.len()],
            since_rebuild: 0,
        }
    }

    fn clear(&mut self) {
        for v in &mut self.vars {
            *v = VarSummary::with_bins(v.bins.len());
        }
        self.expected.fill(Mixture::default());
        self.partial.fill(0);
        self.since_rebuild = 0;
    }

    /// `closed` has just gained its newest slice.
    fn advance(&mut self, closed: &VecDeque<Slice>, vars: &[Var], profile: &Profile) {
        let n = closed.len();
        self.since_rebuild += 1;
        if self.since_rebuild >= self.len {
            self.clear();
            for s in closed.range(n.saturating_sub(self.len)..) {
                self.add(s, vars, profile);
            }
            return;
        }
        if let Some(s) = closed.back() {
            self.add(s, vars, profile);
        }
        if n > self.len {
            let gone = &closed[n - 1 - self.len];
            for (k, (t, v)) in self.vars.iter_mut().zip(vars).enumerate() {
                t.subtract(&gone.vars[k]);
                self.expected[k].subtract(profile.mixture_of(&v.profile, gone.index));
                self.partial[k] =
                    self.partial[k].saturating_sub(u32::from(gone.vars[k].n < gone.records));
            }
        }
    }

    fn add(&mut self, s: &Slice, vars: &[Var], profile: &Profile) {
        for (k, (t, v)) in self.vars.iter_mut().zip(vars).enumerate() {
            t.merge(&s.vars[k]);
            self.expected[k].add(profile.mixture_of(&v.profile, s.index));
            self.partial[k] += u32::from(s.vars[k].n < s.records);
        }
    }
}

/// The watched features, then the score and the flag, each with its
/// profile, calibration and the history it reads.
fn vars_of(
    features: &[String],
    profile: &Profile,
    settings: &DriftSettings,
) -> Result<Vec<Var>, DriftError> {
    let mut sources = Vec::new();
    for f in features {
        let j = FEATURE_NAMES
            .iter()
            .position(|n| n == f)
            .ok_or_else(|| DriftError::Invalid(format!("unknown feature {f}")))?;
        let kind = if BINARY_FEATURES[j] {
            "binary"
        } else {
            "continuous"
        };
        sources.push((f.clone(), Source::Feature(j), kind));
    }
    sources.push((SCORE.into(), Source::Score, "continuous"));
    sources.push((FLAGGED.into(), Source::Flagged, "binary"));
    // The score reads every watched feature (with --all-features, a
    // superset of the model's inputs: judged a little later).
    let model_needs = Lookback::of_all(features.iter().map(String::as_str));
    let mut vars = Vec::new();
    for (name, source, kind) in sources {
        let needs = match source {
            Source::Feature(_) => lookback(&name),
            Source::Score | Source::Flagged => model_needs,
        };
        vars.push(Var::new(&name, source, kind, needs, profile, settings)?);
    }
    Ok(vars)
}

/// The bins test's threshold at one scale: the 1 − α quantile of the χ²
/// scaled to the mean and variance seen on the reference (Satterthwaite),
/// never below the plain χ² quantile.
fn chi2_limit(p: &VarProfile, c: &ScaleCalibration, alpha: f64) -> Option<f64> {
    if !p.has_bins() || c.chi2_windows < MIN_CHI2_WINDOWS || c.chi2_mean <= 0.0 {
        return None;
    }
    let dof = p.bin_shares.len() as f64 - 1.0;
    let plain = ChiSquared::new(dof).ok()?.inverse_cdf(1.0 - alpha);
    let var = c.chi2_var.max(2.0 * c.chi2_mean);
    let scale = var / (2.0 * c.chi2_mean);
    let nu = 2.0 * c.chi2_mean * c.chi2_mean / var;
    let scaled = ChiSquared::new(nu).ok()?.inverse_cdf(1.0 - alpha) * scale;
    Some(plain.max(scaled))
}

/// The tests of one window summary against the expected mean `e`.
fn judge_window(
    v: &Var,
    i: usize,
    scale: u64,
    sum: &VarSummary,
    e: super::profile::Expected,
    full: bool,
    m: &DriftMonitor,
) -> ScaleStats {
    let cal = &v.calibration[i];
    let limit = v.chi2_limit[i];
    let n = sum.n;
    let nf = n.max(1) as f64;
    let mean = if n == 0 { e.mean } else { sum.mean() };
    let diff = mean - e.mean;
    let v_samp = e.var / nf;
    let v_tot = v_samp + cal.tau2;
    let z = if v_tot > 0.0 {
        diff / v_tot.sqrt()
    } else if diff.abs() < 1e-9 {
        0.0
    } else {
        diff.signum() * 1e9
    };
    let gamma = if v_tot > 0.0 {
        v.profile.skew / nf.sqrt() * (v_samp / v_tot).powf(1.5)
    } else {
        0.0
    };
    let zc = m.z_crit;
    let adj = (zc * zc - 1.0) * gamma / 6.0;
    // Only the long tail widens (the short one is shorter than normal).
    let (z_low, z_high) = if adj >= 0.0 {
        (-zc, zc + adj)
    } else {
        (-zc + adj, zc)
    };
    let enough = full && n >= m.settings.min_records;
    let mean_judged = enough && (v.profile.skew.abs() / nf.sqrt()) <= MAX_MEAN_SKEW;
    let mut over = Vec::new();
    if mean_judged && (z > z_high || z < z_low) {
        over.push("mean");
    }
    let (mut chi2, mut psi) = (None, None);
    let mut dist_judged = false;
    if v.profile.has_bins() && n > 0 {
        let x2 = chi2_of(&sum.bins, &v.profile.bin_shares);
        chi2 = Some(x2);
        psi = Some(psi_of(&sum.bins, &v.profile.bin_shares));
        let min_share = v
            .profile
            .bin_shares
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        dist_judged = enough && limit.is_some() && nf * min_share >= MIN_EXPECTED_PER_BIN;
        if dist_judged && limit.is_some_and(|l| x2 > l) {
            over.push("distribution");
        }
    }
    ScaleStats {
        scale_seconds: scale,
        records: n,
        judged: mean_judged || dist_judged,
        mean,
        expected_mean: e.mean,
        effect: if e.var > 0.0 {
            diff / e.var.sqrt()
        } else {
            0.0
        },
        z,
        z_low,
        z_high,
        chi2,
        chi2_limit: limit,
        psi,
        over,
    }
}

impl Var {
    fn new(
        name: &str,
        source: Source,
        kind: &'static str,
        needs: Lookback,
        profile: &Profile,
        settings: &DriftSettings,
    ) -> Result<Self, DriftError> {
        let p = profile.vars.get(name).cloned().ok_or_else(|| {
            DriftError::Invalid(format!("the reference has no profile of {name}"))
        })?;
        let calibration = settings
            .scales
            .iter()
            .map(|&s| {
                p.calibration_at(s).cloned().ok_or_else(|| {
                    DriftError::Invalid(format!(
                        "the reference of {name} is not calibrated for {s} s"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_string(),
            source,
            kind,
            profile: p,
            calibration,
            chi2_limit: Vec::new(),
            needs,
            under_run: 0,
            alerting: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::summary::test_uniform as u;
    use crate::features::N_FEATURES;

    /// A reference from two weeks of uniform traffic, and a monitor of two
    /// of its features.
    fn monitor() -> DriftMonitor {
        let t0 = 1_533_081_600_000i64; // 2018-08-01
        let rows: Vec<[f64; N_FEATURES]> = (0..60_000u64)
            .map(|i| std::array::from_fn(|j| 10.0 + 80.0 * u(i, j as u64 + 1)))
            .collect();
        let times: Vec<i64> = (0..60_000i64)
            .map(|i| t0 - 14 * 86_400_000 + i * 20_160)
            .collect();
        let scores: Vec<f32> = (0..60_000u64).map(|i| u(i, 99) as f32).collect();
        let reference = Reference::build(&rows, &scores, 0.99, &times);
        let inputs = ["TX_AMOUNT".to_string(), "TX_DURING_NIGHT".to_string()];
        DriftMonitor::new(&reference, &inputs, DriftSettings::default()).unwrap()
    }

    /// The window of scale `i` summed by walking its slices.
    fn walked(
        m: &DriftMonitor,
        k: usize,
        i: usize,
    ) -> (VarSummary, super::super::profile::Expected) {
        let len = m.windows[i].len;
        let win = m.closed.range(m.closed.len().saturating_sub(len)..);
        let mut sum = VarSummary::with_bins(m.bins[k]);
        let mut idx = Vec::new();
        for s in win {
            sum.merge(&s.vars[k]);
            idx.push(s.index);
        }
        let e = m
            .profile_volume
            .expected(&m.vars[k].profile, idx.into_iter());
        (sum, e)
    }

    #[test]
    fn running_window_totals_equal_the_sum_of_their_slices() {
        let mut m = monitor();
        let t0 = 1_533_081_600_000i64;
        let mut out = Vec::new();
        let mut checked = 0;
        // Four days with a quiet night and a gap longer than a day.
        for r in 0..20_000i64 {
            let t = t0 + r * 17_000 + if r > 12_000 { 2 * 86_400_000 } else { 0 };
            if (t / 3_600_000) % 24 == 3 {
                continue;
            }
            let f: [f64; N_FEATURES] = std::array::from_fn(|j| 5.0 + 90.0 * u(r as u64, j as u64));
            m.push(&f, u(r as u64, 7) as f32, false, t, 0, &mut out);
            if r % 97 == 0 {
                for k in 0..m.vars.len() {
                    for i in 0..m.windows.len() {
                        let (sum, e) = walked(&m, k, i);
                        let run = &m.windows[i].vars[k];
                        assert_eq!((run.n, &run.bins), (sum.n, &sum.bins), "var {k} scale {i}");
                        assert!((run.sum - sum.sum).abs() <= 1e-9 * sum.sum.abs().max(1.0));
                        assert!((run.sumsq - sum.sumsq).abs() <= 1e-9 * sum.sumsq.abs().max(1.0));
                        let got = m.windows[i].expected[k].expected(&m.vars[k].profile);
                        assert!((got.mean - e.mean).abs() <= 1e-9 * e.mean.abs().max(1.0));
                        assert!((got.var - e.var).abs() <= 1e-9 * e.var.abs().max(1.0));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000 && out.len() > 300, "{checked} {}", out.len());
    }
}
