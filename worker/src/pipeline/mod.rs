//! Pipeline: wires source → scoring → sink for `riskstream run` and owns
//! start-up (model, device, topics) and shutdown (drain, final commit).
//!
//! Threads: the input consumer and the label reader poll on their own
//! threads; the scoring thread owns the model; the sink is an async task that hands scored
//! records to the producer, whose delivery callback settles offsets.
//! Queues between them are bounded in records. Shutdown: `stop` ends
//! polling; each stage finishes what it holds and closes its output; the
//! sink settles every delivery; then offsets are committed synchronously.

pub mod health;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};

use crate::codec::{Codec, Written};
use crate::config::RunConfig;
use crate::metrics::Metrics;
use crate::model::Scorer;
use crate::scoring::serving::{load_checked, spawn_watcher, WatchConfig};
use crate::scoring::{run_scoring_loop, BatchPolicy};
use crate::scoring::{ModelSet, Role};
use crate::sink::{producer, Sink, SinkContext};
use crate::source::{input_consumer, run_label_loop, LabelProgress, OffsetTracker, Source};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Schema(#[from] crate::codec::SchemaError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaSetupError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Scoring(#[from] crate::scoring::ScoringError),
    #[error("cannot serve HTTP on {0}: {1} (set --metrics-addr, or \"off\")")]
    Http(String, String),
    #[error("a pipeline thread panicked: {0}")]
    Panic(String),
}

/// Shared handles a caller can observe while the worker runs.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    pub metrics: Arc<Metrics>,
    /// Set to ask the worker to drain and stop.
    pub stop: Arc<AtomicBool>,
    /// Model loaded and warmed, group joined.
    pub ready: Arc<AtomicBool>,
    /// What /healthz and /readyz answer, with reasons.
    pub health: health::Health,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub handled: u64,
    /// Process start to stop.
    pub seconds: f64,
    /// First output delivered to the last (throughput denominator: excludes
    /// start-up, group join and the label-history load).
    pub active_seconds: f64,
    /// Start to first output delivered (cold start).
    pub first_output_seconds: Option<f64>,
    /// Records per second over the second half of `max_records` (steady
    /// state: start-up and any backlog prefetched during it excluded).
    pub steady_records_per_second: Option<f64>,
}

