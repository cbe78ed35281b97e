//! `riskstream drift`: a period of a transactions CSV against a model's
//! reference, through the same feature engine, model and drift monitor as
//! the worker (the same hourly evaluations and alerts). Prints the alerts
//! and a table of the period, writes `report.json` (alerts, every
//! variable's hourly series) and, per variable that alerted, a timeline PNG
//! and a distribution PNG.

pub use crate::dataset::minute_of_ms;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub mod plots;

use crate::config::DriftSection;
use crate::dataset::{day_index, Featurised};
use crate::drift::monitor::{scale_label, DriftMonitor, VarStats, WindowReport};
use crate::drift::performance::{
    tx_fingerprint, Decision, LabelKey, PerformanceMonitor, PerformanceReport, Validation,
    VersionInfo,
};
use crate::drift::reference::{Reference, VarReference};
use crate::drift::stats::{bin_of, ks_statistic, mean_std, psi};
use crate::drift::DriftError;
use crate::features::FEATURE_NAMES;

#[derive(Debug, Clone, clap::Args)]
pub struct DriftCmdArgs {
    /// Transactions CSV in the handbook's format (.csv or .csv.gz).
    #[arg(long)]
    pub csv: PathBuf,
    /// NAME/VERSION, NAME@ALIAS or a directory.
    #[arg(long, default_value = crate::config::DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, default_value = crate::config::DEFAULT_MODELS_DIR)]
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
    pub drift: DriftSection,
}

/// When an alert was raised or cleared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertEvent {
    pub variable: String,
    pub raised: bool,
    /// End of the hour whose evaluation raised or cleared it, ms.
    pub at_event_time: i64,
    /// The event-time watermark when it was decided, ms.
    pub decided_at: i64,
    /// The tests over their thresholds ("mean@1h", ...), for a raise.
    pub over: Vec<String>,
    /// Effect size at the scale most over: standardised mean difference, and PSI.
    pub effect: f64,
    pub psi: Option<f64>,
    pub z: f64,
}

/// A variable over the whole period.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodVar {
    pub name: String,
    pub mean: f64,
    pub reference_mean: f64,
    /// PSI over the reference deciles and KS against its sketch (continuous only).
    pub psi: Option<f64>,
    pub ks: Option<f64>,
    /// Largest statistic / threshold per scale over the period.
    pub peak: Vec<f64>,
    pub alerts: usize,
    /// Per hourly evaluation: hour end (ms) and statistic / threshold per scale.
    pub series: Vec<(i64, Vec<f64>)>,
}

/// What `riskstream drift` found.
#[derive(Debug, Clone, Serialize)]
pub struct OfflineReport {
    pub model: String,
    pub from: String,
    pub to: String,
    pub records: u64,
    pub evaluations: u64,
    pub late_records: u64,
    pub scales: Vec<String>,
    /// The two-sided normal threshold of the mean tests (before skewness).
    pub z_threshold: f64,
    pub alerts: Vec<AlertEvent>,
    pub variables: Vec<PeriodVar>,
    pub plots: Vec<String>,
    /// Realised performance per event day (the CSV's labels joined with
    /// the model's decisions, as the sidecar does with the labels topic).
    pub performance: Vec<PerformanceDay>,
}

/// One day of realised performance.
#[derive(Debug, Clone, Serialize)]
pub struct PerformanceDay {
    pub day: String,
    pub labelled: f64,
    pub positives: f64,
    pub auc_roc: Option<f64>,
    pub average_precision: Option<f64>,
    pub f1: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub judged: bool,
    pub below: Vec<String>,
    pub raised: bool,
    pub cleared: bool,
}

impl PerformanceDay {
    fn of(r: &PerformanceReport) -> Self {
        Self {
            day: minute_of_ms(r.day_start)[..10].to_string(),
            labelled: r.summary.labelled,
            positives: r.summary.positives,
            auc_roc: r.metric("auc_roc"),
            average_precision: r.metric("average_precision"),
            f1: r.metric("f1"),
            precision: r.metric("precision"),
            recall: r.metric("recall"),
            judged: r.judged,
            below: r.below.iter().map(|b| b.to_string()).collect(),
            raised: r.raised,
            cleared: r.cleared,
        }
    }
}

