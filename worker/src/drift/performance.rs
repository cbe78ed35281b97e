//! Performance monitoring from delayed labels: the realised precision,
//! recall, F1, ROC AUC and average precision of each model version's
//! decisions, per event day, judged against the validation values on the
//! model card.
//!
//! - Decisions (transaction-id fingerprint, score, flag, version) are kept
//!   per event day for `horizon_days` (labels arrive days late). The store
//!   is bounded by `max_tracked`: over it, the sampling rate halves and
//!   only transactions whose fingerprint is below the new cut stay
//!   (deterministic, so every instance keeps the same ids; counts are
//!   weighted by the inverse rate so instances at different rates merge).
//! - A label takes its decision out of the store and adds it to the day's
//!   [`DaySummary`]: weighted confusion counts at the model's threshold
//!   and score histograms per class on a logit grid, from which AUC and AP
//!   follow. Summaries are mergeable (sums), so the merged verdict across
//!   instances is the same arithmetic.
//! - A day closes when labels for transactions an hour past its end have
//!   arrived. A closed day with enough positives is judged: a metric below
//!   its validation value by more than `margin` is below. A version's alert
//!   is raised by the first judged day with a metric below and cleared by
//!   the first judged day with none.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::features::DAY_MS;
pub use crate::message::{Decision, LabelKey, Validation, VersionInfo};

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Score histogram bins: logit(score) from −12 to 12 in steps of 0.05
/// (scores are sigmoid outputs; ties within a bin count half, as in AUC).
pub const SCORE_BINS: usize = 480;
const LOGIT_LOW: f64 = -12.0;
const LOGIT_STEP: f64 = 0.05;

/// The histogram bin of a score.
pub fn score_bin(score: f32) -> usize {
    let s = f64::from(score).clamp(1e-12, 1.0 - 1e-12);
    let logit = (s / (1.0 - s)).ln();
    (((logit - LOGIT_LOW) / LOGIT_STEP).floor().max(0.0) as usize).min(SCORE_BINS - 1)
}

