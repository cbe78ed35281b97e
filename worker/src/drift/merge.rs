//! One verdict across instances. Every instance publishes the slices its
//! monitor closes (its share of the traffic: the partitions it owns) to the
//! slices topic; every instance reads that topic and merges the slices of
//! all instances, slice by slice, into a second monitor: the global one.
//! A merged slice is complete when every live instance has published that
//! slice or a later one (each instance closes its slices in order), so the
//! merged monitor sees exactly what one instance scoring everything would
//! see, and judges the same windows with the same thresholds.
//!
//! Days of realised performance merge the same way: each instance joins
//! labels only with the decisions it made, so its closed day covers its
//! share of the traffic; a day is merged once each live instance has sent
//! its own (or [`MERGE_WAIT`] after the first) and judged once.
//!
//! Every instance computes the same verdict from the same slices; the one
//! with the smallest name among the live contributors speaks for it (logs
//! the alert, publishes the global report), so an alert is raised once per
//! model. Why not elect by partition ownership: the set of contributors is
//! known from the slices themselves, the election needs no coordination
//! with the consumer group, and a judge that leaves is replaced as soon as
//! it is seen idle, with the same alert state (all instances hold it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::performance::{
    judge_day, DaySummary, PerformanceReport, PerformanceSettings, Validation, VersionInfo,
};
use super::summary::Slice;

/// How long a day's merge waits for instances that have not reported it.
pub const MERGE_WAIT: Duration = Duration::from_secs(30);

/// What is known of one contributing instance.
#[derive(Debug, Clone)]
struct Contributor {
    /// The newest slice index it published.
    latest: i64,
    /// When (wall clock) it last published.
    seen: Instant,
}

/// A merged slice ready to be judged, with who contributed to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub slice: Slice,
    pub instances: Vec<String>,
}

/// One day of one version, as reported so far.
#[derive(Debug)]
struct PendingDay {
    first_seen: Instant,
    validation: Validation,
    by_instance: BTreeMap<String, DaySummary>,
}

/// Merges the slices and the closed days of several instances.
#[derive(Debug)]
pub struct Merger {
    pending: BTreeMap<i64, (Slice, BTreeSet<String>)>,
    contributors: BTreeMap<String, Contributor>,
    /// An instance silent for longer is no longer waited for.
    idle: Duration,
    /// The last slice handed out: older ones arriving late are dropped.
    done: Option<i64>,
    late: u64,
    /// Nothing is handed out before this (wall clock): at start, every
    /// running instance gets the time to be heard from once.
    warm_until: Instant,
    warm_up: Duration,
    /// When the first slice (of any instance) was heard: instances started
    /// together on idle input close their first slices when the traffic
    /// begins, which can be long after the merger started, so the warm-up
    /// also runs from then.
    first_heard: Option<Instant>,
    days: BTreeMap<(String, i64), PendingDay>,
    /// Days already merged (a late report of one is ignored), per model.
    days_done_before: BTreeMap<String, i64>,
    alerting: BTreeMap<String, bool>,
    /// Days reported after they were merged.
    late_days: u64,
}

impl Merger {
    /// A merger that waits for instances silent for up to `idle`, and hands
    /// nothing out during the first `warm_up` after `now` nor during the
    /// first `warm_up` after the first slice was heard.
    pub fn new(idle: Duration, warm_up: Duration, now: Instant) -> Self {
        Self {
            pending: BTreeMap::new(),
            contributors: BTreeMap::new(),
            idle,
            done: None,
            late: 0,
            warm_until: now + warm_up,
            warm_up,
            first_heard: None,
            days: BTreeMap::new(),
            days_done_before: BTreeMap::new(),
            alerting: BTreeMap::new(),
            late_days: 0,
        }
    }

    /// Adds one instance's slice.
    pub fn add_slice(&mut self, instance: &str, slice: Slice, now: Instant) {
        self.first_heard.get_or_insert(now);
        let c = self
            .contributors
            .entry(instance.to_string())
            .or_insert(Contributor {
                latest: slice.index,
                seen: now,
            });
        c.latest = c.latest.max(slice.index);
        c.seen = now;
        if self.done.is_some_and(|d| slice.index <= d) {
            self.late += 1;
            return;
        }
        match self.pending.get_mut(&slice.index) {
            Some((s, who)) => {
                s.merge(&slice);
                who.insert(instance.to_string());
            }
            None => {
                let who = BTreeSet::from([instance.to_string()]);
                self.pending.insert(slice.index, (slice, who));
            }
        }
    }

