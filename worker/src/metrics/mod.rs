//! Metrics: the worker's counters and latency histograms, updated once per
//! batch (never per record on a lock) and read by the demo summary and the
//! Prometheus text renderer.

pub mod http;
pub mod summary;
pub use summary::LogSummary;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Log-spaced histogram over seconds: bucket i holds values below
/// `BASE * 2^(i/4)`; 96 buckets span 10 µs … ~140 s.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; NB],
    count: AtomicU64,
    /// Sum in microseconds (in millionths of a unit for unit-less histograms).
    sum_us: AtomicU64,
    /// Upper bound of bucket 0.
    base: f64,
}

const BASE: f64 = 1e-5;
const NB: usize = 96;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            base: BASE,
        }
    }
}

impl Histogram {
    /// A histogram whose first bucket ends at `base` (e.g. 1 for batch sizes).
    pub fn with_base(base: f64) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }
    fn bucket_of(base: f64, v: f64) -> usize {
        if v <= base {
            return 0;
        }
        (((v / base).log2() * 4.0).ceil() as usize).min(NB - 1)
    }
    fn bucket(v: f64) -> usize {
        Self::bucket_of(BASE, v)
    }
    fn upper(&self, i: usize) -> f64 {
        self.base * 2f64.powf(i as f64 / 4.0)
    }
    pub fn observe(&self, seconds: f64) {
        let v = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        self.buckets[Self::bucket_of(self.base, v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((v * 1e6) as u64, Relaxed);
    }
    /// Adds many observations gathered locally (one atomic per bucket touched).
    pub fn merge(&self, local: &LocalHistogram) {
        for (i, n) in local.buckets.iter().enumerate() {
            if *n > 0 {
                self.buckets[i].fetch_add(*n, Relaxed);
            }
        }
        self.count.fetch_add(local.count, Relaxed);
        self.sum_us.fetch_add(local.sum_us, Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
    /// Upper bucket bound of quantile q (0..1); None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Relaxed);
            if acc >= target {
                return Some(self.upper(i));
            }
        }
        Some(self.upper(NB - 1))
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut acc = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in self.buckets.iter().enumerate().step_by(4) {
            acc += b.load(Relaxed);
            for j in 1..4 {
                if i + j < NB {
                    acc += self.buckets[i + j].load(Relaxed);
                }
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{:.6}\"}} {acc}",
                self.upper(i + 3)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count()
        );
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count());
    }
}

/// Observations accumulated on one thread, merged once per batch.
#[derive(Debug, Clone)]
pub struct LocalHistogram {
    buckets: [u64; NB],
    count: u64,
    sum_us: u64,
}

impl Default for LocalHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; NB],
            count: 0,
            sum_us: 0,
        }
    }
}

