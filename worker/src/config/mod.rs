//! Config: the worker's settings, layered defaults < file < environment < flags.
//!
//! Each section of settings is one struct ([`RunArgs`] for the file's top
//! level, [`InputSection`], [`StateSection`], [`DriftSection`] for its
//! tables) that serves all three sources under one name per setting: the
//! file key `key` (`[section] key` in a table; TOML, unknown keys refused),
//! the variable `RISKSTREAM_<KEY>` and the flag `--<key>` (clap reads the
//! variable when the flag is absent, so the flag wins; `[state]` and
//! `[drift]` keys take the section as a prefix, `--state-topic`). The flags'
//! and the file's structs are laid over each other field by field and each
//! default, a named constant, is applied once when the merged settings are
//! resolved into [`RunConfig`] (the help text shows the same constant).
//! librdkafka options pass through under `[kafka]` in the file,
//! `RISKSTREAM_KAFKA_*` or `--kafka key=value`. All validation errors are
//! reported together.

mod layer;
mod sections;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use layer::{enum_name, help, section, Layered};
pub use sections::{DeliverySection, DriftSection, InputSection, StateSection};

use crate::scoring::ScoringConfig;
use crate::sink::SinkConfig;
use crate::source::{Assignment, GroupProtocol, LabelConfig, SourceConfig};
use crate::state::StateConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

pub use crate::model::DeviceChoice;

// The defaults of the settings no stage owns (the others are the stage
// types' `DEFAULT_*` constants).
pub(crate) const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
pub(crate) const DEFAULT_GROUP: &str = "riskstream";
pub(crate) const DEFAULT_INPUT_TOPIC: &str = "transactions";
pub(crate) const DEFAULT_OUTPUT_TOPIC: &str = "transactions.scored";
pub(crate) const DEFAULT_LABELS_TOPIC: &str = "transactions.labels";
pub(crate) const DEFAULT_DLQ_TOPIC: &str = "transactions.dlq";
pub(crate) const DEFAULT_MODEL: &str = "fraud-mlp@champion";
pub(crate) const DEFAULT_MODELS_DIR: &str = "models";
pub(crate) const DEFAULT_QUEUE_RECORDS: usize = 8192;
pub(crate) const DEFAULT_TOPIC_PARTITIONS: i32 = 4;
pub(crate) const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9100";
pub(crate) const DEFAULT_AB_SHARE: f64 = 0.0;
pub(crate) const DEFAULT_REGISTRY_POLL: Duration = Duration::from_millis(2000);
pub(crate) const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

