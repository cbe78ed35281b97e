//! Config: the worker's settings, layered defaults < file < environment < flags.
//!
//! Every setting has a config-file key (TOML, unknown keys rejected), an
//! environment variable `RISKSTREAM_<KEY>` and a flag `--<key>` (clap reads
//! the variable when the flag is absent, so the flag wins). librdkafka
//! options pass through under `[kafka]` in the file or `--kafka key=value`.
//! All validation errors are reported together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

pub use crate::model::DeviceChoice;

/// The config file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub group: Option<String>,
    pub input_topic: Option<String>,
    pub output_topic: Option<String>,
    pub labels_topic: Option<String>,
    pub dlq_topic: Option<String>,
    pub model: Option<String>,
    pub models_dir: Option<PathBuf>,
    pub device: Option<DeviceChoice>,
    pub batch_max: Option<usize>,
    pub linger_ms: Option<u64>,
    pub queue_records: Option<usize>,
    pub labels_wait_ms: Option<u64>,
    pub session_timeout_ms: Option<u64>,
    pub topic_partitions: Option<i32>,
    pub schema_dir: Option<PathBuf>,
    pub max_records: Option<u64>,
    pub metrics_addr: Option<String>,
    pub schema_registry_url: Option<String>,
    pub challenger: Option<String>,
    pub ab_share: Option<f64>,
    pub shadow_topic: Option<String>,
    pub registry_poll_ms: Option<u64>,
    pub schema_registry_ca: Option<PathBuf>,
    pub drain_timeout_ms: Option<u64>,
    pub dlq_max_payload_bytes: Option<usize>,
    pub labels_load_timeout_ms: Option<u64>,
    pub stall_timeout_ms: Option<u64>,
    /// `[input]`: bounds on what a record may carry.
    #[serde(default)]
    pub input: crate::source::guard::InputFileConfig,
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// `[drift]`: the drift sidecar.
    #[serde(default)]
    pub drift: crate::drift::DriftFileConfig,
}

