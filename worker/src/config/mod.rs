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

use crate::scoring::ScoringConfig;
use crate::sink::SinkConfig;
use crate::source::{LabelConfig, SourceConfig};
use crate::state::StateConfig;

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
    /// `[state]`: the customer-state changelog.
    #[serde(default)]
    pub state: StateFileConfig,
    pub group_instance_id: Option<String>,
    pub group_protocol: Option<crate::source::GroupProtocol>,
    pub partition_assignment: Option<crate::source::Assignment>,
}

/// `[state]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFileConfig {
    pub enabled: Option<bool>,
    pub topic: Option<String>,
    pub flush_interval_ms: Option<u64>,
    pub restore_timeout_ms: Option<u64>,
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
    /// Static group membership (`group.instance.id`): a restarted instance
    /// with the same id gets its partitions back without a rebalance. Unique
    /// per instance (Kubernetes: the pod name) [default: unset].
    #[arg(long, env = "RISKSTREAM_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Consumer group protocol: classic, or consumer (KIP-848, Kafka 4.0+:
    /// the broker assigns partitions and sets the session timeout, so
    /// session_timeout_ms and partition_assignment do not apply) [default: classic].
    #[arg(long, env = "RISKSTREAM_GROUP_PROTOCOL", value_enum)]
    pub group_protocol: Option<crate::source::GroupProtocol>,
    /// Partition assignor of the classic protocol: incremental
    /// (cooperative-sticky) or eager (range) [default: cooperative-sticky].
    #[arg(long, env = "RISKSTREAM_PARTITION_ASSIGNMENT", value_enum)]
    pub partition_assignment: Option<crate::source::Assignment>,
    /// Customer-state changelog topic [default: <input_topic>.state.<group>].
    #[arg(long, env = "RISKSTREAM_STATE_TOPIC")]
    pub state_topic: Option<String>,
    /// No state changelog: every assignment replays the input partition's
    /// retained history instead (state then depends on retention).
    #[arg(long, env = "RISKSTREAM_NO_STATE")]
    pub no_state: bool,
    /// Changed customers are written to the changelog at most this often, ms [default: 1000].
    #[arg(long, env = "RISKSTREAM_STATE_FLUSH_INTERVAL_MS")]
    pub state_flush_interval_ms: Option<u64>,
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
    pub state: StateConfig,
    pub group_instance_id: Option<String>,
    pub group_protocol: crate::source::GroupProtocol,
    pub partition_assignment: crate::source::Assignment,
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
    ("group.protocol", "use --group-protocol"),
    ("bootstrap.servers", "use --brokers"),
    ("metadata.broker.list", "use --brokers"),
];

/// librdkafka options of the classic group protocol that librdkafka refuses
/// with `group.protocol=consumer` (KIP-848: the broker sets them).
const CLASSIC_ONLY_KAFKA_KEYS: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
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

/// First of flag/env, file, default.
fn pick(a: &Option<String>, f: &Option<String>, d: &str) -> String {
    a.clone()
        .or_else(|| f.clone())
        .unwrap_or_else(|| d.to_string())
}

/// Milliseconds from flag/env, file or default.
fn ms(a: Option<u64>, f: Option<u64>, d: u64) -> Duration {
    Duration::from_millis(a.or(f).unwrap_or(d))
}

/// Milliseconds where 0 means "never" (None).
fn ms_or_never(a: Option<u64>, f: Option<u64>, d: u64) -> Option<Duration> {
    match a.or(f).unwrap_or(d) {
        0 => None,
        n => Some(Duration::from_millis(n)),
    }
}

/// librdkafka options: file < environment < flags.
fn layer_kafka(
    args: &RunArgs,
    file: &FileConfig,
    errors: &mut Vec<String>,
) -> BTreeMap<String, String> {
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
    kafka
}

fn state(a: &RunArgs, f: &FileConfig) -> StateConfig {
    let input = pick(&a.input_topic, &f.input_topic, "transactions");
    let group = pick(&a.group, &f.group, "riskstream");
    let s = &f.state;
    StateConfig {
        enabled: !a.no_state && s.enabled.unwrap_or(true),
        topic: pick(
            &a.state_topic,
            &s.topic,
            &StateConfig::default_topic(&input, &group),
        ),
        flush_interval: ms(
            a.state_flush_interval_ms,
            s.flush_interval_ms,
            StateConfig::DEFAULT_FLUSH_INTERVAL.as_millis() as u64,
        ),
        restore_timeout: ms(
            None,
            s.restore_timeout_ms,
            StateConfig::DEFAULT_RESTORE_TIMEOUT.as_millis() as u64,
        ),
    }
}

