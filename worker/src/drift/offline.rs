//! `riskstream drift`: a period of a transactions CSV against a model's
//! reference, through the same feature engine, model and drift monitor as
//! the worker. Prints the windows and a table of the whole period, writes
//! `report.json` and PNG plots of the drifted variables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::monitor::{window_stats, DriftMonitor, VarStats, WindowReport};
use super::reference::Reference;
use super::{DriftArgs, DriftError, DriftFileConfig};
use crate::dataset::{date_of_ms, day_index, Featurised};
use crate::features::FEATURE_NAMES;

#[derive(Debug, Clone, clap::Args)]
pub struct DriftCmdArgs {
    /// Transactions CSV in the handbook's format (.csv or .csv.gz).
    #[arg(long)]
    pub csv: PathBuf,
    /// NAME/VERSION, NAME@ALIAS or a directory.
    #[arg(long, default_value = "fraud-mlp@champion")]
    pub model: String,
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// First day of the period (YYYY-MM-DD); earlier rows only build state.
    #[arg(long)]
    pub from: String,
    /// Last day of the period.
    #[arg(long)]
    pub to: String,
    /// Directory for report.json and the plots.
    #[arg(long, default_value = "drift-report")]
    pub out: PathBuf,
    /// Watch every engine feature, not only the model's inputs.
    #[arg(long)]
    pub all_features: bool,
    #[command(flatten)]
    pub drift: DriftArgs,
}

/// When an alert was raised or cleared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertEvent {
    pub variable: String,
    pub raised: bool,
    pub window: u64,
    /// Event time of the window's last record, ms.
    pub at_event_time: i64,
}

/// What `riskstream drift` found.
#[derive(Debug, Clone, Serialize)]
pub struct OfflineReport {
    pub model: String,
    pub from: String,
    pub to: String,
    pub records: u64,
    pub windows: Vec<WindowReport>,
    /// The whole period as one sample.
    pub period: Vec<VarStats>,
    pub alerts: Vec<AlertEvent>,
    pub plots: Vec<String>,
}

/// Runs the comparison; returns the report (also written to `out/report.json`).
pub fn run_offline(args: &DriftCmdArgs) -> Result<OfflineReport, Box<dyn std::error::Error>> {
    let mut errors = Vec::new();
    let cfg = args.drift.resolve(&DriftFileConfig::default(), &mut errors);
    if !errors.is_empty() {
        return Err(DriftError::Invalid(errors.join("; ")).into());
    }
    let loc = crate::registry::resolve(&args.models_dir, &args.model)?;
    let mut scorer = crate::model::Scorer::load_cpu(&loc)?;
    let reference = Reference::read(&loc.dir)?;
    let (from, to) = period_days(args)?;
    let watched: Vec<String> = if args.all_features {
        FEATURE_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        scorer.card.inputs.clone()
    };
    let mut monitor = DriftMonitor::new(&reference, &watched, cfg.settings.clone())?;
    let data = crate::dataset::featurise(&args.csv, to, |d| d >= from)?;
    if data.rows.is_empty() {
        return Err(
            DriftError::Invalid(format!("no rows between {} and {}", args.from, args.to)).into(),
        );
    }
    let mut scored = ScoredPeriod::run(&data, &mut scorer, &mut monitor, &watched)?;
    let names: Vec<String> = monitor.names().iter().map(|s| s.to_string()).collect();
    let mut period = Vec::new();
    for (name, col) in names.iter().zip(scored.columns.iter_mut()) {
        let r = reference.of(name);
        period.push(window_stats(name, &r, col, &cfg.settings));
    }
    let alerts = alert_events(&scored.windows);
    std::fs::create_dir_all(&args.out).map_err(|source| DriftError::WriteOutput {
        path: args.out.display().to_string(),
        source,
    })?;
    let plots = write_plots(args, &reference, &period, &alerts, &scored.columns)?;
    let report = OfflineReport {
        model: format!("{}/{}", loc.name, loc.version),
        from: args.from.clone(),
        to: args.to.clone(),
        records: data.rows.len() as u64,
        windows: scored.windows,
        period,
        alerts,
        plots,
    };
    write_report_json(&args.out.join("report.json"), &report)?;
    Ok(report)
}

/// The day indices of `--from` and `--to`, in order.
fn period_days(args: &DriftCmdArgs) -> Result<(i64, i64), Box<dyn std::error::Error>> {
    let from = day_index(&args.from)?;
    let to = day_index(&args.to)?;
    if to < from {
        return Err(DriftError::Invalid(format!(
            "--to {} is before --from {}",
            args.to, args.from
        ))
        .into());
    }
    Ok((from, to))
}

/// The period scored and pushed through the monitor: its closed windows,
/// and the period's values per monitored variable (the watched features,
/// then the score and the flag), in the monitor's order.
struct ScoredPeriod {
    windows: Vec<WindowReport>,
    columns: Vec<Vec<f64>>,
}

