//! What the sidecar writes and reads back: its evaluations, slices and
//! days of realised performance as the codec's records (and the records of
//! other instances as slices and days again), the gauges of each, and the
//! WARN logs of raised and cleared alerts.

use std::sync::Arc;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

use crate::codec::{self, Codec};
use crate::drift::monitor::{scale_label, ScaleStats, VarStats, WindowReport};
use crate::drift::performance::{DaySummary, PerformanceReport, Validation, SCORE_BINS};
use crate::drift::summary::{Slice, VarSummary, SLICE_MS};
use crate::message::now_ms;
use crate::metrics::{DriftGauge, Metrics, PerformanceGauge};

/// Where reports go.
pub struct DriftOutput {
    pub producer: Option<ThreadedProducer<DefaultProducerContext>>,
    pub topic: String,
    pub codec: Arc<Codec>,
    pub model_name: String,
    pub model_version: String,
    pub instance: String,
}

impl DriftOutput {
    /// Sends `payload` keyed `key` to `topic`; a refusal is logged.
    pub(crate) fn send(&self, topic: &str, key: &str, payload: &[u8], what: &str) {
        let Some(p) = &self.producer else { return };
        if let Err((e, _)) = p.send(BaseRecord::to(topic).key(key).payload(payload)) {
            tracing::warn!(error = %e, topic = %topic, "cannot send a {what}");
        }
    }
}

/// A finite value, or null.
fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