fn serving(args: &RunArgs, file: &FileConfig) -> ServingConfig {
    ServingConfig {
        challenger: args.challenger.clone().or_else(|| file.challenger.clone()),
        ab_share: args.ab_share.or(file.ab_share).unwrap_or(0.0),
        shadow_topic: args
            .shadow_topic
            .clone()
            .or_else(|| file.shadow_topic.clone()),
        registry_poll: ms_or_never(args.registry_poll_ms, file.registry_poll_ms, 2000),
    }
}

/// The group protocol. Under KIP-848 the broker sets the session timeout
/// and assigns: a session timeout or assignor set anyway is an error, not
/// silently dropped.
fn group_protocol(
    args: &RunArgs,
    file: &FileConfig,
    errors: &mut Vec<String>,
) -> crate::source::GroupProtocol {
    use crate::source::GroupProtocol;
    let protocol = args
        .group_protocol
        .or(file.group_protocol)
        .unwrap_or_default();
    if protocol == GroupProtocol::Consumer {
        if args
            .session_timeout_ms
            .or(file.session_timeout_ms)
            .is_some()
        {
            errors.push("session_timeout_ms: not used with group_protocol = consumer (the broker's group.consumer.session.timeout.ms applies)".into());
        }
        if args
            .partition_assignment
            .or(file.partition_assignment)
            .is_some()
        {
            errors.push("partition_assignment: not used with group_protocol = consumer (the broker assigns; pass group.remote.assignor through --kafka to pick its assignor)".into());
        }
    }
    protocol
}

/// The HTTP endpoint's address; None when "off".
fn metrics_addr(
    args: &RunArgs,
    file: &FileConfig,
    errors: &mut Vec<String>,
) -> Option<std::net::SocketAddr> {
    match pick(&args.metrics_addr, &file.metrics_addr, "0.0.0.0:9100").as_str() {
        "off" | "" => None,
        a => a
            .parse()
            .map_err(|_| errors.push(format!("metrics_addr: {a:?} is not HOST:PORT")))
            .ok(),
    }
}