impl LocalHistogram {
    pub fn observe(&mut self, seconds: f64) {
        let v = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        self.buckets[Histogram::bucket(v)] += 1;
        self.count += 1;
        self.sum_us += (v * 1e6) as u64;
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

/// Per-version counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionCounts {
    pub model: String,
    pub version: String,
    pub scored: u64,
    pub flagged: u64,
    pub shadow_scored: u64,
    pub shadow_flagged: u64,
}

/// The latest drift statistics of one variable (gauges).
#[derive(Debug, Clone, Default)]
pub struct DriftGauge {
    pub variable: String,
    pub values: Vec<(&'static str, f64)>,
    pub alerting: bool,
}

/// Everything the worker counts.
#[derive(Debug)]
pub struct Metrics {
    pub consumed: AtomicU64,
    pub delivered: AtomicU64,
    pub labels: AtomicU64,
    /// Records replayed into state (rebuild after an assignment).
    pub replayed: AtomicU64,
    pub batches: AtomicU64,
    pub batch_size: Histogram,
    pub inference_seconds: Histogram,
    pub processing_seconds: Histogram,
    /// Consume → its batch is scored (queueing, batching, label wait), per batch (oldest record).
    pub scoring_wait_seconds: Histogram,
    /// Output handed to the producer → acknowledged by the broker.
    pub delivery_seconds: Histogram,
    pub event_lag_seconds: Histogram,
    /// Input record's Kafka timestamp → its output acknowledged: end-to-end
    /// latency where producers stamp records with the time they send them
    /// (CreateTime, librdkafka's default), up to clock skew between hosts.
    pub end_to_end_seconds: Histogram,
    /// Dead-lettered records by reason code.
    pub dead_lettered: Mutex<Vec<(&'static str, u64)>>,
    /// What is serving: model, version, device, role (champion/challenger).
    pub model_info: Mutex<Vec<ModelInfo>>,
    /// Records decided, flagged and shadow-scored, by model version.
    pub by_version: Mutex<Vec<VersionCounts>>,
    /// Model versions switched to / refused by the registry watcher.
    pub model_swaps: AtomicU64,
    pub model_refused: AtomicU64,
    /// Input topic and (partition, lag) from librdkafka statistics. On Tansu
    /// the high watermark, and so this lag, is unreliable.
    pub consumer_lag: Mutex<(String, Vec<(i32, i64)>)>,
    /// When the first record was consumed / its output delivered.
    pub first_consumed: std::sync::OnceLock<std::time::Instant>,
    pub first_delivered: std::sync::OnceLock<std::time::Instant>,
    /// When half of `max_records` were delivered (benchmarks: the second
    /// half runs at the broker's pace, after any backlog fetched during start-up).
    pub half_delivered: std::sync::OnceLock<std::time::Instant>,
    /// Drift: the last window's statistics, windows closed, records not sampled.
    pub drift: Mutex<Vec<DriftGauge>>,
    pub drift_windows: AtomicU64,
    pub drift_dropped: AtomicU64,
    /// Records decoded through a pre-specification (legacy) fingerprint.
    pub legacy_fingerprint: AtomicU64,
    /// Hostile-input and fault counters: (series, reason, count), rendered
    /// as `riskstream_<series>_total{reason="…"}` (see [`Metrics::event`]).
    pub events: Mutex<Vec<(&'static str, &'static str, u64)>>,
    /// Input partitions whose records wait on the schema registry (outage).
    pub registry_waiting: AtomicU64,
    /// Seconds the label stream is behind (newest label event time vs the
    /// newest scored event time), -1 before the first batch.
    pub labels_behind_seconds: std::sync::atomic::AtomicI64,
}

/// Every dead-letter reason the worker can give: present in `/metrics` at 0
/// from start-up, so alerts on a reason need no first occurrence.
pub const DEAD_LETTER_REASONS: &[&str] = &[
    "missing_key",
    "empty_payload",
    "not_single_object",
    "unknown_fingerprint",
    "unknown_schema_id",
    "wrong_schema",
    "malformed_avro",
    "invalid_field",
    "invalid_amount",
    "event_time_out_of_range",
    "non_finite_score",
    "output_too_large",
    "delivery_rejected",
];

/// Counter series of [`Metrics::event`] with their help text.
pub const EVENT_SERIES: &[(&str, &str)] = &[
    (
        "state_cap_hits",
        "Per-key state entries dropped because a cap bit (reason: which cap).",
    ),
    (
        "delivery_retries",
        "Deliveries re-sent after a transient error (reason: librdkafka error code).",
    ),
    (
        "delivery_abandoned",
        "Records given up at shutdown after the drain time (reason: output or dead_letter).",
    ),
    ("labels_skipped", "Label records skipped (reason: why)."),
    (
        "event_clock_resyncs",
        "Partition event-time clocks moved after a run of far-ahead records.",
    ),
    (
        "watcher_errors",
        "Registry watcher failures (reason: panic or error).",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            labels: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_size: Histogram::with_base(1.0),
            inference_seconds: Histogram::default(),
            processing_seconds: Histogram::default(),
            scoring_wait_seconds: Histogram::default(),
            delivery_seconds: Histogram::default(),
            event_lag_seconds: Histogram::default(),
            end_to_end_seconds: Histogram::default(),
            dead_lettered: Mutex::new(DEAD_LETTER_REASONS.iter().map(|r| (*r, 0)).collect()),
            model_info: Mutex::new(Vec::new()),
            by_version: Mutex::new(Vec::new()),
            model_swaps: AtomicU64::new(0),
            model_refused: AtomicU64::new(0),
            consumer_lag: Mutex::new((String::new(), Vec::new())),
            first_consumed: std::sync::OnceLock::new(),
            first_delivered: std::sync::OnceLock::new(),
            half_delivered: std::sync::OnceLock::new(),
            drift: Mutex::new(Vec::new()),
            drift_windows: AtomicU64::new(0),
            drift_dropped: AtomicU64::new(0),
            legacy_fingerprint: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            registry_waiting: AtomicU64::new(0),
            labels_behind_seconds: std::sync::atomic::AtomicI64::new(-1),
        }
    }
}

impl Metrics {
    /// Adds `n` to the counter `series` (one of [`EVENT_SERIES`]) for `reason`.
    pub fn event(&self, series: &'static str, reason: &'static str, n: u64) {
        let mut e = self.events.lock().unwrap_or_else(|e| e.into_inner());
        match e.iter_mut().find(|(s, r, _)| *s == series && *r == reason) {
            Some((_, _, c)) => *c += n,
            None => e.push((series, reason, n)),
        }
    }