section! {
    /// `riskstream run`'s settings: its flags and environment, and the top
    /// level of the config file.
    pub struct RunArgs {
        /// Config file (TOML): top-level keys are the long flag names with `_`,
        /// tables `[input]`, `[state]`, `[drift]` (keys without the prefix) and `[kafka]`.
        #[arg(long, env = "RISKSTREAM_CONFIG")]
        #[serde(skip)]
        pub(crate) config: Option<PathBuf>,
        #[arg(long, env = "RISKSTREAM_BROKERS", help = help(
            "Kafka bootstrap servers",
            DEFAULT_BROKERS,
        ))]
        pub(crate) brokers: Option<String>,
        #[arg(long, env = "RISKSTREAM_GROUP", help = help("Consumer group id", DEFAULT_GROUP))]
        pub(crate) group: Option<String>,
        /// Static group membership (`group.instance.id`): a restarted instance
        /// with the same id gets its partitions back without a rebalance. Unique
        /// per instance (Kubernetes: the pod name); unset: dynamic membership.
        #[arg(long, env = "RISKSTREAM_GROUP_INSTANCE_ID")]
        pub(crate) group_instance_id: Option<String>,
        #[arg(long, env = "RISKSTREAM_GROUP_PROTOCOL", value_enum, help = help(
            "Consumer group protocol: classic, or consumer (KIP-848, Kafka 4.0+: the broker assigns partitions and sets the session timeout, so session_timeout_ms and partition_assignment do not apply)",
            enum_name(GroupProtocol::default()),
        ))]
        pub(crate) group_protocol: Option<GroupProtocol>,
        #[arg(long, env = "RISKSTREAM_SESSION_TIMEOUT_MS", help = help(
            "Consumer-group session timeout, ms (classic protocol)",
            SourceConfig::DEFAULT_SESSION_TIMEOUT_MS,
        ))]
        pub(crate) session_timeout_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_PARTITION_ASSIGNMENT", value_enum, help = help(
            "Partition assignor of the classic protocol: incremental (cooperative-sticky) or eager (range)",
            enum_name(Assignment::default()),
        ))]
        pub(crate) partition_assignment: Option<Assignment>,
        #[arg(long, env = "RISKSTREAM_INPUT_TOPIC", help = help(
            "Input topic of transactions",
            DEFAULT_INPUT_TOPIC,
        ))]
        pub(crate) input_topic: Option<String>,
        #[arg(long, env = "RISKSTREAM_OUTPUT_TOPIC", help = help(
            "Output topic of scored transactions",
            DEFAULT_OUTPUT_TOPIC,
        ))]
        pub(crate) output_topic: Option<String>,
        #[arg(long, env = "RISKSTREAM_LABELS_TOPIC", help = help(
            "Label-feedback topic",
            DEFAULT_LABELS_TOPIC,
        ))]
        pub(crate) labels_topic: Option<String>,
        #[arg(long, env = "RISKSTREAM_DLQ_TOPIC", help = help("Dead-letter topic", DEFAULT_DLQ_TOPIC))]
        pub(crate) dlq_topic: Option<String>,
        #[arg(long, env = "RISKSTREAM_TOPIC_PARTITIONS", help = help(
            "Partitions of topics the worker creates",
            DEFAULT_TOPIC_PARTITIONS,
        ))]
        pub(crate) topic_partitions: Option<i32>,
        #[arg(long, env = "RISKSTREAM_MODEL", help = help(
            "Model: a directory, NAME/VERSION or NAME@alias under the models dir",
            DEFAULT_MODEL,
        ))]
        pub(crate) model: Option<String>,
        #[arg(long, env = "RISKSTREAM_MODELS_DIR", help = help(
            "Model registry directory",
            DEFAULT_MODELS_DIR,
        ))]
        pub(crate) models_dir: Option<PathBuf>,
        #[arg(long, env = "RISKSTREAM_DEVICE", value_enum, help = help(
            "Scoring device",
            enum_name(DeviceChoice::default()),
        ))]
        pub(crate) device: Option<DeviceChoice>,
        #[arg(long, env = "RISKSTREAM_BATCH_MAX", help = help(
            "Largest micro-batch, in records",
            ScoringConfig::DEFAULT_BATCH_MAX,
        ))]
        pub(crate) batch_max: Option<usize>,
        #[arg(long, env = "RISKSTREAM_LINGER_MS", help = help(
            "Longest a record waits for its batch to fill, ms; a batch is scored earlier once the consumer has nothing more buffered",
            ScoringConfig::DEFAULT_LINGER.as_millis(),
        ))]
        pub(crate) linger_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_QUEUE_RECORDS", help = help(
            "Capacity of each queue between stages, in records",
            DEFAULT_QUEUE_RECORDS,
        ))]
        pub(crate) queue_records: Option<usize>,
        /// Outputs sent to Kafka and not yet acknowledged, at most; the sink
        /// waits for acknowledgements beyond [default: queue_records].
        #[arg(long, env = "RISKSTREAM_MAX_IN_FLIGHT")]
        pub(crate) max_in_flight: Option<usize>,
        #[arg(long, env = "RISKSTREAM_LABELS_WAIT_MS", help = help(
            "Longest a batch waits for the label stream to catch up with it, ms",
            ScoringConfig::DEFAULT_LABELS_WAIT.as_millis(),
        ))]
        pub(crate) labels_wait_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_LABELS_LOAD_TIMEOUT_MS", help = help(
            "Longest scoring waits for the label history at start, ms",
            ScoringConfig::DEFAULT_LABELS_LOAD_TIMEOUT.as_millis(),
        ))]
        pub(crate) labels_load_timeout_ms: Option<u64>,
        /// Extra writer schemas (*.avsc) to accept on the input topic.
        #[arg(long, env = "RISKSTREAM_SCHEMA_DIR")]
        pub(crate) schema_dir: Option<PathBuf>,
        /// Confluent Schema Registry, http://[user:password@]host:port: decode `0x00`-framed
        /// input and frame the outputs that way (subjects `<topic>-value`).
        #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY_URL")]
        pub(crate) schema_registry_url: Option<String>,
        /// PEM file of the CA that signs an https schema registry's certificate
        /// (besides the system's roots).
        #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY_CA")]
        pub(crate) schema_registry_ca: Option<PathBuf>,
        /// Stop after this many records were handled (tests, benchmarks).
        #[arg(long, env = "RISKSTREAM_MAX_RECORDS")]
        pub(crate) max_records: Option<u64>,
        #[arg(long, env = "RISKSTREAM_METRICS_ADDR", help = help(
            "Address of the HTTP endpoint (/metrics, /healthz, /readyz); \"off\" disables it",
            DEFAULT_METRICS_ADDR,
        ))]
        pub(crate) metrics_addr: Option<String>,
        #[arg(long, env = "RISKSTREAM_STALL_TIMEOUT_MS", help = help(
            "/healthz fails when input is waiting but nothing was delivered for this long, ms; 0 = never",
            DEFAULT_STALL_TIMEOUT.as_millis(),
        ))]
        pub(crate) stall_timeout_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_DRAIN_TIMEOUT_MS", help = help(
            "Longest shutdown takes after SIGTERM, ms: deliveries still unsettled then are abandoned (not committed) and the process exits",
            SinkConfig::DEFAULT_DRAIN_TIMEOUT.as_millis(),
        ))]
        pub(crate) drain_timeout_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_DLQ_MAX_PAYLOAD_BYTES", help = help(
            "Bytes of the original payload a dead letter keeps (the rest is cut)",
            crate::sink::DEFAULT_DLQ_MAX_PAYLOAD,
        ))]
        pub(crate) dlq_max_payload_bytes: Option<usize>,
        /// Challenger model (NAME@alias, NAME/VERSION or a directory) for A/B and shadow scoring.
        #[arg(long, env = "RISKSTREAM_CHALLENGER")]
        pub(crate) challenger: Option<String>,
        #[arg(long, env = "RISKSTREAM_AB_SHARE", help = help(
            "Share of customers (stable hash of the key) the challenger decides",
            DEFAULT_AB_SHARE,
        ))]
        pub(crate) ab_share: Option<f64>,
        /// Shadow topic: the challenger scores every record there and never decides.
        #[arg(long, env = "RISKSTREAM_SHADOW_TOPIC")]
        pub(crate) shadow_topic: Option<String>,
        #[arg(long, env = "RISKSTREAM_REGISTRY_POLL_MS", help = help(
            "How often the registry is checked for moved aliases, ms; 0 = never",
            DEFAULT_REGISTRY_POLL.as_millis(),
        ))]
        pub(crate) registry_poll_ms: Option<u64>,
        /// librdkafka option passed through, `key=value` (repeatable), e.g.
        /// `security.protocol=SASL_SSL`. Wins over `RISKSTREAM_KAFKA_*` in the
        /// environment, which wins over `[kafka]` in the file.
        #[arg(long = "kafka", value_name = "KEY=VALUE")]
        #[serde(default, deserialize_with = "layer::kafka_table")]
        pub(crate) kafka: Vec<String>,
        #[command(flatten)]
        #[serde(default)]
        pub(crate) input: InputSection,
        #[command(flatten)]
        #[serde(default)]
        pub(crate) state: StateSection,
        #[command(flatten)]
        #[serde(default)]
        pub(crate) drift: DriftSection,
        #[command(flatten)]
        #[serde(default)]
        pub(crate) delivery: DeliverySection,
    }
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
    /// The sink's bound on unacknowledged outputs.
    pub max_in_flight: usize,
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
    pub group_protocol: GroupProtocol,
    pub partition_assignment: Assignment,
    pub delivery: crate::commit::DeliveryConfig,
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
    (
        "transactional.id",
        "derived from the group and --group-instance-id (--delivery exactly-once)",
    ),
    (
        "isolation.level",
        "every reader of riskstream's own topics reads committed records only",
    ),
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

