//! Metrics: the worker's series on the `metrics` crate, exposed in the
//! Prometheus text format by `metrics-exporter-prometheus`.
//!
//! Each pipeline owns its own recorder (no process-global one: tests and
//! the demo run several workers in one process), and [`Metrics`] holds the
//! handles, registered once at start-up: the hot path increments a handle
//! (an atomic add behind the crate's `CounterFn`), never looks a series up.
//! Every series is described (`# HELP`), and series with a known set of
//! label values (dead-letter reasons, fault reasons, the serving models'
//! versions) exist from start-up at 0, so an alert needs no first
//! occurrence. The counters with a `reason` label are counted through
//! the typed events of [`events`] (log line and series together). The few values the worker itself reads back (delivered
//! count, stall watch, demo summary) are [`Tally`]s: a counter plus a
//! readable atomic.

pub mod events;
pub mod http;
pub mod summary;
pub use summary::LogSummary;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Latency buckets (seconds): 2^(k/2) × 10 µs, 10 µs … ~2 min.
fn latency_buckets() -> Vec<f64> {
    (0..48)
        .map(|k| 1e-5 * 2f64.powf(f64::from(k) / 2.0))
        .collect()
}

/// Batch-size buckets: 1, 2, 4 … 65,536 records.
fn batch_buckets() -> Vec<f64> {
    (0..17).map(|k| f64::from(1u32 << k)).collect()
}

/// A counter the worker also reads back (progress, summaries).
#[derive(Debug)]
pub struct Tally {
    counter: Counter,
    value: AtomicU64,
}

impl Tally {
    pub(crate) fn new(counter: Counter) -> Self {
        Self {
            counter,
            value: AtomicU64::new(0),
        }
    }

    /// Adds `n`; returns the new total.
    #[inline]
    pub fn add(&self, n: u64) -> u64 {
        self.counter.increment(n);
        self.value.fetch_add(n, std::sync::atomic::Ordering::AcqRel) + n
    }

