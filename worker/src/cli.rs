//! The command line: `riskstream <command>`, parsed by clap and run here
//! (the binary only sets up logging and the runtime).

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{RunArgs, RunConfig};
use crate::pipeline::{self, Handles};
use crate::tools::{demo, replay, tail};

#[derive(Parser)]
#[command(
    name = "riskstream",
    version,
    about = "Streaming fraud scoring: Kafka in, burn model, Kafka out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the scoring worker (joins the consumer group).
    Run(Box<RunArgs>),
    /// Stream a handbook CSV to the input and labels topics.
    Replay(replay::ReplayArgs),
    /// Print a topic as JSON lines.
    Tail(tail::TailArgs),
    /// Broker (embedded unless --brokers), replay, worker and live summary in one command.
    Demo(demo::DemoArgs),
    /// Benchmark baseline: consume and produce records untouched.
    Passthrough(crate::tools::passthrough::PassthroughArgs),
    /// Train a model version into the registry.
    Train(crate::train::TrainArgs),
    /// The handbook's evaluation protocol: table and report with ROC/PR curves.
    Evaluate(crate::train::evaluate::EvaluateArgs),
    /// Metrics of a finished stream run: the scored topic joined with the labels topic.
    EvaluateStream(crate::train::evaluate::EvaluateStreamArgs),
    /// Batch (offline) scoring of a transactions CSV with the same feature engine.
    Score(crate::train::ScoreArgs),
    /// A period of a transactions CSV against a model's drift reference: table and plots.
    Drift(crate::report::DriftCmdArgs),
    /// List, describe and promote model versions.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
}

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// Model names, versions and aliases.
    List {
        #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
        models_dir: std::path::PathBuf,
    },
    /// Print a version's model card.
    Describe {
        /// NAME/VERSION, NAME@ALIAS or a directory.
        reference: String,
        #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
        models_dir: std::path::PathBuf,
    },
    /// Rebuild a version's drift reference (reference.json) from its training period.
    Reference {
        /// NAME/VERSION, NAME@ALIAS or a directory.
        reference: String,
        /// Transactions CSV the model was trained on.
        #[arg(long)]
        csv: std::path::PathBuf,
        #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
        models_dir: std::path::PathBuf,
    },
    /// Write a version's weights, standardisation and threshold as JSON (for other runtimes).
    Export {
        /// NAME/VERSION, NAME@ALIAS or a directory.
        reference: String,
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
        models_dir: std::path::PathBuf,
    },
    /// Point an alias at a version.
    Promote {
        name: String,
        version: String,
        #[arg(long, default_value = "champion")]
        alias: String,
        #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
        models_dir: std::path::PathBuf,
    },
}

/// First SIGINT/SIGTERM: drain and stop, within `drain` if given (a
/// watchdog exits the process once it has passed, whatever is stuck).
/// Second: exit at once. The handlers are registered before this returns,
/// so a signal that arrives while the worker starts is not lost to the
/// default action (which would end the process without a drain or exit 0).
fn install_signals(cancel: CancellationToken, drain: Option<std::time::Duration>) {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot install the SIGTERM/SIGINT handlers");
                return;
            }
        }
    };
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            #[cfg(unix)]
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    "shutdown requested: draining in-flight records (signal again to exit now)"
                );
                cancel.cancel();
                if let Some(d) = drain {
                    let watchdog = std::thread::Builder::new()
                        .name("drain-watchdog".into())
                        .spawn(move || {
                            std::thread::sleep(d);
                            tracing::error!(
                                drain_timeout_s = d.as_secs_f64(),
                                "shutdown did not finish within the drain time; exiting now (records not yet committed are scored again by the next owner)"
                            );
                            std::process::exit(1);
                        });
                    if let Err(e) = watchdog {
                        tracing::warn!(error = %e, "cannot start the drain watchdog");
                    }
                }
            } else {
                tracing::warn!("second signal: exiting without draining");
                std::process::exit(130);
            }
        }
    });
}

/// `riskstream run`: the worker until SIGTERM, then its summary line.
async fn run_worker(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = RunConfig::resolve(args)?;
    let handles = Handles::default();
    install_signals(handles.cancel.clone(), Some(cfg.drain_timeout));
    let metrics = handles.metrics.clone();
    let report = pipeline::run(cfg, handles).await?;
    let text = metrics.render();
    let ms = |name: &str, p| crate::metrics::quantile_of(&text, name, p).unwrap_or(0.0) * 1e3;
    let q = |p| ms("riskstream_processing_seconds", p);
    let w = |p| ms("riskstream_scoring_wait_seconds", p);
    let d = |p| ms("riskstream_delivery_seconds", p);
    let e = |p| ms("riskstream_end_to_end_seconds", p);
    let c = |p| ms("riskstream_transaction_commit_seconds", p);
    tracing::info!(
        handled = report.handled,
        seconds = report.seconds,
        active_seconds = report.active_seconds,
        records_per_second =
            report.handled.saturating_sub(1) as f64 / report.active_seconds.max(1e-9),
        first_output_seconds = report.first_output_seconds.unwrap_or(-1.0),
        steady_records_per_second = report.steady_records_per_second.unwrap_or(-1.0),
        processing_ms_p50 = q(0.5),
        processing_ms_p99 = q(0.99),
        processing_ms_p999 = q(0.999),
        // Input Kafka timestamp → output acknowledged.
        end_to_end_ms_p50 = e(0.5),
        end_to_end_ms_p99 = e(0.99),
        end_to_end_ms_p999 = e(0.999),
        // Where consume → ack time goes: consume → batch scored
        // (batching and scoring), produce → broker ack.
        scoring_wait_ms_p50 = w(0.5),
        scoring_wait_ms_p99 = w(0.99),
        delivery_ms_p50 = d(0.5),
        delivery_ms_p99 = d(0.99),
        // Exactly-once: one transaction's commit (0 at least once).
        commit_ms_p50 = c(0.5),
        commit_ms_p99 = c(0.99),
        "worker stopped cleanly"
    );
    Ok(())
}