/// The same settings from flags and environment (clap fills env when a flag is absent).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// Config file (TOML); its keys are the long flag names with `_`.
    #[arg(long, env = "RISKSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "RISKSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group id [default: riskstream].
    #[arg(long, env = "RISKSTREAM_GROUP")]
    pub group: Option<String>,
    /// Input topic of transactions [default: transactions].
    #[arg(long, env = "RISKSTREAM_INPUT_TOPIC")]
    pub input_topic: Option<String>,
    /// Output topic of scored transactions [default: transactions.scored].
    #[arg(long, env = "RISKSTREAM_OUTPUT_TOPIC")]
    pub output_topic: Option<String>,
    /// Label-feedback topic [default: transactions.labels].
    #[arg(long, env = "RISKSTREAM_LABELS_TOPIC")]
    pub labels_topic: Option<String>,
    /// Dead-letter topic [default: transactions.dlq].
    #[arg(long, env = "RISKSTREAM_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Model: a directory, NAME/VERSION or NAME@alias under the models dir [default: fraud-mlp@champion].
    #[arg(long, env = "RISKSTREAM_MODEL")]
    pub model: Option<String>,
    /// Model registry directory [default: models].
    #[arg(long, env = "RISKSTREAM_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Scoring device [default: auto].
    #[arg(long, env = "RISKSTREAM_DEVICE", value_enum)]
    pub device: Option<DeviceChoice>,
    /// Largest micro-batch, in records [default: 512].
    #[arg(long, env = "RISKSTREAM_BATCH_MAX")]
    pub batch_max: Option<usize>,
    /// Longest a record waits for its batch to fill, ms [default: 5]. A
    /// batch is scored earlier once the consumer has nothing more buffered.
    #[arg(long, env = "RISKSTREAM_LINGER_MS")]
    pub linger_ms: Option<u64>,
    /// Capacity of each queue between stages, in records [default: 8192].
    #[arg(long, env = "RISKSTREAM_QUEUE_RECORDS")]
    pub queue_records: Option<usize>,
    /// Longest a batch waits for the label stream to catch up with it, ms [default: 2000].
    #[arg(long, env = "RISKSTREAM_LABELS_WAIT_MS")]
    pub labels_wait_ms: Option<u64>,
    /// Consumer-group session timeout, ms [default: 6000].
    #[arg(long, env = "RISKSTREAM_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: Option<u64>,
    /// Partitions of topics the worker creates [default: 4].
    #[arg(long, env = "RISKSTREAM_TOPIC_PARTITIONS")]
    pub topic_partitions: Option<i32>,
    /// Extra writer schemas (*.avsc) to accept on the input topic.
    #[arg(long, env = "RISKSTREAM_SCHEMA_DIR")]
    pub schema_dir: Option<PathBuf>,
    /// Stop after this many records were handled (tests, benchmarks).
    #[arg(long, env = "RISKSTREAM_MAX_RECORDS")]
    pub max_records: Option<u64>,
    /// Address of the HTTP endpoint (/metrics, /healthz, /readyz) [default: 0.0.0.0:9100]; "off" disables it.
    #[arg(long, env = "RISKSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Confluent Schema Registry, http://[user:password@]host:port: decode `0x00`-framed
    /// input and frame the outputs that way (subjects `<topic>-value`).
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Challenger model (NAME@alias, NAME/VERSION or a directory) for A/B and shadow scoring.
    #[arg(long, env = "RISKSTREAM_CHALLENGER")]
    pub challenger: Option<String>,
    /// Share of customers (stable hash of the key) the challenger decides [default: 0].
    #[arg(long, env = "RISKSTREAM_AB_SHARE")]
    pub ab_share: Option<f64>,
    /// Shadow topic: the challenger scores every record there and never decides.
    #[arg(long, env = "RISKSTREAM_SHADOW_TOPIC")]
    pub shadow_topic: Option<String>,
    /// How often the registry is checked for moved aliases, ms; 0 = never [default: 2000].
    #[arg(long, env = "RISKSTREAM_REGISTRY_POLL_MS")]
    pub registry_poll_ms: Option<u64>,
    /// PEM file of the CA that signs an https schema registry's certificate
    /// (besides the system's roots).
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<PathBuf>,
    /// Longest shutdown takes after SIGTERM, ms: deliveries still unsettled
    /// then are abandoned (not committed) and the process exits [default: 30000].
    #[arg(long, env = "RISKSTREAM_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Bytes of the original payload a dead letter keeps (the rest is cut) [default: 65536].
    #[arg(long, env = "RISKSTREAM_DLQ_MAX_PAYLOAD_BYTES")]
    pub dlq_max_payload_bytes: Option<usize>,
    /// Longest scoring waits for the label history at start, ms [default: 120000].
    #[arg(long, env = "RISKSTREAM_LABELS_LOAD_TIMEOUT_MS")]
    pub labels_load_timeout_ms: Option<u64>,
    /// /healthz fails when input is waiting but nothing was delivered for this long, ms; 0 = never [default: 120000].
    #[arg(long, env = "RISKSTREAM_STALL_TIMEOUT_MS")]
    pub stall_timeout_ms: Option<u64>,
    #[command(flatten)]
    pub input: crate::source::guard::InputArgs,
    /// librdkafka option passed through, `key=value` (repeatable), e.g.
    /// `security.protocol=SASL_SSL`. Wins over `[kafka]` in the file and
    /// `RISKSTREAM_KAFKA_*` in the environment.
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    #[command(flatten)]
    pub drift: crate::drift::DriftArgs,
}

/// The resolved settings of `riskstream run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub brokers: String,
    pub group: String,
    pub input_topic: String,
    pub output_topic: String,
    pub labels_topic: String,
    pub dlq_topic: String,
    pub model: String,
    pub models_dir: PathBuf,
    pub device: DeviceChoice,
    pub batch_max: usize,
    pub linger: Duration,
    pub queue_records: usize,
    pub labels_wait: Duration,
    pub session_timeout_ms: u64,
    pub topic_partitions: i32,
    pub schema_dir: Option<PathBuf>,
    pub max_records: Option<u64>,
    /// HTTP endpoint address; None = disabled.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// librdkafka pass-through options. May hold secrets: never log values.
    pub kafka: BTreeMap<String, String>,
    pub drift: crate::drift::DriftConfig,
    pub serving: ServingConfig,
    /// May hold credentials: log it only through `SchemaRegistry::url`.
    pub schema_registry_url: Option<String>,
    pub schema_registry_ca: Option<PathBuf>,
    /// Shutdown's budget from the stop request to exit.
    pub drain_timeout: Duration,
    pub dlq_max_payload_bytes: usize,
    pub labels_load_timeout: Duration,
    /// None: /healthz never reports a stall.
    pub stall_timeout: Option<Duration>,
    pub input: crate::source::guard::InputLimits,
}