    pub fn get(&self) -> u64 {
        self.value.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A gauge the worker also reads back (readiness, stall watch).
#[derive(Debug)]
pub struct Level {
    gauge: Gauge,
    value: AtomicI64,
}

impl Level {
    fn new(gauge: Gauge, initial: i64) -> Self {
        gauge.set(initial as f64);
        Self {
            gauge,
            value: AtomicI64::new(initial),
        }
    }

    pub fn set(&self, v: i64) {
        if self.value.swap(v, Relaxed) != v {
            self.gauge.set(v as f64);
        }
    }

    pub fn add(&self, d: i64) {
        let v = self.value.fetch_add(d, Relaxed) + d;
        self.gauge.set(v as f64);
    }

    pub fn get(&self) -> i64 {
        self.value.load(Relaxed)
    }
}

/// One serving model, for `riskstream_model_info`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    pub model: String,
    pub version: String,
    pub device: String,
    pub role: &'static str,
}

/// The latest drift statistics of one variable (gauges): per scale label
/// ("1h", "6h", ...), its statistics.
#[derive(Debug, Clone, Default)]
pub struct DriftGauge {
    pub variable: String,
    pub scales: Vec<(String, Vec<(&'static str, f64)>)>,
    pub alerting: bool,
}

/// Per-version counters: decided, flagged, shadow-scored, shadow-flagged.
#[derive(Debug)]
struct VersionCounters {
    model: String,
    version: String,
    scored: Tally,
    flagged: Tally,
    shadow_scored: Counter,
    shadow_flagged: Counter,
}

/// Histogram series: name, help, unit.
const HISTOGRAMS: &[(&str, &str, Unit)] = &[
    ("riskstream_batch_size", "Records per scored micro-batch.", Unit::Count),
    ("riskstream_inference_seconds", "Model time per micro-batch (every serving model).", Unit::Seconds),
    ("riskstream_processing_seconds", "Consumed → output acknowledged, per record.", Unit::Seconds),
    ("riskstream_scoring_wait_seconds", "Consumed → its batch scored (queueing, batching, label wait), per batch (oldest record).", Unit::Seconds),
    ("riskstream_delivery_seconds", "Output handed to the producer → acknowledged by the broker, per record.", Unit::Seconds),
    ("riskstream_transaction_commit_seconds", "Exactly-once: a transaction's commit (its offsets sent, its last outputs acknowledged, committed), per transaction; the sink writes nothing meanwhile.", Unit::Seconds),
    ("riskstream_event_lag_seconds", "Record event time → output acknowledged, per record.", Unit::Seconds),
    ("riskstream_end_to_end_seconds", "Input record's Kafka timestamp → output visible to read_committed readers (acknowledged; exactly-once: its transaction committed), per record (up to clock skew between hosts).", Unit::Seconds),
];

/// Counters and gauges without labels: name, help.
const COUNTERS: &[(&str, &str)] = &[
    ("riskstream_records_consumed_total", "Input records consumed (scored or dead-lettered; replayed history excluded)."),
    ("riskstream_records_delivered_total", "Outputs and dead letters acknowledged by the broker."),
    ("riskstream_labels_consumed_total", "Label records handed to the feature engine."),
    ("riskstream_records_replayed_total", "Input records replayed into customer state without output (state rebuild after an assignment)."),
    ("riskstream_batches_total", "Micro-batches scored."),
    ("riskstream_changelog_records_total", "State changelog records (customer states and tombstones) handed to the producer."),
    ("riskstream_state_restore_records_total", "State changelog records read while restoring assigned partitions."),
    ("riskstream_state_restored_customers_total", "Customers whose state was restored from the changelog."),
    ("riskstream_model_swaps_total", "Model versions switched to by the registry watcher."),
    ("riskstream_model_refused_total", "Model versions the registry watcher refused (incompatible or failed its checks)."),
    ("riskstream_legacy_fingerprint_records_total", "Records decoded through a pre-specification (riskstream 0.1) schema fingerprint."),
    ("riskstream_drift_windows_total", "Drift evaluations: event-time hours closed, each judging the windows of every scale that end with it."),
    ("riskstream_drift_late_records_total", "Scored records the drift sidecar did not sample because their event-time hour had already closed."),
    ("riskstream_drift_samples_dropped_total", "Scored batches the drift sidecar did not sample (its queue was full)."),
    ("riskstream_drift_late_slices_total", "Other instances' drift slices that reached the merged verdict after their quarter hour was judged without them."),
    ("riskstream_records_scored_total", "Records decided by a model version (shadow scores excluded)."),
    ("riskstream_fraud_flagged_total", "Records flagged as fraud by a model version (shadow excluded)."),
    ("riskstream_shadow_scored_total", "Records scored by the challenger in shadow mode."),
    ("riskstream_shadow_flagged_total", "Records the shadow challenger would have flagged."),
];

const GAUGES: &[(&str, &str)] = &[
    ("riskstream_schema_registry_waiting", "Input partitions whose records wait on the schema registry (outage)."),
    ("riskstream_labels_behind_seconds", "How far the label stream is behind the records being scored, s (-1 before the first batch)."),
    ("riskstream_partitions_assigned", "Input partitions this instance owns (the group's sum below the topic's partition count: some partition has no owner)."),
    ("riskstream_consumer_lag", "Records behind the high watermark per input partition (librdkafka statistics)."),
    ("riskstream_model_info", "The serving models: 1 for each model, version, device and role serving now, 0 once replaced."),
    ("riskstream_drift", "The last drift evaluation's statistic per monitored variable and window scale (z, z_high, z_low, chi2, chi2_limit, psi, effect, mean, expected_mean, exceedance = statistic / threshold)."),
    ("riskstream_drift_alert", "1 while a drift alert is raised for the variable (this instance's share of the traffic)."),
    ("riskstream_drift_global", "The merged verdict's last evaluation (every instance's slices merged), per variable and scale: the same statistics as riskstream_drift."),
    ("riskstream_drift_global_alert", "1 while the merged verdict holds a drift alert for the variable (one per model across instances)."),
    ("riskstream_drift_instances", "Instances whose drift slices the merged verdict waited for at its last poll."),
    ("riskstream_performance", "Realised performance of a model version on the newest event day closed by its delayed labels, from the decisions this instance made (metric: auc_roc, average_precision, f1, precision, recall at the card's threshold; labelled, positives; day_start_seconds; validation_* from the card)."),
    ("riskstream_performance_alert", "1 while a model version's realised performance is below its validation values by more than the margin (this instance's decisions)."),
    ("riskstream_performance_global", "The same as riskstream_performance for every instance's decisions merged."),
    ("riskstream_performance_global_alert", "1 while the merged realised performance of a model version is below validation by more than the margin (one per version across instances)."),
    ("riskstream_performance_tracked", "Decisions held waiting for their labels (bounded by drift.performance_max_tracked)."),
    ("riskstream_performance_sample_rate", "Share of decisions the performance monitor keeps (1 until the store reaches its bound)."),
];

/// The state size gauges (name, help), in the order of
/// `FeatureEngine::state_size`.
const STATE_SIZE: [(&str, &str); 4] = [
    (
        "riskstream_state_customers",
        "Customers whose 30-day history this instance holds (its partitions' live keys).",
    ),
    (
        "riskstream_state_customer_transactions",
        "Transactions held in those customers' histories.",
    ),
    (
        "riskstream_state_terminals",
        "Terminals with labelled transactions inside the 37-day window.",
    ),
    (
        "riskstream_state_terminal_labels",
        "Labels held for those terminals.",
    ),
];

/// Performance gauges of one model version's closed day: (metric, value).
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceGauge {
    pub model: String,
    pub values: Vec<(&'static str, f64)>,
    pub alerting: bool,
}

/// Performance gauges by (model, metric).
type PerfSeries = std::collections::HashMap<(String, &'static str), Gauge>;

/// Drift gauges by (variable, scale label, statistic).
type DriftSeries = std::collections::HashMap<(String, String, &'static str), Gauge>;

/// Everything the worker counts.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub consumed: Counter,
    pub delivered: Tally,
    pub(crate) labels: Counter,
    pub(crate) replayed: Counter,
    pub(crate) batches: Counter,
    pub(crate) changelog_records: Counter,
    pub(crate) state_restore_records: Counter,
    pub(crate) state_restored_customers: Counter,
    pub(crate) model_swaps: Counter,
    pub(crate) model_refused: Counter,
    pub(crate) legacy_fingerprint: Counter,
    pub(crate) drift_windows: Tally,
    pub(crate) drift_dropped: Tally,
    pub(crate) drift_late: Tally,
    pub(crate) drift_late_slices: Tally,
    pub batch_size: Histogram,
    pub inference_seconds: Histogram,
    pub processing_seconds: Histogram,
    pub scoring_wait_seconds: Histogram,
    pub delivery_seconds: Histogram,
    pub(crate) transaction_commit_seconds: Histogram,
    pub event_lag_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    /// Input partitions whose records wait on the schema registry (outage).
    pub registry_waiting: Level,
    /// Seconds the label stream is behind, -1 before the first batch.
    pub labels_behind_seconds: Level,
    pub(crate) drift_instances: Level,
    /// Input partitions assigned to this instance now.
    pub(crate) partitions_assigned: Level,
    pub(crate) performance_tracked: Level,
    pub(crate) performance_sample_rate: Gauge,
    /// Live state held (see [`STATE_SIZE`]), refreshed every few seconds.
    pub(crate) state_size: [Gauge; 4],
    performance: Mutex<PerfSeries>,
    performance_global: Mutex<PerfSeries>,
    /// The series with a `reason` label ([`events::Series`]).
    events: events::EventCounters,
    versions: Mutex<Vec<VersionCounters>>,
    model_info: Mutex<Vec<(ModelInfo, Gauge)>>,
    lag: Mutex<Vec<(String, i32, Gauge)>>,
    /// (variable, scale, statistic) → gauge; "" scale for the alert gauge.
    drift: Mutex<DriftSeries>,
    /// The same for the merged verdict.
    drift_global: Mutex<DriftSeries>,
    drift_alerting: Mutex<Vec<String>>,
    /// When the first record was consumed / its output delivered.
    pub(crate) first_consumed: std::sync::OnceLock<std::time::Instant>,
    pub(crate) first_delivered: std::sync::OnceLock<std::time::Instant>,
    /// When half of `max_records` were delivered (benchmarks: the second
    /// half runs at the broker's pace, after any backlog fetched during start-up).
    pub(crate) half_delivered: std::sync::OnceLock<std::time::Instant>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("delivered", &self.delivered.get())
            .finish_non_exhaustive()
    }
}

const META: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A recorder of its own, every series described, the known ones at 0.
    pub fn new() -> Self {
        let recorder = build_recorder();
        let handle = recorder.handle();
        let c = |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &META);
        let h =
            |name: &'static str| recorder.register_histogram(&Key::from_static_name(name), &META);
        let g = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &META);
        Self {
            consumed: c("riskstream_records_consumed_total"),
            delivered: Tally::new(c("riskstream_records_delivered_total")),
            labels: c("riskstream_labels_consumed_total"),
            replayed: c("riskstream_records_replayed_total"),
            batches: c("riskstream_batches_total"),
            changelog_records: c("riskstream_changelog_records_total"),
            state_restore_records: c("riskstream_state_restore_records_total"),
            state_restored_customers: c("riskstream_state_restored_customers_total"),
            model_swaps: c("riskstream_model_swaps_total"),
            model_refused: c("riskstream_model_refused_total"),
            legacy_fingerprint: c("riskstream_legacy_fingerprint_records_total"),
            drift_windows: Tally::new(c("riskstream_drift_windows_total")),
            drift_dropped: Tally::new(c("riskstream_drift_samples_dropped_total")),
            drift_late: Tally::new(c("riskstream_drift_late_records_total")),
            drift_late_slices: Tally::new(c("riskstream_drift_late_slices_total")),
            batch_size: h("riskstream_batch_size"),
            inference_seconds: h("riskstream_inference_seconds"),
            processing_seconds: h("riskstream_processing_seconds"),
            scoring_wait_seconds: h("riskstream_scoring_wait_seconds"),
            delivery_seconds: h("riskstream_delivery_seconds"),
            transaction_commit_seconds: h("riskstream_transaction_commit_seconds"),
            event_lag_seconds: h("riskstream_event_lag_seconds"),
            end_to_end_seconds: h("riskstream_end_to_end_seconds"),
            registry_waiting: Level::new(g("riskstream_schema_registry_waiting"), 0),
            labels_behind_seconds: Level::new(g("riskstream_labels_behind_seconds"), -1),
            drift_instances: Level::new(g("riskstream_drift_instances"), 0),
            partitions_assigned: Level::new(g("riskstream_partitions_assigned"), 0),
            performance_tracked: Level::new(g("riskstream_performance_tracked"), 0),
            performance_sample_rate: {
                let r = g("riskstream_performance_sample_rate");
                r.set(1.0);
                r
            },
            state_size: STATE_SIZE.map(|(name, _)| g(name)),
            performance: Mutex::new(PerfSeries::default()),
            performance_global: Mutex::new(PerfSeries::default()),
            events: events::EventCounters::register(&recorder),
            versions: Mutex::new(Vec::new()),
            model_info: Mutex::new(Vec::new()),
            lag: Mutex::new(Vec::new()),
            drift: Mutex::new(DriftSeries::default()),
            drift_global: Mutex::new(DriftSeries::default()),
            drift_alerting: Mutex::new(Vec::new()),
            first_consumed: std::sync::OnceLock::new(),
            first_delivered: std::sync::OnceLock::new(),
            half_delivered: std::sync::OnceLock::new(),
            recorder,
            handle,
        }
    }

