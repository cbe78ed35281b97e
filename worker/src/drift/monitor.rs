//! The drift monitor: consecutive (tumbling) windows of feature vectors and
//! scores, closed by record count or event-time span, compared with the
//! reference; per-variable alert state with hysteresis. Used by the
//! worker's sidecar task and by the offline `riskstream drift` command, so
//! both judge the same windows the same way.

use serde::Serialize;

use super::reference::{Atom, Reference, VarReference};
use super::stats::{bin_of, chi2_binary, ks_pvalue, ks_statistic, mean_std, psi, wasserstein};
use super::DriftError;
use crate::features::{FeatureVector, FEATURE_NAMES};

/// Name of the flagged-fraud rate in reports and gauges.
pub const FLAGGED: &str = "FLAGGED";
/// Name of the score in reports and gauges.
pub const SCORE: &str = "SCORE";

/// Windows, thresholds and hysteresis (resolved from config; defaults in
/// [`DriftSettings::default`] and explained in the README).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// A window closes after this many records (0: no count limit).
    pub window_records: usize,
    /// ... or when a record is this far (event time) past the window's first (0: no time limit).
    pub window_seconds: u64,
    /// Windows with fewer records are reported but not judged.
    pub min_records: usize,
    /// PSI above this is drift.
    pub psi_threshold: f64,
    /// KS p-value below this is drift, when the KS statistic also exceeds `ks_min_statistic`.
    pub ks_pvalue: f64,
    pub ks_min_statistic: f64,
    /// Wasserstein distance / reference std above this is drift (0: not used).
    pub wasserstein_threshold: f64,
    /// Chi-squared p-value below this is drift for binary variables (and the
    /// share off the atom of zero-inflated ones), when the share also moved
    /// by more than the factor `1 + share_min_change` either way.
    pub chi2_pvalue: f64,
    pub share_min_change: f64,
    /// Raise an alert after this many consecutive windows over a threshold...
    pub alert_after: u32,
    /// ... and clear it after this many consecutive windows under.
    pub clear_after: u32,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            window_records: 10_000,
            window_seconds: 86_400,
            min_records: 1_000,
            psi_threshold: 0.2,
            ks_pvalue: 0.01,
            ks_min_statistic: 0.1,
            wasserstein_threshold: 0.0,
            chi2_pvalue: 0.01,
            share_min_change: 0.5,
            alert_after: 2,
            clear_after: 2,
        }
    }
}

impl DriftSettings {
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.window_records == 0 && self.window_seconds == 0 {
            e.push("drift: window_records and window_seconds cannot both be 0".into());
        }
        if self.alert_after == 0 || self.clear_after == 0 {
            e.push("drift: alert_after and clear_after must be at least 1".into());
        }
        for (name, v) in [
            ("ks_pvalue", self.ks_pvalue),
            ("chi2_pvalue", self.chi2_pvalue),
        ] {
            if !(0.0..=1.0).contains(&v) {
                e.push(format!("drift: {name} must be within 0..1"));
            }
        }
        e
    }
}

/// Statistics of one variable in one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VarStats {
    pub name: String,
    pub kind: &'static str,
    pub mean: f64,
    pub std: f64,
    pub reference_mean: f64,
    pub psi: f64,
    pub ks_statistic: Option<f64>,
    pub ks_pvalue: Option<f64>,
    /// Wasserstein-1 distance divided by the reference standard deviation.
    pub wasserstein: Option<f64>,
    pub chi2: Option<f64>,
    pub chi2_pvalue: Option<f64>,
    /// False when the window was too small, or shorter than the cycle of a
    /// calendar input: statistics reported, alert state unchanged.
    pub judged: bool,
    /// The statistics over their thresholds in this window.
    pub over: Vec<&'static str>,
    /// Whether this variable is in alert after this window.
    pub alerting: bool,
}

/// One closed window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowReport {
    pub index: u64,
    pub start_event_time: i64,
    pub end_event_time: i64,
    pub records: u64,
    /// False when the window held fewer than `min_records` (not judged).
    pub judged: bool,
    pub vars: Vec<VarStats>,
    pub flagged_rate: f64,
    pub reference_flagged_rate: f64,
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

#[derive(Debug)]
struct Var {
    name: String,
    source: Source,
    reference: VarReference,
    /// Cycle of a calendar input, ms.
    period_ms: Option<i64>,
    values: Vec<f64>,
    over_run: u32,
    under_run: u32,
    alerting: bool,
}

/// Windows and alert state over a fixed list of variables.
#[derive(Debug)]
pub struct DriftMonitor {
    settings: DriftSettings,
    vars: Vec<Var>,
    reference_flagged: f64,
    index: u64,
    count: usize,
    flagged: u64,
    start: Option<i64>,
    end: i64,
}

