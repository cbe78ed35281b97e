//! The drift sidecar of `riskstream run`: a thread fed by the scoring
//! thread through a bounded channel. `offer` never blocks: when the channel
//! is full the batch is dropped and counted. Each closed window updates the
//! gauges, logs raised/cleared alerts at WARN and goes to the drift topic
//! as a `DriftReport` (Avro, single-object encoding, keyed by instance).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::monitor::{DriftMonitor, WindowReport};
use crate::codec::Codec;
use crate::message::DriftBatch;
use crate::metrics::{DriftGauge, Metrics};

/// What the sidecar receives.
#[derive(Debug)]
pub enum DriftMsg {
    Batch(DriftBatch),
    /// The champion changed: close the window, watch against the new reference.
    Model {
        monitor: Box<DriftMonitor>,
        name: String,
        version: String,
    },
}

/// The scoring thread's end of the channel.
#[derive(Debug, Clone)]
pub struct DriftSender {
    tx: SyncSender<DriftMsg>,
    metrics: Arc<Metrics>,
}

impl DriftSender {
    /// Hands a batch over, or drops and counts it when the sidecar is behind.
    pub fn offer(&self, batch: DriftBatch) {
        let n = batch.scores.len() as u64;
        match self.tx.try_send(DriftMsg::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.drift_dropped.add(n);
            }
        }
    }

    /// Switches the sidecar to a new champion (waits for room: rare).
    pub fn switch(&self, monitor: DriftMonitor, name: String, version: String) {
        let _ = self.tx.send(DriftMsg::Model {
            monitor: Box::new(monitor),
            name,
            version,
        });
    }
}

/// Where reports go.
pub struct DriftOutput {
    pub producer: Option<ThreadedProducer<DefaultProducerContext>>,
    pub topic: String,
    pub codec: Arc<Codec>,
    pub model_name: String,
    pub model_version: String,
    pub instance: String,
}

/// Starts the sidecar thread; it ends when every sender is dropped, after
/// reporting the last (partial) window and flushing the producer.
pub fn spawn(
    monitor: DriftMonitor,
    out: DriftOutput,
    metrics: Arc<Metrics>,
    capacity: usize,
) -> std::io::Result<(DriftSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(capacity.max(1));
    let sender = DriftSender {
        tx,
        metrics: metrics.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("drift".into())
        .spawn(move || run(monitor, out, metrics, rx))?;
    Ok((sender, handle))
}

fn run(
    mut monitor: DriftMonitor,
    mut out: DriftOutput,
    metrics: Arc<Metrics>,
    rx: Receiver<DriftMsg>,
) {
    tracing::info!(
        variables = monitor.names().len(),
        scales = ?monitor.settings().scales,
        z_threshold = monitor.z_threshold(),
        topic = %out.topic,
        "drift sidecar started"
    );
    let mut reports = Vec::new();
    for msg in rx {
        let b = match msg {
            DriftMsg::Batch(b) => b,
            DriftMsg::Model {
                monitor: m,
                name,
                version,
            } => {
                monitor.finish(&mut reports);
                for r in reports.drain(..) {
                    publish(&r, &out, &metrics);
                }
                tracing::info!(model = %name, version = %version, "drift now watches against {name}/{version}'s reference");
                monitor = *m;
                out.model_name = name;
                out.model_version = version;
                continue;
            }
        };
        monitor.set_now(std::time::Instant::now());
        let late = monitor.late_records();
        for i in 0..b.scores.len() {
            monitor.push(
                &b.features[i],
                b.scores[i],
                b.flagged[i],
                b.event_times[i],
                b.partitions.get(i).copied().unwrap_or(0),
                &mut reports,
            );
        }
        metrics.drift_late.add(monitor.late_records() - late);
        for r in reports.drain(..) {
            publish(&r, &out, &metrics);
        }
    }
    monitor.finish(&mut reports);
    for r in reports.drain(..) {
        publish(&r, &out, &metrics);
    }
    if let Some(p) = &out.producer {
        if let Err(e) = p.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "drift reports not all delivered at shutdown");
        }
    }
}