    /// Prometheus text exposition (also moves recorded latencies into the
    /// histograms).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Moves recorded latencies into the histograms: call now and then when
    /// nobody scrapes, so they do not pile up.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Records sent to the dead-letter topic, every reason.
    pub fn dead_lettered_total(&self) -> u64 {
        self.events.total::<events::DeadLetterReason>()
    }

    /// Registers a serving version's counters (at 0) before it scores.
    pub fn register_version(&self, model: &str, version: &str) {
        let mut v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        self.version_index(&mut v, model, version);
    }

    fn version_index(&self, v: &mut Vec<VersionCounters>, model: &str, version: &str) -> usize {
        if let Some(i) = v
            .iter()
            .position(|c| c.model == model && c.version == version)
        {
            return i;
        }
        let key = |name: &'static str| {
            Key::from_parts(
                name,
                vec![
                    Label::new("model", model.to_string()),
                    Label::new("version", version.to_string()),
                ],
            )
        };
        let c = |name| self.recorder.register_counter(&key(name), &META);
        v.push(VersionCounters {
            model: model.to_string(),
            version: version.to_string(),
            scored: Tally::new(c("riskstream_records_scored_total")),
            flagged: Tally::new(c("riskstream_fraud_flagged_total")),
            shadow_scored: c("riskstream_shadow_scored_total"),
            shadow_flagged: c("riskstream_shadow_flagged_total"),
        });
        v.len() - 1
    }

