//! Drift: rolling distribution statistics of features and scores against
//! the training reference, with alerts. Cut by stage, each module imports
//! only those above it:
//!
//! - [`summary`]: mergeable slices of event time (counts, moment sums, bins);
//! - [`stats`]: bins, PSI, Kolmogorov–Smirnov, moments and quantiles;
//! - [`profile`]: the reference's time profile (traffic over the week,
//!   cycles) and its calibration per window scale;
//! - [`reference`]: the training-set distributions written beside a model;
//! - [`monitor`]: slices, multi-scale windows, calibrated tests and alerts
//!   (online and offline alike);
//! - [`performance`]: realised precision, recall, F1, AUC and AP per
//!   version and event day from the delayed labels, against validation;
//! - [`merge`]: one verdict across instances from their merged slices and days;
//! - [`sidecar`]: the worker's sidecar thread: its records, the merged
//!   verdict's transport, gauges and WARN logs;
//! - [`offline`]: `riskstream drift`, a period of a CSV against the
//!   reference, with a table and PNG plots (imports the pieces above; none
//!   imports it).
//!
//! Config: `[drift]` in the file, `RISKSTREAM_DRIFT_*`, `--drift-*`.

pub mod merge;
pub mod monitor;
pub mod offline;
pub mod performance;
pub mod profile;
pub mod reference;
pub mod sidecar;
pub mod stats;
pub mod summary;

use serde::Deserialize;

pub use monitor::{DriftMonitor, DriftSettings, ScaleStats, VarStats, WindowReport};
pub use reference::{Reference, VarReference, REFERENCE_FILE};

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("drift reference {path}: {source}")]
    ReadReference {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drift reference {path}: {source}")]
    ParseReference {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("drift reference {path}: {source}")]
    SerialiseReference {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("drift reference {path}: {source}")]
    WriteReference {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drift: {0}")]
    Invalid(String),
    #[error("drift: cannot write {path}: {source}")]
    WriteOutput {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drift: cannot write {path}: {source}")]
    WritePlot {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `[drift]` in the config file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftFileConfig {
    pub topic: Option<String>,
    /// Window lengths, e.g. ["1h", "6h", "24h"].
    pub scales: Option<Vec<String>>,
    pub false_alarms_per_year: Option<f64>,
    pub min_records: Option<u64>,
    pub clear_after: Option<u32>,
    pub max_lateness_seconds: Option<u64>,
    pub idle_partition_seconds: Option<u64>,
    pub channel_batches: Option<usize>,
    /// Merge every instance's slices into one verdict per model (default true).
    pub global: Option<bool>,
    /// Realised performance below validation by more than this raises (absolute).
    pub performance_margin: Option<f64>,
    /// Days with fewer labelled frauds are reported, not judged.
    pub performance_min_positives: Option<u64>,
    /// Decisions wait this many days for their label.
    pub performance_horizon_days: Option<u32>,
    /// Decisions kept at most (sampled beyond).
    pub performance_max_tracked: Option<usize>,
}

/// The same settings as flags / environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct DriftArgs {
    /// Topic for drift reports; "off" disables the drift sidecar [default: riskstream.drift].
    #[arg(long = "drift-topic", env = "RISKSTREAM_DRIFT_TOPIC")]
    pub topic: Option<String>,
    /// Window lengths judged every quarter hour, comma-separated (1h…48h) [default: 1h,6h,24h].
    #[arg(
        long = "drift-scales",
        env = "RISKSTREAM_DRIFT_SCALES",
        value_delimiter = ','
    )]
    pub scales: Option<Vec<String>>,
    /// False alarms allowed per model per year, all variables and scales together [default: 1].
    #[arg(
        long = "drift-false-alarms-per-year",
        env = "RISKSTREAM_DRIFT_FALSE_ALARMS_PER_YEAR"
    )]
    pub false_alarms_per_year: Option<f64>,
    /// Windows with fewer records are reported, not judged [default: 100].
    #[arg(long = "drift-min-records", env = "RISKSTREAM_DRIFT_MIN_RECORDS")]
    pub min_records: Option<u64>,
    /// Evaluations (quarter hours) in a row with nothing over that clear an alert [default: 24].
    #[arg(long = "drift-clear-after", env = "RISKSTREAM_DRIFT_CLEAR_AFTER")]
    pub clear_after: Option<u32>,
    /// A slice closes at the latest this long (event time) after its end [default: 5184000].
    #[arg(
        long = "drift-max-lateness-seconds",
        env = "RISKSTREAM_DRIFT_MAX_LATENESS_SECONDS"
    )]
    pub max_lateness_seconds: Option<u64>,
    /// A partition idle this long (wall clock) stops holding slices open [default: 30].
    #[arg(
        long = "drift-idle-partition-seconds",
        env = "RISKSTREAM_DRIFT_IDLE_PARTITION_SECONDS"
    )]
    pub idle_partition_seconds: Option<u64>,
    /// Capacity of the channel to the sidecar, in scored batches [default: 256].
    #[arg(
        long = "drift-channel-batches",
        env = "RISKSTREAM_DRIFT_CHANNEL_BATCHES"
    )]
    pub channel_batches: Option<usize>,
    /// Judge only this instance's share of the traffic: no slices published
    /// or merged, alerts raised per instance.
    #[arg(long = "drift-local-only", env = "RISKSTREAM_DRIFT_LOCAL_ONLY")]
    pub local_only: bool,
    /// A day's realised AUC, AP or F1 this far below the card's validation value raises [default: 0.15].
    #[arg(
        long = "drift-performance-margin",
        env = "RISKSTREAM_DRIFT_PERFORMANCE_MARGIN"
    )]
    pub performance_margin: Option<f64>,
    /// A day with fewer labelled frauds is reported, not judged [default: 30].
    #[arg(
        long = "drift-performance-min-positives",
        env = "RISKSTREAM_DRIFT_PERFORMANCE_MIN_POSITIVES"
    )]
    pub performance_min_positives: Option<u64>,
    /// Days a decision waits for its label [default: 10].
    #[arg(
        long = "drift-performance-horizon-days",
        env = "RISKSTREAM_DRIFT_PERFORMANCE_HORIZON_DAYS"
    )]
    pub performance_horizon_days: Option<u32>,
    /// Decisions kept waiting for labels at most; beyond, a deterministic sample [default: 2000000].
    #[arg(
        long = "drift-performance-max-tracked",
        env = "RISKSTREAM_DRIFT_PERFORMANCE_MAX_TRACKED"
    )]
    pub performance_max_tracked: Option<usize>,
}