/// librdkafka options that carry riskstream's delivery guarantee (or its
/// identity): a pass-through option may not change them.
pub const GUARDED_KAFKA_KEYS: &[(&str, &str)] = &[
    ("enable.idempotence", "the producer is always idempotent"),
    (
        "acks",
        "outputs are always acknowledged by all in-sync replicas",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only for delivered records",
    ),
    (
        "enable.auto.commit",
        "stored offsets are committed by librdkafka's auto-commit",
    ),
    (
        "partition.assignment.strategy",
        "the assignor is part of the rebalance protocol riskstream implements",
    ),
    ("group.id", "use --group"),
    ("bootstrap.servers", "use --brokers"),
    ("metadata.broker.list", "use --brokers"),
];

/// Challenger, A/B, shadow and the registry watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServingConfig {
    pub challenger: Option<String>,
    pub ab_share: f64,
    pub shadow_topic: Option<String>,
    /// None: the registry is not watched.
    pub registry_poll: Option<Duration>,
}

impl RunConfig {
    /// Layers defaults < file < env/flags and validates everything at once.
    pub fn resolve(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let mut errors = Vec::new();
        // librdkafka options: file < environment < flags.
        let mut kafka = file.kafka.clone();
        // Secrets may come from the environment: RISKSTREAM_KAFKA_SASL_PASSWORD → sasl.password.
        for (k, v) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("RISKSTREAM_KAFKA_") {
                kafka.insert(rest.to_ascii_lowercase().replace('_', "."), v);
            }
        }
        for kv in &args.kafka {
            match kv.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    kafka.insert(k.trim().to_string(), v.to_string());
                }
                // Never echo the value: it may be a secret.
                _ => errors.push(format!(
                    "--kafka {:?}: expected KEY=VALUE",
                    kv.split('=').next().unwrap_or_default()
                )),
            }
        }
        let pick = |a: &Option<String>, f: &Option<String>, d: &str| {
            a.clone()
                .or_else(|| f.clone())
                .unwrap_or_else(|| d.to_string())
        };
        let cfg = RunConfig {
            brokers: pick(&args.brokers, &file.brokers, "127.0.0.1:9092"),
            group: pick(&args.group, &file.group, "riskstream"),
            input_topic: pick(&args.input_topic, &file.input_topic, "transactions"),
            output_topic: pick(
                &args.output_topic,
                &file.output_topic,
                "transactions.scored",
            ),
            labels_topic: pick(
                &args.labels_topic,
                &file.labels_topic,
                "transactions.labels",
            ),
            dlq_topic: pick(&args.dlq_topic, &file.dlq_topic, "transactions.dlq"),
            model: pick(&args.model, &file.model, "fraud-mlp@champion"),
            models_dir: args
                .models_dir
                .clone()
                .or(file.models_dir)
                .unwrap_or_else(|| PathBuf::from("models")),
            device: args.device.or(file.device).unwrap_or_default(),
            batch_max: args.batch_max.or(file.batch_max).unwrap_or(512),
            linger: Duration::from_millis(args.linger_ms.or(file.linger_ms).unwrap_or(5)),
            queue_records: args.queue_records.or(file.queue_records).unwrap_or(8192),
            labels_wait: Duration::from_millis(
                args.labels_wait_ms.or(file.labels_wait_ms).unwrap_or(2000),
            ),
            session_timeout_ms: args
                .session_timeout_ms
                .or(file.session_timeout_ms)
                .unwrap_or(6000),
            topic_partitions: args.topic_partitions.or(file.topic_partitions).unwrap_or(4),
            schema_dir: args.schema_dir.clone().or(file.schema_dir),
            max_records: args.max_records.or(file.max_records),
            metrics_addr: None,
            kafka,
            drift: args.drift.resolve(&file.drift, &mut errors),
            schema_registry_url: args
                .schema_registry_url
                .clone()
                .or(file.schema_registry_url),
            schema_registry_ca: args.schema_registry_ca.clone().or(file.schema_registry_ca),
            drain_timeout: Duration::from_millis(
                args.drain_timeout_ms
                    .or(file.drain_timeout_ms)
                    .unwrap_or(30_000),
            ),
            dlq_max_payload_bytes: args
                .dlq_max_payload_bytes
                .or(file.dlq_max_payload_bytes)
                .unwrap_or(crate::sink::DEFAULT_DLQ_MAX_PAYLOAD),
            labels_load_timeout: Duration::from_millis(
                args.labels_load_timeout_ms
                    .or(file.labels_load_timeout_ms)
                    .unwrap_or(120_000),
            ),
            stall_timeout: match args
                .stall_timeout_ms
                .or(file.stall_timeout_ms)
                .unwrap_or(120_000)
            {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            input: crate::source::guard::InputLimits::resolve(
                &file.input,
                &args.input,
                &mut errors,
            ),
            serving: ServingConfig {
                challenger: args.challenger.clone().or(file.challenger),
                ab_share: args.ab_share.or(file.ab_share).unwrap_or(0.0),
                shadow_topic: args.shadow_topic.clone().or(file.shadow_topic),
                registry_poll: match args
                    .registry_poll_ms
                    .or(file.registry_poll_ms)
                    .unwrap_or(2000)
                {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                },
            },
        };
        let sv = &cfg.serving;
        if !(0.0..=1.0).contains(&sv.ab_share) {
            errors.push(format!("ab_share: {} is not within 0..1", sv.ab_share));
        }
        if sv.challenger.is_none() && (sv.ab_share > 0.0 || sv.shadow_topic.is_some()) {
            errors.push(
                "ab_share and shadow_topic need a challenger (--challenger NAME@challenger)".into(),
            );
        }
        if sv.shadow_topic.as_deref().is_some_and(|t| {
            t.is_empty()
                || [
                    &cfg.input_topic,
                    &cfg.output_topic,
                    &cfg.labels_topic,
                    &cfg.dlq_topic,
                ]
                .contains(&&t.to_string())
        }) {
            errors.push("shadow_topic: must be a topic of its own".into());
        }
        let mut cfg = cfg;
        match pick(&args.metrics_addr, &file.metrics_addr, "0.0.0.0:9100").as_str() {
            "off" | "" => {}
            a => match a.parse() {
                Ok(addr) => cfg.metrics_addr = Some(addr),
                Err(_) => errors.push(format!("metrics_addr: {a:?} is not HOST:PORT")),
            },
        }
        if cfg.brokers.trim().is_empty() {
            errors.push("brokers: must not be empty".into());
        }
        if cfg.group.trim().is_empty() {
            errors.push("group: must not be empty".into());
        }
        let topics = [
            ("input_topic", &cfg.input_topic),
            ("output_topic", &cfg.output_topic),
            ("labels_topic", &cfg.labels_topic),
            ("dlq_topic", &cfg.dlq_topic),
        ];
        for (name, t) in topics {
            if t.is_empty() {
                errors.push(format!("{name}: must not be empty"));
            }
        }
        for (name, t) in &topics[1..] {
            if *t == &cfg.input_topic {
                errors.push(format!(
                    "{name} and input_topic are both {t:?}: the worker would consume its own output"
                ));
            }
        }
        if cfg.batch_max == 0 || cfg.batch_max > 65_536 {
            errors.push(format!("batch_max: {} not in 1..=65536", cfg.batch_max));
        }
        if cfg.queue_records < cfg.batch_max {
            errors.push(format!(
                "queue_records ({}) must be at least batch_max ({})",
                cfg.queue_records, cfg.batch_max
            ));
        }
        if cfg.topic_partitions < 1 {
            errors.push("topic_partitions: must be at least 1".into());
        }
        if !(1000..=300_000).contains(&cfg.session_timeout_ms) {
            errors.push(format!(
                "session_timeout_ms: {} not in 1000..=300000",
                cfg.session_timeout_ms
            ));
        }
        for (k, why) in GUARDED_KAFKA_KEYS {
            if cfg.kafka.contains_key(*k) {
                errors.push(format!(
                    "kafka option {k}: set by riskstream itself and not overridable ({why})"
                ));
            }
        }
        if cfg.drain_timeout < Duration::from_secs(1) {
            errors.push("drain_timeout_ms: must be at least 1000".into());
        }
        if cfg.dlq_max_payload_bytes < 1024 {
            errors.push("dlq_max_payload_bytes: must be at least 1024".into());
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The librdkafka keys in use, values hidden (secrets never reach logs).
    pub fn kafka_keys(&self) -> Vec<&str> {
        self.kafka.keys().map(String::as_str).collect()
    }
}

pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "brokers = \"file:1\"\ngroup = \"g-file\"\nbatch_max = 64\n[kafka]\n\"socket.timeout.ms\" = \"1000\"").unwrap();
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            brokers: Some("flag:2".into()),
            ..Default::default()
        };
        let c = RunConfig::resolve(&args).unwrap();
        assert_eq!(c.brokers, "flag:2");
        assert_eq!(c.group, "g-file");
        assert_eq!(c.batch_max, 64);
        assert_eq!(c.input_topic, "transactions");
        assert_eq!(
            c.kafka.get("socket.timeout.ms").map(String::as_str),
            Some("1000")
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "brokerz = \"x\"").unwrap();
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let err = RunConfig::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn kafka_options_layer_file_then_environment_then_flags() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[kafka]\n\"client.rack\" = \"file\"\n\"client.id\" = \"file\""
        )
        .unwrap();
        // A key no other test reads (tests share the environment).
        std::env::set_var("RISKSTREAM_KAFKA_CLIENT_RACK", "env");
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let c = RunConfig::resolve(&args).unwrap();
        assert_eq!(c.kafka["client.rack"], "env", "environment over file");
        assert_eq!(c.kafka["client.id"], "file");
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            kafka: vec!["client.rack=flag".into()],
            ..Default::default()
        };
        let c = RunConfig::resolve(&args).unwrap();
        assert_eq!(c.kafka["client.rack"], "flag", "flags over environment");
        std::env::remove_var("RISKSTREAM_KAFKA_CLIENT_RACK");
    }

    #[test]
    fn options_that_carry_the_delivery_guarantee_are_refused_by_name() {
        for (k, _) in GUARDED_KAFKA_KEYS {
            let args = RunArgs {
                kafka: vec![format!("{k}=secret-value")],
                ..Default::default()
            };
            let err = RunConfig::resolve(&args).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
            assert!(
                !err.contains("secret-value"),
                "values are never echoed: {err}"
            );
        }
        let args = RunArgs {
            kafka: vec!["sasl.password".into()],
            ..Default::default()
        };
        let err = RunConfig::resolve(&args).unwrap_err().to_string();
        assert!(
            err.contains("sasl.password") && err.contains("KEY=VALUE"),
            "{err}"
        );
    }

    #[test]
    fn input_bounds_come_from_the_input_table_and_flags() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[input]\nmax_amount = 500.0\nresync_after = 7\nbogus = 1"
        )
        .unwrap();
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let err = RunConfig::resolve(&args).unwrap_err().to_string();
        assert!(
            err.contains("bogus"),
            "unknown keys refused in [input]: {err}"
        );
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[input]\nmax_amount = 500.0\nresync_after = 7").unwrap();
        let mut args = RunArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let c = RunConfig::resolve(&args).unwrap();
        assert_eq!((c.input.max_amount, c.input.resync_after), (500.0, 7));
        args.input.max_amount = Some(9.0);
        assert_eq!(RunConfig::resolve(&args).unwrap().input.max_amount, 9.0);
        args.input.max_amount = Some(f64::NAN);
        assert!(RunConfig::resolve(&args).is_err());
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let args = RunArgs {
            batch_max: Some(0),
            output_topic: Some("transactions".into()),
            kafka: vec!["nonsense".into()],
            ..Default::default()
        };
        let err = RunConfig::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("batch_max"), "{err}");
        assert!(err.contains("output_topic"), "{err}");
        assert!(err.contains("nonsense"), "{err}");
    }
}