/// A transaction id's fingerprint (the same on every instance and run).
pub fn tx_fingerprint(id: &str) -> u64 {
    // FNV-1a, then a finaliser so the top bits (the sampling cut) mix well.
    let mut h = crate::features::fnv1a(id);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Realised performance of one version on one day (weighted counts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaySummary {
    pub labelled: f64,
    pub positives: f64,
    pub true_positives: f64,
    pub false_positives: f64,
    /// Per score bin: weight of fraudulent and of genuine transactions.
    pub positive_bins: Vec<f64>,
    pub negative_bins: Vec<f64>,
}

impl Default for DaySummary {
    fn default() -> Self {
        Self {
            labelled: 0.0,
            positives: 0.0,
            true_positives: 0.0,
            false_positives: 0.0,
            positive_bins: vec![0.0; SCORE_BINS],
            negative_bins: vec![0.0; SCORE_BINS],
        }
    }
}

impl DaySummary {
    pub fn add(&mut self, score: f32, flagged: bool, fraud: bool, weight: f64) {
        let b = score_bin(score);
        self.labelled += weight;
        if fraud {
            self.positives += weight;
            self.positive_bins[b] += weight;
            if flagged {
                self.true_positives += weight;
            }
        } else {
            self.negative_bins[b] += weight;
            if flagged {
                self.false_positives += weight;
            }
        }
    }

    pub fn merge(&mut self, o: &DaySummary) {
        self.labelled += o.labelled;
        self.positives += o.positives;
        self.true_positives += o.true_positives;
        self.false_positives += o.false_positives;
        for (a, b) in self.positive_bins.iter_mut().zip(&o.positive_bins) {
            *a += b;
        }
        for (a, b) in self.negative_bins.iter_mut().zip(&o.negative_bins) {
            *a += b;
        }
    }

    pub fn precision(&self) -> Option<f64> {
        let flagged = self.true_positives + self.false_positives;
        (flagged > 0.0).then(|| self.true_positives / flagged)
    }

    pub fn recall(&self) -> Option<f64> {
        (self.positives > 0.0).then(|| self.true_positives / self.positives)
    }

    pub fn f1(&self) -> Option<f64> {
        let denom = 2.0 * self.true_positives
            + self.false_positives
            + (self.positives - self.true_positives);
        (self.positives > 0.0).then(|| {
            if denom > 0.0 {
                2.0 * self.true_positives / denom
            } else {
                0.0
            }
        })
    }

    /// ROC AUC from the histograms (pairs within a bin count half).
    pub fn auc(&self) -> Option<f64> {
        let negatives = self.labelled - self.positives;
        if self.positives <= 0.0 || negatives <= 0.0 {
            return None;
        }
        let mut below = 0.0;
        let mut area = 0.0;
        for (p, n) in self.positive_bins.iter().zip(&self.negative_bins) {
            area += p * (below + 0.5 * n);
            below += n;
        }
        Some(area / (self.positives * negatives))
    }

    /// Average precision: precision at each bin's threshold (from the top),
    /// weighted by the recall it adds (a bin is one threshold, as ties are).
    pub fn average_precision(&self) -> Option<f64> {
        if self.positives <= 0.0 {
            return None;
        }
        let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
        for (p, n) in self.positive_bins.iter().zip(&self.negative_bins).rev() {
            tp += p;
            fp += n;
            if *p > 0.0 {
                ap += p / self.positives * tp / (tp + fp);
            }
        }
        Some(ap)
    }

    /// The sampling standard error of metric `name` at `value` on this
    /// day's counts, `counted` of each weight actually observed (the
    /// sample rate): how far the metric moves by chance with this few
    /// frauds. Binomial for the proportions (precision over the flagged,
    /// recall and average precision over the frauds, F1 over the mean of
    /// flagged and frauds), Hanley and McNeil (1982) for the ROC AUC.
    pub fn standard_error(&self, name: &str, value: f64, counted: f64) -> Option<f64> {
        let p = self.positives * counted;
        let n = (self.labelled - self.positives) * counted;
        let flagged = (self.true_positives + self.false_positives) * counted;
        let binomial = |k: f64| (k >= 1.0).then(|| (value * (1.0 - value) / k).max(0.0).sqrt());
        match name {
            "auc_roc" => {
                if p < 1.0 || n < 1.0 {
                    return None;
                }
                let a = value;
                let (q1, q2) = (a / (2.0 - a), 2.0 * a * a / (1.0 + a));
                let v =
                    (a * (1.0 - a) + (p - 1.0) * (q1 - a * a) + (n - 1.0) * (q2 - a * a)) / (p * n);
                Some(v.max(0.0).sqrt())
            }
            "average_precision" | "recall" => binomial(p),
            "precision" => binomial(flagged),
            "f1" => binomial((p + flagged) / 2.0),
            _ => None,
        }
    }

    /// The judged metrics, by name.
    pub fn metrics(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("auc_roc", self.auc()),
            ("average_precision", self.average_precision()),
            ("f1", self.f1()),
            ("precision", self.precision()),
            ("recall", self.recall()),
        ]
    }
}

/// Settings of the performance monitor (`[drift]` keys `performance_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceSettings {
    /// A metric this far below its validation value is below (absolute).
    pub margin: f64,
    /// A day with fewer labelled frauds is reported, not judged.
    pub min_positives: u64,
    /// Decisions wait this many days for their label.
    pub horizon_days: u32,
    /// At most this many decisions are kept (sampled beyond).
    pub max_tracked: usize,
}

impl Default for PerformanceSettings {
    fn default() -> Self {
        Self {
            margin: Self::DEFAULT_MARGIN,
            min_positives: Self::DEFAULT_MIN_POSITIVES,
            horizon_days: Self::DEFAULT_HORIZON_DAYS,
            max_tracked: Self::DEFAULT_MAX_TRACKED,
        }
    }
}

