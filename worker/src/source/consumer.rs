//! The input consumer: group membership, the rebalance callbacks (drain
//! in-flight work of revoked partitions, state rebuild of assigned ones)
//! and consumer-lag statistics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::guard::InputLimits;
use super::{OffsetTracker, SourceError};
use crate::kafka::client_config;
use crate::metrics::Metrics;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The source stage's settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub brokers: String,
    /// librdkafka pass-through options (may hold secrets: never logged).
    pub kafka: BTreeMap<String, String>,
    pub group: String,
    pub input_topic: String,
    pub session_timeout_ms: u64,
    /// Longest a revoke waits for the revoked partitions' in-flight records.
    pub revoke_drain: Duration,
    /// Bounds on what a record may carry.
    pub input: InputLimits,
}

impl SourceConfig {
    pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 6000;
    /// Revoke drains wait at most this long, whatever the drain time.
    pub const MAX_REVOKE_DRAIN: Duration = Duration::from_secs(60);

    /// Cross-field checks; problems are appended to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if !(1000..=300_000).contains(&self.session_timeout_ms) {
            errors.push(format!(
                "session_timeout_ms: {} not in 1000..=300000",
                self.session_timeout_ms
            ));
        }
    }
}

/// Consumer context: drains in-flight work of revoked partitions before
/// they are given up, then commits what was delivered.
pub struct SourceContext {
    tracker: Arc<OffsetTracker>,
    topic: String,
    /// Where the consumer-lag gauge goes.
    metrics: Arc<Metrics>,
    /// Per assigned partition, the committed offset below which records are
    /// replayed into customer state without output (state rebuild).
    replay_until: std::sync::Mutex<HashMap<i32, i64>>,
    /// Partitions currently assigned (readiness, logs, and the scoring
    /// thread's eviction watermark).
    pub assigned: Arc<std::sync::Mutex<Vec<i32>>>,
    pub joined: AtomicBool,
    /// Longest a revoke waits for the revoked partitions' in-flight records.
    revoke_drain: Duration,
}

impl ClientContext for SourceContext {
    /// librdkafka statistics (every `statistics.interval.ms`): per-partition
    /// consumer lag of the input topic, for `riskstream_consumer_lag`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(t) = statistics.topics.get(&self.topic) {
            let mut lag: Vec<(i32, i64)> = t
                .partitions
                .iter()
                .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0)
                .map(|(p, part)| (*p, part.consumer_lag))
                .collect();
            lag.sort_unstable();
            self.metrics.set_consumer_lag(&self.topic, &lag);
        }
    }
}

impl SourceContext {
    /// Whether any assigned partition is still replaying its history
    /// (its position has not reached the committed offset yet).
    pub fn rebuilding(&self, consumer: &BaseConsumer<Self>) -> bool {
        let pending: Vec<(i32, i64)> = match self.replay_until.lock() {
            Ok(m) => m.iter().map(|(p, u)| (*p, *u)).collect(),
            Err(_) => return false,
        };
        if pending.is_empty() {
            return false;
        }
        let Ok(pos) = consumer.position() else {
            return true;
        };
        pending.iter().any(|(p, until)| {
            !matches!(
                pos.find_partition(&self.topic, *p).map(|e| e.offset()),
                Some(Offset::Offset(o)) if o >= *until
            )
        })
    }

    /// Offset below which a record of `partition` is replayed, not scored.
    pub(crate) fn replay_bound(&self, partition: i32, offset: i64) -> Option<i64> {
        let mut m = self.replay_until.lock().ok()?;
        match m.get(&partition) {
            Some(&until) if offset < until => Some(until),
            Some(_) => {
                m.remove(&partition);
                tracing::info!(
                    partition,
                    "customer state rebuilt; scoring resumes at the committed offset"
                );
                None
            }
            None => None,
        }
    }

    /// Rewrites a new assignment so each partition with a committed offset
    /// starts from its beginning: the records before the committed offset
    /// rebuild customer state (no output), the rest are scored. This also
    /// avoids resuming inside a record batch, which Tansu 0.6 answers with
    /// the next batch (losing the records in between).
    fn prepare_assignment(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read committed offsets; resuming without a state rebuild");
                return;
            }
        };
        let mut until = self.replay_until.lock().unwrap_or_else(|e| e.into_inner());
        for el in committed.elements_for_topic(&self.topic) {
            if let Offset::Offset(c) = el.offset() {
                if c > 0 {
                    until.insert(el.partition(), c);
                    if let Err(e) =
                        tpl.set_partition_offset(&self.topic, el.partition(), Offset::Beginning)
                    {
                        tracing::warn!(partition = el.partition(), error = %e, "cannot rewind for the state rebuild");
                        until.remove(&el.partition());
                    }
                }
            }
        }
        if !until.is_empty() {
            tracing::info!(replay_until = ?*until, "rebuilding customer state from the partitions' history before scoring");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.prepare_assignment(consumer, tpl);
                let r = Rebalance::Assign(tpl);
                self.pre_rebalance(consumer, &r);
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "cannot take the assigned partitions");
                }
                self.post_rebalance(consumer, &r);
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let r = Rebalance::Revoke(tpl);
                self.pre_rebalance(consumer, &r);
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
                if let Ok(mut m) = self.replay_until.lock() {
                    m.clear();
                }
                self.post_rebalance(consumer, &r);
            }
            other => {
                let code: rdkafka::types::RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "rebalance error");
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            let t0 = Instant::now();
            let drained = self.tracker.wait_drained(&parts, self.revoke_drain);
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit on revoke");
            }
            self.tracker.remove(&parts);
            if let Ok(mut a) = self.assigned.lock() {
                a.retain(|p| !parts.contains(p));
            }
            if drained {
                tracing::info!(partitions = ?parts, drain_ms = t0.elapsed().as_millis() as u64, "partitions revoked after draining in-flight records");
            } else {
                tracing::warn!(partitions = ?parts, "partitions revoked before in-flight records drained; they will be re-scored by the next owner");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
                if let Ok(mut a) = self.assigned.lock() {
                    a.extend(parts);
                    a.sort_unstable();
                    a.dedup();
                }
                self.joined.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

pub type InputConsumer = BaseConsumer<SourceContext>;

/// Creates the group consumer and subscribes it to the input topic.
pub fn input_consumer(
    cfg: &SourceConfig,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
) -> Result<Arc<InputConsumer>, SourceError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("group.id", &cfg.group)
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout_ms / 3).max(100).to_string(),
        )
        .set("fetch.wait.max.ms", crate::kafka::FETCH_WAIT_MAX_MS)
        .set("statistics.interval.ms", "5000");
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    // The guarantee, after the user's options (config refuses these keys).
    c.set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "range");
    let ctx = SourceContext {
        tracker,
        topic: cfg.input_topic.clone(),
        replay_until: std::sync::Mutex::new(HashMap::default()),
        metrics,
        assigned: Arc::new(std::sync::Mutex::new(Vec::new())),
        joined: AtomicBool::new(false),
        revoke_drain: cfg.revoke_drain,
    };
    let consumer: InputConsumer = c.create_with_context(ctx).map_err(SourceError::Create)?;
    consumer
        .subscribe(&[&cfg.input_topic])
        .map_err(|source| SourceError::Subscribe {
            topic: cfg.input_topic.clone(),
            source,
        })?;
    Ok(Arc::new(consumer))
}

pub(crate) fn is_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
        )
    )
}