/// `riskstream passthrough`: the benchmark baseline and its summary line.
async fn passthrough(args: crate::tools::passthrough::PassthroughArgs) -> anyhow::Result<()> {
    crate::kafka::ensure_topics(&args.brokers, &Default::default(), &[&args.output_topic], 4)
        .await?;
    let r = tokio::task::spawn_blocking(move || crate::tools::passthrough::passthrough(&args))
        .await??;
    println!(
        "passthrough: {} records in {:.2}s = {:.0} records/s (second half {:.0} records/s); consume→ack p50 {:.1} ms p99 {:.1} ms p999 {:.1} ms; end to end p50 {:.1} ms p99 {:.1} ms p999 {:.1} ms",
        r.records,
        r.seconds,
        r.records as f64 / r.seconds.max(1e-9),
        r.steady_records_per_second,
        r.latency_ms[0],
        r.latency_ms[1],
        r.latency_ms[2],
        r.end_to_end_ms[0],
        r.end_to_end_ms[1],
        r.end_to_end_ms[2]
    );
    Ok(())
}

/// Runs one command.
pub async fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run(args) => run_worker(&args).await?,
        Cmd::Replay(args) => {
            let r = replay::replay(&args).await?;
            eprintln!(
                "sent {} transactions and {} labels in {:.1}s ({:.0}/s)",
                r.transactions,
                r.labels,
                r.seconds,
                r.transactions as f64 / r.seconds.max(1e-9)
            );
        }
        Cmd::Tail(args) => {
            tokio::task::spawn_blocking(move || tail::tail(&args)).await??;
        }
        Cmd::Demo(args) => {
            let cancel = CancellationToken::new();
            install_signals(cancel.clone(), None);
            demo::demo(args, cancel).await?;
        }
        Cmd::Train(args) => {
            let dir = tokio::task::spawn_blocking(move || crate::train::train(&args)).await??;
            // The last line of the output: the new model's directory.
            println!("{}", dir.display());
        }
        Cmd::Evaluate(args) => {
            let md = tokio::task::spawn_blocking(move || crate::train::evaluate::evaluate(&args))
                .await??;
            println!("{md}");
        }
        Cmd::EvaluateStream(args) => {
            let m =
                tokio::task::spawn_blocking(move || crate::train::evaluate::evaluate_stream(&args))
                    .await??;
            println!("| scored with labels | frauds | AUC ROC | Avg precision | CP@100 |");
            println!("|---|---|---|---|---|");
            println!(
                "| {} | {} | {:.4} | {:.4} | {:.4} |",
                m.n_test, m.n_fraud, m.auc_roc, m.average_precision, m.card_precision_100
            );
        }
        Cmd::Score(args) => {
            let n = tokio::task::spawn_blocking(move || crate::train::score_csv(&args)).await??;
            eprintln!("scored {n} transactions");
        }
        Cmd::Passthrough(args) => passthrough(args).await?,
        Cmd::Drift(args) => {
            let report = tokio::task::spawn_blocking(move || {
                crate::report::run_offline(&args)
                    .map(|r| (crate::report::render(&r), args.out))
                    .map_err(|e| anyhow::anyhow!("{}", crate::outcome::chain(e.as_ref())))
            })
            .await??;
            println!("{}", report.0);
            eprintln!("report and plots in {}", report.1.display());
        }
        Cmd::Models { cmd } => models(cmd)?,
    }
    Ok(())
}

fn models(cmd: ModelsCmd) -> anyhow::Result<()> {
    use crate::registry;
    match cmd {
        ModelsCmd::Reference {
            reference,
            csv,
            models_dir,
        } => {
            let dir = crate::train::rebuild_reference(&models_dir, &reference, &csv)?;
            println!("{}", dir.join(crate::drift::REFERENCE_FILE).display());
        }
        ModelsCmd::Export {
            reference,
            out,
            models_dir,
        } => {
            let loc = registry::resolve(&models_dir, &reference)?;
            let scorer = crate::model::Scorer::load_cpu(&loc)?;
            let json = serde_json::json!({
                "name": loc.name, "version": loc.version,
                "inputs": scorer.card.inputs, "mean": scorer.card.mean, "std": scorer.card.std,
                "threshold": scorer.card.threshold,
                "activation": "relu between layers, sigmoid on the last",
                "layers": scorer.dense_layers()?,
            });
            std::fs::write(&out, serde_json::to_string(&json)? + "\n")?;
            println!("{}", out.display());
        }
        ModelsCmd::List { models_dir } => {
            let mut names: Vec<String> = std::fs::read_dir(&models_dir)?
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            for n in names {
                let versions = registry::versions(&models_dir, &n)?;
                let aliases = registry::read_aliases(&models_dir, &n)?;
                println!("{n}: versions {versions:?} aliases {aliases:?}");
            }
        }
        ModelsCmd::Describe {
            reference,
            models_dir,
        } => {
            let loc = registry::resolve(&models_dir, &reference)?;
            let card = crate::model::ModelCard::read(&loc.dir)?;
            println!("{}", serde_json::to_string_pretty(&card)?);
        }
        ModelsCmd::Promote {
            name,
            version,
            alias,
            models_dir,
        } => {
            registry::set_alias(&models_dir, &name, &alias, &version)?;
            println!("{name}@{alias} -> {version}");
        }
    }
    Ok(())
}
