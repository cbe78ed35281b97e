//! Realised performance in the sidecar: `PerformanceReport` records (Avro
//! fields and their decoding), gauges, and the merge of every instance's
//! closed days into one verdict per model version.
//!
//! Each instance joins labels only with the decisions it made, so its day
//! covers its share of the traffic. Every instance publishes its closed
//! days to the drift topic (for people) and to `<drift topic>.slices` (for
//! the merge). Every instance merges the reports of a day once each live
//! instance has sent its own (or `MERGE_WAIT` after the first); the judge
//! of the drift merge (smallest live instance name) speaks for the verdict.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value;

use super::performance::{
    judge_day, DaySummary, PerformanceReport, PerformanceSettings, Validation, VersionInfo,
    SCORE_BINS,
};
use crate::metrics::PerformanceGauge;

/// How long a day's merge waits for instances that have not reported it.
pub const MERGE_WAIT: Duration = Duration::from_secs(30);

fn opt(x: Option<f64>) -> Value {
    match x.filter(|x| x.is_finite()) {
        Some(v) => Value::Union(1, Box::new(Value::Double(v))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// "name/version" split in two.
pub fn split_model(model: &str) -> (&str, &str) {
    model.rsplit_once('/').unwrap_or((model, ""))
}

/// The `PerformanceReport` record's fields, written by `instance`.
pub fn report_fields(
    r: &PerformanceReport,
    instance: &str,
    margin: f64,
) -> Vec<(&'static str, Value)> {
    let (name, version) = split_model(&r.model);
    let s = &r.summary;
    let bins = s
        .positive_bins
        .iter()
        .zip(&s.negative_bins)
        .enumerate()
        .filter(|(_, (p, n))| **p > 0.0 || **n > 0.0)
        .map(|(i, (p, n))| {
            Value::Record(vec![
                ("bin".into(), Value::Int(i as i32)),
                ("positives".into(), Value::Double(*p)),
                ("negatives".into(), Value::Double(*n)),
            ])
        })
        .collect();
    vec![
        ("model_name", Value::String(name.into())),
        ("model_version", Value::String(version.into())),
        ("instance", Value::String(instance.into())),
        ("day_start", Value::TimestampMillis(r.day_start)),
        ("labelled", Value::Double(s.labelled)),
        ("positives", Value::Double(s.positives)),
        ("true_positives", Value::Double(s.true_positives)),
        ("false_positives", Value::Double(s.false_positives)),
        ("sample_rate", Value::Double(r.sample_rate)),
        ("precision", opt(s.precision())),
        ("recall", opt(s.recall())),
        ("f1", opt(s.f1())),
        ("auc_roc", opt(s.auc())),
        ("average_precision", opt(s.average_precision())),
        ("validation_auc_roc", opt(r.validation.auc_roc)),
        (
            "validation_average_precision",
            opt(r.validation.average_precision),
        ),
        ("validation_f1", opt(r.validation.f1)),
        ("margin", Value::Double(margin)),
        ("judged", Value::Boolean(r.judged)),
        (
            "below",
            Value::Array(r.below.iter().map(|b| Value::String((*b).into())).collect()),
        ),
        ("raised", Value::Boolean(r.raised)),
        ("cleared", Value::Boolean(r.cleared)),
        ("alerting", Value::Boolean(r.alerting)),
        ("score_bins", Value::Array(bins)),
        (
            "emitted_at",
            Value::TimestampMillis(crate::message::now_ms()),
        ),
    ]
}

/// A decoded report (its JSON form): who wrote it and what it holds; None
/// for a record that is not a well-formed performance report.
pub fn decode(j: &serde_json::Value) -> Option<(String, PerformanceReport)> {
    j.get("score_bins")?;
    let f = |k: &str| j[k].as_f64();
    let mut summary = DaySummary {
        labelled: f("labelled")?,
        positives: f("positives")?,
        true_positives: f("true_positives")?,
        false_positives: f("false_positives")?,
        ..Default::default()
    };
    for b in j["score_bins"].as_array()? {
        let i = usize::try_from(b["bin"].as_i64()?).ok()?;
        if i >= SCORE_BINS {
            return None;
        }
        summary.positive_bins[i] = b["positives"].as_f64()?;
        summary.negative_bins[i] = b["negatives"].as_f64()?;
    }
    let values = [summary.labelled, summary.positives, summary.true_positives];
    if values.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return None;
    }
    let nullable = |k: &str| j[k].as_f64();
    let report = PerformanceReport {
        model: format!(
            "{}/{}",
            j["model_name"].as_str()?,
            j["model_version"].as_str()?
        ),
        day_start: j["day_start"].as_i64()?,
        summary,
        validation: Validation {
            auc_roc: nullable("validation_auc_roc"),
            average_precision: nullable("validation_average_precision"),
            f1: nullable("validation_f1"),
        },
        sample_rate: f("sample_rate")?,
        judged: j["judged"].as_bool()?,
        below: Vec::new(),
        raised: j["raised"].as_bool()?,
        cleared: j["cleared"].as_bool()?,
        alerting: j["alerting"].as_bool()?,
    };
    Some((j["instance"].as_str()?.to_string(), report))
}

/// The gauges of a closed day.
pub fn gauge_of(r: &PerformanceReport) -> PerformanceGauge {
    let mut values: Vec<(&'static str, f64)> = r
        .summary
        .metrics()
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    values.extend([
        ("labelled", r.summary.labelled),
        ("positives", r.summary.positives),
        ("day_start_seconds", r.day_start as f64 / 1000.0),
    ]);
    for (k, v) in [
        ("validation_auc_roc", r.validation.auc_roc),
        (
            "validation_average_precision",
            r.validation.average_precision,
        ),
        ("validation_f1", r.validation.f1),
    ] {
        if let Some(v) = v {
            values.push((k, v));
        }
    }
    PerformanceGauge {
        model: r.model.clone(),
        values,
        alerting: r.alerting,
    }
}

/// One day of one version, as reported so far.
struct Pending {
    first_seen: Instant,
    validation: Validation,
    by_instance: BTreeMap<String, DaySummary>,
}

/// Merges every instance's closed days; judges each once.
pub struct PerfMerger {
    pending: BTreeMap<(String, i64), Pending>,
    /// Days already merged (a late report of one is ignored), per model.
    done_before: BTreeMap<String, i64>,
    alerting: BTreeMap<String, bool>,
    /// Reports ignored because their day was already merged.
    pub late: u64,
}

impl Default for PerfMerger {
    fn default() -> Self {
        Self::new()
    }
}

impl PerfMerger {
    pub fn new() -> Self {
        Self {
            pending: BTreeMap::new(),
            done_before: BTreeMap::new(),
            alerting: BTreeMap::new(),
            late: 0,
        }
    }

    /// An instance's closed day (its summary already weighted).
    pub fn add(&mut self, instance: &str, r: PerformanceReport, now: Instant) {
        if self
            .done_before
            .get(&r.model)
            .is_some_and(|d| r.day_start < *d)
        {
            self.late += 1;
            return;
        }
        let p = self
            .pending
            .entry((r.model.clone(), r.day_start))
            .or_insert_with(|| Pending {
                first_seen: now,
                validation: r.validation.clone(),
                by_instance: BTreeMap::new(),
            });
        p.by_instance.insert(instance.to_string(), r.summary);
    }

    /// Days every live instance has reported (or waited for long enough),
    /// merged and judged, oldest first.
    pub fn ready(
        &mut self,
        live: &[String],
        now: Instant,
        settings: &PerformanceSettings,
    ) -> Vec<(PerformanceReport, Vec<String>)> {
        let keys: Vec<(String, i64)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                now.duration_since(p.first_seen) >= MERGE_WAIT
                    || live.iter().all(|i| p.by_instance.contains_key(i))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let (model, day) = key;
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
            let d = self.done_before.entry(model).or_insert(i64::MIN);
            *d = (*d).max(day + 1);
            out.push((r, p.by_instance.into_keys().collect()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

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
    fn reports_round_trip_through_avro_and_merge_into_one_day() {
        let codec = Codec::new().unwrap();
        let a = report(0, &[(0.9, true), (0.1, false), (0.6, false)]);
        let b = report(0, &[(0.8, true), (0.2, false)]);
        let payload = codec
            .encode_performance(report_fields(&a, "w1", 0.15))
            .unwrap();
        let (who, back) = decode(&codec.to_json(&payload).unwrap()).unwrap();
        assert_eq!(who, "w1");
        assert_eq!(back.summary, a.summary);
        assert_eq!(back.validation, a.validation);
        assert_eq!(back.model, "fraud-mlp/1");

        let settings = PerformanceSettings {
            min_positives: 1,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut m = PerfMerger::new();
        m.add("w1", back, t0);
        let live = ["w1".to_string(), "w2".to_string()];
        assert!(m.ready(&live, t0, &settings).is_empty(), "waits for w2");
        m.add("w2", b.clone(), t0);
        let out = m.ready(&live, t0, &settings);
        assert_eq!(out.len(), 1);
        let (r, instances) = &out[0];
        assert_eq!(instances, &live);
        assert_eq!(r.summary.labelled, 5.0);
        assert_eq!(r.summary.auc(), Some(1.0));
        assert!(!r.alerting);
        // A late report of a merged day is ignored; a silent instance is
        // waited for MERGE_WAIT only.
        m.add("w3", b.clone(), t0);
        assert_eq!(m.late, 1);
        m.add("w1", report(1, &[(0.1, true), (0.9, false)]), t0);
        assert!(m.ready(&live, t0, &settings).is_empty());
        let out = m.ready(&live, t0 + MERGE_WAIT, &settings);
        assert_eq!(out.len(), 1);
        assert!(out[0].0.raised, "{:?}", out[0].0);
        assert!(decode(&serde_json::json!({"score_bins": [{"bin": 999}]})).is_none());
    }
}