/// A string setting or its default.
fn or(value: Option<String>, default: &str) -> String {
    value.unwrap_or_else(|| default.to_string())
}

/// A duration in milliseconds or its default.
fn ms(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_millis)
}

/// A duration in milliseconds where 0 means "never" (None).
fn ms_or_never(value: Option<u64>, default: Duration) -> Option<Duration> {
    Some(ms(value, default)).filter(|d| !d.is_zero())
}

/// The group protocol. Under KIP-848 the broker sets the session timeout
/// and assigns: a session timeout or assignor set anyway is an error, not
/// silently dropped.
fn group_protocol(s: &RunArgs, errors: &mut Vec<String>) -> GroupProtocol {
    let protocol = s.group_protocol.unwrap_or_default();
    if protocol == GroupProtocol::Consumer {
        if s.session_timeout_ms.is_some() {
            errors.push("session_timeout_ms: not used with group_protocol = consumer (the broker's group.consumer.session.timeout.ms applies)".into());
        }
        if s.partition_assignment.is_some() {
            errors.push("partition_assignment: not used with group_protocol = consumer (the broker assigns; pass group.remote.assignor through --kafka to pick its assignor)".into());
        }
    }
    protocol
}

/// The HTTP endpoint's address; None when "off".
fn metrics_addr(addr: Option<String>, errors: &mut Vec<String>) -> Option<std::net::SocketAddr> {
    match addr.as_deref().unwrap_or(DEFAULT_METRICS_ADDR) {
        "off" | "" => None,
        a => a
            .parse()
            .map_err(|_| errors.push(format!("metrics_addr: {a:?} is not HOST:PORT")))
            .ok(),
    }
}

