//! Pipeline: wires source → scoring → sink (and the label reader, the
//! drift sidecar, the registry watcher) for `riskstream run`; owns start-up
//! (model, device, topics) and shutdown (drain, final commit).
//!
//! Each stage is a struct built from its own config section with a `run`
//! that owns its loop; this module only builds and connects them. The
//! polling stages run as blocking tasks on a [`TaskTracker`]; the sink is
//! an async task whose producer's delivery callback settles offsets.
//! Queues between them are bounded in records. Shutdown is one
//! [`CancellationToken`]: the source stops polling, each stage finishes
//! what it holds and closes its output, the sink settles every delivery
//! (bounded by the drain time), then offsets are committed synchronously.
//! The label reader has a token of its own, cancelled after scoring drained.

pub mod access;
pub mod health;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{Codec, FraudLabel, Written};
use crate::commit::Commits;
use crate::config::RunConfig;
use crate::drift::sidecar::DriftSidecar;
use crate::message::{LabelProgress, Shared, SinkItem, Work, CHUNK};
use crate::metrics::events::{Emit as _, PipelineRestarted};
use crate::metrics::Metrics;
use crate::scoring::serving::{load_checked, spawn_watcher, WatchConfig};
use crate::scoring::{ModelSet, ModelUpdate, Role, Scoring, ScoringIo};
use crate::sink::{producer, OutputProducer, Sink, SinkContext};
use crate::source::{input_consumer, InputConsumer, LabelReader, Source};
use crate::state::restore::Restorer;
use crate::state::Changelog;
use health::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Schema(#[from] crate::codec::SchemaError),
    #[error(transparent)]
    Registry(#[from] crate::registry::ModelRegistryError),
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
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot serve HTTP on {addr} (set --metrics-addr, or \"off\")")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {what} thread")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {stage} stage panicked or was aborted")]
    StageFailed {
        stage: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Shared handles a caller can observe while the worker runs.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    pub metrics: Arc<Metrics>,
    /// Cancel to ask the worker to drain and stop.
    pub cancel: CancellationToken,
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

/// Runs the worker until `handles.cancel` is cancelled (or `max_records`
/// handled).
pub async fn run(cfg: RunConfig, handles: Handles) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let codec = Arc::new(open_codec(&cfg, &handles.metrics)?);
    let mut models = Some(load_models(&cfg, &handles.metrics)?);
    serve_http(&cfg, &handles).await?;
    check_access(&cfg)?;
    ensure_topics(&cfg).await?;
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        // Each attempt stops on a token of its own; SIGTERM (the parent)
        // stops them all.
        let attempt = Handles {
            cancel: handles.cancel.child_token(),
            ..handles.clone()
        };
        let shared = Shared {
            codec: codec.clone(),
            metrics: handles.metrics.clone(),
            cancel: attempt.cancel.clone(),
        };
        let models = match models.take() {
            Some(m) => m,
            None => load_models(&cfg, &handles.metrics)?,
        };
        let running = Running::start(&cfg, &attempt, shared, models)?;
        match running.finish(&cfg, &attempt, started).await {
            Err(PipelineError::Source(e))
                if e.is_fenced_static_member() && !handles.cancel.is_cancelled() =>
            {
                restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
                if restarts.len() >= MAX_RESTARTS {
                    handles.cancel.cancel();
                    return Err(PipelineError::Source(e));
                }
                restarts.push(Instant::now());
                tracing::warn!(
                    restarts = restarts.len(),
                    "the input consumer was fenced as a static member (its group coordinator moved, or another process joined with the same --group-instance-id); starting the pipeline again"
                );
                PipelineRestarted.emit(&handles.metrics);
            }
            other => {
                // Whatever serves beside the attempts (HTTP) stops too.
                handles.cancel.cancel();
                return other;
            }
        }
    }
}