    /// Adds one batch's counts for a version (one lock per batch).
    pub fn count_version(
        &self,
        model: &str,
        version: &str,
        scored: u64,
        flagged: u64,
        shadow: bool,
    ) {
        if scored == 0 {
            return;
        }
        let mut v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let i = self.version_index(&mut v, model, version);
        let c = &v[i];
        if shadow {
            c.shadow_scored.increment(scored);
            c.shadow_flagged.increment(flagged);
        } else {
            c.scored.add(scored);
            c.flagged.add(flagged);
        }
    }

    /// Records decided and flagged, over every version (shadow excluded).
    pub fn scored_and_flagged(&self) -> (u64, u64) {
        let v = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().fold((0, 0), |(s, f), c| {
            (s + c.scored.get(), f + c.flagged.get())
        })
    }

    /// `riskstream_model_info`: 1 for what serves now, 0 for what it replaced.
    pub fn set_model_info(&self, serving: &[ModelInfo]) {
        let mut m = self.model_info.lock().unwrap_or_else(|e| e.into_inner());
        for (info, g) in m.iter() {
            if !serving.contains(info) {
                g.set(0.0);
            }
        }
        for info in serving {
            if let Some((_, g)) = m.iter().find(|(i, _)| i == info) {
                g.set(1.0);
                continue;
            }
            let key = Key::from_parts(
                "riskstream_model_info",
                vec![
                    Label::new("model", info.model.clone()),
                    Label::new("version", info.version.clone()),
                    Label::new("device", info.device.clone()),
                    Label::new("role", info.role),
                ],
            );
            let g = self.recorder.register_gauge(&key, &META);
            g.set(1.0);
            m.push((info.clone(), g));
        }
        drop(m);
        for info in serving {
            self.register_version(&info.model, &info.version);
        }
    }