/// Runs the comparison; returns the report (also written to `out/report.json`).
pub fn run_offline(args: &DriftCmdArgs) -> Result<OfflineReport, Box<dyn std::error::Error>> {
    let mut errors = Vec::new();
    let cfg = args.drift.clone().resolve(&mut errors);
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
    let mut perf = PerformanceMonitor::new(cfg.performance.clone());
    let scored = ScoredPeriod::run(&data, &mut scorer, &mut monitor, &mut perf, &watched)?;
    let names: Vec<String> = monitor.names().iter().map(|s| s.to_string()).collect();
    let alerts = alert_events(&scored.windows);
    let variables = period_vars(&names, &reference, &scored, &alerts);
    std::fs::create_dir_all(&args.out).map_err(|source| DriftError::WriteOutput {
        path: args.out.display().to_string(),
        source,
    })?;
    let scales: Vec<String> = cfg
        .settings
        .scales
        .iter()
        .map(|s| scale_label(*s))
        .collect();
    let plots = write_plots(args, &reference, &variables, &alerts, &scored, &scales)?;
    let report = OfflineReport {
        model: format!("{}/{}", loc.name, loc.version),
        from: args.from.clone(),
        to: args.to.clone(),
        records: data.rows.len() as u64,
        evaluations: scored.windows.len() as u64,
        late_records: monitor.late_records(),
        scales,
        z_threshold: monitor.z_threshold(),
        alerts,
        variables,
        plots,
        performance: scored.performance.iter().map(PerformanceDay::of).collect(),
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

/// The period scored and pushed through the monitor: its hourly
/// evaluations, and the period's values per monitored variable (the watched
/// features, then the score and the flag), in the monitor's order.
struct ScoredPeriod {
    windows: Vec<WindowReport>,
    columns: Vec<Vec<f64>>,
    performance: Vec<PerformanceReport>,
}

impl ScoredPeriod {
    fn run(
        data: &Featurised,
        scorer: &mut crate::model::Scorer,
        monitor: &mut DriftMonitor,
        perf: &mut PerformanceMonitor,
        watched: &[String],
    ) -> Result<Self, crate::model::ModelError> {
        let bar = indicatif::ProgressBar::new(data.rows.len() as u64);
        let threshold = scorer.card.threshold;
        let versions = [VersionInfo {
            model: format!("{}/{}", scorer.location.name, scorer.location.version),
            validation: Validation::from_card(&scorer.card.metrics),
        }];
        let mut performance = Vec::new();
        let mut windows = Vec::new();
        monitor.set_history(data.history);
        let mut columns: Vec<Vec<f64>> =
            vec![Vec::with_capacity(data.rows.len()); watched.len() + 2];
        let idx: Vec<usize> = watched
            .iter()
            .filter_map(|w| FEATURE_NAMES.iter().position(|n| n == w))
            .collect();
        for (rows, feats) in data.rows.chunks(4096).zip(data.features.chunks(4096)) {
            let scores = scorer.score(feats)?;
            let mut decisions = Vec::with_capacity(rows.len());
            let mut labels = Vec::with_capacity(rows.len());
            for ((r, f), s) in rows.iter().zip(feats).zip(scores) {
                let flagged = s >= threshold;
                let tx = tx_fingerprint(&r.transaction_id.to_string());
                decisions.push(Decision {
                    tx,
                    event_time: r.event_time(),
                    score: s,
                    flagged,
                    version: 0,
                });
                labels.push(LabelKey {
                    tx,
                    event_time: r.event_time(),
                    fraud: r.fraud == 1,
                });
                for (c, &j) in columns.iter_mut().zip(&idx) {
                    c.push(f[j]);
                }
                columns[watched.len()].push(f64::from(s));
                columns[watched.len() + 1].push(f64::from(u8::from(flagged)));
                monitor.push(f, s, flagged, r.event_time(), 0, &mut windows);
            }
            // The labels at once (the sidecar gets them days later; the
            // days it closes are the same).
            perf.decisions(&decisions, &versions, None, &mut performance);
            perf.labels(&labels, &mut performance);
            bar.inc(rows.len() as u64);
        }
        bar.finish_and_clear();
        monitor.finish(&mut windows);
        // The last day closes with the period.
        perf.finish(&mut performance);
        Ok(Self {
            windows,
            columns,
            performance,
        })
    }
}

/// Every alert raised or cleared, evaluation by evaluation.
pub fn alert_events(windows: &[WindowReport]) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    for w in windows {
        for (names, raised) in [(&w.raised, true), (&w.cleared, false)] {
            for name in names {
                let v = w.vars.iter().find(|v| &v.name == name);
                let worst = v.and_then(VarStats::worst_scale);
                out.push(AlertEvent {
                    variable: name.clone(),
                    raised,
                    at_event_time: w.end_event_time,
                    decided_at: w.decided_at,
                    over: v.map(|v| v.over.clone()).unwrap_or_default(),
                    effect: worst.map_or(0.0, |s| s.effect),
                    psi: worst.and_then(|s| s.psi),
                    z: worst.map_or(0.0, |s| s.z),
                });
            }
        }
    }
    out
}

/// Whole-period statistics and hourly series of every variable.
fn period_vars(
    names: &[String],
    reference: &Reference,
    scored: &ScoredPeriod,
    alerts: &[AlertEvent],
) -> Vec<PeriodVar> {
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let series: Vec<(i64, Vec<f64>)> = scored
                .windows
                .iter()
                .map(|w| {
                    let e = w.vars[k].scales.iter().map(|s| s.exceedance()).collect();
                    (w.end_event_time, e)
                })
                .collect();
            let n_scales = series.first().map_or(0, |s| s.1.len());
            let peak = (0..n_scales)
                .map(|i| series.iter().map(|s| s.1[i]).fold(0.0, f64::max))
                .collect();
            let r = reference.of(name);
            let (psi, ks) = whole_period(&r, &scored.columns[k]);
            PeriodVar {
                name: name.clone(),
                mean: mean_std(&scored.columns[k]).0,
                reference_mean: match &r {
                    VarReference::Continuous { mean, .. } => *mean,
                    VarReference::Binary { share_of_ones, .. } => *share_of_ones,
                },
                psi,
                ks,
                peak,
                alerts: alerts
                    .iter()
                    .filter(|a| a.raised && &a.variable == name)
                    .count(),
                series,
            }
        })
        .collect()
}