/// A static member (`group.instance.id`) the broker fenced is started again
/// at most this often within [`RESTART_WINDOW`], then the worker stops: a
/// second process with the same instance id would fence it back for ever.
const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// The codec: extra writer schemas, and the schema registry when configured.
fn open_codec(cfg: &RunConfig, metrics: &Arc<Metrics>) -> Result<Codec, PipelineError> {
    let mut codec = Codec::new()?;
    codec.attach_metrics(metrics.clone());
    if let Some(dir) = &cfg.schema_dir {
        let n = codec.add_writer_schema_dir(dir)?;
        tracing::info!(dir = %dir.display(), schemas = n, "extra writer schemas registered");
    }
    let Some(url) = &cfg.schema_registry_url else {
        return Ok(codec);
    };
    let options = crate::codec::registry::RegistryOptions {
        ca_file: cfg.schema_registry_ca.clone(),
        ..Default::default()
    };
    codec.connect_registry_with(url, options)?;
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
    Ok(codec)
}

/// The champion and the challenger, loaded, checked and warmed.
fn load_models(cfg: &RunConfig, metrics: &Metrics) -> Result<ModelSet, PipelineError> {
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
    crate::scoring::publish_model_info(&models, metrics);
    Ok(models)
}

async fn serve_http(cfg: &RunConfig, handles: &Handles) -> Result<(), PipelineError> {
    let Some(addr) = cfg.metrics_addr else {
        return Ok(());
    };
    let bound = crate::metrics::http::serve(
        addr,
        handles.metrics.clone(),
        handles.health.clone(),
        crate::metrics::http::HttpConfig::default(),
    )
    .await
    .map_err(|source| PipelineError::Http { addr, source })?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(())
}

/// Stops before anything is read or written when this principal lacks a
/// permission the worker needs (the error names it).
fn check_access(cfg: &RunConfig) -> Result<(), PipelineError> {
    let instance = crate::drift::sidecar::instance_name(cfg.group_instance_id.as_deref());
    let needs = access::needs(cfg, &instance);
    crate::kafka::check_access(&cfg.brokers, &cfg.kafka, &needs)?;
    Ok(())
}

async fn ensure_topics(cfg: &RunConfig) -> Result<(), PipelineError> {
    let mut topics = vec![cfg.output_topic.as_str(), cfg.dlq_topic.as_str()];
    topics.extend(cfg.drift.topic.as_deref());
    topics.extend(cfg.serving.shadow_topic.as_deref());
    crate::kafka::ensure_topics(&cfg.brokers, &cfg.kafka, &topics, cfg.topic_partitions).await?;
    if let (Some(t), true) = (&cfg.drift.topic, cfg.drift.global) {
        // One partition: every instance reads all slices.
        let slices = crate::drift::sidecar::slices_topic(t);
        crate::kafka::ensure_topics(&cfg.brokers, &cfg.kafka, &[&slices], 1).await?;
    }
    if cfg.state.enabled {
        // Co-partitioned with the input, compacted.
        crate::kafka::ensure_changelog(
            &cfg.brokers,
            &cfg.kafka,
            &cfg.input_topic,
            &cfg.state.topic,
            cfg.topic_partitions,
        )
        .await?;
    }
    Ok(())
}

/// The changelog reader of the source (None: state off).
fn restorer(cfg: &RunConfig, shared: &Shared) -> Result<Option<Restorer>, PipelineError> {
    if !cfg.state.enabled {
        return Ok(None);
    }
    let r = Restorer::new(
        &cfg.brokers,
        &cfg.kafka,
        &cfg.group,
        &cfg.state.topic,
        shared.codec.customer_state_schema().fingerprint,
        cfg.state.restore_timeout,
    )?;
    Ok(Some(r))
}

/// The started stages, until shutdown.
struct Running {
    consumer: Arc<InputConsumer>,
    offsets: Arc<Commits>,
    producer: OutputProducer,
    sink_rx: tokio::sync::mpsc::Receiver<SinkItem>,
    tasks: TaskTracker,
    source: SourceTask,
    scoring: JoinHandle<Result<(), crate::scoring::ScoringError>>,
    labels: SourceTask,
    drift: Option<std::thread::JoinHandle<()>>,
    /// The label reader stops only after scoring has drained.
    labels_cancel: CancellationToken,
}