    /// The instances heard from within the idle time.
    pub fn live(&self, now: Instant) -> Vec<&str> {
        self.contributors
            .iter()
            .filter(|(_, c)| now.duration_since(c.seen) <= self.idle)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The instance that speaks for the verdict: the smallest live name.
    pub fn judge(&self, now: Instant) -> Option<&str> {
        self.live(now).into_iter().next()
    }

    /// Slices from instances that came after their slice was judged.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Every pending slice that all live instances have passed, in order.
    pub fn ready_slices(&mut self, now: Instant) -> Vec<Merged> {
        let heard_long_enough = self.first_heard.is_some_and(|f| now >= f + self.warm_up);
        if now < self.warm_until || !heard_long_enough {
            return Vec::new();
        }
        let horizon = self
            .contributors
            .values()
            .filter(|c| now.duration_since(c.seen) <= self.idle)
            .map(|c| c.latest)
            .min();
        let mut out = Vec::new();
        let Some(horizon) = horizon.or_else(|| self.pending.keys().next_back().copied()) else {
            return out;
        };
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > horizon {
                break;
            }
            let (slice, who) = entry.remove();
            self.done = Some(slice.index);
            out.push(Merged {
                slice,
                instances: who.into_iter().collect(),
            });
        }
        out
    }

    /// Days reported after they were merged.
    pub fn late_days(&self) -> u64 {
        self.late_days
    }

    /// An instance's closed day (its summary already weighted).
    pub fn add_day(&mut self, instance: &str, r: PerformanceReport, now: Instant) {
        if self
            .days_done_before
            .get(&r.model)
            .is_some_and(|d| r.day_start < *d)
        {
            self.late_days += 1;
            return;
        }
        let p = self
            .days
            .entry((r.model.clone(), r.day_start))
            .or_insert_with(|| PendingDay {
                first_seen: now,
                validation: r.validation.clone(),
                by_instance: BTreeMap::new(),
            });
        p.by_instance.insert(instance.to_string(), r.summary);
    }