impl DriftMonitor {
    /// Watches the named features (engine feature names), the score and the
    /// flagged rate.
    pub fn new(
        reference: &Reference,
        features: &[String],
        settings: DriftSettings,
    ) -> Result<Self, DriftError> {
        let mut vars = Vec::new();
        for f in features {
            let j = FEATURE_NAMES
                .iter()
                .position(|n| n == f)
                .ok_or_else(|| DriftError::Invalid(format!("unknown feature {f}")))?;
            let r = reference
                .features
                .get(f)
                .ok_or_else(|| DriftError::Invalid(format!("the reference lacks {f}")))?;
            vars.push(Var::new(f, Source::Feature(j), r.clone()));
        }
        vars.push(Var::new(SCORE, Source::Score, reference.of(SCORE)));
        vars.push(Var::new(FLAGGED, Source::Flagged, reference.of(FLAGGED)));
        Ok(Self {
            settings,
            vars,
            reference_flagged: reference.flagged_rate,
            index: 0,
            count: 0,
            flagged: 0,
            start: None,
            end: 0,
        })
    }

    pub fn settings(&self) -> &DriftSettings {
        &self.settings
    }

    /// Names of the watched variables, in report order.
    pub fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|v| v.name.as_str()).collect()
    }

    /// Adds one scored record; returns the report of the window it closed.
    /// A record past the time limit closes the window before joining the next.
    pub fn push(
        &mut self,
        fv: &FeatureVector,
        score: f32,
        flagged: bool,
        event_time: i64,
    ) -> Option<WindowReport> {
        let mut report = None;
        // Time windows are aligned to multiples of the limit (like Kafka
        // Streams' tumbling windows), so instances agree on the bounds; a
        // record from an earlier window (partitions interleave) joins the
        // current one rather than reopening the past.
        let limit = self.settings.window_seconds as i64 * 1000;
        if let Some(start) = self.start {
            if limit > 0 && event_time.div_euclid(limit) > start.div_euclid(limit) {
                report = self.close();
            }
        }
        if self.start.is_none() {
            self.start = Some(event_time);
        }
        self.end = self.end.max(event_time);
        for v in &mut self.vars {
            let x = match v.source {
                Source::Feature(j) => fv[j],
                Source::Score => f64::from(score),
                Source::Flagged => f64::from(u8::from(flagged)),
            };
            v.values.push(x);
        }
        self.count += 1;
        self.flagged += u64::from(flagged);
        if self.settings.window_records > 0 && self.count >= self.settings.window_records {
            // Only one window closes per record.
            if report.is_none() {
                report = self.close();
            }
        }
        report
    }

    /// Closes the current window (if it holds anything) and judges it.
    pub fn close(&mut self) -> Option<WindowReport> {
        let start = self.start.take()?;
        let judged = self.count >= self.settings.min_records.max(1);
        let (mut raised, mut cleared, mut active) = (Vec::new(), Vec::new(), Vec::new());
        let s = &self.settings;
        let mut out = Vec::with_capacity(self.vars.len());
        for v in &mut self.vars {
            let mut st = window_stats(&v.name, &v.reference, &mut v.values, s);
            // A window closed by time spans just under its limit: allow 5 %.
            let whole_cycle = v
                .period_ms
                .is_none_or(|p| (self.end - start) as f64 >= 0.95 * p as f64);
            st.judged = judged && whole_cycle;
            if !st.judged {
                st.over.clear();
            } else if st.over.is_empty() {
                v.over_run = 0;
                v.under_run += 1;
                if v.alerting && v.under_run >= s.clear_after {
                    v.alerting = false;
                    cleared.push(v.name.clone());
                }
            } else {
                v.under_run = 0;
                v.over_run += 1;
                if !v.alerting && v.over_run >= s.alert_after {
                    v.alerting = true;
                    raised.push(v.name.clone());
                }
            }
            if v.alerting {
                active.push(v.name.clone());
            }
            st.alerting = v.alerting;
            v.values.clear();
            out.push(st);
        }
        let report = WindowReport {
            index: self.index,
            start_event_time: start,
            end_event_time: self.end,
            records: self.count as u64,
            judged,
            vars: out,
            flagged_rate: self.flagged as f64 / self.count.max(1) as f64,
            reference_flagged_rate: self.reference_flagged,
            raised,
            cleared,
            active,
        };
        self.index += 1;
        self.count = 0;
        self.flagged = 0;
        self.end = 0;
        Some(report)
    }
}

impl Var {
    fn new(name: &str, source: Source, reference: VarReference) -> Self {
        Self {
            name: name.to_string(),
            source,
            reference,
            period_ms: crate::features::calendar_period_seconds(name).map(|s| s * 1000),
            values: Vec::new(),
            over_run: 0,
            under_run: 0,
            alerting: false,
        }
    }
}

