//! Drift: rolling distribution statistics of features and scores against
//! the training reference, with alerts.
//!
//! - [`reference`]: the training-set distributions written beside a model;
//! - [`stats`]: PSI, Kolmogorov–Smirnov (+ p-value), Wasserstein, chi-squared;
//! - [`monitor`]: windows, thresholds and alert hysteresis (online and offline alike);
//! - [`task`]: the worker's sidecar thread (bounded channel, drop when full,
//!   reports to the drift topic, gauges, WARN logs);
//! - [`offline`]: `riskstream drift`, a period of a CSV against the reference,
//!   with a table and PNG plots.
//!
//! Config: `[drift]` in the file, `RISKSTREAM_DRIFT_*`, `--drift-*`.

pub mod monitor;
pub mod offline;
pub mod plots;
pub mod reference;
pub mod sidecar;
pub mod stats;
pub mod task;

use serde::Deserialize;

pub use monitor::{DriftMonitor, DriftSettings, VarStats, WindowReport};
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
    pub window_records: Option<usize>,
    pub window_seconds: Option<u64>,
    pub min_records: Option<usize>,
    pub psi_threshold: Option<f64>,
    pub ks_pvalue: Option<f64>,
    pub ks_min_statistic: Option<f64>,
    pub wasserstein_threshold: Option<f64>,
    pub chi2_pvalue: Option<f64>,
    pub share_min_change: Option<f64>,
    pub alert_after: Option<u32>,
    pub clear_after: Option<u32>,
    pub channel_batches: Option<usize>,
}

/// The same settings as flags / environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct DriftArgs {
    /// Topic for drift reports; "off" disables the drift sidecar [default: riskstream.drift].
    #[arg(long = "drift-topic", env = "RISKSTREAM_DRIFT_TOPIC")]
    pub topic: Option<String>,
    /// A drift window closes after this many records (0: no count limit) [default: 10000].
    #[arg(long = "drift-window-records", env = "RISKSTREAM_DRIFT_WINDOW_RECORDS")]
    pub window_records: Option<usize>,
    /// ... or after this much event time, seconds (0: no time limit) [default: 86400].
    #[arg(long = "drift-window-seconds", env = "RISKSTREAM_DRIFT_WINDOW_SECONDS")]
    pub window_seconds: Option<u64>,
    /// Windows with fewer records are reported, not judged [default: 1000].
    #[arg(long = "drift-min-records", env = "RISKSTREAM_DRIFT_MIN_RECORDS")]
    pub min_records: Option<usize>,
    /// PSI threshold [default: 0.2].
    #[arg(long = "drift-psi-threshold", env = "RISKSTREAM_DRIFT_PSI_THRESHOLD")]
    pub psi_threshold: Option<f64>,
    /// KS p-value threshold [default: 0.01].
    #[arg(long = "drift-ks-pvalue", env = "RISKSTREAM_DRIFT_KS_PVALUE")]
    pub ks_pvalue: Option<f64>,
    /// Smallest KS statistic that counts as drift [default: 0.1].
    #[arg(
        long = "drift-ks-min-statistic",
        env = "RISKSTREAM_DRIFT_KS_MIN_STATISTIC"
    )]
    pub ks_min_statistic: Option<f64>,
    /// Wasserstein / reference std threshold; 0 reports without judging [default: 0].
    #[arg(
        long = "drift-wasserstein-threshold",
        env = "RISKSTREAM_DRIFT_WASSERSTEIN_THRESHOLD"
    )]
    pub wasserstein_threshold: Option<f64>,
    /// Chi-squared p-value threshold for binary variables [default: 0.01].
    #[arg(long = "drift-chi2-pvalue", env = "RISKSTREAM_DRIFT_CHI2_PVALUE")]
    pub chi2_pvalue: Option<f64>,
    /// A binary share counts as drifted only beyond the factor 1 + this, either way [default: 0.5].
    #[arg(
        long = "drift-share-min-change",
        env = "RISKSTREAM_DRIFT_SHARE_MIN_CHANGE"
    )]
    pub share_min_change: Option<f64>,
    /// Consecutive windows over a threshold that raise an alert [default: 2].
    #[arg(long = "drift-alert-after", env = "RISKSTREAM_DRIFT_ALERT_AFTER")]
    pub alert_after: Option<u32>,
    /// Consecutive windows under every threshold that clear it [default: 2].
    #[arg(long = "drift-clear-after", env = "RISKSTREAM_DRIFT_CLEAR_AFTER")]
    pub clear_after: Option<u32>,
    /// Capacity of the channel to the sidecar, in scored batches [default: 256].
    #[arg(
        long = "drift-channel-batches",
        env = "RISKSTREAM_DRIFT_CHANNEL_BATCHES"
    )]
    pub channel_batches: Option<usize>,
}

/// Resolved drift config of `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// None: the sidecar is off.
    pub topic: Option<String>,
    pub settings: DriftSettings,
    pub channel_batches: usize,
}

impl DriftArgs {
    /// Flags/env over the file over the defaults; errors are appended.
    pub fn resolve(&self, file: &DriftFileConfig, errors: &mut Vec<String>) -> DriftConfig {
        let d = DriftSettings::default();
        let settings = DriftSettings {
            window_records: self
                .window_records
                .or(file.window_records)
                .unwrap_or(d.window_records),
            window_seconds: self
                .window_seconds
                .or(file.window_seconds)
                .unwrap_or(d.window_seconds),
            min_records: self
                .min_records
                .or(file.min_records)
                .unwrap_or(d.min_records),
            psi_threshold: self
                .psi_threshold
                .or(file.psi_threshold)
                .unwrap_or(d.psi_threshold),
            ks_pvalue: self.ks_pvalue.or(file.ks_pvalue).unwrap_or(d.ks_pvalue),
            ks_min_statistic: self
                .ks_min_statistic
                .or(file.ks_min_statistic)
                .unwrap_or(d.ks_min_statistic),
            wasserstein_threshold: self
                .wasserstein_threshold
                .or(file.wasserstein_threshold)
                .unwrap_or(d.wasserstein_threshold),
            chi2_pvalue: self
                .chi2_pvalue
                .or(file.chi2_pvalue)
                .unwrap_or(d.chi2_pvalue),
            share_min_change: self
                .share_min_change
                .or(file.share_min_change)
                .unwrap_or(d.share_min_change),
            alert_after: self
                .alert_after
                .or(file.alert_after)
                .unwrap_or(d.alert_after),
            clear_after: self
                .clear_after
                .or(file.clear_after)
                .unwrap_or(d.clear_after),
        };
        errors.extend(settings.validate());
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_are_reported() {
        let file: DriftFileConfig =
            toml::from_str("window_records = 500\npsi_threshold = 0.3\n").unwrap();
        let args = DriftArgs {
            psi_threshold: Some(0.25),
            alert_after: Some(0),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let c = args.resolve(&file, &mut errors);
        assert_eq!(c.settings.window_records, 500);
        assert_eq!(c.settings.psi_threshold, 0.25);
        assert_eq!(c.topic.as_deref(), Some("riskstream.drift"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(toml::from_str::<DriftFileConfig>("windw = 1").is_err());
    }
}
