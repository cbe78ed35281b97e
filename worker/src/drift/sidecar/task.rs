//! The drift sidecar of `riskstream run`: a thread fed by the scoring
//! thread through a bounded channel. `offer` never blocks: when the channel
//! is full the batch is dropped and counted. Each closed window updates the
//! gauges, logs raised/cleared alerts at WARN and goes to the drift topic
//! as a `DriftReport` (Avro, single-object encoding, keyed by instance).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer;

use super::global::Global;
use super::output::{self, DriftOutput};
use crate::codec::FraudLabel;
use crate::drift::monitor::{DriftMonitor, WindowReport};
use crate::drift::performance::{
    tx_fingerprint, PerformanceMonitor, PerformanceReport, PerformanceSettings,
};
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
    /// The warm-up line was logged.
    warm_up_logged: bool,
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
            warm_up_logged: false,
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
        self.set_history(b);
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

    /// The feature state's reach for this batch; while variables warm up,
    /// says once which and until when.
    fn set_history(&mut self, b: &DriftBatch) {
        self.monitor.set_history(b.history);
        let Some(&first) = b.event_times.first() else {
            return;
        };
        if self.warm_up_logged {
            return;
        }
        self.warm_up_logged = true;
        let warming: Vec<String> = self
            .monitor
            .warming_up(first)
            .into_iter()
            .map(|(name, from)| match from {
                Some(t) => format!("{name} from {}", crate::dataset::minute_of_ms(t)),
                None => format!("{name} once its history arrives"),
            })
            .collect();
        if !warming.is_empty() {
            tracing::info!(
                variables = ?warming,
                "drift warm-up: the state does not reach back far enough for these windows yet (a cold start); they are judged once it does"
            );
        }
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
        self.metrics
            .set_performance(&output::performance_gauge(r), false);
        output::log_performance(r, local_alerts, None);
        let margin = self.perf.settings().margin;
        let instance = self.out.instance.as_str();
        match self
            .out
            .codec
            .encode_performance(&output::performance_record(r, instance, margin))
        {
            Ok(payload) => {
                output::send_performance(&self.out, &payload, instance);
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
            self.gauges = Some(output::drift_gauges(r));
        }
        for r in self.reports.drain(..) {
            output::publish(&r, &self.out, &self.metrics, local_alerts);
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
        g.poll(&self.out, &mut merged);
        self.metrics.drift_late_slices.add(g.take_late());
        let judge = g.is_judge(&self.out.instance);
        self.metrics.drift_instances.set(g.live_instances() as i64);
        if let Some(r) = merged.last() {
            self.global_gauges = Some(output::drift_gauges(&r.report));
        }
        if judge {
            for r in &merged {
                output::publish_global(&r.report, &r.instances, &self.out);
            }
        }
        let settings = self.perf.settings().clone();
        for (r, instances) in g.performance_ready(&settings) {
            self.metrics
                .set_performance(&output::performance_gauge(&r), true);
            if judge {
                output::log_performance(&r, true, Some(&instances));
                let record = output::performance_record(&r, "global", settings.margin);
                match self.out.codec.encode_performance(&record) {
                    Ok(payload) => output::send_performance(&self.out, &payload, "global"),
                    Err(e) => tracing::warn!(error = %e, "cannot encode a performance report"),
                }
            }
        }
    }
}
