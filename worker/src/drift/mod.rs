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
//!
//! The offline report, `riskstream drift`, is [`crate::report`]: it uses
//! these pieces; nothing here imports it.
//!
//! Config: `[drift]` in the file, `RISKSTREAM_DRIFT_*`, `--drift-*`
//! ([`crate::config::DriftSection`]).

pub mod merge;
pub mod monitor;
pub mod performance;
pub mod profile;
pub mod reference;
pub mod sidecar;
pub mod stats;
pub mod summary;

pub use monitor::{DriftMonitor, DriftSettings, ScaleStats, VarStats, WindowReport};
pub use reference::{Reference, VarReference, REFERENCE_FILE};

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("cannot read drift reference {path}")]
    ReadReference {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drift reference {path} is not valid")]
    ParseReference {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot serialise drift reference {path}")]
    SerialiseReference {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write drift reference {path}")]
    WriteReference {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drift: {0}")]
    Invalid(String),
    #[error("cannot write drift report {path}")]
    WriteOutput {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write drift plot {path}")]
    WritePlot {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

impl DriftConfig {
    pub const DEFAULT_TOPIC: &str = "riskstream.drift";
    pub const DEFAULT_CHANNEL_BATCHES: usize = 256;
    pub const DEFAULT_GLOBAL: bool = true;
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
