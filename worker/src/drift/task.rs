//! The drift sidecar of `riskstream run`: a thread fed by the scoring
//! thread through a bounded channel. `offer` never blocks: when the channel
//! is full the batch is dropped and counted. Each closed window updates the
//! gauges, logs raised/cleared alerts at WARN and goes to the drift topic
//! as a `DriftReport` (Avro, single-object encoding, keyed by instance).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::global::{Global, GlobalReport};
use super::monitor::{DriftMonitor, VarStats, WindowReport};
use super::performance::{
    tx_fingerprint, PerformanceMonitor, PerformanceReport, PerformanceSettings,
};
use super::realised;
use crate::codec::{Codec, FraudLabel};
use crate::message::{DriftBatch, LabelKey};
use crate::metrics::{DriftGauge, Metrics};

/// How often the merged verdict publishes, reads and judges slices.
const GLOBAL_TICK: Duration = Duration::from_millis(250);

/// What the sidecar receives.
#[derive(Debug)]
pub enum DriftMsg {
    Batch(DriftBatch),
    /// Labels, for realised performance.
    Labels(Vec<LabelKey>),
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
    /// The scoring thread's event-time watermark for the next batch
    /// (`NO_WATERMARK`: unknown).
    watermark: Arc<AtomicI64>,
}

const NO_WATERMARK: i64 = i64::MAX;

impl DriftSender {
    /// The scoring thread's watermark before the batch it is scoring.
    pub fn set_watermark(&self, wm: Option<i64>) {
        self.watermark
            .store(wm.unwrap_or(NO_WATERMARK), Ordering::Relaxed);
    }

