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
        window_records = monitor.settings().window_records,
        window_seconds = monitor.settings().window_seconds,
        topic = %out.topic,
        "drift sidecar started"
    );
    for msg in rx {
        let b = match msg {
            DriftMsg::Batch(b) => b,
            DriftMsg::Model {
                monitor: m,
                name,
                version,
            } => {
                if let Some(r) = monitor.close() {
                    publish(&r, &out, &metrics);
                }
                tracing::info!(model = %name, version = %version, "drift now watches against {name}/{version}'s reference");
                monitor = *m;
                out.model_name = name;
                out.model_version = version;
                continue;
            }
        };
        for i in 0..b.scores.len() {
            if let Some(r) =
                monitor.push(&b.features[i], b.scores[i], b.flagged[i], b.event_times[i])
            {
                publish(&r, &out, &metrics);
            }
        }
    }
    if let Some(r) = monitor.close() {
        publish(&r, &out, &metrics);
    }
    if let Some(p) = &out.producer {
        if let Err(e) = p.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "drift reports not all delivered at shutdown");
        }
    }
}

/// Gauges, logs and the drift topic for one window.
pub fn publish(r: &WindowReport, out: &DriftOutput, metrics: &Metrics) {
    metrics.drift_windows.add(1);
    let gauges: Vec<DriftGauge> = r
        .vars
        .iter()
        .map(|v| DriftGauge {
            variable: v.name.clone(),
            values: [
                ("mean", Some(v.mean)),
                ("std", Some(v.std)),
                ("psi", Some(v.psi)),
                ("ks", v.ks_statistic),
                ("ks_pvalue", v.ks_pvalue),
                ("wasserstein", v.wasserstein),
                ("chi2", v.chi2),
                ("chi2_pvalue", v.chi2_pvalue),
            ]
            .into_iter()
            .filter_map(|(k, x)| x.map(|x| (k, x)))
            .collect(),
            alerting: v.alerting,
        })
        .collect();
    metrics.set_drift(&gauges);
    for name in &r.raised {
        let v = r.vars.iter().find(|v| &v.name == name);
        tracing::warn!(
            variable = %name, window = r.index, records = r.records,
            over = ?v.map(|v| &v.over), psi = v.map(|v| v.psi), ks = v.and_then(|v| v.ks_statistic),
            mean = v.map(|v| v.mean), reference_mean = v.map(|v| v.reference_mean),
            "drift alert RAISED for {name}"
        );
    }
    for name in &r.cleared {
        tracing::warn!(variable = %name, window = r.index, "drift alert CLEARED for {name}");
    }
    tracing::info!(
        window = r.index, records = r.records, judged = r.judged, flagged_rate = r.flagged_rate,
        over = r.vars.iter().filter(|v| !v.over.is_empty()).count(), active = ?r.active,
        "drift window closed"
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

fn opt(x: Option<f64>) -> Value {
    match x {
        Some(v) => Value::Union(1, Box::new(Value::Double(v))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
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
                ("mean".into(), Value::Double(v.mean)),
                ("std".into(), Value::Double(v.std)),
                ("reference_mean".into(), Value::Double(v.reference_mean)),
                ("psi".into(), Value::Double(v.psi)),
                ("ks_statistic".into(), opt(v.ks_statistic)),
                ("ks_pvalue".into(), opt(v.ks_pvalue)),
                ("wasserstein".into(), opt(v.wasserstein)),
                ("chi2".into(), opt(v.chi2.filter(|x| x.is_finite()))),
                ("chi2_pvalue".into(), opt(v.chi2_pvalue)),
                ("judged".into(), Value::Boolean(v.judged)),
                (
                    "over".into(),
                    Value::Array(v.over.iter().map(|s| Value::String((*s).into())).collect()),
                ),
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
        ("records", Value::Long(r.records as i64)),
        ("judged", Value::Boolean(r.judged)),
        ("samples_dropped", Value::Long(dropped as i64)),
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