impl ScoredPeriod {
    fn run(
        data: &Featurised,
        scorer: &mut crate::model::Scorer,
        monitor: &mut DriftMonitor,
        watched: &[String],
    ) -> Result<Self, crate::model::ModelError> {
        let bar = indicatif::ProgressBar::new(data.rows.len() as u64);
        let threshold = scorer.card.threshold;
        let mut windows = Vec::new();
        let mut columns: Vec<Vec<f64>> =
            vec![Vec::with_capacity(data.rows.len()); watched.len() + 2];
        let idx: Vec<usize> = watched
            .iter()
            .filter_map(|w| FEATURE_NAMES.iter().position(|n| n == w))
            .collect();
        for (rows, feats) in data.rows.chunks(4096).zip(data.features.chunks(4096)) {
            let scores = scorer.score(feats)?;
            for ((r, f), s) in rows.iter().zip(feats).zip(scores) {
                let flagged = s >= threshold;
                for (c, &j) in columns.iter_mut().zip(&idx) {
                    c.push(f[j]);
                }
                columns[watched.len()].push(f64::from(s));
                columns[watched.len() + 1].push(f64::from(u8::from(flagged)));
                if let Some(w) = monitor.push(f, s, flagged, r.event_time()) {
                    windows.push(w);
                }
            }
            bar.inc(rows.len() as u64);
        }
        bar.finish_and_clear();
        if let Some(w) = monitor.close() {
            windows.push(w);
        }
        Ok(Self { windows, columns })
    }
}

/// Every alert raised or cleared, window by window.
fn alert_events(windows: &[WindowReport]) -> Vec<AlertEvent> {
    windows
        .iter()
        .flat_map(|w| {
            let raised = w.raised.iter().map(move |v| AlertEvent {
                variable: v.clone(),
                raised: true,
                window: w.index,
                at_event_time: w.end_event_time,
            });
            let cleared = w.cleared.iter().map(move |v| AlertEvent {
                variable: v.clone(),
                raised: false,
                window: w.index,
                at_event_time: w.end_event_time,
            });
            raised.chain(cleared)
        })
        .collect()
}

/// Plots for every variable that alerted or is over a threshold over the
/// period, in `args.out`; returns their file names.
fn write_plots(
    args: &DriftCmdArgs,
    reference: &Reference,
    period: &[VarStats],
    alerts: &[AlertEvent],
    columns: &[Vec<f64>],
) -> Result<Vec<String>, DriftError> {
    let mut plots = Vec::new();
    for (k, st) in period.iter().enumerate() {
        let alerted = alerts.iter().any(|a| a.variable == st.name);
        if !alerted && st.over.is_empty() {
            continue;
        }
        let r = reference.of(&st.name);
        let file = format!("{}.png", st.name.to_ascii_lowercase());
        let caption = format!("{} … {}", args.from, args.to);
        crate::drift::plots::distribution_png(
            &args.out.join(&file),
            &st.name,
            &r,
            &columns[k],
            &caption,
        )
        .map_err(|source| DriftError::WritePlot {
            path: file.clone(),
            source,
        })?;
        plots.push(file);
    }
    Ok(plots)
}

fn write_report_json(
    path: &Path,
    report: &OfflineReport,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n").map_err(|source| {
        DriftError::WriteOutput {
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok(())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |x| {
        if x != 0.0 && x.abs() < 1e-3 {
            format!("{x:.1e}")
        } else {
            format!("{x:.prec$}")
        }
    })
}

/// The report as text: windows, alerts and the period table (Markdown).
pub fn render(report: &OfflineReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Drift of {} from {} to {}: {} records, {} windows",
        report.model,
        report.from,
        report.to,
        report.records,
        report.windows.len()
    );
    for w in &report.windows {
        let over: Vec<&str> = w
            .vars
            .iter()
            .filter(|v| !v.over.is_empty())
            .map(|v| v.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  window {:>3} {} … {} {:>6} records, flagged {:.4}{}{}{}",
            w.index,
            date_of_ms(w.start_event_time),
            date_of_ms(w.end_event_time),
            w.records,
            w.flagged_rate,
            if w.judged {
                ""
            } else {
                " (too small, not judged)"
            },
            if over.is_empty() {
                String::new()
            } else {
                format!(", over: {}", over.join(" "))
            },
            if w.raised.is_empty() && w.cleared.is_empty() {
                String::new()
            } else {
                format!(" — RAISED {:?} CLEARED {:?}", w.raised, w.cleared)
            }
        );
    }
    let _ = writeln!(out, "\n| variable | mean | reference mean | PSI | KS | KS p | Wasserstein/σ | χ² p | over | alerts |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for v in &report.period {
        let n_alerts = report
            .alerts
            .iter()
            .filter(|a| a.raised && a.variable == v.name)
            .count();
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.4} | {:.3} | {} | {} | {} | {} | {} | {} |",
            v.name,
            v.mean,
            v.reference_mean,
            v.psi,
            fmt_opt(v.ks_statistic, 3),
            fmt_opt(v.ks_pvalue, 3),
            fmt_opt(v.wasserstein, 3),
            fmt_opt(v.chi2_pvalue, 3),
            if v.over.is_empty() {
                "–".into()
            } else {
                v.over.join(",")
            },
            n_alerts
        );
    }
    if !report.plots.is_empty() {
        let _ = writeln!(out, "\nplots: {}", report.plots.join(", "));
    }
    out
}