    /// Per-partition consumer lag of `topic` (librdkafka statistics).
    pub fn set_consumer_lag(&self, topic: &str, lag: &[(i32, i64)]) {
        let mut l = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        for (p, n) in lag {
            match l.iter().find(|(t, q, _)| t == topic && q == p) {
                Some((_, _, g)) => g.set(*n as f64),
                None => {
                    let key = Key::from_parts(
                        "riskstream_consumer_lag",
                        vec![
                            Label::new("topic", topic.to_string()),
                            Label::new("partition", p.to_string()),
                        ],
                    );
                    let g = self.recorder.register_gauge(&key, &META);
                    g.set(*n as f64);
                    l.push((topic.to_string(), *p, g));
                }
            }
        }
    }

    /// The last drift window's statistics and alert state per variable.
    pub fn set_drift(&self, gauges: &[DriftGauge]) {
        *self
            .drift_alerting
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = gauges
            .iter()
            .filter(|g| g.alerting)
            .map(|g| g.variable.clone())
            .collect();
        self.drift_series(&self.drift, "riskstream_drift", gauges);
    }

    /// The merged verdict's last evaluation.
    pub fn set_drift_global(&self, gauges: &[DriftGauge]) {
        self.drift_series(&self.drift_global, "riskstream_drift_global", gauges);
    }