    /// Days every live instance has reported (or waited for long enough),
    /// merged and judged, oldest first, with who contributed.
    pub fn ready_days(
        &mut self,
        now: Instant,
        settings: &PerformanceSettings,
    ) -> Vec<(PerformanceReport, Vec<String>)> {
        let live: Vec<String> = self.live(now).into_iter().map(str::to_string).collect();
        let keys: Vec<(String, i64)> = self
            .days
            .iter()
            .filter(|(_, p)| {
                now.duration_since(p.first_seen) >= MERGE_WAIT
                    || live.iter().all(|i| p.by_instance.contains_key(i))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for (model, day) in keys {
            let Some(p) = self.days.remove(&(model.clone(), day)) else {
                continue;
            };
            let mut merged = DaySummary::default();
            for s in p.by_instance.values() {
                merged.merge(s);
            }
            let was = self.alerting.get(&model).copied().unwrap_or(false);
            let info = VersionInfo {
                model: model.clone(),
                validation: p.validation,
            };
            let r = judge_day(&info, day, merged, 1.0, settings, was);
            if r.judged {
                self.alerting.insert(model.clone(), r.alerting);
            }
            let d = self.days_done_before.entry(model).or_insert(i64::MIN);
            *d = (*d).max(day + 1);
            out.push((r, p.by_instance.into_keys().collect()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DriftMonitor, DriftSettings, Reference};
    use crate::features::N_FEATURES;

    use crate::drift::summary::test_uniform as u;

    fn amount_index() -> usize {
        crate::features::FEATURE_NAMES
            .iter()
            .position(|n| *n == "TX_AMOUNT")
            .unwrap()
    }

    /// Three days of synthetic traffic against a reference built from the
    /// same generator, amounts × 1.5 from the start of the third day.
    /// A scored record: features, score, event time, customer.
    type Scored = ([f64; N_FEATURES], f32, i64, u64);

    fn traffic() -> (Reference, Vec<Scored>) {
        let day = 86_400_000i64;
        let t0 = 1_533_081_600_000i64; // 2018-08-01
        let row = |i: u64, shift: f64| {
            let mut f = [0.0; N_FEATURES];
            for (j, x) in f.iter_mut().enumerate() {
                *x = 10.0 + 80.0 * u(i, j as u64 + 1);
            }
            f[amount_index()] *= shift;
            f
        };
        let n_ref = 200_000u64;
        let ref_rows: Vec<[f64; N_FEATURES]> = (0..n_ref).map(|i| row(i, 1.0)).collect();
        let ref_times: Vec<i64> = (0..n_ref as i64)
            .map(|i| t0 - 28 * day + i * 12_096)
            .collect();
        let scores: Vec<f32> = (0..n_ref).map(|i| u(i, 99) as f32).collect();
        let reference = Reference::build(&ref_rows, &scores, 0.99, &ref_times);
        let live = (0..3 * 8_000u64)
            .map(|k| {
                let i = n_ref + k;
                let t = t0 + k as i64 * 10_800;
                let shift = if t >= t0 + 2 * day { 1.5 } else { 1.0 };
                (row(i, shift), u(i, 99) as f32, t, i % 97)
            })
            .collect();
        (reference, live)
    }

    #[test]
    fn four_instances_merged_reach_the_verdict_of_one_that_sees_everything() {
        let (reference, live) = traffic();
        let inputs = vec![
            "TX_AMOUNT".to_string(),
            "CUSTOMER_ID_NB_TX_7DAY_WINDOW".to_string(),
        ];
        let settings = DriftSettings::default();
        let mut one = DriftMonitor::new(&reference, &inputs, settings.clone()).unwrap();
        let mut four: Vec<DriftMonitor> = (0..4)
            .map(|_| {
                DriftMonitor::new(&reference, &inputs, settings.clone())
                    .unwrap()
                    .export_slices()
            })
            .collect();
        let mut global = DriftMonitor::new(&reference, &inputs, settings).unwrap();
        let start = Instant::now();
        let mut merger = Merger::new(Duration::from_secs(600), Duration::from_secs(5), start);
        let (mut alone, mut merged, mut local) = (Vec::new(), Vec::new(), Vec::new());
        let mut slices = Vec::new();
        let mut now = start;
        for (i, (f, s, t, customer)) in live.iter().enumerate() {
            // A wall clock that runs 10 ms per record.
            now = start + Duration::from_millis(10 * i as u64);
            one.push(f, *s, *s >= 0.99, *t, 0, &mut alone);
            // Customers (the key) split over four instances.
            let k = (*customer % 4) as usize;
            four[k].push(f, *s, *s >= 0.99, *t, k as i32, &mut local);
            for (k, m) in four.iter_mut().enumerate() {
                m.drain_slices(&mut slices);
                for sl in slices.drain(..) {
                    merger.add_slice(&format!("instance-{k}"), sl, now);
                }
            }
            for m in merger.ready_slices(now) {
                assert_eq!(m.instances.len(), 4);
                let at = (m.slice.index + 1) * crate::drift::summary::SLICE_MS;
                global.push_slice(m.slice, at, &mut merged);
            }
        }
        // Each instance alone sees a quarter of the traffic...
        let raise = |reports: &[crate::drift::WindowReport]| {
            reports
                .iter()
                .find(|r| r.raised.iter().any(|v| v == "TX_AMOUNT"))
                .map(|r| r.end_event_time)
        };
        let t_one = raise(&alone).expect("one instance raises");
        let t_merged = raise(&merged).expect("merged instances raise");
        // ... merged, they judge the same windows as one seeing everything.
        assert_eq!(t_merged, t_one);
        let common = merged.len().min(alone.len()).saturating_sub(4);
        assert!(common > 200, "{common}");
        for (a, b) in alone.iter().zip(&merged).take(common) {
            assert_eq!(a.end_event_time, b.end_event_time);
            assert_eq!(a.raised, b.raised);
            for (x, y) in a.vars.iter().zip(&b.vars) {
                for (p, q) in x.scales.iter().zip(&y.scales) {
                    assert_eq!(p.records, q.records);
                    assert!((p.z - q.z).abs() < 1e-6, "{p:?} {q:?}");
                }
            }
        }
        assert_eq!(merger.judge(now), Some("instance-0"));
    }

    #[test]
    fn a_silent_instance_stops_holding_slices_back() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(30), Duration::ZERO, t0);
        m.add_slice("a", Slice::empty(10, &[0]), t0);
        m.add_slice("b", Slice::empty(10, &[0]), t0);
        m.add_slice("a", Slice::empty(11, &[0]), t0);
        // b has not passed slice 11 yet.
        assert_eq!(
            m.ready_slices(t0)
                .iter()
                .map(|x| x.slice.index)
                .collect::<Vec<_>>(),
            vec![10]
        );
        assert!(m.ready_slices(t0 + Duration::from_secs(10)).is_empty());
        // b went silent: a alone decides.
        let later = t0 + Duration::from_secs(31);
        m.add_slice("a", Slice::empty(12, &[0]), later);
        let ready: Vec<i64> = m
            .ready_slices(later)
            .iter()
            .map(|x| x.slice.index)
            .collect();
        assert_eq!(ready, vec![11, 12]);
        assert_eq!(m.judge(later), Some("a"));
        // b's slice 11, now late, is counted and dropped.
        m.add_slice("b", Slice::empty(11, &[0]), later);
        assert_eq!(m.late(), 1);
    }

    #[test]
    fn instances_started_together_on_idle_input_are_all_waited_for_when_traffic_begins() {
        let t0 = Instant::now();
        let warm = Duration::from_secs(10);
        let mut m = Merger::new(Duration::from_secs(120), warm, t0);
        // Traffic begins a minute after start; a closes its first slice
        // three seconds before b does.
        let t1 = t0 + Duration::from_secs(60);
        m.add_slice("a", Slice::empty(0, &[0]), t1);
        assert!(
            m.ready_slices(t1 + Duration::from_secs(1)).is_empty(),
            "b not heard yet"
        );
        m.add_slice("b", Slice::empty(0, &[0]), t1 + Duration::from_secs(3));
        let ready = m.ready_slices(t1 + warm);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].instances, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(m.late(), 0);
    }

    fn report(day: i64, scores: &[(f32, bool)]) -> PerformanceReport {
        let mut s = DaySummary::default();
        for (x, fraud) in scores {
            s.add(*x, *x >= 0.5, *fraud, 1.0);
        }
        PerformanceReport {
            model: "fraud-mlp/1".into(),
            day_start: day,
            summary: s,
            validation: Validation {
                auc_roc: Some(0.9),
                average_precision: Some(0.8),
                f1: None,
            },
            sample_rate: 1.0,
            judged: true,
            below: vec!["auc_roc"],
            raised: true,
            cleared: false,
            alerting: true,
        }
    }

    #[test]
    fn days_of_every_live_instance_merge_into_one() {
        let a = report(0, &[(0.9, true), (0.1, false), (0.6, false)]);
        let b = report(0, &[(0.8, true), (0.2, false)]);
        let settings = PerformanceSettings {
            min_positives: 1,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(120), Duration::ZERO, t0);
        // Both instances are live (heard from on the slices topic).
        m.add_slice("w1", Slice::empty(0, &[0]), t0);
        m.add_slice("w2", Slice::empty(0, &[0]), t0);
        m.add_day("w1", a, t0);
        let live = ["w1".to_string(), "w2".to_string()];
        assert!(m.ready_days(t0, &settings).is_empty(), "waits for w2");
        m.add_day("w2", b.clone(), t0);
        let out = m.ready_days(t0, &settings);
        assert_eq!(out.len(), 1);
        let (r, instances) = &out[0];
        assert_eq!(instances, &live);
        assert_eq!(r.summary.labelled, 5.0);
        assert_eq!(r.summary.auc(), Some(1.0));
        assert!(!r.alerting);
        // A late report of a merged day is ignored; a silent instance is
        // waited for MERGE_WAIT only.
        m.add_day("w3", b.clone(), t0);
        assert_eq!(m.late_days(), 1);
        m.add_day("w1", report(1, &[(0.1, true), (0.9, false)]), t0);
        assert!(m.ready_days(t0, &settings).is_empty());
        let out = m.ready_days(t0 + MERGE_WAIT, &settings);
        assert_eq!(out.len(), 1);
        assert!(out[0].0.raised, "{:?}", out[0].0);
    }
}