    /// The count of `series` for `reason` (0 if never counted).
    pub fn event_count(&self, series: &str, reason: &str) -> u64 {
        let e = self.events.lock().unwrap_or_else(|e| e.into_inner());
        e.iter()
            .filter(|(s, r, _)| *s == series && *r == reason)
            .map(|(_, _, c)| *c)
            .sum()
    }

    /// Dead letters counted for `reason`.
    pub fn dead_lettered_for(&self, reason: &str) -> u64 {
        let d = self.dead_lettered.lock().unwrap_or_else(|e| e.into_inner());
        d.iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn dead_letter(&self, reason: &'static str) {
        let mut d = self.dead_lettered.lock().unwrap_or_else(|e| e.into_inner());
        match d.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => d.push((reason, 1)),
        }
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
        let mut v = self.by_version.lock().unwrap_or_else(|e| e.into_inner());
        let i = match v
            .iter()
            .position(|c| c.model == model && c.version == version)
        {
            Some(i) => i,
            None => {
                v.push(VersionCounts {
                    model: model.to_string(),
                    version: version.to_string(),
                    ..Default::default()
                });
                v.len() - 1
            }
        };
        if shadow {
            v[i].shadow_scored += scored;
            v[i].shadow_flagged += flagged;
        } else {
            v[i].scored += scored;
            v[i].flagged += flagged;
        }
    }