    fn drift_series(&self, store: &Mutex<DriftSeries>, name: &'static str, gauges: &[DriftGauge]) {
        let mut d = store.lock().unwrap_or_else(|e| e.into_inner());
        for v in gauges {
            let alert = (
                String::new(),
                vec![("alert", f64::from(u8::from(v.alerting)))],
            );
            for (scale, values) in v.scales.iter().chain(std::iter::once(&alert)) {
                for &(stat, x) in values {
                    let id = (v.variable.clone(), scale.clone(), stat);
                    self.set_gauge(&mut d, id, x, || {
                        if stat == "alert" {
                            Key::from_parts(
                                format!("{name}_alert"),
                                vec![Label::new("feature", v.variable.clone())],
                            )
                        } else {
                            Key::from_parts(
                                name,
                                vec![
                                    Label::new("feature", v.variable.clone()),
                                    Label::new("scale", scale.clone()),
                                    Label::new("statistic", stat),
                                ],
                            )
                        }
                    });
                }
            }
        }
    }

    /// A model version's newest closed day (this instance's decisions, or
    /// with `global` every instance's merged).
    pub fn set_performance(&self, p: &PerformanceGauge, global: bool) {
        let (store, name) = if global {
            (&self.performance_global, "riskstream_performance_global")
        } else {
            (&self.performance, "riskstream_performance")
        };
        let mut d = store.lock().unwrap_or_else(|e| e.into_inner());
        let alert = ("alert", f64::from(u8::from(p.alerting)));
        for &(metric, x) in p.values.iter().chain(std::iter::once(&alert)) {
            self.set_gauge(&mut d, (p.model.clone(), metric), x, || {
                if metric == "alert" {
                    Key::from_parts(
                        format!("{name}_alert"),
                        vec![Label::new("model", p.model.clone())],
                    )
                } else {
                    Key::from_parts(
                        name,
                        vec![
                            Label::new("model", p.model.clone()),
                            Label::new("metric", metric),
                        ],
                    )
                }
            });
        }
    }

    /// Sets the gauge `id` of `store`, registering it under `key()` the first time.
    fn set_gauge<K: std::hash::Hash + Eq>(
        &self,
        store: &mut std::collections::HashMap<K, Gauge>,
        id: K,
        x: f64,
        key: impl FnOnce() -> Key,
    ) {
        if let Some(g) = store.get(&id) {
            g.set(x);
            return;
        }
        let g = self.recorder.register_gauge(&key(), &META);
        g.set(x);
        store.insert(id, g);
    }

    /// Variables with a drift alert raised in the last window.
    pub fn drift_alerts(&self) -> Vec<String> {
        self.drift_alerting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Quantile `q` of histogram `name`, interpolated within its bucket
    /// (as Prometheus' `histogram_quantile`); None when empty.
    pub fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        quantile_of(&self.render(), name, q)
    }
}

/// A recorder with the worker's buckets and every series described.
fn build_recorder() -> PrometheusRecorder {
    let mut builder = PrometheusBuilder::new();
    for (name, _, unit) in HISTOGRAMS {
        let buckets = if *unit == Unit::Count {
            batch_buckets()
        } else {
            latency_buckets()
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
    }
    let recorder = builder.build_recorder();
    for (name, help) in COUNTERS {
        recorder.describe_counter((*name).into(), None, (*help).into());
    }
    for s in events::Series::ALL {
        recorder.describe_counter(s.name().into(), None, s.help().into());
    }
    for (name, help) in GAUGES.iter().chain(&STATE_SIZE) {
        recorder.describe_gauge((*name).into(), None, (*help).into());
    }
    for (name, help, unit) in HISTOGRAMS {
        recorder.describe_histogram((*name).into(), Some(*unit), (*help).into());
    }
    recorder
}

/// Quantile `q` of the unlabelled histogram `name` in a Prometheus text
/// exposition, interpolated linearly within the bucket (lower bound of the
/// first bucket: 0).
pub fn quantile_of(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = total * q.clamp(0.0, 1.0);
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, n) in &buckets {
        if *n >= target && *n > below {
            if le.is_infinite() {
                return Some(lo);
            }
            return Some(lo + (le - lo) * (target - below) / (n - below));
        }
        if !le.is_infinite() {
            lo = *le;
        }
        below = *n;
    }
    Some(lo)
}

#[cfg(test)]
mod tests {
    use super::events::Emit as _;
    use super::*;