/// Every statistic of one variable's window values against its reference.
pub fn window_stats(
    name: &str,
    reference: &VarReference,
    values: &mut [f64],
    s: &DriftSettings,
) -> VarStats {
    let (mean, std) = mean_std(values);
    let mut over = Vec::new();
    match reference {
        VarReference::Continuous {
            mean: rmean,
            std: rstd,
            bin_edges,
            bin_counts,
            sketch,
            atom,
            ..
        } => {
            let p = psi(
                bin_counts,
                &bin_counts_of(bin_edges, bin_counts.len(), values),
            );
            let dist = DistanceTests::of(sketch, reference.n(), *rstd, values, s, &mut over);
            if p > s.psi_threshold {
                over.push("psi");
            }
            // Zero-inflated: test the share off the atom like a binary variable.
            let (chi2, chi2_p) = match atom {
                Some(a) => {
                    let (x2, pv) = atom_share_test(a, values, s, &mut over);
                    (Some(x2), Some(pv))
                }
                None => (None, None),
            };
            VarStats {
                name: name.to_string(),
                kind: "continuous",
                mean,
                std,
                reference_mean: *rmean,
                psi: p,
                ks_statistic: dist.ks,
                ks_pvalue: dist.ks_pvalue,
                wasserstein: dist.wasserstein,
                chi2,
                chi2_pvalue: chi2_p,
                judged: true,
                over,
                alerting: false,
            }
        }
        VarReference::Binary { n, share_of_ones } => {
            let (p, x2, pv) = binary_tests(*n, *share_of_ones, values, s, &mut over);
            VarStats {
                name: name.to_string(),
                kind: "binary",
                mean,
                std,
                reference_mean: *share_of_ones,
                psi: p,
                ks_statistic: None,
                ks_pvalue: None,
                wasserstein: None,
                chi2: Some(x2),
                chi2_pvalue: Some(pv),
                judged: true,
                over,
                alerting: false,
            }
        }
    }
}

/// How many of `values` fall in each of the reference's bins.
fn bin_counts_of(bin_edges: &[f64], n_bins: usize, values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; n_bins];
    for x in values {
        if let Some(c) = counts.get_mut(bin_of(bin_edges, *x)) {
            *c += 1;
        }
    }
    counts
}

/// KS and Wasserstein of a continuous window against the reference sketch
/// (none when either side is empty).
struct DistanceTests {
    ks: Option<f64>,
    ks_pvalue: Option<f64>,
    /// Divided by the reference standard deviation (when positive).
    wasserstein: Option<f64>,
}

impl DistanceTests {
    /// Sorts `values`; pushes "ks" and "wasserstein" to `over` when drifted.
    fn of(
        sketch: &[f64],
        n_reference: u64,
        reference_std: f64,
        values: &mut [f64],
        s: &DriftSettings,
        over: &mut Vec<&'static str>,
    ) -> Self {
        if sketch.is_empty() || values.is_empty() {
            return Self {
                ks: None,
                ks_pvalue: None,
                wasserstein: None,
            };
        }
        values.sort_by(f64::total_cmp);
        let d = ks_statistic(sketch, values);
        let pv = ks_pvalue(d, n_reference as usize, values.len());
        let raw = wasserstein(sketch, values);
        let wn = if reference_std > 0.0 {
            raw / reference_std
        } else {
            raw
        };
        if pv < s.ks_pvalue && d > s.ks_min_statistic {
            over.push("ks");
        }
        if s.wasserstein_threshold > 0.0 && wn > s.wasserstein_threshold {
            over.push("wasserstein");
        }
        Self {
            ks: Some(d),
            ks_pvalue: Some(pv),
            wasserstein: Some(wn),
        }
    }
}

/// χ² of the share of values off the atom; pushes "chi2" when it moved.
fn atom_share_test(
    a: &Atom,
    values: &[f64],
    s: &DriftSettings,
    over: &mut Vec<&'static str>,
) -> (f64, f64) {
    let off = values.iter().filter(|x| **x != a.value).count() as u64;
    let (x2, pv) = chi2_binary(off, values.len() as u64, 1.0 - a.share);
    let share = off as f64 / values.len().max(1) as f64;
    if pv < s.chi2_pvalue && share_moved(share, 1.0 - a.share, s.share_min_change) {
        over.push("chi2");
    }
    (x2, pv)
}

/// PSI, χ² and its p-value of a binary window; pushes "chi2" and "psi" to
/// `over` when drifted.
fn binary_tests(
    n: u64,
    share_of_ones: f64,
    values: &[f64],
    s: &DriftSettings,
    over: &mut Vec<&'static str>,
) -> (f64, f64, f64) {
    let ones = values.iter().filter(|x| **x > 0.5).count() as u64;
    let m = values.len() as u64;
    let r1 = (share_of_ones * n as f64).round() as u64;
    let p = psi(&[n.saturating_sub(r1), r1], &[m - ones, ones]);
    let (x2, pv) = chi2_binary(ones, m, share_of_ones);
    let share = ones as f64 / m.max(1) as f64;
    if pv < s.chi2_pvalue && share_moved(share, share_of_ones, s.share_min_change) {
        over.push("chi2");
    }
    if p > s.psi_threshold {
        over.push("psi");
    }
    (p, x2, pv)
}

/// Whether `share` moved from `reference` by more than the factor `1 + c`
/// either way (×1.5 or ÷1.5 for c = 0.5).
pub fn share_moved(share: f64, reference: f64, c: f64) -> bool {
    let f = 1.0 + c;
    if reference <= 0.0 {
        return share > 0.0;
    }
    share > reference * f || share < reference / f
}