    /// Records decided and flagged, over every version (shadow excluded).
    pub fn scored_and_flagged(&self) -> (u64, u64) {
        let v = self.by_version.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .fold((0, 0), |(s, f), c| (s + c.scored, f + c.flagged))
    }

    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE riskstream_records_consumed_total counter");
        let _ = writeln!(
            out,
            "riskstream_records_consumed_total {}",
            self.consumed.load(Relaxed)
        );
        let versions = self
            .by_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, pick) in [
            (
                "riskstream_records_scored_total",
                (|c: &VersionCounts| c.scored) as fn(&VersionCounts) -> u64,
            ),
            ("riskstream_fraud_flagged_total", |c| c.flagged),
            ("riskstream_shadow_scored_total", |c| c.shadow_scored),
            ("riskstream_shadow_flagged_total", |c| c.shadow_flagged),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            for c in &versions {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",version=\"{}\"}} {}",
                    c.model,
                    c.version,
                    pick(c)
                );
            }
        }
        let _ = writeln!(out, "# TYPE riskstream_model_swaps_total counter");
        let _ = writeln!(
            out,
            "riskstream_model_swaps_total {}",
            self.model_swaps.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE riskstream_model_refused_total counter");
        let _ = writeln!(
            out,
            "riskstream_model_refused_total {}",
            self.model_refused.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE riskstream_records_dead_lettered_total counter");
        for (reason, n) in self
            .dead_lettered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "riskstream_records_dead_lettered_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# TYPE riskstream_legacy_fingerprint_records_total counter"
        );
        let _ = writeln!(
            out,
            "riskstream_legacy_fingerprint_records_total {}",
            self.legacy_fingerprint.load(Relaxed)
        );
        {
            let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            for (series, help) in EVENT_SERIES {
                let _ = writeln!(out, "# HELP riskstream_{series}_total {help}");
                let _ = writeln!(out, "# TYPE riskstream_{series}_total counter");
                for (_, reason, n) in events.iter().filter(|(s, _, _)| s == series) {
                    let _ = writeln!(out, "riskstream_{series}_total{{reason=\"{reason}\"}} {n}");
                }
            }
        }
        let _ = writeln!(out, "# TYPE riskstream_schema_registry_waiting gauge");
        let _ = writeln!(
            out,
            "riskstream_schema_registry_waiting {}",
            self.registry_waiting.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE riskstream_labels_behind_seconds gauge");
        let _ = writeln!(
            out,
            "riskstream_labels_behind_seconds {}",
            self.labels_behind_seconds.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE riskstream_records_replayed_total counter");
        let _ = writeln!(
            out,
            "riskstream_records_replayed_total {}",
            self.replayed.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE riskstream_labels_consumed_total counter");
        let _ = writeln!(
            out,
            "riskstream_labels_consumed_total {}",
            self.labels.load(Relaxed)
        );
        for (name, h) in [
            ("riskstream_batch_size", &self.batch_size),
            ("riskstream_inference_seconds", &self.inference_seconds),
            ("riskstream_processing_seconds", &self.processing_seconds),
            (
                "riskstream_scoring_wait_seconds",
                &self.scoring_wait_seconds,
            ),
            ("riskstream_delivery_seconds", &self.delivery_seconds),
            ("riskstream_event_lag_seconds", &self.event_lag_seconds),
            ("riskstream_end_to_end_seconds", &self.end_to_end_seconds),
        ] {
            let _ = writeln!(out, "# TYPE {name} histogram");
            h.render(&mut out, name, "");
        }
        let _ = writeln!(out, "# TYPE riskstream_consumer_lag gauge");
        if let Ok(l) = self.consumer_lag.lock() {
            for (p, lag) in &l.1 {
                let _ = writeln!(
                    out,
                    "riskstream_consumer_lag{{topic=\"{}\",partition=\"{p}\"}} {lag}",
                    l.0
                );
            }
        }
        let _ = writeln!(out, "# TYPE riskstream_model_info gauge");
        for m in self
            .model_info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "riskstream_model_info{{model=\"{}\",version=\"{}\",device=\"{}\",role=\"{}\"}} 1",
                m.model, m.version, m.device, m.role
            );
        }
        self.render_drift(&mut out);
        out
    }

    fn render_drift(&self, out: &mut String) {
        let _ = writeln!(out, "# TYPE riskstream_drift_windows_total counter");
        let _ = writeln!(
            out,
            "riskstream_drift_windows_total {}",
            self.drift_windows.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE riskstream_drift_samples_dropped_total counter");
        let _ = writeln!(
            out,
            "riskstream_drift_samples_dropped_total {}",
            self.drift_dropped.load(Relaxed)
        );
        let Ok(g) = self.drift.lock() else { return };
        let _ = writeln!(out, "# TYPE riskstream_drift gauge");
        for v in g.iter() {
            for (stat, x) in &v.values {
                let _ = writeln!(
                    out,
                    "riskstream_drift{{feature=\"{}\",statistic=\"{stat}\"}} {x}",
                    v.variable
                );
            }
        }
        let _ = writeln!(out, "# TYPE riskstream_drift_alert gauge");
        for v in g.iter() {
            let _ = writeln!(
                out,
                "riskstream_drift_alert{{feature=\"{}\"}} {}",
                v.variable,
                u8::from(v.alerting)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_bound_the_observations() {
        let h = Histogram::default();
        for i in 1..=1000 {
            h.observe(i as f64 / 1000.0);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((0.5..0.6).contains(&p50), "{p50}");
        assert!((0.99..1.2).contains(&p99), "{p99}");
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.dead_letter("malformed_avro");
        m.dead_letter("malformed_avro");
        m.batch_size.observe(3.0);
        *m.consumer_lag.lock().unwrap() = ("tx".into(), vec![(0, 5), (1, 0)]);
        let t = m.render();
        assert!(t.contains("riskstream_consumer_lag{topic=\"tx\",partition=\"0\"} 5"));
        assert!(t.contains("riskstream_records_dead_lettered_total{reason=\"malformed_avro\"} 2"));
        assert!(t.contains("riskstream_batch_size_count{} 1"));
        assert_eq!(m.dead_lettered_total(), 2);
        *m.drift.lock().unwrap() = vec![DriftGauge {
            variable: "TX_AMOUNT".into(),
            values: vec![("psi", 0.25)],
            alerting: true,
        }];
        let t = m.render();
        assert!(t.contains("riskstream_drift{feature=\"TX_AMOUNT\",statistic=\"psi\"} 0.25"));
        assert!(t.contains("riskstream_drift_alert{feature=\"TX_AMOUNT\"} 1"));
    }
}