impl PerformanceSettings {
    pub const DEFAULT_MARGIN: f64 = 0.15;
    pub const DEFAULT_MIN_POSITIVES: u64 = 30;
    pub const DEFAULT_HORIZON_DAYS: u32 = 10;
    pub const DEFAULT_MAX_TRACKED: usize = 2_000_000;

    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if !(self.margin.is_finite() && (0.0..=1.0).contains(&self.margin)) {
            e.push(format!(
                "drift: performance_margin {} must be in 0..=1",
                self.margin
            ));
        }
        if self.horizon_days == 0 {
            e.push("drift: performance_horizon_days must be at least 1".into());
        }
        if self.max_tracked == 0 {
            e.push("drift: performance_max_tracked must be at least 1".into());
        }
        e
    }
}

/// A closed day of one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerformanceReport {
    pub model: String,
    pub day_start: i64,
    pub summary: DaySummary,
    pub validation: Validation,
    /// The share of decisions kept when the day closed (1: all).
    pub sample_rate: f64,
    /// Enough positives to judge.
    pub judged: bool,
    /// Judged metrics below validation − margin.
    pub below: Vec<&'static str>,
    /// This day raised / cleared the version's alert; whether it is on.
    pub raised: bool,
    pub cleared: bool,
    pub alerting: bool,
}

impl PerformanceReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.summary
            .metrics()
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }
}

/// Labels for transactions this long past a day's end close it.
const CLOSE_GRACE_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy)]
struct Tracked {
    score: f32,
    flagged: bool,
    version: u8,
}

/// One transaction's decisions: usually one version's, held inline (no
/// allocation per decision on the sidecar's per-record path); a challenger
/// or shadow decision of the same transaction goes to `more`.
#[derive(Debug, Clone)]
struct Decided {
    first: Tracked,
    more: Vec<Tracked>,
}

impl Decided {
    fn new(t: Tracked) -> Self {
        Self {
            first: t,
            more: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        1 + self.more.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Tracked> {
        std::iter::once(&self.first).chain(&self.more)
    }

    /// Sets this version's decision; true when it is a new one.
    fn set(&mut self, t: Tracked) -> bool {
        if self.first.version == t.version {
            self.first = t;
            return false;
        }
        match self.more.iter_mut().find(|x| x.version == t.version) {
            Some(x) => {
                *x = t;
                false
            }
            None => {
                self.more.push(t);
                true
            }
        }
    }
}

/// What the monitor counted (for the sidecar's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerformanceCounts {
    /// Labels joined with a decision.
    pub matched: u64,
    /// Labels of transactions not scored here (another instance's, before
    /// this process started, or outside the sample).
    pub unmatched: u64,
    /// Labels for a day already closed.
    pub late: u64,
}

/// Joins decisions with their delayed labels and judges closed days.
#[derive(Debug, Clone)]
pub struct PerformanceMonitor {
    settings: PerformanceSettings,
    versions: Vec<VersionInfo>,
    /// Per event day: decisions waiting for their label.
    store: BTreeMap<i64, HashMap<u64, Decided>>,
    tracked: usize,
    /// Decisions are kept when their fingerprint is at most this.
    keep_below: u64,
    /// Open (version, day) summaries.
    days: BTreeMap<(i64, u8), DaySummary>,
    /// Days before this are closed.
    closed_before: i64,
    /// Labels that came before their decision, per event day.
    /// (fraud, joined) by transaction.
    waiting: BTreeMap<i64, HashMap<u64, (bool, bool)>>,
    waiting_count: usize,
    /// Newest label event time; scoring watermark.
    labels_until: i64,
    scored_until: i64,
    alerting: HashMap<u8, bool>,
    pub counts: PerformanceCounts,
}

impl PerformanceMonitor {
    pub fn new(settings: PerformanceSettings) -> Self {
        Self {
            settings,
            versions: Vec::new(),
            store: BTreeMap::new(),
            tracked: 0,
            keep_below: u64::MAX,
            days: BTreeMap::new(),
            closed_before: i64::MIN,
            waiting: BTreeMap::new(),
            waiting_count: 0,
            labels_until: i64::MIN,
            scored_until: i64::MIN,
            alerting: HashMap::default(),
            counts: PerformanceCounts::default(),
        }
    }

    pub fn settings(&self) -> &PerformanceSettings {
        &self.settings
    }