/// PSI over the reference deciles and KS against its sketch.
fn whole_period(r: &VarReference, values: &[f64]) -> (Option<f64>, Option<f64>) {
    let VarReference::Continuous {
        bin_edges,
        bin_counts,
        sketch,
        ..
    } = r
    else {
        return (None, None);
    };
    let mut counts = vec![0u64; bin_counts.len()];
    for x in values {
        if let Some(c) = counts.get_mut(bin_of(bin_edges, *x)) {
            *c += 1;
        }
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        Some(psi(bin_counts, &counts)),
        (!sketch.is_empty()).then(|| ks_statistic(sketch, &sorted)),
    )
}

/// A timeline and a distribution plot for every variable that alerted, in
/// `args.out`; returns their file names.
fn write_plots(
    args: &DriftCmdArgs,
    reference: &Reference,
    vars: &[PeriodVar],
    alerts: &[AlertEvent],
    scored: &ScoredPeriod,
    scales: &[String],
) -> Result<Vec<String>, DriftError> {
    let mut plots = Vec::new();
    let start = scored.windows.first().map_or(0, |w| w.start_event_time);
    let hours = |ms: i64| (ms - start) as f64 / 3_600_000.0;
    let caption = format!("{} … {}", args.from, args.to);
    for (k, v) in vars.iter().enumerate() {
        if v.alerts == 0 {
            continue;
        }
        let mine = |raised: bool| -> Vec<f64> {
            alerts
                .iter()
                .filter(|a| a.variable == v.name && a.raised == raised)
                .map(|a| hours(a.at_event_time))
                .collect()
        };
        let points: Vec<(f64, Vec<f64>)> = v
            .series
            .iter()
            .map(|(t, e)| (hours(*t), e.clone()))
            .collect();
        let (raised, cleared) = (mine(true), mine(false));
        let file = format!("{}_timeline.png", v.name.to_ascii_lowercase());
        let t = plots::Timeline {
            name: &v.name,
            caption: &caption,
            scales,
            points: &points,
            raised: &raised,
            cleared: &cleared,
        };
        plots::timeline_png(&args.out.join(&file), &t).map_err(|source| DriftError::WritePlot {
            path: file.clone(),
            source,
        })?;
        plots.push(file);
        let file = format!("{}.png", v.name.to_ascii_lowercase());
        let mut col = scored.columns[k].clone();
        col.sort_by(f64::total_cmp);
        plots::distribution_png(
            &args.out.join(&file),
            &v.name,
            &reference.of(&v.name),
            &col,
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
    std::fs::write(path, serde_json::to_string(report)? + "\n").map_err(|source| {
        DriftError::WriteOutput {
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok(())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.prec$}"))
}

/// The report as text: alerts and the period table (Markdown).
pub fn render(report: &OfflineReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Drift of {} from {} to {}: {} records, {} evaluations (one per quarter hour) at scales {}, mean-test threshold |z| > {:.2} (before skewness), {} late records",
        report.model,
        report.from,
        report.to,
        report.records,
        report.evaluations,
        report.scales.join(" "),
        report.z_threshold,
        report.late_records,
    );
    if report.alerts.is_empty() {
        let _ = writeln!(out, "  no alert");
    }
    for a in &report.alerts {
        let _ = writeln!(
            out,
            "  {} {} (windows ending {}, decided at {}){}",
            if a.raised { "RAISED " } else { "CLEARED" },
            a.variable,
            minute_of_ms(a.at_event_time),
            minute_of_ms(a.decided_at),
            if a.raised {
                format!(
                    ": {} z {:.1}, effect {:+.3} sd{}",
                    a.over.join(" "),
                    a.z,
                    a.effect,
                    a.psi.map_or(String::new(), |p| format!(", PSI {p:.3}"))
                )
            } else {
                String::new()
            }
        );
    }
    let peaks: Vec<String> = report.scales.iter().map(|s| format!("peak {s}")).collect();
    let _ = writeln!(
        out,
        "\n| variable | mean | reference mean | PSI | KS | {} | alerts |",
        peaks.join(" | ")
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|{}---|",
        "---|".repeat(peaks.len())
    );
    for v in &report.variables {
        let peak: Vec<String> = v.peak.iter().map(|p| format!("{p:.2}")).collect();
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.4} | {} | {} | {} | {} |",
            v.name,
            v.mean,
            v.reference_mean,
            fmt_opt(v.psi, 3),
            fmt_opt(v.ks, 3),
            peak.join(" | "),
            v.alerts
        );
    }
    let _ = writeln!(
        out,
        "\n(peak: the largest statistic / threshold over the period; over 1 raises an alert)"
    );
    render_performance(&mut out, &report.performance);
    if !report.plots.is_empty() {
        let _ = writeln!(out, "plots: {}", report.plots.join(", "));
    }
    out
}

/// Realised performance per day, with the raised and cleared alerts.
fn render_performance(out: &mut String, days: &[PerformanceDay]) {
    if days.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nRealised performance per event day (labels joined with the decisions):\n\n| day | labelled | frauds | AUC | AP | F1 | precision | recall | verdict |\n|---|---|---|---|---|---|---|---|---|"
    );
    for d in days {
        let verdict = match (d.judged, d.raised, d.cleared, d.below.is_empty()) {
            (false, ..) => "too few frauds to judge".to_string(),
            (_, true, ..) => format!("RAISED: {} below validation", d.below.join(" ")),
            (_, _, true, _) => "CLEARED".to_string(),
            (_, _, _, false) => format!("below: {}", d.below.join(" ")),
            _ => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
            d.day,
            d.labelled,
            d.positives,
            fmt_opt(d.auc_roc, 3),
            fmt_opt(d.average_precision, 3),
            fmt_opt(d.f1, 3),
            fmt_opt(d.precision, 3),
            fmt_opt(d.recall, 3),
            verdict
        );
    }
}
