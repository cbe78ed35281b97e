//! The input consumer: group membership (classic with cooperative-sticky,
//! or KIP-848; optionally static), the rebalance callbacks (drain in-flight work of revoked
//! partitions; restore the state of assigned ones from the changelog while
//! they are paused, the other partitions scoring on) and consumer-lag
//! statistics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::guard::InputLimits;
use super::lifecycle::Partitions;
use super::{Chunk, SourceError};
use crate::commit::Commits;
use crate::kafka::client_config;
use crate::message::{StateOp, Work};
use crate::metrics::Metrics;
use crate::state::restore::{Restored, Restorer};
use crate::state::StateError;

/// The group's partition assignor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Incremental: a scale step moves only the partitions that change
    /// owner; the others keep scoring (KIP-429).
    #[default]
    CooperativeSticky,
    /// Eager: every member gives up every partition at every join or
    /// leave, and restores them all (for brokers or groups without
    /// cooperative rebalancing).
    Range,
}

impl Assignment {
    fn librdkafka_name(self) -> &'static str {
        match self {
            Assignment::CooperativeSticky => "cooperative-sticky",
            Assignment::Range => "range",
        }
    }
}

/// The consumer group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GroupProtocol {
    /// The client-side protocol: the group's leader assigns with
    /// `partition_assignment`; session timeout set by the client.
    #[default]
    Classic,
    /// KIP-848 (Kafka 4.0+): the broker assigns (incrementally, with its
    /// `group.consumer.assignors`, `uniform` by default) and sets the session
    /// timeout (`group.consumer.session.timeout.ms`).
    Consumer,
}

impl GroupProtocol {
    fn librdkafka_name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

/// The source stage's settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub brokers: String,
    /// librdkafka pass-through options (may hold secrets: never logged).
    pub kafka: BTreeMap<String, String>,
    pub group: String,
    pub input_topic: String,
    pub session_timeout_ms: u64,
    /// Static membership (`group.instance.id`): a restarted instance with
    /// the same id gets its partitions back without a rebalance.
    pub group_instance_id: Option<String>,
    pub group_protocol: GroupProtocol,
    /// The assignor (classic protocol only).
    pub assignment: Assignment,
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

/// A finished read of a partition's changelog, for the source thread.
pub struct RestoreDone {
    pub partition: i32,
    pub(super) generation: u64,
    /// The group's committed offset (the next record to read), if any.
    pub committed: Option<i64>,
    /// The input partition's low watermark after the read (None: the
    /// lookup failed); a resume never seeks below it.
    pub input_low: Option<i64>,
    pub result: Result<Restored, StateError>,
}

/// The changelog side of the consumer context (state on): reads
/// changelogs on a thread of its own; the source takes the results.
pub struct StateRestore {
    restorer: Arc<Mutex<Restorer>>,
    /// The input topic (its low watermarks are looked up with each read).
    input: Arc<str>,
    done: Arc<Mutex<Vec<RestoreDone>>>,
    ready: Arc<AtomicBool>,
}

impl StateRestore {
    pub fn new(restorer: Restorer, input: &str) -> Self {
        Self {
            restorer: Arc::new(Mutex::new(restorer)),
            input: input.into(),
            done: Arc::default(),
            ready: Arc::default(),
        }
    }