/// Gauges, logs and the drift topic for one hourly evaluation.
pub fn publish(r: &WindowReport, out: &DriftOutput, metrics: &Metrics) {
    metrics.drift_windows.add(1);
    let gauges: Vec<DriftGauge> = r
        .vars
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
                    .filter_map(|(k, x)| x.filter(|x| x.is_finite()).map(|x| (k, x)))
                    .collect();
                    (scale_label(s.scale_seconds), values)
                })
                .collect(),
            alerting: v.alerting,
        })
        .collect();
    metrics.set_drift(&gauges);
    for name in &r.raised {
        let v = r.vars.iter().find(|v| &v.name == name);
        let worst = v.and_then(|v| {
            v.scales
                .iter()
                .max_by(|a, b| a.exceedance().total_cmp(&b.exceedance()))
        });
        tracing::warn!(
            variable = %name, hour_end = r.end_event_time, records = r.records,
            over = ?v.map(|v| &v.over), z = worst.map(|s| s.z), effect = worst.map(|s| s.effect),
            psi = worst.and_then(|s| s.psi), mean = worst.map(|s| s.mean),
            expected_mean = worst.map(|s| s.expected_mean),
            "drift alert RAISED for {name}"
        );
    }
    for name in &r.cleared {
        tracing::warn!(variable = %name, hour_end = r.end_event_time, "drift alert CLEARED for {name}");
    }
    tracing::debug!(
        window = r.index, records = r.records, judged = r.judged, flagged_rate = r.flagged_rate,
        over = r.vars.iter().filter(|v| !v.over.is_empty()).count(), active = ?r.active,
        "drift hour closed"
    );
    let Some(p) = &out.producer else { return };
    let dropped = metrics.drift_dropped.get();
    match out.codec.encode_drift(report_fields(r, out, dropped)) {
        Ok(payload) => {
            let rec = BaseRecord::to(&out.topic)
                .key(out.instance.as_str())
                .payload(&payload);
            if let Err((e, _)) = p.send(rec) {
                tracing::warn!(error = %e, topic = %out.topic, "cannot send a drift report");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode a drift report"),
    }
}

/// "1h", "6h", "24h": the scale label of gauges and reports.
pub fn scale_label(seconds: u64) -> String {
    format!("{}h", seconds / 3600)
}

fn opt(x: Option<f64>) -> Value {
    match x.filter(|x| x.is_finite()) {
        Some(v) => Value::Union(1, Box::new(Value::Double(v))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn scale_fields(s: &crate::drift::ScaleStats) -> Value {
    Value::Record(vec![
        ("scale_seconds".into(), Value::Long(s.scale_seconds as i64)),
        ("records".into(), Value::Long(s.records as i64)),
        ("judged".into(), Value::Boolean(s.judged)),
        ("mean".into(), Value::Double(s.mean)),
        ("expected_mean".into(), Value::Double(s.expected_mean)),
        ("effect".into(), Value::Double(s.effect)),
        ("z".into(), Value::Double(s.z)),
        ("z_low".into(), Value::Double(s.z_low)),
        ("z_high".into(), Value::Double(s.z_high)),
        ("chi2".into(), opt(s.chi2)),
        ("chi2_limit".into(), opt(s.chi2_limit)),
        ("psi".into(), opt(s.psi)),
        (
            "over".into(),
            Value::Array(s.over.iter().map(|t| Value::String((*t).into())).collect()),
        ),
    ])
}

/// The `DriftReport` record's fields.
pub fn report_fields(
    r: &WindowReport,
    out: &DriftOutput,
    dropped: u64,
) -> Vec<(&'static str, Value)> {
    let vars = r
        .vars
        .iter()
        .map(|v| {
            Value::Record(vec![
                ("name".into(), Value::String(v.name.clone())),
                ("kind".into(), Value::String(v.kind.into())),
                (
                    "scales".into(),
                    Value::Array(v.scales.iter().map(scale_fields).collect()),
                ),
                ("over".into(), strings(&v.over)),
                ("alerting".into(), Value::Boolean(v.alerting)),
            ])
        })
        .collect();
    vec![
        ("model_name", Value::String(out.model_name.clone())),
        ("model_version", Value::String(out.model_version.clone())),
        ("instance", Value::String(out.instance.clone())),
        ("window_index", Value::Long(r.index as i64)),
        ("window_start", Value::TimestampMillis(r.start_event_time)),
        ("window_end", Value::TimestampMillis(r.end_event_time)),
        ("decided_at", Value::TimestampMillis(r.decided_at)),
        ("records", Value::Long(r.records as i64)),
        ("judged", Value::Boolean(r.judged)),
        ("samples_dropped", Value::Long(dropped as i64)),
        ("late_records", Value::Long(r.late_records as i64)),
        ("flagged_rate", Value::Double(r.flagged_rate)),
        (
            "reference_flagged_rate",
            Value::Double(r.reference_flagged_rate),
        ),
        ("variables", Value::Array(vars)),
        ("raised", strings(&r.raised)),
        ("cleared", strings(&r.cleared)),
        ("active", strings(&r.active)),
        (
            "emitted_at",
            Value::TimestampMillis(crate::message::now_ms()),
        ),
    ]
}