impl RunConfig {
    /// Layers defaults < file < env/flags and validates everything at once.
    pub fn resolve(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let mut errors = Vec::new();
        let cfg = Self::layer(args, &file, &mut errors);
        cfg.check(&mut errors);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    fn layer(args: &RunArgs, file: &FileConfig, errors: &mut Vec<String>) -> Self {
        let scoring = ScoringConfig::default();
        let (a, f) = (args, file);
        RunConfig {
            brokers: pick(&a.brokers, &f.brokers, "127.0.0.1:9092"),
            group: pick(&a.group, &f.group, "riskstream"),
            input_topic: pick(&a.input_topic, &f.input_topic, "transactions"),
            output_topic: pick(&a.output_topic, &f.output_topic, "transactions.scored"),
            labels_topic: pick(&a.labels_topic, &f.labels_topic, "transactions.labels"),
            dlq_topic: pick(&a.dlq_topic, &f.dlq_topic, "transactions.dlq"),
            model: pick(&a.model, &f.model, "fraud-mlp@champion"),
            models_dir: a
                .models_dir
                .clone()
                .or_else(|| f.models_dir.clone())
                .unwrap_or_else(|| PathBuf::from("models")),
            device: a.device.or(f.device).unwrap_or_default(),
            batch_max: a.batch_max.or(f.batch_max).unwrap_or(scoring.batch_max),
            linger: ms(a.linger_ms, f.linger_ms, scoring.linger.as_millis() as u64),
            queue_records: a.queue_records.or(f.queue_records).unwrap_or(8192),
            labels_wait: ms(
                a.labels_wait_ms,
                f.labels_wait_ms,
                scoring.labels_wait.as_millis() as u64,
            ),
            session_timeout_ms: a
                .session_timeout_ms
                .or(f.session_timeout_ms)
                .unwrap_or(SourceConfig::DEFAULT_SESSION_TIMEOUT_MS),
            topic_partitions: a.topic_partitions.or(f.topic_partitions).unwrap_or(4),
            schema_dir: a.schema_dir.clone().or_else(|| f.schema_dir.clone()),
            max_records: a.max_records.or(f.max_records),
            metrics_addr: metrics_addr(a, f, errors),
            kafka: layer_kafka(a, f, errors),
            drift: a.drift.resolve(&f.drift, errors),
            schema_registry_url: a
                .schema_registry_url
                .clone()
                .or_else(|| f.schema_registry_url.clone()),
            schema_registry_ca: a
                .schema_registry_ca
                .clone()
                .or_else(|| f.schema_registry_ca.clone()),
            drain_timeout: ms(
                a.drain_timeout_ms,
                f.drain_timeout_ms,
                SinkConfig::DEFAULT_DRAIN_TIMEOUT.as_millis() as u64,
            ),
            dlq_max_payload_bytes: a
                .dlq_max_payload_bytes
                .or(f.dlq_max_payload_bytes)
                .unwrap_or(crate::sink::DEFAULT_DLQ_MAX_PAYLOAD),
            labels_load_timeout: ms(
                a.labels_load_timeout_ms,
                f.labels_load_timeout_ms,
                scoring.labels_load_timeout.as_millis() as u64,
            ),
            stall_timeout: ms_or_never(a.stall_timeout_ms, f.stall_timeout_ms, 120_000),
            input: crate::source::guard::InputLimits::resolve(&f.input, &a.input, errors),
            serving: serving(a, f),
            state: state(a, f),
            group_instance_id: a
                .group_instance_id
                .clone()
                .or_else(|| f.group_instance_id.clone())
                .filter(|s| !s.is_empty()),
            group_protocol: group_protocol(a, f, errors),
            partition_assignment: a
                .partition_assignment
                .or(f.partition_assignment)
                .unwrap_or_default(),
        }
    }

    /// Every cross-field check, the stages' own included.
    fn check(&self, errors: &mut Vec<String>) {
        self.check_serving(errors);
        self.check_topics(errors);
        self.scoring().check(errors);
        self.source().check(errors);
        self.sink().check(errors);
        self.state.check(errors);
        if self.state.enabled
            && [
                &self.input_topic,
                &self.output_topic,
                &self.labels_topic,
                &self.dlq_topic,
            ]
            .contains(&&self.state.topic)
        {
            errors.push("state.topic: must be a topic of its own".into());
        }
        if self.brokers.trim().is_empty() {
            errors.push("brokers: must not be empty".into());
        }
        if self.group.trim().is_empty() {
            errors.push("group: must not be empty".into());
        }
        if self.queue_records < self.batch_max {
            errors.push(format!(
                "queue_records ({}) must be at least batch_max ({})",
                self.queue_records, self.batch_max
            ));
        }
        if self.topic_partitions < 1 {
            errors.push("topic_partitions: must be at least 1".into());
        }
        for (k, why) in GUARDED_KAFKA_KEYS {
            if self.kafka.contains_key(*k) {
                errors.push(format!(
                    "kafka option {k}: set by riskstream itself and not overridable ({why})"
                ));
            }
        }
        if self.group_protocol == crate::source::GroupProtocol::Consumer {
            for k in CLASSIC_ONLY_KAFKA_KEYS {
                if self.kafka.contains_key(*k) {
                    errors.push(format!(
                        "kafka option {k}: not supported with group_protocol = consumer (the broker sets it)"
                    ));
                }
            }
        }
    }

    fn check_serving(&self, errors: &mut Vec<String>) {
        let sv = &self.serving;
        if !(0.0..=1.0).contains(&sv.ab_share) {
            errors.push(format!("ab_share: {} is not within 0..1", sv.ab_share));
        }
        if sv.challenger.is_none() && (sv.ab_share > 0.0 || sv.shadow_topic.is_some()) {
            errors.push(
                "ab_share and shadow_topic need a challenger (--challenger NAME@challenger)".into(),
            );
        }
        let own = [
            &self.input_topic,
            &self.output_topic,
            &self.labels_topic,
            &self.dlq_topic,
        ];
        if sv
            .shadow_topic
            .as_ref()
            .is_some_and(|t| t.is_empty() || own.contains(&t))
        {
            errors.push("shadow_topic: must be a topic of its own".into());
        }
    }

    fn check_topics(&self, errors: &mut Vec<String>) {
        let topics = [
            ("input_topic", &self.input_topic),
            ("output_topic", &self.output_topic),
            ("labels_topic", &self.labels_topic),
            ("dlq_topic", &self.dlq_topic),
        ];
        for (name, t) in topics {
            if t.is_empty() {
                errors.push(format!("{name}: must not be empty"));
            }
        }
        for (name, t) in &topics[1..] {
            if *t == &self.input_topic {
                errors.push(format!(
                    "{name} and input_topic are both {t:?}: the worker would consume its own output"
                ));
            }
        }
    }

    /// The source stage's section.
    pub fn source(&self) -> SourceConfig {
        SourceConfig {
            brokers: self.brokers.clone(),
            kafka: self.kafka.clone(),
            group: self.group.clone(),
            input_topic: self.input_topic.clone(),
            session_timeout_ms: self.session_timeout_ms,
            group_instance_id: self.group_instance_id.clone(),
            group_protocol: self.group_protocol,
            assignment: self.partition_assignment,
            revoke_drain: self.drain_timeout.min(SourceConfig::MAX_REVOKE_DRAIN),
            input: self.input.clone(),
        }
    }

    /// The label reader's section.
    pub fn labels(&self) -> LabelConfig {
        LabelConfig {
            brokers: self.brokers.clone(),
            kafka: self.kafka.clone(),
            group: self.group.clone(),
            labels_topic: self.labels_topic.clone(),
            input_topic: self.input_topic.clone(),
        }
    }

    /// The scoring stage's section.
    pub fn scoring(&self) -> ScoringConfig {
        ScoringConfig {
            batch_max: self.batch_max,
            linger: self.linger,
            labels_wait: self.labels_wait,
            labels_load_timeout: self.labels_load_timeout,
        }
    }

    /// The sink stage's section.
    pub fn sink(&self) -> SinkConfig {
        SinkConfig {
            brokers: self.brokers.clone(),
            kafka: self.kafka.clone(),
            output_topic: self.output_topic.clone(),
            dlq_topic: self.dlq_topic.clone(),
            input_topic: self.input_topic.clone(),
            shadow_topic: self.serving.shadow_topic.clone(),
            state_topic: self.state.enabled.then(|| self.state.topic.clone()),
            max_in_flight: self.queue_records,
            drain_timeout: self.drain_timeout,
            dlq_max_payload: self.dlq_max_payload_bytes,
            max_records: self.max_records,
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
    fn group_protocol_layers_and_refuses_what_the_broker_sets_under_kip_848() {
        use crate::source::GroupProtocol;
        let c = RunConfig::resolve(&RunArgs::default()).unwrap();
        assert_eq!(c.group_protocol, GroupProtocol::Classic);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "group_protocol = \"consumer\"").unwrap();
        let mut args = RunArgs {
            config: Some(f.path().to_path_buf()),
            group_instance_id: Some("pod-0".into()),
            ..Default::default()
        };
        let c = RunConfig::resolve(&args).unwrap();
        assert_eq!(c.group_protocol, GroupProtocol::Consumer);
        assert_eq!(c.source().group_protocol, GroupProtocol::Consumer);
        assert_eq!(c.group_instance_id.as_deref(), Some("pod-0"));
        args.group_protocol = Some(GroupProtocol::Classic);
        let c = RunConfig::resolve(&args).unwrap();
        assert_eq!(c.group_protocol, GroupProtocol::Classic, "flag over file");
        let args = RunArgs {
            group_protocol: Some(GroupProtocol::Consumer),
            session_timeout_ms: Some(10_000),
            partition_assignment: Some(crate::source::Assignment::Range),
            kafka: vec![
                "heartbeat.interval.ms=100".into(),
                "group.protocol=classic".into(),
            ],
            ..Default::default()
        };
        let err = RunConfig::resolve(&args).unwrap_err().to_string();
        for k in [
            "session_timeout_ms",
            "partition_assignment",
            "heartbeat.interval.ms",
            "group.protocol",
        ] {
            assert!(err.contains(k), "{k}: {err}");
        }
        let args = RunArgs {
            session_timeout_ms: Some(10_000),
            kafka: vec!["heartbeat.interval.ms=100".into()],
            ..Default::default()
        };
        assert!(RunConfig::resolve(&args).is_ok(), "classic takes both");
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