/// The channels between the stages, bounded in records.
struct Channels {
    to_scoring: std::sync::mpsc::SyncSender<Work>,
    scoring_rx: std::sync::mpsc::Receiver<Work>,
    labels_tx: std::sync::mpsc::SyncSender<Vec<FraudLabel>>,
    labels_rx: std::sync::mpsc::Receiver<Vec<FraudLabel>>,
    sink_tx: tokio::sync::mpsc::Sender<SinkItem>,
    sink_rx: tokio::sync::mpsc::Receiver<SinkItem>,
}

impl Channels {
    fn new(cfg: &RunConfig) -> Self {
        // Counted in chunks of up to `CHUNK` records.
        let chunks = cfg.queue_records.div_ceil(CHUNK).max(2);
        let (to_scoring, scoring_rx) = std::sync::mpsc::sync_channel(chunks);
        let (labels_tx, labels_rx) = std::sync::mpsc::sync_channel(chunks);
        let (sink_tx, sink_rx) =
            tokio::sync::mpsc::channel(cfg.queue_records.div_ceil(cfg.batch_max).max(2));
        Self {
            to_scoring,
            scoring_rx,
            labels_tx,
            labels_rx,
            sink_tx,
            sink_rx,
        }
    }
}

impl Running {
    /// Builds every stage and starts it.
    fn start(
        cfg: &RunConfig,
        handles: &Handles,
        shared: Shared,
        models: ModelSet,
    ) -> Result<Self, PipelineError> {
        let client = crate::kafka::client_config(&cfg.brokers, &cfg.kafka);
        let drift = DriftSidecar::start(
            &cfg.drift,
            &models.champion,
            &shared,
            client,
            cfg.group_instance_id.as_deref(),
        );
        tracing::info!(
            brokers = %cfg.brokers, group = %cfg.group, input = %cfg.input_topic, output = %cfg.output_topic,
            labels = %cfg.labels_topic, dlq = %cfg.dlq_topic, kafka_options = ?cfg.kafka_keys(),
            "starting worker"
        );
        let ch = Channels::new(cfg);
        let (offsets, consumer, producer) = open_clients(cfg, handles, &shared, ch.to_scoring)?;
        let tasks = TaskTracker::new();
        warm_producer(&tasks, &producer, &cfg.output_topic);
        let progress = Arc::new(LabelProgress::default());
        let labels_cancel = CancellationToken::new();
        let (labels, source) = spawn_inputs(
            cfg,
            &tasks,
            &shared,
            (consumer.clone(), offsets.clone()),
            ch.labels_tx,
            (&progress, &labels_cancel),
        );
        let updates = start_watcher(cfg, &models, drift.is_some(), &shared)?;
        let io = ScoringIo {
            input: ch.scoring_rx,
            labels: ch.labels_rx,
            updates,
            to_sink: ch.sink_tx,
            drift: drift.as_ref().map(|d| d.sender.clone()),
            changelog: cfg.state.enabled.then(|| {
                Changelog::new(
                    shared.codec.customer_state_schema().header(),
                    cfg.state.flush_interval,
                )
            }),
            offsets: offsets.clone(),
            transactions: cfg.transactions(),
        };
        let assigned = consumer.context().assigned.clone();
        let scoring = Scoring::new(
            cfg.scoring(),
            models,
            io,
            &shared,
            progress.clone(),
            assigned,
        );
        let scoring = tasks.spawn_blocking(move || scoring.run());
        let watch = Watch {
            consumer: consumer.clone(),
            progress,
            offsets: offsets.clone(),
            stall: health::StallWatch::new(cfg.stall_timeout),
        };
        tasks.spawn(watch.run(handles.clone()));
        Ok(Self {
            consumer,
            offsets,
            producer,
            sink_rx: ch.sink_rx,
            tasks,
            source,
            scoring,
            labels,
            drift: drift.map(|d| d.thread),
            labels_cancel,
        })
    }

