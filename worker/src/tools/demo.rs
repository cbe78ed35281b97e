//! `riskstream demo`: the main job in one command. Without `--brokers` it
//! starts librdkafka's in-process mock cluster; then it replays shared data,
//! runs the worker, and prints a live summary until every replayed
//! transaction is scored (or Ctrl-C).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{RunArgs, RunConfig};
use crate::pipeline::{self, Handles};
use crate::tools::replay::{replay, ReplayArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// A real cluster; without it an in-process mock cluster is started.
    #[arg(long, env = "RISKSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Transactions CSV to replay.
    #[arg(long, default_value = "../shared/data/handbook/transactions.csv.gz")]
    pub csv: PathBuf,
    /// First day replayed. Customer windows reach back 30 days and terminal
    /// risk 37 days, so records of the first weeks see shorter histories.
    #[arg(long, default_value = "2018-07-01")]
    pub from: String,
    #[arg(long, default_value = "2018-08-14")]
    pub to: String,
    /// Replay rate in events/s (unlimited when absent).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
    pub models_dir: PathBuf,
    #[arg(long, default_value = crate::config::DEFAULT_MODEL)]
    pub model: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the in-process broker")]
    Mock(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Replay(#[from] crate::tools::replay::ReplayError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

/// The demo's topic names: plain on the mock cluster, suffixed on a real one.
struct Names {
    suffix: Option<String>,
}

impl Names {
    fn topic(&self, t: &str) -> String {
        match &self.suffix {
            Some(s) => format!("{t}.demo-{s}"),
            None => t.to_string(),
        }
    }
}

/// The given cluster, or an in-process mock one with the demo's topics
/// (returned too: it lives as long as the demo).
fn cluster(
    args: &DemoArgs,
) -> Result<
    (
        String,
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    ),
    DemoError,
> {
    if let Some(b) = &args.brokers {
        return Ok((b.clone(), None));
    }
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    for t in [
        "transactions",
        "transactions.labels",
        "transactions.scored",
        "transactions.dlq",
        "transactions.state",
        "riskstream.drift",
        "riskstream.drift.slices",
    ] {
        // The mock cluster does not answer CreateTopics: make them here.
        mock.create_topic(t, 4, 1)?;
    }
    let b = mock.bootstrap_servers();
    eprintln!("started an in-process mock Kafka cluster at {b}");
    Ok((b, Some(mock)))
}

fn run_args(args: &DemoArgs, brokers: &str, names: &Names) -> RunArgs {
    let suffix = std::process::id();
    RunArgs {
        brokers: Some(brokers.to_string()),
        group: Some(format!("riskstream-demo-{suffix}")),
        input_topic: Some(names.topic("transactions")),
        output_topic: Some(names.topic("transactions.scored")),
        labels_topic: Some(names.topic("transactions.labels")),
        dlq_topic: Some(names.topic("transactions.dlq")),
        model: Some(args.model.clone()),
        models_dir: Some(args.models_dir.clone()),
        metrics_addr: Some("127.0.0.1:0".into()),
        state: crate::config::StateSection {
            topic: Some(names.topic("transactions.state")),
            ..Default::default()
        },
        drift: crate::config::DriftSection {
            topic: Some(names.topic("riskstream.drift")),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn replay_args(args: &DemoArgs, brokers: &str, cfg: &RunConfig) -> ReplayArgs {
    ReplayArgs {
        csv: args.csv.clone(),
        brokers: brokers.to_string(),
        topic: cfg.input_topic.clone(),
        labels_topic: cfg.labels_topic.clone(),
        partitions: 4,
        rate: args.rate,
        limit: None,
        // Send-time stamps: riskstream_end_to_end_seconds is then real.
        timestamp_now: true,
        from: Some(args.from.clone()),
        to: Some(args.to.clone()),
        quiet: true,
        schema_registry_url: None,
    }
}

/// One line of the live summary; returns the delivered count.
fn print_progress(
    metrics: &crate::metrics::Metrics,
    started: Instant,
    last: &mut (Instant, u64),
) -> u64 {
    let delivered = metrics.delivered.get();
    let (scored, flagged) = metrics.scored_and_flagged();
    let dead = metrics.dead_lettered_total();
    let rate = (delivered - last.1) as f64 / last.0.elapsed().as_secs_f64();
    *last = (Instant::now(), delivered);
    let q = |p| {
        metrics
            .quantile("riskstream_processing_seconds", p)
            .map_or("-".to_string(), |s| format!("{:.1}ms", s * 1e3))
    };
    let alerts = metrics.drift_alerts();
    eprintln!(
        "[{:>4.0}s] scored {scored:>8}  {rate:>8.0} ev/s  latency p50 {} p99 {}  flagged {}  dead-lettered {dead}  drift windows {} alerts {}",
        started.elapsed().as_secs_f64(),
        q(0.5),
        q(0.99),
        flagged,
        metrics.drift_windows.get(),
        if alerts.is_empty() { "none".to_string() } else { alerts.join(",") },
    );
    delivered
}

/// Runs the demo until every replayed transaction is scored or `cancel`.
pub async fn demo(
    args: DemoArgs,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), DemoError> {
    let (brokers, _mock) = cluster(&args)?;
    let names = Names {
        suffix: args
            .brokers
            .as_ref()
            .map(|_| std::process::id().to_string()),
    };
    let cfg = RunConfig::resolve(&run_args(&args, &brokers, &names))?;
    let replay_args = replay_args(&args, &brokers, &cfg);
    let handles = Handles {
        cancel: cancel.clone(),
        ..Default::default()
    };
    let metrics = handles.metrics.clone();
    let worker = tokio::spawn(pipeline::run(cfg, handles.clone()));
    eprintln!(
        "replaying {} .. {} from {}",
        args.from,
        args.to,
        args.csv.display()
    );
    let mut producer = Some(tokio::spawn(async move { replay(&replay_args).await }));
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut produced: Option<u64> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(p) = producer.take_if(|p| p.is_finished()) {
            let r = p.await.map_err(crate::tools::replay::ReplayError::Task)??;
            eprintln!(
                "replay done: {} transactions, {} labels",
                r.transactions, r.labels
            );
            produced = Some(r.transactions);
        }
        let delivered = print_progress(&metrics, started, &mut last);
        let done = produced.is_some_and(|p| delivered >= p);
        if done || cancel.is_cancelled() || worker.is_finished() {
            cancel.cancel();
            break;
        }
    }
    let report = worker
        .await
        .map_err(|source| crate::pipeline::PipelineError::StageFailed {
            stage: "pipeline",
            source,
        })??;
    eprintln!(
        "done: {} records in {:.1}s; flagged {}",
        report.handled,
        report.seconds,
        metrics.scored_and_flagged().1,
    );
    if args.brokers.is_some() {
        eprintln!(
            "scored records: riskstream tail --topic {} --from-beginning --brokers {brokers}",
            names.topic("transactions.scored")
        );
    } else {
        eprintln!("(the in-process broker stops now; run with --brokers HOST:PORT to keep the topics on a Kafka cluster)");
    }
    Ok(())
}