    #[test]
    fn quantiles_bound_the_observations() {
        let m = Metrics::new();
        for i in 1..=1000 {
            m.processing_seconds.record(f64::from(i) / 1000.0);
        }
        let p50 = m.quantile("riskstream_processing_seconds", 0.5).unwrap();
        let p99 = m.quantile("riskstream_processing_seconds", 0.99).unwrap();
        // Within the bucket holding the true value (buckets are √2 apart).
        assert!((0.46..0.66).contains(&p50), "{p50}");
        assert!((0.92..1.31).contains(&p99), "{p99}");
        assert!(m.quantile("riskstream_delivery_seconds", 0.5).is_none());
    }

    #[test]
    fn renders_described_series_with_known_labels_at_zero() {
        let m = Metrics::new();
        let dl = events::DeadLettered {
            source_topic: "tx",
            partition: 0,
            offset: 1,
            reason: events::DeadLetterReason::MalformedAvro,
            detail: "",
        };
        dl.emit(&m);
        dl.emit(&m);
        m.batch_size.record(3.0);
        m.set_consumer_lag("tx", &[(0, 5), (1, 0)]);
        let t = m.render();
        assert!(
            t.contains("riskstream_consumer_lag{topic=\"tx\",partition=\"0\"} 5"),
            "{t}"
        );
        assert!(t.contains("riskstream_records_dead_lettered_total{reason=\"malformed_avro\"} 2"));
        assert!(t.contains("riskstream_records_dead_lettered_total{reason=\"invalid_amount\"} 0"));
        assert!(t.contains("riskstream_state_cap_hits_total{reason=\"terminal_labels\"} 0"));
        assert!(t.contains("riskstream_state_customers 0"), "{t}");
        assert!(t.contains("# HELP riskstream_state_terminal_labels "));
        assert!(t.contains("riskstream_batch_size_count 1"), "{t}");
        assert!(t.contains("# HELP riskstream_records_consumed_total "));
        assert_eq!(m.dead_lettered_total(), 2);
        m.set_drift(&[DriftGauge {
            variable: "TX_AMOUNT".into(),
            scales: vec![("6h".into(), vec![("psi", 0.25)])],
            alerting: true,
        }]);
        let t = m.render();
        assert!(t.contains(
            "riskstream_drift{feature=\"TX_AMOUNT\",scale=\"6h\",statistic=\"psi\"} 0.25"
        ));
        assert!(t.contains("riskstream_drift_alert{feature=\"TX_AMOUNT\"} 1"));
    }

    #[test]
    fn every_series_has_help_and_type() {
        let m = Metrics::new();
        m.processing_seconds.record(0.01);
        m.set_model_info(&[ModelInfo {
            model: "m".into(),
            version: "1".into(),
            device: "cpu \"flex\"\n".into(),
            role: "champion",
        }]);
        let t = m.render();
        let mut names: Vec<&str> = t
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| {
                n.trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count")
            })
            .collect();
        names.dedup();
        for n in names {
            assert!(t.contains(&format!("# HELP {n} ")), "{n} has no HELP:\n{t}");
            assert!(t.contains(&format!("# TYPE {n} ")), "{n} has no TYPE:\n{t}");
        }
        // Label values are escaped.
        assert!(t.contains(r#"device="cpu \"flex\"\n""#), "{t}");
    }

    #[test]
    fn a_replaced_model_reads_zero() {
        let m = Metrics::new();
        let info = |v: &str| ModelInfo {
            model: "m".into(),
            version: v.into(),
            device: "cpu".into(),
            role: "champion",
        };
        m.set_model_info(&[info("1")]);
        m.set_model_info(&[info("2")]);
        let t = m.render();
        assert!(
            t.contains(
                r#"riskstream_model_info{model="m",version="1",device="cpu",role="champion"} 0"#
            ),
            "{t}"
        );
        assert!(
            t.contains(
                r#"riskstream_model_info{model="m",version="2",device="cpu",role="champion"} 1"#
            ),
            "{t}"
        );
        assert!(
            t.contains(r#"riskstream_records_scored_total{model="m",version="2"} 0"#),
            "{t}"
        );
    }
}