fn strings(v: &[&'static str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

fn scale_record(s: &ScaleStats) -> codec::ScaleDrift {
    codec::ScaleDrift {
        scale_seconds: s.scale_seconds as i64,
        records: s.records as i64,
        judged: s.judged,
        mean: s.mean,
        expected_mean: s.expected_mean,
        effect: s.effect,
        z: s.z,
        z_low: s.z_low,
        z_high: s.z_high,
        chi2: finite(s.chi2),
        chi2_limit: finite(s.chi2_limit),
        psi: finite(s.psi),
        over: strings(&s.over),
    }
}

/// The `DriftReport` of an evaluation, as written by `instance` (this
/// instance's name, or "global" for the merged verdict).
pub(crate) fn report_record(
    r: &WindowReport,
    out: &DriftOutput,
    instance: &str,
    dropped: u64,
) -> codec::DriftReport {
    let variables = r
        .vars
        .iter()
        .map(|v| codec::VariableDrift {
            name: v.name.clone(),
            kind: v.kind.to_string(),
            scales: v.scales.iter().map(scale_record).collect(),
            over: v.over.clone(),
            alerting: v.alerting,
        })
        .collect();
    codec::DriftReport {
        model_name: out.model_name.clone(),
        model_version: out.model_version.clone(),
        instance: instance.to_string(),
        window_index: r.index as i64,
        window_start: r.start_event_time,
        window_end: r.end_event_time,
        decided_at: r.decided_at,
        records: r.records as i64,
        judged: r.judged,
        samples_dropped: dropped as i64,
        late_records: r.late_records as i64,
        flagged_rate: r.flagged_rate,
        reference_flagged_rate: r.reference_flagged_rate,
        variables,
        raised: r.raised.clone(),
        cleared: r.cleared.clone(),
        active: r.active.clone(),
        emitted_at: now_ms(),
    }
}

/// The `DriftSlice` of one of this instance's closed slices.
pub(crate) fn slice_record(s: &Slice, names: &[&str], out: &DriftOutput) -> codec::DriftSlice {
    let variables = s
        .vars
        .iter()
        .zip(names)
        .map(|(v, name)| codec::VariableSummary {
            name: (*name).to_string(),
            n: v.n as i64,
            sum: v.sum,
            sum_of_squares: v.sumsq,
            bins: v.bins.iter().map(|b| *b as i64).collect(),
        })
        .collect();
    codec::DriftSlice {
        model_name: out.model_name.clone(),
        model_version: out.model_version.clone(),
        instance: out.instance.clone(),
        slice_start: s.index * SLICE_MS,
        records: s.records as i64,
        variables,
    }
}

/// A slice of this model version with exactly the monitor's variables, and
/// who wrote it; None for anything else (not an error: other versions
/// share the topic during a swap) and for counts below zero or sums not
/// finite.
pub(crate) fn slice_of(
    r: codec::DriftSlice,
    names: &[String],
    model: &str,
    version: &str,
) -> Option<(String, Slice)> {
    if r.model_name != model || r.model_version != version {
        return None;
    }
    let vars = &r.variables;
    if vars.len() != names.len() || vars.iter().zip(names).any(|(v, n)| v.name != *n) {
        return None;
    }
    let summaries = vars
        .iter()
        .map(|v| {
            if !(v.sum.is_finite() && v.sum_of_squares.is_finite()) {
                return None;
            }
            Some(VarSummary {
                n: u64::try_from(v.n).ok()?,
                sum: v.sum,
                sumsq: v.sum_of_squares,
                bins: v
                    .bins
                    .iter()
                    .map(|b| u64::try_from(*b).ok())
                    .collect::<Option<Vec<u64>>>()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let slice = Slice {
        index: r.slice_start.div_euclid(SLICE_MS),
        records: u64::try_from(r.records).ok()?,
        vars: summaries,
    };
    Some((r.instance, slice))
}

/// "name/version" split in two.
fn split_model(model: &str) -> (&str, &str) {
    model.rsplit_once('/').unwrap_or((model, ""))
}

/// The `PerformanceReport` record of a closed day, written by `instance`.
pub(crate) fn performance_record(
    r: &PerformanceReport,
    instance: &str,
    margin: f64,
) -> codec::PerformanceReport {
    let (name, version) = split_model(&r.model);
    let s = &r.summary;
    let score_bins = s
        .positive_bins
        .iter()
        .zip(&s.negative_bins)
        .enumerate()
        .filter(|(_, (p, n))| **p > 0.0 || **n > 0.0)
        .map(|(i, (p, n))| codec::ScoreBin {
            bin: i as i32,
            positives: *p,
            negatives: *n,
        })
        .collect();
    codec::PerformanceReport {
        model_name: name.into(),
        model_version: version.into(),
        instance: instance.into(),
        day_start: r.day_start,
        labelled: s.labelled,
        positives: s.positives,
        true_positives: s.true_positives,
        false_positives: s.false_positives,
        sample_rate: r.sample_rate,
        precision: finite(s.precision()),
        recall: finite(s.recall()),
        f1: finite(s.f1()),
        auc_roc: finite(s.auc()),
        average_precision: finite(s.average_precision()),
        validation_auc_roc: finite(r.validation.auc_roc),
        validation_average_precision: finite(r.validation.average_precision),
        validation_f1: finite(r.validation.f1),
        margin,
        judged: r.judged,
        below: strings(&r.below),
        raised: r.raised,
        cleared: r.cleared,
        alerting: r.alerting,
        score_bins,
        emitted_at: now_ms(),
    }
}

/// Every number of a performance record finite (a record that is not was
/// never written by an instance).
fn all_finite(r: &codec::PerformanceReport) -> bool {
    let plain = [
        r.labelled,
        r.positives,
        r.true_positives,
        r.false_positives,
        r.sample_rate,
        r.margin,
    ];
    let nullable = [
        r.precision,
        r.recall,
        r.f1,
        r.auc_roc,
        r.average_precision,
        r.validation_auc_roc,
        r.validation_average_precision,
        r.validation_f1,
    ];
    plain.iter().all(|x| x.is_finite())
        && nullable.iter().flatten().all(|x| x.is_finite())
        && r.score_bins
            .iter()
            .all(|b| b.positives.is_finite() && b.negatives.is_finite())
}

/// Who wrote a performance record and the day it holds; None for one that
/// is not well formed (a bin out of range, a count below zero, a number
/// not finite).
pub(crate) fn performance_of(r: codec::PerformanceReport) -> Option<(String, PerformanceReport)> {
    if !all_finite(&r) {
        return None;
    }
    let mut summary = DaySummary {
        labelled: r.labelled,
        positives: r.positives,
        true_positives: r.true_positives,
        false_positives: r.false_positives,
        ..Default::default()
    };
    for b in &r.score_bins {
        let i = usize::try_from(b.bin).ok()?;
        if i >= SCORE_BINS {
            return None;
        }
        summary.positive_bins[i] = b.positives;
        summary.negative_bins[i] = b.negatives;
    }
    if [summary.labelled, summary.positives, summary.true_positives]
        .iter()
        .any(|x| *x < 0.0)
    {
        return None;
    }
    let report = PerformanceReport {
        model: format!("{}/{}", r.model_name, r.model_version),
        day_start: r.day_start,
        summary,
        validation: Validation {
            auc_roc: r.validation_auc_roc,
            average_precision: r.validation_average_precision,
            f1: r.validation_f1,
        },
        sample_rate: r.sample_rate,
        judged: r.judged,
        below: Vec::new(),
        raised: r.raised,
        cleared: r.cleared,
        alerting: r.alerting,
    };
    Some((r.instance, report))
}

/// The gauges of a closed day.
pub(crate) fn performance_gauge(r: &PerformanceReport) -> PerformanceGauge {
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

/// The gauges of one evaluation.
pub(crate) fn drift_gauges(r: &WindowReport) -> Vec<DriftGauge> {
    r.vars
        .iter()
        .map(|v| DriftGauge {
            variable: v.name.clone(),
            scales: v
                .scales
                .iter()
                .map(|s| {
                    let values = [
                        ("mean", Some(s.mean)),
                        ("expected_mean", Some(s.expected_mean)),
                        ("effect", Some(s.effect)),
                        ("z", Some(s.z)),
                        ("z_high", Some(s.z_high)),
                        ("z_low", Some(s.z_low)),
                        ("chi2", s.chi2),
                        ("chi2_limit", s.chi2_limit),
                        ("psi", s.psi),
                        ("exceedance", Some(s.exceedance())),
                    ]
                    .into_iter()
                    .filter_map(|(k, x)| finite(x).map(|x| (k, x)))
                    .collect();
                    (scale_label(s.scale_seconds), values)
                })
                .collect(),
            alerting: v.alerting,
        })
        .collect()
}

/// Logs and the drift topic for one of this instance's evaluations (the
/// gauges follow the newest once per tick); raised and cleared alerts at
/// WARN when `alerts` (no merged verdict), else at DEBUG (the merged
/// verdict speaks for the model).
pub(crate) fn publish(r: &WindowReport, out: &DriftOutput, metrics: &Metrics, alerts: bool) {
    metrics.drift_windows.add(1);
    for name in &r.raised {
        let v = r.vars.iter().find(|v| &v.name == name);
        let worst = v.and_then(VarStats::worst_scale);
        if alerts {
            tracing::warn!(
                variable = %name, window_end = r.end_event_time, records = r.records,
                over = ?v.map(|v| &v.over), z = worst.map(|s| s.z), effect = worst.map(|s| s.effect),
                psi = worst.and_then(|s| s.psi), mean = worst.map(|s| s.mean),
                expected_mean = worst.map(|s| s.expected_mean),
                "drift alert RAISED for {name}"
            );
        } else {
            tracing::debug!(variable = %name, window_end = r.end_event_time, "drift alert raised for {name} on this instance's share");
        }
    }
    for name in &r.cleared {
        if alerts {
            tracing::warn!(variable = %name, window_end = r.end_event_time, "drift alert CLEARED for {name}");
        }
    }
    tracing::debug!(
        window = r.index, records = r.records, judged = r.judged, flagged_rate = r.flagged_rate,
        over = r.vars.iter().filter(|v| !v.over.is_empty()).count(), active = ?r.active,
        "drift hour closed"
    );
    if out.producer.is_none() {
        return;
    }
    let dropped = metrics.drift_dropped.get();
    match out
        .codec
        .encode_drift(&report_record(r, out, &out.instance, dropped))
    {
        Ok(payload) => out.send(&out.topic, &out.instance, &payload, "drift report"),
        Err(e) => tracing::warn!(error = %e, "cannot encode a drift report"),
    }
}

/// The merged verdict (its gauges are set on every instance): the judge
/// logs raised and cleared alerts and publishes the report (instance "global").
pub(crate) fn publish_global(r: &WindowReport, instances: &[String], out: &DriftOutput) {
    for name in &r.raised {
        let v = r.vars.iter().find(|v| &v.name == name);
        let worst = v.and_then(VarStats::worst_scale);
        tracing::warn!(
            variable = %name, window_end = r.end_event_time, instances = ?instances,
            over = ?v.map(|v| &v.over), z = worst.map(|s| s.z), effect = worst.map(|s| s.effect),
            psi = worst.and_then(|s| s.psi),
            "drift alert RAISED for {name} (all instances merged)"
        );
    }
    for name in &r.cleared {
        tracing::warn!(variable = %name, window_end = r.end_event_time, "drift alert CLEARED for {name} (all instances merged)");
    }
    if out.producer.is_none() {
        return;
    }
    match out.codec.encode_drift(&report_record(r, out, "global", 0)) {
        Ok(payload) => out.send(&out.topic, "global", &payload, "drift report"),
        Err(e) => tracing::warn!(error = %e, "cannot encode a drift report"),
    }
}

/// Raised and cleared performance alerts: at WARN when `alerts` (this
/// report speaks for the model), else at DEBUG; the day summary at DEBUG.
pub(crate) fn log_performance(r: &PerformanceReport, alerts: bool, instances: Option<&[String]>) {
    let scope = if instances.is_some() {
        " (all instances merged)"
    } else {
        ""
    };
    let (auc, ap, f1) = (
        r.metric("auc_roc"),
        r.metric("average_precision"),
        r.metric("f1"),
    );
    if alerts && r.raised {
        tracing::warn!(
            model = %r.model, day_start = r.day_start, below = ?r.below, auc_roc = auc,
            average_precision = ap, f1, validation = ?r.validation, labelled = r.summary.labelled,
            positives = r.summary.positives, instances = ?instances,
            "performance alert RAISED for {}{scope}: realised {:?} below validation by more than the margin",
            r.model, r.below
        );
    } else if alerts && r.cleared {
        tracing::warn!(model = %r.model, day_start = r.day_start, auc_roc = auc, average_precision = ap, f1,
            "performance alert CLEARED for {}{scope}", r.model);
    }
    tracing::debug!(
        model = %r.model, day_start = r.day_start, judged = r.judged, auc_roc = auc,
        average_precision = ap, f1, labelled = r.summary.labelled, "performance day closed{scope}"
    );
}

/// A performance report to the drift topic, keyed `performance/<instance>`.
pub(crate) fn send_performance(out: &DriftOutput, payload: &[u8], instance: &str) {
    let key = format!("performance/{instance}");
    out.send(&out.topic, &key, payload, "performance report");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> DriftOutput {
        DriftOutput {
            producer: None,
            topic: "riskstream.drift".into(),
            codec: Arc::new(Codec::new().unwrap()),
            model_name: "fraud-mlp".into(),
            model_version: "1".into(),
            instance: "w1".into(),
        }
    }

    #[test]
    fn days_round_trip_through_avro() {
        let mut s = DaySummary::default();
        for (x, fraud) in [(0.9, true), (0.1, false), (0.6, false)] {
            s.add(x, x >= 0.5, fraud, 1.0);
        }
        let a = PerformanceReport {
            model: "fraud-mlp/1".into(),
            day_start: 0,
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
        };
        let o = out();
        let payload = o
            .codec
            .encode_performance(&performance_record(&a, "w1", 0.15))
            .unwrap();
        let Ok(codec::SlicesRecord::Performance(r)) = o.codec.decode_slices_record(&payload) else {
            panic!("a performance report expected");
        };
        let r = *r;
        let (who, back) = performance_of(r.clone()).unwrap();
        assert_eq!(who, "w1");
        assert_eq!(back.summary, a.summary);
        assert_eq!(back.validation, a.validation);
        assert_eq!(back.model, "fraud-mlp/1");
        let bad_bin = codec::PerformanceReport {
            score_bins: vec![codec::ScoreBin {
                bin: 999,
                positives: 1.0,
                negatives: 0.0,
            }],
            ..r.clone()
        };
        assert!(performance_of(bad_bin).is_none());
        let not_finite = codec::PerformanceReport {
            margin: f64::NAN,
            ..r
        };
        assert!(performance_of(not_finite).is_none());
    }

    #[test]
    fn slices_round_trip_for_their_model_version_only() {
        let o = out();
        let mut s = Slice::empty(1_708_000, &[3, 0]);
        s.records = 2;
        s.vars[0].add(1.5, Some(2));
        s.vars[1].add(0.0, None);
        s.vars[0].add(2.5, Some(0));
        let payload = o
            .codec
            .encode_drift_slice(&slice_record(&s, &["TX_AMOUNT", "FLAGGED"], &o))
            .unwrap();
        let Ok(codec::SlicesRecord::Slice(r)) = o.codec.decode_slices_record(&payload) else {
            panic!("a slice expected");
        };
        let names = ["TX_AMOUNT".to_string(), "FLAGGED".to_string()];
        assert_eq!(
            slice_of(r.clone(), &names, "fraud-mlp", "1"),
            Some(("w1".to_string(), s))
        );
        assert_eq!(slice_of(r.clone(), &names, "fraud-mlp", "2"), None);
        assert_eq!(slice_of(r.clone(), &names[..1], "fraud-mlp", "1"), None);
        let mut negative = r;
        negative.variables[0].n = -1;
        assert_eq!(slice_of(negative, &names, "fraud-mlp", "1"), None);
    }
}