    /// Hands a batch over, or drops and counts it when the sidecar is behind.
    pub fn offer(&self, mut batch: DriftBatch) {
        let wm = self.watermark.load(Ordering::Relaxed);
        batch.watermark = (wm != NO_WATERMARK).then_some(wm);
        let n = batch.scores.len() as u64;
        match self.tx.try_send(DriftMsg::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.drift_dropped.add(n);
            }
        }
    }

    /// Hands labels over for performance monitoring, or drops and counts
    /// them when the sidecar is behind.
    pub fn offer_labels(&self, labels: &[FraudLabel]) {
        if labels.is_empty() {
            return;
        }
        let keys: Vec<LabelKey> = labels
            .iter()
            .map(|l| LabelKey {
                tx: tx_fingerprint(&l.transaction_id),
                event_time: l.event_time,
                fraud: l.is_fraud,
            })
            .collect();
        let n = keys.len() as u64;
        if self.tx.try_send(DriftMsg::Labels(keys)).is_err() {
            crate::metrics::events::Emit::emit(
                &crate::metrics::events::PerformanceLabels {
                    outcome: crate::metrics::events::LabelOutcome::Dropped,
                    n,
                },
                &self.metrics,
            );
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
/// reporting the last (partial) slices and flushing the producer. With
/// `global`, this instance's slices are also published and merged with
/// every other instance's for one verdict per model.
pub fn spawn(
    monitor: DriftMonitor,
    out: DriftOutput,
    global: Option<Global>,
    metrics: Arc<Metrics>,
    capacity: usize,
    performance: PerformanceSettings,
) -> std::io::Result<(DriftSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(capacity.max(1));
    let sender = DriftSender {
        tx,
        metrics: metrics.clone(),
        watermark: Arc::new(AtomicI64::new(NO_WATERMARK)),
    };
    let handle = std::thread::Builder::new()
        .name("drift".into())
        .spawn(move || {
            let perf = PerformanceMonitor::new(performance);
            Sidecar::new(monitor, perf, out, global, metrics).run(rx)
        })?;
    Ok((sender, handle))
}

/// The sidecar thread's state.
struct Sidecar {
    monitor: DriftMonitor,
    out: DriftOutput,
    global: Option<Global>,
    metrics: Arc<Metrics>,
    reports: Vec<WindowReport>,
    /// The newest evaluation of each monitor not yet in the gauges (set
    /// once per tick: a backlog closes hundreds of slices a second).
    gauges: Option<Vec<DriftGauge>>,
    global_gauges: Option<Vec<DriftGauge>>,
    /// Realised performance from the delayed labels.
    perf: PerformanceMonitor,
}

impl Sidecar {
    fn new(
        monitor: DriftMonitor,
        perf: PerformanceMonitor,
        out: DriftOutput,
        global: Option<Global>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut monitor = if global.is_some() {
            monitor.export_slices()
        } else {
            monitor
        };
        // Nothing closes before the scoring thread's first watermark.
        monitor.set_watermark(Some(i64::MIN), &mut Vec::new());
        Self {
            monitor,
            out,
            global,
            metrics,
            reports: Vec::new(),
            gauges: None,
            global_gauges: None,
            perf,
        }
    }

    fn run(mut self, rx: Receiver<DriftMsg>) {
        tracing::info!(
            variables = self.monitor.names().len(),
            scales = ?self.monitor.settings().scales,
            z_threshold = self.monitor.z_threshold(),
            topic = %self.out.topic,
            merged_across_instances = self.global.is_some(),
            "drift sidecar started"
        );
        let mut last_global = std::time::Instant::now();
        loop {
            match rx.recv_timeout(GLOBAL_TICK) {
                Ok(DriftMsg::Batch(b)) => self.batch(&b),
                Ok(DriftMsg::Labels(l)) => self.labels(&l),
                Ok(DriftMsg::Model {
                    monitor,
                    name,
                    version,
                }) => self.switch(*monitor, name, version),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.flush_reports();
            if last_global.elapsed() >= GLOBAL_TICK {
                self.global_tick();
                self.set_gauges();
                last_global = std::time::Instant::now();
            }
        }
        self.monitor.finish(&mut self.reports);
        self.flush_reports();
        self.global_tick();
        self.set_gauges();
        if let Some(p) = &self.out.producer {
            if let Err(e) = p.flush(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "drift reports not all delivered at shutdown");
            }
        }
    }

    fn batch(&mut self, b: &DriftBatch) {
        let mut closed = Vec::new();
        self.perf
            .decisions(&b.decisions, &b.versions, b.watermark, &mut closed);
        for r in &closed {
            self.performance_report(r);
        }
        self.monitor.set_now(std::time::Instant::now());
        let late = self.monitor.late_records();
        for i in 0..b.scores.len() {
            self.monitor.push(
                &b.features[i],
                b.scores[i],
                b.flagged[i],
                b.event_times[i],
                b.partitions.get(i).copied().unwrap_or(0),
                &mut self.reports,
            );
        }
        // The batch's watermark covers its own records: applied after them.
        self.monitor
            .set_watermark(b.watermark.or(Some(i64::MIN)), &mut self.reports);
        self.metrics
            .drift_late
            .add(self.monitor.late_records() - late);
    }

    /// Labels joined with this instance's decisions; closed days out.
    fn labels(&mut self, labels: &[LabelKey]) {
        let mut closed = Vec::new();
        self.perf.labels(labels, &mut closed);
        let c = self.perf.take_counts();
        for (reason, n) in [
            ("matched", c.matched),
            ("unmatched", c.unmatched),
            ("late", c.late),
        ] {
            if n > 0 {
                if let Some(outcome) = crate::metrics::events::LabelOutcome::from_name(reason) {
                    crate::metrics::events::Emit::emit(
                        &crate::metrics::events::PerformanceLabels { outcome, n },
                        &self.metrics,
                    );
                }
            }
        }
        self.metrics
            .performance_tracked
            .set(self.perf.tracked() as i64);
        self.metrics
            .performance_sample_rate
            .set(self.perf.sample_rate());
        for r in &closed {
            self.performance_report(r);
        }
    }

    /// One of this instance's closed days: gauges, logs, drift topic, and
    /// the slices topic for the merge.
    fn performance_report(&self, r: &PerformanceReport) {
        let local_alerts = self.global.is_none();
        self.metrics.set_performance(&realised::gauge_of(r), false);
        log_performance(r, local_alerts, None);
        let margin = self.perf.settings().margin;
        let instance = self.out.instance.as_str();
        match self
            .out
            .codec
            .encode_performance(realised::report_fields(r, instance, margin))
        {
            Ok(payload) => {
                send_performance(&self.out, &payload, instance);
                if let Some(g) = &self.global {
                    g.publish_performance(&payload, &self.out);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode a performance report"),
        }
    }

    fn switch(&mut self, monitor: DriftMonitor, name: String, version: String) {
        self.monitor.finish(&mut self.reports);
        self.flush_reports();
        tracing::info!(model = %name, version = %version, "drift now watches against {name}/{version}'s reference");
        if let Some(g) = &mut self.global {
            g.switch(monitor.clone());
        }
        self.monitor = if self.global.is_some() {
            monitor.export_slices()
        } else {
            monitor
        };
        self.monitor
            .set_watermark(Some(i64::MIN), &mut self.reports);
        self.out.model_name = name;
        self.out.model_version = version;
    }

    /// This instance's reports out.
    fn flush_reports(&mut self) {
        let local_alerts = self.global.is_none();
        if let Some(r) = self.reports.last() {
            self.gauges = Some(gauges_of(r));
        }
        for r in self.reports.drain(..) {
            publish(&r, &self.out, &self.metrics, local_alerts);
        }
    }

    fn set_gauges(&mut self) {
        if let Some(g) = self.gauges.take() {
            self.metrics.set_drift(&g);
        }
        if let Some(g) = self.global_gauges.take() {
            self.metrics.set_drift_global(&g);
        }
    }

    /// With the merged verdict: this instance's closed slices out, every
    /// instance's slices in, merged reports out.
    fn global_tick(&mut self) {
        let Some(g) = &mut self.global else { return };
        let mut slices = Vec::new();
        self.monitor.drain_slices(&mut slices);
        g.publish(&slices, &self.monitor.names(), &self.out);
        let mut merged = Vec::new();
        g.poll(&self.out.codec, &self.out, &mut merged);
        let judge = g.is_judge(&self.out.instance);
        self.metrics.drift_instances.set(g.live_instances() as i64);
        if let Some(r) = merged.last() {
            self.global_gauges = Some(gauges_of(&r.report));
        }
        for r in &merged {
            publish_global(r, judge, &self.out);
        }
        let settings = self.perf.settings().clone();
        for (r, instances) in g.performance_ready(&settings) {
            self.metrics.set_performance(&realised::gauge_of(&r), true);
            if judge {
                log_performance(&r, true, Some(&instances));
                match self.out.codec.encode_performance(realised::report_fields(
                    &r,
                    "global",
                    settings.margin,
                )) {
                    Ok(payload) => send_performance(&self.out, &payload, "global"),
                    Err(e) => tracing::warn!(error = %e, "cannot encode a performance report"),
                }
            }
        }
    }
}

/// Raised and cleared performance alerts: at WARN when `alerts` (this
/// report speaks for the model), else at DEBUG; the day summary at DEBUG.
fn log_performance(r: &PerformanceReport, alerts: bool, instances: Option<&[String]>) {
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
fn send_performance(out: &DriftOutput, payload: &[u8], instance: &str) {
    let Some(p) = &out.producer else { return };
    let key = format!("performance/{instance}");
    if let Err((e, _)) = p.send(BaseRecord::to(&out.topic).key(&key).payload(payload)) {
        tracing::warn!(error = %e, topic = %out.topic, "cannot send a performance report");
    }
}

/// The merged verdict (its gauges are set on every instance): the judge
/// logs raised and cleared alerts and publishes the report (instance "global").
fn publish_global(r: &GlobalReport, judge: bool, out: &DriftOutput) {
    if !judge {
        return;
    }
    for name in &r.report.raised {
        let v = r.report.vars.iter().find(|v| &v.name == name);
        let worst = v.and_then(VarStats::worst_scale);
        tracing::warn!(
            variable = %name, window_end = r.report.end_event_time, instances = ?r.instances,
            over = ?v.map(|v| &v.over), z = worst.map(|s| s.z), effect = worst.map(|s| s.effect),
            psi = worst.and_then(|s| s.psi),
            "drift alert RAISED for {name} (all instances merged)"
        );
    }
    for name in &r.report.cleared {
        tracing::warn!(variable = %name, window_end = r.report.end_event_time, "drift alert CLEARED for {name} (all instances merged)");
    }
    let Some(p) = &out.producer else { return };
    match out
        .codec
        .encode_drift(report_fields(&r.report, out, "global", 0))
    {
        Ok(payload) => {
            if let Err((e, _)) = p.send(BaseRecord::to(&out.topic).key("global").payload(&payload))
            {
                tracing::warn!(error = %e, topic = %out.topic, "cannot send a drift report");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode a drift report"),
    }
}

/// The gauges of one evaluation.
fn gauges_of(r: &WindowReport) -> Vec<DriftGauge> {
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
                    .filter_map(|(k, x)| x.filter(|x| x.is_finite()).map(|x| (k, x)))
                    .collect();
                    (scale_label(s.scale_seconds), values)
                })
                .collect(),
            alerting: v.alerting,
        })
        .collect()
}

/// Logs and the drift topic for one of this instance's evaluations (the
/// gauges follow the newest once per tick); raised and cleared alerts at WARN when `alerts` (no merged
/// verdict), else at DEBUG (the merged verdict speaks for the model).
pub fn publish(r: &WindowReport, out: &DriftOutput, metrics: &Metrics, alerts: bool) {
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
    let Some(p) = &out.producer else { return };
    let dropped = metrics.drift_dropped.get();
    match out
        .codec
        .encode_drift(report_fields(r, out, &out.instance, dropped))
    {
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

/// The `DriftReport` record's fields, as written by `instance` (this
/// instance's name, or "global" for the merged verdict).
pub fn report_fields(
    r: &WindowReport,
    out: &DriftOutput,
    instance: &str,
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
        ("instance", Value::String(instance.to_string())),
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