    /// The share of decisions kept.
    pub fn sample_rate(&self) -> f64 {
        if self.keep_below == u64::MAX {
            1.0
        } else {
            self.keep_below as f64 / u64::MAX as f64
        }
    }

    /// The counts since the last call (for counters).
    pub fn take_counts(&mut self) -> PerformanceCounts {
        std::mem::take(&mut self.counts)
    }

    /// Decisions waiting for labels.
    pub fn tracked(&self) -> usize {
        self.tracked
    }

    /// This monitor's index of a version (interned; at most 255 versions
    /// over a process's life, then the oldest index is reused).
    fn intern(&mut self, v: &VersionInfo) -> u8 {
        if let Some(i) = self.versions.iter().position(|x| x.model == v.model) {
            if self.versions[i].validation != v.validation {
                self.versions[i].validation = v.validation.clone();
            }
            return i as u8;
        }
        if self.versions.len() >= 255 {
            self.versions.remove(0);
        }
        self.versions.push(v.clone());
        (self.versions.len() - 1) as u8
    }

    /// Keeps a batch's decisions until their labels come (or joins them
    /// with labels that came first). `watermark`: the scoring thread's
    /// event-time watermark after the batch (None: the batch's newest
    /// record); days close only once scoring has passed them too.
    pub fn decisions(
        &mut self,
        ds: &[Decision],
        versions: &[VersionInfo],
        watermark: Option<i64>,
        out: &mut Vec<PerformanceReport>,
    ) {
        let map: Vec<u8> = versions.iter().map(|v| self.intern(v)).collect();
        let weight = 1.0 / self.sample_rate();
        let mut newest = i64::MIN;
        for d in ds {
            newest = newest.max(d.event_time);
            if d.tx > self.keep_below || !d.score.is_finite() {
                continue;
            }
            let Some(&version) = map.get(usize::from(d.version)) else {
                continue;
            };
            let day = d.event_time.div_euclid(DAY_MS);
            if day < self.closed_before {
                continue;
            }
            // Its label came first (a backlog scored after its labels).
            // (Kept until its day closes: another version's decision of
            // the same transaction joins it too.)
            if let Some(w) = self.waiting.get_mut(&day).and_then(|m| m.get_mut(&d.tx)) {
                let fraud = w.0;
                if !w.1 {
                    w.1 = true;
                    self.counts.matched += 1;
                }
                self.days
                    .entry((day, version))
                    .or_default()
                    .add(d.score, d.flagged, fraud, weight);
                continue;
            }
            let t = Tracked {
                score: d.score,
                flagged: d.flagged,
                version,
            };
            match self.store.entry(day).or_default().entry(d.tx) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if o.get_mut().set(t) {
                        self.tracked += 1;
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Decided::new(t));
                    self.tracked += 1;
                }
            }
        }
        let wm = match watermark {
            Some(w) => w,
            None => newest,
        };
        if wm > self.scored_until {
            self.scored_until = wm;
            self.evict_before(wm.div_euclid(DAY_MS) - i64::from(self.settings.horizon_days));
        }
        while self.tracked > self.settings.max_tracked {
            self.halve_sample();
        }
        self.close(out);
    }

    /// Closes the days both the labels and scoring have passed.
    fn close(&mut self, out: &mut Vec<PerformanceReport>) {
        let until = self.labels_until.min(self.scored_until);
        if until > i64::MIN {
            self.close_until((until - CLOSE_GRACE_MS).div_euclid(DAY_MS), out);
        }
    }

    fn evict_before(&mut self, day: i64) {
        while let Some((&d, _)) = self.store.first_key_value() {
            if d >= day {
                break;
            }
            if let Some(m) = self.store.remove(&d) {
                self.tracked -= m.values().map(Decided::len).sum::<usize>();
            }
        }
    }

    fn halve_sample(&mut self) {
        self.keep_below /= 2;
        let cut = self.keep_below;
        let mut tracked = 0;
        for m in self.store.values_mut() {
            m.retain(|tx, _| *tx <= cut);
            tracked += m.values().map(Decided::len).sum::<usize>();
        }
        self.tracked = tracked;
        tracing::info!(
            sample_rate = self.sample_rate(),
            max_tracked = self.settings.max_tracked,
            "performance monitoring keeps a smaller sample of decisions"
        );
    }

    /// Joins labels with their decisions; reports every (version, day)
    /// closed by them. A label ahead of scoring waits for its decision
    /// (at most a quarter of `max_tracked` labels wait).
    pub fn labels(&mut self, ls: &[LabelKey], out: &mut Vec<PerformanceReport>) {
        let weight = 1.0 / self.sample_rate();
        let max_waiting = self.settings.max_tracked / 4;
        for l in ls {
            self.labels_until = self.labels_until.max(l.event_time);
            let day = l.event_time.div_euclid(DAY_MS);
            let found = self.store.get_mut(&day).and_then(|m| m.remove(&l.tx));
            let Some(found) = found else {
                let ahead = l.event_time > self.scored_until && day >= self.closed_before;
                if ahead && l.tx <= self.keep_below && self.waiting_count < max_waiting {
                    let m = self.waiting.entry(day).or_default();
                    if m.insert(l.tx, (l.fraud, false)).is_none() {
                        self.waiting_count += 1;
                    }
                } else {
                    self.counts.unmatched += 1;
                }
                continue;
            };
            self.tracked -= found.len();
            if day < self.closed_before {
                self.counts.late += 1;
                continue;
            }
            self.counts.matched += 1;
            for t in found.iter() {
                self.days
                    .entry((day, t.version))
                    .or_default()
                    .add(t.score, t.flagged, l.fraud, weight);
            }
        }
        self.close(out);
    }

    /// Closes every open day (the end of an offline period).
    pub fn finish(&mut self, out: &mut Vec<PerformanceReport>) {
        self.close_until(i64::MAX, out);
    }

    /// Closes and judges every day before `day`.
    fn close_until(&mut self, day: i64, out: &mut Vec<PerformanceReport>) {
        if day <= self.closed_before {
            return;
        }
        self.closed_before = day;
        let keep = self.waiting.split_off(&day);
        for (_, m) in std::mem::replace(&mut self.waiting, keep) {
            self.waiting_count -= m.len();
            self.counts.unmatched += m.values().filter(|w| !w.1).count() as u64;
        }
        let open = if day == i64::MAX {
            BTreeMap::new()
        } else {
            self.days.split_off(&(day, 0))
        };
        let closed = std::mem::replace(&mut self.days, open);
        for ((d, v), summary) in closed {
            out.push(self.judge(d, v, summary));
        }
    }

    fn judge(&mut self, day: i64, version: u8, summary: DaySummary) -> PerformanceReport {
        let info = self.versions[usize::from(version)].clone();
        let r = judge_day(
            &info,
            day * DAY_MS,
            summary,
            self.sample_rate(),
            &self.settings,
            self.alerting.get(&version).copied().unwrap_or(false),
        );
        if r.judged {
            self.alerting.insert(version, r.alerting);
        }
        r
    }
}