    /// Runs the sink until the stages drained, joins them, commits.
    async fn finish(
        self,
        cfg: &RunConfig,
        handles: &Handles,
        started: Instant,
    ) -> Result<RunReport, PipelineError> {
        // Stops the worker by itself once `max_records` records were delivered.
        let sink_result = Sink::new(cfg.sink(), self.producer.clone())
            .run(self.sink_rx)
            .await;
        let sink_done = Instant::now();
        // The sink only returns early on a fatal error or when the drain time
        // ran out: stop the rest too, and let a revoke during close wait for
        // nothing (no delivery can settle any more).
        handles.cancel.cancel();
        self.labels_cancel.cancel();
        self.offsets.close();
        let joined = |stage| move |source| PipelineError::StageFailed { stage, source };
        let input_res = self.source.await.map_err(joined("source"))?;
        let scoring_res = self.scoring.await.map_err(joined("scoring"))?;
        let label_res = self.labels.await.map_err(joined("labels"))?;
        // The scoring stage dropped its sender: the sidecar reports its last
        // window and flushes.
        if let Some(t) = self.drift {
            let joined_drift = tokio::task::spawn_blocking(move || t.join().is_ok()).await;
            if !matches!(joined_drift, Ok(true)) {
                tracing::error!("the drift sidecar panicked; its last window was not reported");
            }
        }
        self.tasks.close();
        let handled = sink_result?;
        input_res?;
        scoring_res?;
        label_res?;
        self.offsets.commit_final(handled);
        self.consumer.unsubscribe();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::debug!("background tasks still running at exit");
        }
        Ok(report(&handles.metrics, cfg, started, sink_done, handled))
    }
}

/// The input's commits, the input consumer (with its changelog reader,
/// handing records to `to_scoring`) and the output producer that settles
/// deliveries in the commits.
fn open_clients(
    cfg: &RunConfig,
    handles: &Handles,
    shared: &Shared,
    to_scoring: std::sync::mpsc::SyncSender<Work>,
) -> Result<(Arc<Commits>, Arc<InputConsumer>, OutputProducer), PipelineError> {
    let offsets = Arc::new(Commits::new(&cfg.input_topic, cfg.delivery.guarantee));
    let consumer = input_consumer(
        &cfg.source(),
        offsets.clone(),
        handles.metrics.clone(),
        restorer(cfg, shared)?,
        to_scoring,
    )?;
    let sink_cfg = cfg.sink();
    let ctx = SinkContext::new(
        &sink_cfg,
        offsets.clone(),
        handles.metrics.clone(),
        handles.cancel.clone(),
    );
    let producer = producer(&sink_cfg, ctx)?;
    if let Some(t) = &sink_cfg.transactions {
        init_transactions(&producer, t)?;
    }
    Ok((offsets, consumer, producer))
}

/// Exactly-once: registers the transactional id with its coordinator,
/// fencing an earlier producer with the same id (its open transaction is
/// aborted at once).
fn init_transactions(
    producer: &OutputProducer,
    t: &crate::sink::TransactionSettings,
) -> Result<(), PipelineError> {
    use rdkafka::producer::Producer as _;
    let timeout = t.timeout.max(Duration::from_secs(30));
    tokio::task::block_in_place(|| producer.init_transactions(timeout))
        .map_err(crate::sink::SinkError::Transaction)?;
    tracing::info!(transactional_id = %t.id, "exactly-once: transactional producer ready");
    Ok(())
}

type SourceTask = JoinHandle<Result<(), crate::source::SourceError>>;

/// Starts the label reader (on its own token) and the source.
fn spawn_inputs(
    cfg: &RunConfig,
    tasks: &TaskTracker,
    shared: &Shared,
    input: (Arc<InputConsumer>, Arc<Commits>),
    labels_tx: std::sync::mpsc::SyncSender<Vec<FraudLabel>>,
    labels: (&Arc<LabelProgress>, &CancellationToken),
) -> (SourceTask, SourceTask) {
    let (progress, labels_cancel) = labels;
    let reader_shared = Shared {
        cancel: labels_cancel.clone(),
        ..shared.clone()
    };
    let reader = LabelReader::new(cfg.labels(), reader_shared, labels_tx, progress.clone());
    let labels = tasks.spawn_blocking(move || reader.run());
    let interval = crate::metrics::summary::DEFAULT_INTERVAL;
    let (consumer, offsets) = input;
    let source = Source::new(consumer, shared.clone(), offsets, &cfg.source(), interval);
    (labels, tasks.spawn_blocking(move || source.run()))
}