impl RunConfig {
    /// Layers defaults < file < environment < flags and validates
    /// everything at once.
    pub fn resolve(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => RunArgs::default(),
        };
        // clap has laid the environment under the flags already, but for
        // librdkafka's open-ended `RISKSTREAM_KAFKA_*` variables.
        let mut upper = args.clone();
        upper.kafka = args.kafka.clone().over(layer::kafka_env());
        let mut errors = Vec::new();
        let cfg = Self::layer(upper.over(file), &mut errors);
        cfg.check(&mut errors);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The merged settings with the defaults where unset.
    fn layer(s: RunArgs, errors: &mut Vec<String>) -> Self {
        let protocol = group_protocol(&s, errors);
        let input_topic = or(s.input_topic, DEFAULT_INPUT_TOPIC);
        let group = or(s.group, DEFAULT_GROUP);
        let queue_records = s.queue_records.unwrap_or(DEFAULT_QUEUE_RECORDS);
        RunConfig {
            brokers: or(s.brokers, DEFAULT_BROKERS),
            output_topic: or(s.output_topic, DEFAULT_OUTPUT_TOPIC),
            labels_topic: or(s.labels_topic, DEFAULT_LABELS_TOPIC),
            dlq_topic: or(s.dlq_topic, DEFAULT_DLQ_TOPIC),
            model: or(s.model, DEFAULT_MODEL),
            models_dir: s
                .models_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR)),
            device: s.device.unwrap_or_default(),
            batch_max: s.batch_max.unwrap_or(ScoringConfig::DEFAULT_BATCH_MAX),
            linger: ms(s.linger_ms, ScoringConfig::DEFAULT_LINGER),
            queue_records,
            // Derived: as many unacknowledged outputs as a queue holds.
            max_in_flight: s.max_in_flight.unwrap_or(queue_records),
            labels_wait: ms(s.labels_wait_ms, ScoringConfig::DEFAULT_LABELS_WAIT),
            labels_load_timeout: ms(
                s.labels_load_timeout_ms,
                ScoringConfig::DEFAULT_LABELS_LOAD_TIMEOUT,
            ),
            session_timeout_ms: s
                .session_timeout_ms
                .unwrap_or(SourceConfig::DEFAULT_SESSION_TIMEOUT_MS),
            topic_partitions: s.topic_partitions.unwrap_or(DEFAULT_TOPIC_PARTITIONS),
            schema_dir: s.schema_dir,
            max_records: s.max_records,
            metrics_addr: metrics_addr(s.metrics_addr, errors),
            kafka: layer::kafka_options(&s.kafka, errors),
            schema_registry_url: s.schema_registry_url,
            schema_registry_ca: s.schema_registry_ca,
            drain_timeout: ms(s.drain_timeout_ms, SinkConfig::DEFAULT_DRAIN_TIMEOUT),
            dlq_max_payload_bytes: s
                .dlq_max_payload_bytes
                .unwrap_or(crate::sink::DEFAULT_DLQ_MAX_PAYLOAD),
            stall_timeout: ms_or_never(s.stall_timeout_ms, DEFAULT_STALL_TIMEOUT),
            serving: ServingConfig {
                challenger: s.challenger,
                ab_share: s.ab_share.unwrap_or(DEFAULT_AB_SHARE),
                shadow_topic: s.shadow_topic,
                registry_poll: ms_or_never(s.registry_poll_ms, DEFAULT_REGISTRY_POLL),
            },
            group_instance_id: s.group_instance_id.filter(|id| !id.is_empty()),
            group_protocol: protocol,
            partition_assignment: s.partition_assignment.unwrap_or_default(),
            input: s.input.resolve(errors),
            state: s.state.resolve(&input_topic, &group),
            drift: s.drift.resolve(errors),
            delivery: s.delivery.resolve(errors),
            input_topic,
            group,
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
        if self.delivery.exactly_once() && !self.state.enabled {
            errors.push(
                "delivery.guarantee = exactly_once needs the state changelog (state.enabled = true): an aborted transaction rewinds customer state from it"
                    .into(),
            );
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
        if self.max_in_flight == 0 {
            errors.push("max_in_flight: must be at least 1".into());
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
            max_in_flight: self.max_in_flight,
            drain_timeout: self.drain_timeout,
            dlq_max_payload: self.dlq_max_payload_bytes,
            max_records: self.max_records,
            transactions: self.delivery.exactly_once().then(|| {
                crate::sink::TransactionSettings::new(
                    &self.group,
                    self.group_instance_id.as_deref(),
                )
            }),
        }
    }