/// Runs the worker until `handles.stop` is set (or `max_records` handled).
pub async fn run(cfg: RunConfig, handles: Handles) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let mut codec = Codec::new()?;
    codec.attach_metrics(handles.metrics.clone());
    if let Some(dir) = &cfg.schema_dir {
        let n = codec.add_writer_schema_dir(dir)?;
        tracing::info!(dir = %dir.display(), schemas = n, "extra writer schemas registered");
    }
    if let Some(url) = &cfg.schema_registry_url {
        codec.connect_registry_with(
            url,
            crate::codec::registry::RegistryOptions {
                ca_file: cfg.schema_registry_ca.clone(),
                ..Default::default()
            },
        )?;
        let id = codec.register_output(Written::Scored, &cfg.output_topic)?;
        if let Some(t) = &cfg.serving.shadow_topic {
            codec.register_output(Written::Scored, t)?;
        }
        if let Some(t) = &cfg.drift.topic {
            codec.register_output(Written::Drift, t)?;
        }
        tracing::info!(
            registry = codec.registry_url().unwrap_or_default(),
            scored_schema_id = id,
            "Confluent framing: input decoded by schema id, outputs framed 0x00 + id"
        );
    }
    let codec = Arc::new(codec);
    let location = crate::registry::resolve(&cfg.models_dir, &cfg.model)?;
    let scorer = load_checked(&location, cfg.device, cfg.batch_max)?;
    tracing::info!(
        model = %location.name, version = %location.version, device = scorer.device_description(),
        threshold = scorer.card.threshold,
        "model loaded; scoring on {}", scorer.device_description()
    );
    let challenger = match &cfg.serving.challenger {
        Some(r) => {
            let loc = crate::registry::resolve(&cfg.models_dir, r)?;
            let c = load_checked(&loc, cfg.device, cfg.batch_max)?;
            tracing::info!(
                model = %loc.name, version = %loc.version, ab_share = cfg.serving.ab_share,
                shadow_topic = cfg.serving.shadow_topic.as_deref().unwrap_or("-"),
                "challenger loaded"
            );
            Some(c)
        }
        None => None,
    };
    let models = ModelSet {
        champion: scorer,
        challenger,
        ab_share: cfg.serving.ab_share,
        shadow: cfg.serving.shadow_topic.is_some(),
    };
    crate::scoring::publish_model_info(&models, &handles.metrics);
    if let Some(addr) = cfg.metrics_addr {
        let bound = crate::metrics::http::serve(
            addr,
            handles.metrics.clone(),
            handles.health.clone(),
            crate::metrics::http::HttpConfig::default(),
        )
        .await
        .map_err(|e| PipelineError::Http(addr.to_string(), e.to_string()))?;
        tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    }
    let mut topics = vec![cfg.output_topic.as_str(), cfg.dlq_topic.as_str()];
    if let Some(t) = &cfg.drift.topic {
        topics.push(t);
    }
    if let Some(t) = &cfg.serving.shadow_topic {
        topics.push(t);
    }
    crate::kafka::ensure_topics(&cfg.brokers, &cfg.kafka, &topics, cfg.topic_partitions).await?;
    let (drift_sender, drift_thread) =
        match start_drift(&cfg, &models.champion, &codec, &handles.metrics) {
            Some((s, t)) => (Some(s), Some(t)),
            None => (None, None),
        };
    tracing::info!(
        brokers = %cfg.brokers, group = %cfg.group, input = %cfg.input_topic, output = %cfg.output_topic,
        labels = %cfg.labels_topic, dlq = %cfg.dlq_topic, kafka_options = ?cfg.kafka_keys(),
        "starting worker"
    );

    let tracker = Arc::new(OffsetTracker::new());
    // Counted in chunks of up to `CHUNK` records.
    let (to_scoring, scoring_rx) =
        std::sync::mpsc::sync_channel(cfg.queue_records.div_ceil(crate::source::CHUNK).max(2));
    let consumer = input_consumer(&cfg, tracker.clone(), handles.metrics.clone())?;
    let producer = producer(
        &cfg,
        SinkContext::new(
            &cfg,
            consumer.clone(),
            tracker.clone(),
            handles.metrics.clone(),
            handles.stop.clone(),
        ),
    )?;
    // Warm the producer while the label history loads: topic metadata and
    // the idempotent producer id, so the first scored record does not wait
    // for them (≈0.5 s on the local broker).
    {
        let p = producer.clone();
        let topic = cfg.output_topic.clone();
        std::thread::Builder::new()
            .name("producer-warm".into())
            .spawn(move || {
                use rdkafka::producer::Producer as _;
                let _ = p
                    .client()
                    .fetch_metadata(Some(&topic), std::time::Duration::from_secs(5));
                let _ = p.flush(std::time::Duration::from_secs(5));
            })
            .map_err(|e| PipelineError::Panic(e.to_string()))?;
    }
    let (labels_tx, labels_rx) =
        std::sync::mpsc::sync_channel(cfg.queue_records.div_ceil(crate::source::CHUNK).max(2));
    let (sink_tx, sink_rx) =
        tokio::sync::mpsc::channel(cfg.queue_records.div_ceil(cfg.batch_max).max(2));
    let progress = Arc::new(LabelProgress::default());
    let stop = handles.stop.clone();
    // The label reader has its own flag: it stops after scoring has drained.
    let labels_stop = Arc::new(AtomicBool::new(false));

    let label_thread = {
        let (cfg, codec, metrics, progress, stop) = (
            cfg.clone(),
            codec.clone(),
            handles.metrics.clone(),
            progress.clone(),
            labels_stop.clone(),
        );
        std::thread::Builder::new()
            .name("labels".into())
            .spawn(move || run_label_loop(cfg, codec, metrics, labels_tx, progress, stop))
            .map_err(|e| PipelineError::Panic(e.to_string()))?
    };
    let input_thread = {
        let source = Source {
            consumer: consumer.clone(),
            codec: codec.clone(),
            tracker: tracker.clone(),
            metrics: handles.metrics.clone(),
            to_scoring,
            to_sink: sink_tx.clone(),
            stop: stop.clone(),
            topic: cfg.input_topic.clone(),
            guard: crate::source::guard::InputGuard::new(cfg.input.clone()),
            log_interval: crate::metrics::summary::DEFAULT_INTERVAL,
        };
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || source.run())
            .map_err(|e| PipelineError::Panic(e.to_string()))?
    };
    // The registry watcher loads moved aliases beside the serving models.
    let (updates_tx, updates_rx) = std::sync::mpsc::sync_channel(1);
    if let Some(poll) = cfg.serving.registry_poll {
        let mut refs = vec![(Role::Champion, cfg.model.clone())];
        let mut serving = std::collections::HashMap::from([(
            Role::Champion,
            models.champion.location.version.clone(),
        )]);
        if let (Some(r), Some(c)) = (&cfg.serving.challenger, &models.challenger) {
            refs.push((Role::Challenger, r.clone()));
            serving.insert(Role::Challenger, c.location.version.clone());
        }
        let watch = WatchConfig {
            models_dir: cfg.models_dir.clone(),
            refs,
            serving,
            device: cfg.device,
            batch_max: cfg.batch_max,
            poll,
            drift: drift_sender.as_ref().map(|_| cfg.drift.settings.clone()),
        };
        spawn_watcher(watch, updates_tx, handles.metrics.clone(), stop.clone())
            .map_err(|e| PipelineError::Panic(e.to_string()))?;
    }
    let assigned = consumer.context().assigned.clone();
    let scoring_thread = {
        let policy = BatchPolicy {
            batch_max: cfg.batch_max,
            linger: cfg.linger,
            labels_wait: cfg.labels_wait,
            labels_load_timeout: cfg.labels_load_timeout,
        };
        let (codec, metrics, progress, stop) = (
            codec.clone(),
            handles.metrics.clone(),
            progress.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("scoring".into())
            .spawn(move || {
                run_scoring_loop(
                    models,
                    updates_rx,
                    codec,
                    metrics,
                    policy,
                    scoring_rx,
                    labels_rx,
                    progress,
                    sink_tx,
                    stop,
                    drift_sender,
                    assigned,
                )
            })
            .map_err(|e| PipelineError::Panic(e.to_string()))?
    };
    {
        let (ready, health, consumer) = (
            handles.ready.clone(),
            handles.health.clone(),
            consumer.clone(),
        );
        let (progress, tracker, metrics) =
            (progress.clone(), tracker.clone(), handles.metrics.clone());
        let stop = stop.clone();
        let mut stall = health::StallWatch::new(cfg.stall_timeout);
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let ctx = consumer.context();
                let verdict = if !ctx.joined.load(Ordering::Acquire) {
                    Err("not ready: joining the consumer group".to_string())
                } else if progress.initial_load_done.load(Ordering::Acquire) {
                    Ok("ready".to_string())
                } else if progress.load_timed_out.load(Ordering::Acquire) {
                    Ok(format!(
                        "ready (labels: the label history did not load within labels_load_timeout; \
                         terminal features use what was read; {} s behind)",
                        metrics.labels_behind_seconds.load(Ordering::Relaxed)
                    ))
                } else {
                    Err("not ready: reading the label history".to_string())
                };
                let verdict = match verdict {
                    Ok(_) if ctx.rebuilding(&consumer) => Err(
                        "not ready: rebuilding customer state of assigned partitions".to_string(),
                    ),
                    v => v,
                };
                ready.store(verdict.is_ok(), Ordering::Release);
                health.set_ready(verdict);
                let waiting = tracker.total_in_flight()
                    + metrics.registry_waiting.load(Ordering::Relaxed) as usize;
                health.set_live(stall.check(&metrics, waiting));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            ready.store(false, Ordering::Release);
            health.set_ready(Err("not ready: shutting down".into()));
        });
    }

    // Stops the worker by itself once `max_records` records were delivered.
    let sink_result = Sink::new(&cfg, producer.clone()).run(sink_rx).await;
    let sink_done = Instant::now();
    // The sink only returns early on a fatal error or when the drain time
    // ran out: stop the rest too, and let a revoke during close wait for
    // nothing (no delivery can settle any more).
    stop.store(true, Ordering::Release);
    labels_stop.store(true, Ordering::Release);
    tracker.close();
    let input_res = input_thread
        .join()
        .map_err(|_| PipelineError::Panic("source".into()))?
        .map_err(PipelineError::from);
    let scoring_res = scoring_thread
        .join()
        .map_err(|_| PipelineError::Panic("scoring".into()))?
        .map_err(PipelineError::from);
    let label_res = label_thread
        .join()
        .map_err(|_| PipelineError::Panic("labels".into()))?
        .map_err(PipelineError::from);
    // The scoring thread dropped its sender: the sidecar reports its last
    // window and flushes.
    if let Some(t) = drift_thread {
        t.join().map_err(|_| PipelineError::Panic("drift".into()))?;
    }
    let handled = sink_result?;
    input_res?;
    scoring_res?;
    label_res?;
    // Everything consumed was delivered: commit the stored offsets now.
    let in_flight = tracker.total_in_flight();
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!(handled, in_flight, "final offsets committed"),
        // Auto-commit already committed everything stored.
        Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) => {
            tracing::info!(handled, in_flight, "all offsets were already committed")
        }
        Err(e) => {
            tracing::warn!(error = %e, "final commit failed; the next owner may re-score the last records")
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    let m = &handles.metrics;
    Ok(RunReport {
        handled,
        seconds: started.elapsed().as_secs_f64(),
        active_seconds: m
            .first_delivered
            .get()
            .map_or(0.0, |t| sink_done.duration_since(*t).as_secs_f64()),
        first_output_seconds: m
            .first_delivered
            .get()
            .map(|t| t.duration_since(started).as_secs_f64()),
        steady_records_per_second: m.half_delivered.get().and_then(|t| {
            let half = cfg.max_records? / 2;
            let secs = sink_done.duration_since(*t).as_secs_f64();
            (secs > 0.0).then(|| handled.saturating_sub(half) as f64 / secs)
        }),
    })
}