    /// Finished reads (taken once; the source drops stale ones).
    pub(crate) fn take_done(&self) -> Vec<RestoreDone> {
        if !self.ready.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the partitions' changelogs (read `generation`) on a thread of
    /// its own.
    fn start(&self, parts: Vec<(i32, Option<i64>)>, generation: u64) {
        let (restorer, done, ready) =
            (self.restorer.clone(), self.done.clone(), self.ready.clone());
        let input = self.input.clone();
        let spawned = std::thread::Builder::new()
            .name("state-restore".into())
            .spawn(move || {
                for (partition, committed) in parts {
                    let r = restorer.lock().unwrap_or_else(|e| e.into_inner());
                    let result = r.read(partition);
                    let input_low = r.low_watermark(&input, partition);
                    drop(r);
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(RestoreDone {
                            partition,
                            generation,
                            committed,
                            input_low,
                            result,
                        });
                    ready.store(true, Ordering::Release);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the state restore thread");
        }
    }
}

/// Consumer context: the rebalance callbacks. A revoke drains the revoked
/// partitions' records in flight and commits; an assignment starts each
/// partition's life ([`Partitions`]): restore, replay, score.
pub struct SourceContext {
    commits: Arc<Commits>,
    topic: String,
    /// The source's gathered records: a revoke hands over what is held
    /// for the revoked partitions before it waits for them.
    pub(super) handover: Arc<Mutex<Chunk>>,
    /// The changelog restore (None: state off, assignments replay history).
    pub state: Option<StateRestore>,
    /// Every assigned partition's phase.
    pub(crate) partitions: Partitions,
    /// Where the consumer-lag gauge goes.
    metrics: Arc<Metrics>,
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
    /// Whether any assigned partition is still restoring or replaying its
    /// history (its position has not reached the committed offset yet).
    pub fn rebuilding(&self, consumer: &BaseConsumer<Self>) -> bool {
        if self.partitions.any_restoring() {
            return true;
        }
        let pending = self.partitions.replaying();
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

    /// Hands `op` to scoring after what the source holds; false when
    /// scoring has gone.
    pub(super) fn hand_over(&self, op: Option<StateOp>) -> bool {
        let mut chunk = self.handover.lock().unwrap_or_else(|e| e.into_inner());
        match op {
            Some(op) => chunk.control(op),
            None => chunk.flush(),
        }
    }

    /// The group's committed offsets of the assigned partitions.
    fn committed_of(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Vec<(i32, Option<i64>)> {
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read committed offsets; taking the partitions as uncommitted");
                tpl.clone()
            });
        committed
            .elements_for_topic(&self.topic)
            .iter()
            .map(|el| match el.offset() {
                Offset::Offset(c) if c >= 0 => (el.partition(), Some(c)),
                _ => (el.partition(), None),
            })
            .collect()
    }

    /// Takes the assigned partitions paused and starts reading their
    /// changelogs; the source resumes each once its state is in.
    fn assign_with_restore(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
        state: &StateRestore,
        cooperative: bool,
    ) {
        if tpl.count() == 0 {
            // An incremental assignment that adds nothing.
            take_assigned(consumer, tpl, cooperative);
            return;
        }
        let parts = self.committed_of(consumer, tpl);
        if !take_assigned(consumer, tpl, cooperative) {
            return;
        }
        if let Err(e) = consumer.pause(tpl) {
            tracing::warn!(error = %e, "cannot pause the assigned partitions during their restore");
        }
        tracing::info!(committed = ?parts, cooperative, "restoring the state of newly assigned partitions from the changelog");
        let ids: Vec<i32> = parts.iter().map(|(p, _)| *p).collect();
        let generation = self.partitions.restoring(&ids);
        state.start(parts, generation);
    }

    /// Exactly-once, after an abort: `partitions` (assigned) are paused and
    /// their changelogs read again; each resumes at its committed offset.
    pub(super) fn restore_again(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let Some(state) = &self.state else {
            return;
        };
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.topic, *p);
        }
        if let Err(e) = consumer.pause(&tpl) {
            tracing::warn!(error = %e, "cannot pause the partitions being rewound");
        }
        let parts = self.committed_of(consumer, &tpl);
        let generation = self.partitions.restoring(partitions);
        state.start(parts, generation);
    }

    /// Revoked partitions under exactly-once: a transaction covering
    /// everything handed over so far is committed before they go; if it
    /// cannot be (or the assignment was lost: another member may own them
    /// already), the open transaction is aborted and the rest rewound.
    fn revoke_transactional(&self, consumer: &BaseConsumer<Self>, parts: &[i32]) -> bool {
        if consumer.assignment_lost() {
            tracing::warn!(partitions = ?parts, "assignment lost: the open transaction is aborted");
            self.commits.request_rewind();
            return false;
        }
        if self.commits.is_closed() {
            // Shutdown: the sink has stopped after the last transaction,
            // which carried everything handed over.
            return true;
        }
        let barrier = self.commits.barrier();
        let committed = self.hand_over(Some(StateOp::Commit(barrier)))
            && self.commits.wait_barrier(barrier, self.revoke_drain);
        if !committed {
            self.commits.request_rewind();
        }
        committed
    }

    /// Rewrites a new assignment so each partition with a committed offset
    /// starts from its beginning: the records before the committed offset
    /// rebuild customer state (no output), the rest are scored.
    fn prepare_assignment(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let committed = self.committed_of(consumer, tpl);
        let mut replays = Vec::new();
        for (p, c) in committed {
            let Some(c) = c.filter(|c| *c > 0) else {
                continue;
            };
            match tpl.set_partition_offset(&self.topic, p, Offset::Beginning) {
                Ok(()) => {
                    self.partitions.replay(p, c);
                    replays.push((p, c));
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot rewind for the state rebuild")
                }
            }
        }
        if !replays.is_empty() {
            tracing::info!(replay_until = ?replays, "rebuilding customer state from the partitions' history before scoring");
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
        // Incremental under cooperative-sticky and under KIP-848 (librdkafka
        // reports the `consumer` group protocol as cooperative): the event
        // lists only the partitions added or revoked.
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match (err, &self.state) {
            (E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, Some(state)) => {
                let r = Rebalance::Assign(tpl);
                self.pre_rebalance(consumer, &r);
                self.assign_with_restore(consumer, tpl, state, cooperative);
                self.post_rebalance(consumer, &r);
            }
            (E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, None) => {
                self.prepare_assignment(consumer, tpl);
                let r = Rebalance::Assign(tpl);
                self.pre_rebalance(consumer, &r);
                take_assigned(consumer, tpl, cooperative);
                self.post_rebalance(consumer, &r);
            }
            (E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, _) => {
                let r = Rebalance::Revoke(tpl);
                self.pre_rebalance(consumer, &r);
                let res = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = res {
                    tracing::warn!(error = %e, "unassign failed");
                }
                self.post_rebalance(consumer, &r);
            }
            (other, _) => {
                let code: rdkafka::types::RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "rebalance error");
            }
        }
        // The partitions this instance keeps were paused by librdkafka
        // around this callback; those being restored stay paused (the
        // source wakes them when it resumes them).
        let assigned = self.assigned.lock().map(|a| a.clone()).unwrap_or_default();
        self.metrics.partitions_assigned.set(assigned.len() as i64);
        let kept: Vec<i32> = assigned
            .into_iter()
            .filter(|p| !self.partitions.is_restoring(*p))
            .collect();
        wake_fetchers(consumer, &self.topic, &kept);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            let t0 = Instant::now();
            // What the source holds goes to scoring first, then the state
            // of everything scored is written out (so both can settle).
            let drained = if self.commits.exactly_once() {
                self.revoke_transactional(consumer, &parts)
            } else {
                self.hand_over(self.state.as_ref().map(|_| StateOp::Flush));
                self.commits.revoke(&parts, self.revoke_drain)
            };
            self.partitions.revoke(&parts);
            if self.state.is_some() {
                self.hand_over(Some(StateOp::Revoke(parts.clone())));
            }
            if let Ok(mut a) = self.assigned.lock() {
                a.retain(|p| !parts.contains(p));
            }
            if drained {
                tracing::info!(partitions = ?parts, drain_ms = t0.elapsed().as_millis() as u64, "partitions revoked after draining in-flight records");
            } else {
                tracing::warn!(partitions = ?parts, "partitions revoked before in-flight records were committed; the next owner scores them (again, under at-least-once)");
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
                self.partitions.assigned(&parts);
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

/// Takes the partitions of an assignment event (only the added ones under
/// the cooperative protocol); false (logged) if librdkafka refused.
fn take_assigned(
    consumer: &BaseConsumer<SourceContext>,
    tpl: &TopicPartitionList,
    cooperative: bool,
) -> bool {
    let res = if cooperative {
        consumer.incremental_assign(tpl)
    } else {
        consumer.assign(tpl)
    };
    if let Err(e) = &res {
        tracing::error!(error = %e, "cannot take the assigned partitions");
    }
    res.is_ok()
}

/// How long one wake-up request may take.
const WAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// Wakes the broker threads that fetch `partitions` after they were
/// resumed. librdkafka pauses every assigned partition around each
/// rebalance callback (and the source pauses a partition during its
/// restore), and a resume only flips a flag: a broker thread with nothing
/// else to fetch sleeps until its next timeout, up to a second
/// (`rd_kafka_max_block_ms`), and every resumed partition stops that
/// long; seen as a 1.0–1.1 s stop of the partitions that kept their owner
/// at each cooperative rebalance. Any request to a broker wakes its
/// thread: one watermark query per leader of `partitions` (after a
/// metadata request, which also lets librdkafka's main thread apply the
/// resume first). Failures only cost the wait, logged at debug.
pub(crate) fn wake_fetchers<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) {
    if partitions.is_empty() {
        return;
    }
    let md = match consumer.fetch_metadata(Some(topic), WAKE_TIMEOUT) {
        Ok(md) => md,
        Err(e) => {
            tracing::debug!(error = %e, "no metadata to wake the fetchers");
            return;
        }
    };
    // One partition per leader.
    let by_leader: BTreeMap<i32, i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .filter(|p| partitions.contains(&p.id()))
        .map(|p| (p.leader(), p.id()))
        .collect();
    for p in by_leader.into_values() {
        if let Err(e) = consumer.fetch_watermarks(topic, p, WAKE_TIMEOUT) {
            tracing::debug!(partition = p, error = %e, "cannot wake the fetcher");
        }
    }
}

/// Creates the group consumer and subscribes it to the input topic.
/// `restorer`: the changelog reader (None: state off).
/// `to_scoring`: where the source (and a revoke) hands records over.
pub fn input_consumer(
    cfg: &SourceConfig,
    commits: Arc<Commits>,
    metrics: Arc<Metrics>,
    restorer: Option<Restorer>,
    to_scoring: std::sync::mpsc::SyncSender<Work>,
) -> Result<Arc<InputConsumer>, SourceError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("group.id", &cfg.group)
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        .set("fetch.wait.max.ms", crate::kafka::INPUT_FETCH_WAIT_MS);
    // KIP-848: the broker sets the session and heartbeat (librdkafka
    // refuses these keys with `group.protocol=consumer`).
    if cfg.group_protocol == GroupProtocol::Classic {
        c.set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout_ms / 3).max(100).to_string(),
            );
    }
    if let Some(id) = &cfg.group_instance_id {
        c.set("group.instance.id", id);
    }
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    // The guarantee, after the user's options (config refuses these keys).
    // Under KIP-848 the broker's assignor decides (`group.remote.assignor`,
    // a pass-through option, picks one); every rebalance is incremental.
    // Exactly-once: offsets are committed only in transactions.
    c.set("enable.auto.commit", (!commits.exactly_once()).to_string())
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("group.protocol", cfg.group_protocol.librdkafka_name());
    if cfg.group_protocol == GroupProtocol::Classic {
        c.set(
            "partition.assignment.strategy",
            cfg.assignment.librdkafka_name(),
        );
    }
    let ctx = SourceContext {
        commits: commits.clone(),
        topic: cfg.input_topic.clone(),
        partitions: Partitions::default(),
        metrics,
        assigned: Arc::new(std::sync::Mutex::new(Vec::new())),
        joined: AtomicBool::new(false),
        revoke_drain: cfg.revoke_drain,
        handover: Arc::new(Mutex::new(Chunk::new(to_scoring))),
        state: restorer.map(|r| StateRestore::new(r, &cfg.input_topic)),
    };
    let consumer: InputConsumer = c.create_with_context(ctx).map_err(SourceError::Create)?;
    consumer
        .subscribe(&[&cfg.input_topic])
        .map_err(|source| SourceError::Subscribe {
            topic: cfg.input_topic.clone(),
            source,
        })?;
    let consumer = Arc::new(consumer);
    commits.attach(&consumer);
    Ok(consumer)
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