    /// Exactly-once: the scoring stage's commit interval and the records
    /// after which a transaction commits sooner (None: at-least-once).
    pub fn transactions(&self) -> Option<(Duration, usize)> {
        self.delivery
            .exactly_once()
            .then_some((self.delivery.commit_interval, self.max_in_flight))
    }

    /// The librdkafka keys in use, values hidden (secrets never reach logs).
    pub fn kafka_keys(&self) -> Vec<&str> {
        self.kafka.keys().map(String::as_str).collect()
    }
}

/// The config file: [`RunArgs`] as TOML.
pub(crate) fn load_file(path: &Path) -> Result<RunArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The error as `main` prints it: the message and its causes.
    fn chain(e: ConfigError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

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
        let err = chain(RunConfig::resolve(&args).unwrap_err());
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
        let err = chain(RunConfig::resolve(&args).unwrap_err());
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

    /// Tests that set or read (through clap) `RISKSTREAM_*` variables.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// `riskstream run ARGS`, parsed as the binary parses it (flags over
    /// the environment) and resolved.
    fn run(args: &[&str]) -> Result<RunConfig, String> {
        use clap::Parser;
        let argv = ["riskstream", "run"].iter().chain(args);
        match crate::cli::Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .cmd
        {
            crate::cli::Cmd::Run(a) => RunConfig::resolve(&a).map_err(chain),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn each_setting_layers_default_then_file_then_environment_then_flag() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "linger_ms = 7\n[state]\nflush_interval_ms = 70\n[drift]\nglobal = false\n[input]\nmax_id_bytes = 700"
        )
        .unwrap();
        let path = f.path().to_str().unwrap().to_string();
        let seen = |c: RunConfig| {
            (
                c.linger.as_millis() as u64,
                c.state.flush_interval.as_millis() as u64,
                c.drift.global,
                c.input.max_id_bytes,
            )
        };
        let default = seen(run(&[]).unwrap());
        assert_eq!(
            default,
            (
                ScoringConfig::DEFAULT_LINGER.as_millis() as u64,
                StateConfig::DEFAULT_FLUSH_INTERVAL.as_millis() as u64,
                crate::drift::DriftConfig::DEFAULT_GLOBAL,
                crate::source::guard::InputLimits::DEFAULT_MAX_ID_BYTES,
            )
        );
        let file = ["--config", path.as_str()];
        assert_eq!(seen(run(&file).unwrap()), (7, 70, false, 700), "file");
        let vars = [
            ("RISKSTREAM_LINGER_MS", "8"),
            ("RISKSTREAM_STATE_FLUSH_INTERVAL_MS", "80"),
            ("RISKSTREAM_DRIFT_GLOBAL", "true"),
            ("RISKSTREAM_MAX_ID_BYTES", "800"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let env = seen(run(&file).unwrap());
        let flags = [
            "--linger-ms",
            "9",
            "--state-flush-interval-ms",
            "90",
            "--drift-global=false",
            "--max-id-bytes",
            "900",
        ];
        let flag = seen(run(&[&file[..], &flags[..]].concat()).unwrap());
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        assert_eq!(env, (8, 80, true, 800), "environment over file");
        assert_eq!(flag, (9, 90, false, 900), "flags over environment");
    }

    #[test]
    fn the_help_shows_the_default_the_resolution_applies() {
        use clap::CommandFactory;
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let mut cli = crate::cli::Cli::command();
        cli.build();
        let run_cmd = cli.find_subcommand("run").unwrap();
        let unset = |mut c: RunConfig| {
            c.kafka.clear();
            format!("{c:?}")
        };
        let defaults = unset(run(&[]).unwrap());
        let mut shown = Vec::new();
        for arg in run_cmd.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some(value) = help
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(v, _)| v.to_string())
            else {
                continue;
            };
            let long = arg.get_long().unwrap();
            // Defaults derived from other settings.
            if value.starts_with('<') || value == "queue_records" {
                continue;
            }
            let flag = format!("--{long}={value}");
            let c = run(&[flag.as_str()]).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert_eq!(unset(c), defaults, "{flag} is the default the help shows");
            shown.push(long.to_string());
        }
        for long in [
            "brokers",
            "batch-max",
            "linger-ms",
            "queue-records",
            "metrics-addr",
            "group-protocol",
            "max-amount",
            "resync-after",
            "state-enabled",
            "state-flush-interval-ms",
            "drift-topic",
            "drift-scales",
            "drift-global",
            "drift-performance-max-tracked",
        ] {
            assert!(shown.iter().any(|s| s == long), "{long}: {shown:?}");
        }
        let batch_max = run_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some("batch-max"))
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            batch_max.ends_with(&format!("[default: {}]", ScoringConfig::DEFAULT_BATCH_MAX)),
            "{batch_max}"
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn one_name_per_setting_for_state_and_drift_scope() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[state]\nenabled = false\n[drift]\nglobal = false").unwrap();
        let path = f.path().to_str().unwrap().to_string();
        let c = run(&["--config", path.as_str()]).unwrap();
        assert!(!c.state.enabled && !c.drift.global);
        let c = run(&[
            "--config",
            path.as_str(),
            "--state-enabled",
            "--drift-global",
        ])
        .unwrap();
        assert!(c.state.enabled && c.drift.global, "a bare flag is true");
        let c = run(&["--state-enabled", "false", "--drift-global", "no"]).unwrap();
        assert!(!c.state.enabled && !c.drift.global);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "config = \"other.toml\"").unwrap();
        let err = run(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(err.contains("config"), "the file cannot name a file: {err}");
    }

    #[test]
    fn max_in_flight_is_its_own_setting_derived_from_queue_records() {
        let c = RunConfig::resolve(&RunArgs {
            queue_records: Some(1000),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.max_in_flight, c.sink().max_in_flight), (1000, 1000));
        let c = RunConfig::resolve(&RunArgs {
            queue_records: Some(1000),
            max_in_flight: Some(64),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.queue_records, c.sink().max_in_flight), (1000, 64));
        let err = RunConfig::resolve(&RunArgs {
            max_in_flight: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(chain(err).contains("max_in_flight"));
    }

    #[test]
    fn exactly_once_comes_from_the_delivery_table_or_flag_and_needs_the_changelog() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let c = run(&[]).unwrap();
        assert!(!c.delivery.exactly_once() && c.sink().transactions.is_none());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "group = \"g\"\n[delivery]\nguarantee = \"exactly_once\"\ncommit_interval_ms = 250"
        )
        .unwrap();
        let path = f.path().to_str().unwrap().to_string();
        let c = run(&["--config", path.as_str(), "--group-instance-id", "pod-3"]).unwrap();
        assert_eq!(
            c.transactions(),
            Some((Duration::from_millis(250), c.max_in_flight))
        );
        let t = c.sink().transactions.expect("transactional");
        assert_eq!(t.id, "riskstream-g-pod-3", "stable across restarts");
        let c = run(&["--config", path.as_str(), "--delivery", "at-least-once"]).unwrap();
        assert!(!c.delivery.exactly_once(), "the flag wins");
        let c = run(&["--delivery", "exactly-once"]).unwrap();
        assert_eq!(c.delivery.commit_interval, Duration::from_millis(100));
        let err = run(&["--delivery", "exactly-once", "--state-enabled=false"]).unwrap_err();
        assert!(err.contains("state.enabled"), "{err}");
        let err = run(&["--delivery", "exactly-once", "--commit-interval-ms", "0"]).unwrap_err();
        assert!(err.contains("commit_interval_ms"), "{err}");
        let err = run(&["--kafka", "transactional.id=x"]).unwrap_err();
        assert!(err.contains("transactional.id"), "{err}");
    }
}