/// Starts the drift sidecar unless it is off or the model has no reference
/// (then it says why and the worker scores without it).
fn start_drift(
    cfg: &RunConfig,
    scorer: &Scorer,
    codec: &Arc<Codec>,
    metrics: &Arc<Metrics>,
) -> Option<(crate::drift::task::DriftSender, std::thread::JoinHandle<()>)> {
    use crate::drift::{task, DriftMonitor, Reference};
    let topic = cfg.drift.topic.clone()?;
    let reference = match Reference::read(&scorer.location.dir) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "drift monitoring off: the model has no usable reference");
            return None;
        }
    };
    let monitor =
        match DriftMonitor::new(&reference, &scorer.card.inputs, cfg.drift.settings.clone()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "drift monitoring off");
                return None;
            }
        };
    let producer = match crate::kafka::client_config(&cfg.brokers, &cfg.kafka)
        .set("linger.ms", "100")
        .create()
    {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "drift reports will not be published (gauges and logs only)");
            None
        }
    };
    let instance = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()));
    let out = task::DriftOutput {
        producer,
        topic,
        codec: codec.clone(),
        model_name: scorer.location.name.clone(),
        model_version: scorer.location.version.clone(),
        instance,
    };
    match task::spawn(monitor, out, metrics.clone(), cfg.drift.channel_batches) {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::warn!(error = %e, "drift monitoring off: cannot start its thread");
            None
        }
    }
}