/// The verdict on one closed day, given whether the version's alert was on.
/// The one-sided normal quantile a day's drop must exceed, in standard
/// errors: three metrics judged a day, at most one false alarm a year
/// across them (≈ 3.1).
pub fn performance_z() -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    static Z: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *Z.get_or_init(|| Normal::standard().inverse_cdf(1.0 - 1.0 / (3.0 * 365.0)))
}

pub fn judge_day(
    info: &VersionInfo,
    day_start: i64,
    summary: DaySummary,
    sample_rate: f64,
    s: &PerformanceSettings,
    was_alerting: bool,
) -> PerformanceReport {
    let judged = summary.positives * sample_rate >= s.min_positives as f64 - 1e-9;
    let below: Vec<&'static str> = if judged {
        summary
            .metrics()
            .iter()
            .filter_map(|(name, value)| {
                let val = info.validation.of(name)?;
                let value = value.unwrap_or(0.0);
                let drop = val - value;
                // Material (more than the margin) and beyond what the
                // day's counts explain by chance.
                let chance = summary
                    .standard_error(name, value, sample_rate)
                    .map_or(0.0, |se| performance_z() * se);
                (drop > s.margin && drop > chance).then_some(*name)
            })
            .collect()
    } else {
        Vec::new()
    };
    let alerting = if judged {
        !below.is_empty()
    } else {
        was_alerting
    };
    PerformanceReport {
        model: info.model.clone(),
        day_start,
        summary,
        validation: info.validation.clone(),
        sample_rate,
        judged,
        below,
        raised: alerting && !was_alerting,
        cleared: was_alerting && !alerting,
        alerting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact AUC and AP by brute force (ties half / grouped).
    fn exact(scores: &[f32], labels: &[bool]) -> (f64, f64) {
        let (mut pairs, mut area) = (0.0, 0.0);
        for (s, l) in scores.iter().zip(labels) {
            if !*l {
                continue;
            }
            for (t, m) in scores.iter().zip(labels) {
                if *m {
                    continue;
                }
                pairs += 1.0;
                area += if s > t {
                    1.0
                } else if s == t {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let p = labels.iter().filter(|l| **l).count() as f64;
        let (mut tp, mut ap) = (0.0, 0.0);
        for (k, i) in idx.iter().enumerate() {
            if labels[*i] {
                tp += 1.0;
                ap += tp / (k as f64 + 1.0) / p;
            }
        }
        (area / pairs, ap)
    }

    fn draw(n: usize, seed: u64, separation: f64) -> (Vec<f32>, Vec<bool>) {
        let u = |i: u64| crate::drift::summary::test_uniform(i, seed);
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let fraud = u(2 * i as u64) < 0.05;
            let z = (u(2 * i as u64 + 1) - 0.5) * 8.0 - 3.0 + if fraud { separation } else { 0.0 };
            scores.push((1.0 / (1.0 + (-z).exp())) as f32);
            labels.push(fraud);
        }
        (scores, labels)
    }

    #[test]
    fn binned_auc_and_ap_are_close_to_exact_and_merge_as_one() {
        for sep in [0.0, 2.0, 5.0] {
            let (scores, labels) = draw(3000, 7, sep);
            let mut whole = DaySummary::default();
            let mut halves = [DaySummary::default(), DaySummary::default()];
            for (i, (s, l)) in scores.iter().zip(&labels).enumerate() {
                whole.add(*s, *s >= 0.5, *l, 1.0);
                halves[i % 2].add(*s, *s >= 0.5, *l, 1.0);
            }
            let (auc, ap) = exact(&scores, &labels);
            assert!(
                (whole.auc().unwrap() - auc).abs() < 0.003,
                "{sep}: {whole:?} {auc}"
            );
            assert!(
                (whole.average_precision().unwrap() - ap).abs() < 0.01,
                "{sep}: {} {ap}",
                whole.average_precision().unwrap()
            );
            let [mut a, b] = halves;
            a.merge(&b);
            assert_eq!(a.auc(), whole.auc());
            assert_eq!(a.labelled, whole.labelled);
        }
        assert_eq!(score_bin(0.0), 0);
        assert_eq!(score_bin(1.0), SCORE_BINS - 1);
        assert_eq!(score_bin(f32::NAN), 0);
    }

    fn version(auc: f64) -> VersionInfo {
        VersionInfo {
            model: "m/1".into(),
            validation: Validation {
                auc_roc: Some(auc),
                average_precision: None,
                f1: None,
            },
        }
    }

    /// Days of decisions and their labels (a day late): `good` days are
    /// scored by a model that separates, the others by one that does not.
    fn run(mon: &mut PerformanceMonitor, good: &[bool]) -> Vec<PerformanceReport> {
        let u = |i: u64| crate::drift::summary::test_uniform(i, 11);
        let mut out = Vec::new();
        let v = [version(0.9)];
        let per_day = 2000;
        for (day, g) in good.iter().enumerate() {
            let mut ds = Vec::new();
            let mut ls = Vec::new();
            for i in 0..per_day {
                let k = (day * per_day + i) as u64;
                let fraud = u(3 * k) < 0.05;
                let z = u(3 * k + 1) * 4.0 - 2.0 + if fraud && *g { 6.0 } else { 0.0 };
                let score = (1.0 / (1.0 + (-z).exp())) as f32;
                let t = day as i64 * DAY_MS + (i as i64 * DAY_MS) / per_day as i64;
                let tx = tx_fingerprint(&k.to_string());
                ds.push(Decision {
                    tx,
                    event_time: t,
                    score,
                    flagged: score >= 0.5,
                    version: 0,
                });
                ls.push(LabelKey {
                    tx,
                    event_time: t,
                    fraud,
                });
            }
            mon.decisions(&ds, &v, None, &mut out);
            mon.labels(&ls, &mut out);
        }
        mon.finish(&mut out);
        out
    }

    #[test]
    fn a_day_below_validation_raises_and_a_good_day_clears() {
        let mut mon = PerformanceMonitor::new(PerformanceSettings::default());
        let out = run(&mut mon, &[true, true, false, false, true]);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(out.iter().all(|r| r.judged));
        let raised: Vec<bool> = out.iter().map(|r| r.raised).collect();
        let cleared: Vec<bool> = out.iter().map(|r| r.cleared).collect();
        assert_eq!(raised, [false, false, true, false, false]);
        assert_eq!(cleared, [false, false, false, false, true]);
        assert!(out[0].metric("auc_roc").unwrap() > 0.95);
        assert!((out[2].metric("auc_roc").unwrap() - 0.5).abs() < 0.1);
        assert_eq!(out[2].below, ["auc_roc"]);
        assert_eq!(mon.counts.matched, 5 * 2000);
        assert_eq!(mon.counts.unmatched, 0);
        assert_eq!(mon.tracked(), 0);
    }

    #[test]
    fn the_store_stays_bounded_and_a_sample_gives_the_same_verdict() {
        let settings = PerformanceSettings {
            max_tracked: 700,
            ..Default::default()
        };
        let mut mon = PerformanceMonitor::new(settings);
        // Decisions of three days before any label: the store must sample.
        let out = run(&mut mon, &[true, false, true]);
        assert!(
            mon.sample_rate() < 1.0 && mon.sample_rate() >= 0.25,
            "{}",
            mon.sample_rate()
        );
        assert!(mon.tracked() <= 700);
        assert_eq!(out.len(), 3);
        // Weighted counts estimate the whole day's traffic.
        for r in &out {
            assert!(
                (r.summary.labelled - 2000.0).abs() < 400.0,
                "{}",
                r.summary.labelled
            );
        }
        assert!(out[1].alerting && out[1].raised);
        assert!(out[2].cleared);
    }

    #[test]
    fn decisions_older_than_the_horizon_are_evicted() {
        let mut mon = PerformanceMonitor::new(PerformanceSettings {
            horizon_days: 2,
            ..Default::default()
        });
        let v = [version(0.9)];
        for day in 0..6 {
            mon.decisions(
                &[Decision {
                    tx: day as u64,
                    event_time: day * DAY_MS,
                    score: 0.1,
                    flagged: false,
                    version: 0,
                }],
                &v,
                None,
                &mut Vec::new(),
            );
        }
        assert_eq!(mon.tracked(), 3);
        let mut out = Vec::new();
        mon.labels(
            &[LabelKey {
                tx: 0,
                event_time: 0,
                fraud: true,
            }],
            &mut out,
        );
        assert_eq!(mon.counts.unmatched, 1);
    }

    #[test]
    fn labels_that_come_before_their_decisions_wait_for_them() {
        // A backlog: every label is read before scoring reaches its day.
        let mut mon = PerformanceMonitor::new(PerformanceSettings {
            min_positives: 1,
            ..Default::default()
        });
        let v = [version(0.9)];
        let mut out = Vec::new();
        let ls: Vec<LabelKey> = (0..100)
            .map(|i| LabelKey {
                tx: tx_fingerprint(&i.to_string()),
                event_time: i * DAY_MS / 50,
                fraud: i % 10 == 0,
            })
            .collect();
        mon.labels(&ls, &mut out);
        assert!(out.is_empty(), "no day closes before scoring passed it");
        let ds: Vec<Decision> = ls
            .iter()
            .map(|l| Decision {
                tx: l.tx,
                event_time: l.event_time,
                score: if l.fraud { 0.9 } else { 0.1 },
                flagged: l.fraud,
                version: 0,
            })
            .collect();
        mon.decisions(&ds[..50], &v, Some(DAY_MS + 2 * CLOSE_GRACE_MS), &mut out);
        assert_eq!(out.len(), 1, "scoring passed day 0: {out:?}");
        assert_eq!(out[0].summary.labelled, 50.0);
        assert_eq!(out[0].metric("auc_roc"), Some(1.0));
        mon.decisions(&ds[50..], &v, None, &mut out);
        mon.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(mon.counts.matched, 100);
        assert_eq!(mon.counts.unmatched, 0);
    }
}

#[cfg(test)]
mod chance_tests {
    use super::*;

    /// A day of `frauds` frauds among 100 × as many records: `tp` of them
    /// flagged, `fp` genuine ones flagged; scores put flagged above the rest.
    fn day(frauds: f64, tp: f64, fp: f64) -> DaySummary {
        let mut d = DaySummary::default();
        let genuine = 99.0 * frauds;
        d.add(0.9, true, true, tp);
        d.add(0.1, false, true, frauds - tp);
        d.add(0.9, true, false, fp);
        d.add(0.1, false, false, genuine - fp);
        d
    }

    fn f1_below(d: DaySummary, sample_rate: f64) -> bool {
        let info = VersionInfo {
            model: "m/1".into(),
            validation: Validation {
                auc_roc: None,
                average_precision: None,
                f1: Some(0.808),
            },
        };
        let r = judge_day(
            &info,
            0,
            d,
            sample_rate,
            &PerformanceSettings::default(),
            false,
        );
        assert!(r.judged);
        r.below.contains(&"f1")
    }

    #[test]
    fn a_drop_inside_the_days_chance_does_not_alert_the_same_drop_on_more_frauds_does() {
        assert!(
            (performance_z() - 3.117).abs() < 0.001,
            "{}",
            performance_z()
        );
        // F1 0.655 against 0.808: 0.153 under, past the 0.15 margin, on
        // 60 frauds, where a day's F1 moves by ±0.06 by chance.
        let few = day(60.0, 39.0, 20.0);
        let f1 = few.f1().unwrap();
        assert!((f1 - 0.655).abs() < 0.001, "{f1}");
        let se = few.standard_error("f1", f1, 1.0).unwrap();
        assert!((se - 0.0616).abs() < 0.001, "{se}");
        assert!(!f1_below(few, 1.0), "60 frauds: chance");
        // The same rates on ten times the frauds: beyond chance.
        assert!(f1_below(day(600.0, 390.0, 200.0), 1.0));
        // ...unless they were sampled at a tenth (as few observed).
        assert!(!f1_below(day(600.0, 390.0, 200.0), 0.1));
        // A drop inside the margin never alerts, however many frauds.
        assert!(!f1_below(day(9300.0, 6600.0, 2500.0), 1.0));
    }

    #[test]
    fn the_auc_standard_error_is_hanley_and_mcneils() {
        // Hanley & McNeil (1982), eq. 2, for A = 0.9 with 50 frauds and 50
        // genuine (0.0321, evaluated independently), and it halves with
        // four times the cases.
        let d = |n: f64| DaySummary {
            labelled: 2.0 * n,
            positives: n,
            ..DaySummary::default()
        };
        let se = d(50.0).standard_error("auc_roc", 0.9, 1.0).unwrap();
        assert!((se - 0.0321).abs() < 0.0002, "{se}");
        let quarter = d(200.0).standard_error("auc_roc", 0.9, 1.0).unwrap();
        assert!((quarter / se - 0.5).abs() < 0.02, "{quarter}");
        assert_eq!(d(50.0).standard_error("auc_roc", 0.9, 0.0), None);
    }
}