/// Resolved drift config of `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// None: the sidecar is off.
    pub topic: Option<String>,
    pub settings: DriftSettings,
    pub channel_batches: usize,
    /// One verdict across instances from `<topic>.slices`.
    pub global: bool,
    pub performance: performance::PerformanceSettings,
}

/// A duration such as "90s", "30m", "6h" or "2d" (a bare number: seconds).
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 6h"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    Ok(n * unit)
}

impl DriftArgs {
    /// The `performance_*` settings: flags/env over the file over the defaults.
    fn resolve_performance(&self, file: &DriftFileConfig) -> performance::PerformanceSettings {
        let p = performance::PerformanceSettings::default();
        performance::PerformanceSettings {
            margin: self
                .performance_margin
                .or(file.performance_margin)
                .unwrap_or(p.margin),
            min_positives: self
                .performance_min_positives
                .or(file.performance_min_positives)
                .unwrap_or(p.min_positives),
            horizon_days: self
                .performance_horizon_days
                .or(file.performance_horizon_days)
                .unwrap_or(p.horizon_days),
            max_tracked: self
                .performance_max_tracked
                .or(file.performance_max_tracked)
                .unwrap_or(p.max_tracked),
        }
    }

    /// Flags/env over the file over the defaults; errors are appended.
    pub fn resolve(&self, file: &DriftFileConfig, errors: &mut Vec<String>) -> DriftConfig {
        let d = DriftSettings::default();
        let scales = match self.scales.clone().or_else(|| file.scales.clone()) {
            None => d.scales.clone(),
            Some(list) => list
                .iter()
                .filter_map(|s| {
                    parse_seconds(s)
                        .map_err(|e| errors.push(format!("drift: scales: {e}")))
                        .ok()
                })
                .collect(),
        };
        let settings = DriftSettings {
            scales,
            false_alarms_per_year: self
                .false_alarms_per_year
                .or(file.false_alarms_per_year)
                .unwrap_or(d.false_alarms_per_year),
            min_records: self
                .min_records
                .or(file.min_records)
                .unwrap_or(d.min_records),
            clear_after: self
                .clear_after
                .or(file.clear_after)
                .unwrap_or(d.clear_after),
            max_lateness_seconds: self
                .max_lateness_seconds
                .or(file.max_lateness_seconds)
                .unwrap_or(d.max_lateness_seconds),
            idle_partition_seconds: self
                .idle_partition_seconds
                .or(file.idle_partition_seconds)
                .unwrap_or(d.idle_partition_seconds),
        };
        errors.extend(settings.validate());
        let performance = self.resolve_performance(file);
        errors.extend(performance.validate());
        let topic = match self
            .topic
            .clone()
            .or_else(|| file.topic.clone())
            .unwrap_or_else(|| "riskstream.drift".into())
            .as_str()
        {
            "off" => None,
            "" => {
                errors.push("drift_topic: must not be empty (\"off\" disables drift)".into());
                None
            }
            t => Some(t.to_string()),
        };
        let channel_batches = self.channel_batches.or(file.channel_batches).unwrap_or(256);
        if channel_batches == 0 {
            errors.push("drift: channel_batches must be at least 1".into());
        }
        DriftConfig {
            topic,
            settings,
            channel_batches,
            global: !self.local_only && file.global.unwrap_or(true),
            performance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_are_reported() {
        let file: DriftFileConfig =
            toml::from_str("scales = [\"2h\", \"12h\"]\nfalse_alarms_per_year = 0.5\n").unwrap();
        let args = DriftArgs {
            false_alarms_per_year: Some(2.0),
            clear_after: Some(0),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let c = args.resolve(&file, &mut errors);
        assert_eq!(c.settings.scales, vec![7200, 43200]);
        assert_eq!(c.settings.false_alarms_per_year, 2.0);
        assert_eq!(c.topic.as_deref(), Some("riskstream.drift"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(toml::from_str::<DriftFileConfig>("windw = 1").is_err());
        // An uncalibrated scale and a bad duration are both reported.
        let bad = DriftArgs {
            scales: Some(vec!["5h".into(), "6x".into()]),
            ..Default::default()
        };
        let mut errors = Vec::new();
        bad.resolve(&DriftFileConfig::default(), &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(parse_seconds("90"), Ok(90));
        assert_eq!(parse_seconds("2d"), Ok(172_800));
    }
}