fn report(
    metrics: &Metrics,
    cfg: &RunConfig,
    started: Instant,
    sink_done: Instant,
    handled: u64,
) -> RunReport {
    let first = metrics.first_delivered.get();
    RunReport {
        handled,
        seconds: started.elapsed().as_secs_f64(),
        active_seconds: first.map_or(0.0, |t| sink_done.duration_since(*t).as_secs_f64()),
        first_output_seconds: first.map(|t| t.duration_since(started).as_secs_f64()),
        steady_records_per_second: metrics.half_delivered.get().and_then(|t| {
            let half = cfg.max_records? / 2;
            let secs = sink_done.duration_since(*t).as_secs_f64();
            (secs > 0.0).then(|| handled.saturating_sub(half) as f64 / secs)
        }),
    }
}

/// Warms the producer while the label history loads: topic metadata and
/// the idempotent producer id, so the first scored record does not wait
/// for them (≈0.5 s on the local broker).
fn warm_producer(tasks: &TaskTracker, producer: &OutputProducer, topic: &str) {
    let (p, topic) = (producer.clone(), topic.to_string());
    tasks.spawn_blocking(move || {
        use rdkafka::producer::Producer as _;
        let _ = p
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(5));
        let _ = p.flush(Duration::from_secs(5));
    });
}

/// Starts the registry watcher (it loads moved aliases beside the serving
/// models); the scoring stage's end of its channel.
fn start_watcher(
    cfg: &RunConfig,
    models: &ModelSet,
    drift: bool,
    shared: &Shared,
) -> Result<std::sync::mpsc::Receiver<ModelUpdate>, PipelineError> {
    let (updates_tx, updates_rx) = std::sync::mpsc::sync_channel(1);
    let Some(poll) = cfg.serving.registry_poll else {
        return Ok(updates_rx);
    };
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
        drift: drift.then(|| cfg.drift.settings.clone()),
    };
    spawn_watcher(
        watch,
        updates_tx,
        shared.metrics.clone(),
        shared.cancel.clone(),
    )
    .map_err(|source| PipelineError::Spawn {
        what: "registry watcher",
        source,
    })?;
    Ok(updates_rx)
}

/// Recomputes readiness and liveness every 100 ms until shutdown, and
/// keeps the latency histograms drained when nobody scrapes.
struct Watch {
    consumer: Arc<InputConsumer>,
    progress: Arc<LabelProgress>,
    offsets: Arc<Commits>,
    stall: health::StallWatch,
}

impl Watch {
    async fn run(mut self, handles: Handles) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = 0u64;
        loop {
            tokio::select! {
                () = handles.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            handles.health.set_ready(&self.readiness(&handles.metrics));
            let waiting = self.offsets.total_in_flight()
                + usize::try_from(handles.metrics.registry_waiting.get()).unwrap_or(0);
            handles
                .health
                .set_live(self.stall.check(&handles.metrics, waiting));
            n += 1;
            if n.is_multiple_of(10) {
                handles.metrics.upkeep();
            }
        }
        handles.health.set_ready(&Readiness::ShuttingDown);
    }

    fn readiness(&self, metrics: &Metrics) -> Readiness {
        use std::sync::atomic::Ordering::Acquire;
        let ctx = self.consumer.context();
        let r = if !ctx.joined.load(Acquire) {
            Readiness::JoiningGroup
        } else if self.progress.initial_load_done.load(Acquire) {
            Readiness::Ready
        } else if self.progress.load_timed_out.load(Acquire) {
            Readiness::ReadyLabelsBehind {
                behind_s: metrics.labels_behind_seconds.get(),
            }
        } else {
            Readiness::LoadingLabels
        };
        if r.is_ready() && ctx.rebuilding(&self.consumer) {
            return Readiness::RebuildingState;
        }
        r
    }
}
