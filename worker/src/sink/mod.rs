//! Sink: the idempotent producer that writes scored records and dead
//! letters, and reports each delivery to [`Commits`].
//!
//! Records are handed to librdkafka without blocking; each carries its
//! [`Origin`] as the delivery opaque. Acknowledgements are settled in the
//! producer's delivery callback ([`SinkContext::delivery`], on librdkafka's
//! polling thread): only when a record's output is acknowledged is its input
//! reported done to [`Commits`], which decides what is committed. No future, channel or wake-up per record.
//! A full producer queue or too many records in flight means "wait a
//! millisecond, then retry", never an error.
//!
//! A failed delivery (librdkafka already retried it) is classified
//! ([`classify`]): transient errors are re-sent with backoff; errors of the
//! record itself (too large for the producer or the topic, invalid
//! timestamp, rejected record) send it to the dead-letter topic as a
//! truncated copy with the reason; errors of the topic or cluster
//! (authorisation, unknown topic) stop the worker with what to fix. On
//! shutdown the sink settles deliveries for at most `drain_timeout`, then
//! says what it abandoned (their offsets are not committed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commit::Commits;
use crate::kafka::client_config;
use crate::message::{now_ms, DeadLetter, SinkItem};
use crate::metrics::events::{
    ChangelogRefused, DeadLetterLost, DeadLetterReason, DeadLettered, DeliveryRetried,
    DrainAbandoned, Emit as _, RetryReason,
};
use crate::metrics::Metrics;
use crate::outcome::{decide, Domain, Outcome};

mod transaction;
use transaction::Refused;
pub use transaction::TransactionSettings;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer")]
    Create(#[source] KafkaError),
    #[error("fatal producer error (check brokers, credentials and topic ACLs)")]
    Fatal(#[source] KafkaError),
    /// Fenced by a newer producer with the same `transactional.id`, or the
    /// coordinator refuses this one: this instance stops taking part.
    #[error("the transactional producer cannot go on (fenced by a newer instance with the same transactional.id, or refused by the transaction coordinator)")]
    Transaction(#[source] KafkaError),
    /// The topic or cluster refuses every record: no retry can help.
    #[error("cannot write to topic {topic}: {code} — {fix}")]
    Refused {
        topic: String,
        code: RDKafkaErrorCode,
        fix: &'static str,
    },
}

impl SinkError {
    /// Whose fault it is: librdkafka refusing the client options is the
    /// settings'; a fatal producer error or a topic that refuses every
    /// record is the cluster's, and not transient (transient delivery
    /// errors never get here: [`classify`] retries them).
    pub fn domain(&self) -> Domain {
        match self {
            SinkError::Create(_) => Domain::Input(crate::outcome::Input::Settings),
            SinkError::Fatal(_) | SinkError::Transaction(_) | SinkError::Refused { .. } => {
                Domain::External { transient: false }
            }
        }
    }

    /// What follows ([`decide`]): the worker stops.
    pub fn outcome(&self) -> Outcome {
        decide(self.domain())
    }
}

/// What a delivery error means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry later (broker down, timeouts, leader moves, throttling).
    Transient,
    /// The record itself can never be written: dead-letter it.
    Record(DeadLetterReason),
    /// The topic or cluster refuses us: stop, saying what to fix.
    Fatal(&'static str),
}

impl Class {
    /// Whose fault it is.
    pub fn domain(self) -> Domain {
        match self {
            Class::Transient => Domain::External { transient: true },
            Class::Record(_) => Domain::Input(crate::outcome::Input::Record),
            Class::Fatal(_) => Domain::External { transient: false },
        }
    }

    /// What happens to the record ([`crate::outcome::decide`]).
    pub fn outcome(self) -> Outcome {
        decide(self.domain())
    }
}

/// Classifies a producer error code (send or delivery).
pub fn classify(code: RDKafkaErrorCode) -> Class {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            Class::Record(DeadLetterReason::OutputTooLarge)
        }
        C::InvalidTimestamp | C::InvalidRecord | C::InvalidMessage | C::UnsupportedForMessageFormat => {
            Class::Record(DeadLetterReason::DeliveryRejected)
        }
        C::TopicAuthorizationFailed => Class::Fatal("grant this principal WRITE on the topic (ACLs)"),
        C::ClusterAuthorizationFailed => {
            Class::Fatal("grant this principal IDEMPOTENT_WRITE on the cluster (ACLs)")
        }
        C::TransactionalIdAuthorizationFailed | C::SaslAuthenticationFailed | C::Authentication => {
            Class::Fatal("check the credentials (sasl.*, ssl.* options)")
        }
        C::UnknownTopicOrPartition | C::UnknownTopic | C::InvalidTopic => {
            Class::Fatal("create the topic (the worker creates it when the broker allows topic creation) or fix its name")
        }
        C::InvalidRequiredAcks | C::PolicyViolation => {
            Class::Fatal("the topic's configuration refuses these writes (min.insync.replicas, policies)")
        }
        _ => Class::Transient,
    }
}

/// Bytes of a dead letter's copy of the original payload (the rest is cut,
/// header `riskstream.truncated_from` gives the original length).
pub const DEFAULT_DLQ_MAX_PAYLOAD: usize = 64 * 1024;
/// A dead letter refused for its size is re-sent once with this much.
const DLQ_SMALL_PAYLOAD: usize = 1024;

/// The output producer: librdkafka's polling thread runs [`SinkContext`].
pub type OutputProducer = ThreadedProducer<SinkContext>;

pub fn producer(cfg: &SinkConfig, ctx: SinkContext) -> Result<OutputProducer, SinkError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000");
    if cfg.transactions.is_some() {
        // The first backoff of a retried request (librdkafka doubles it up
        // to retry.backoff.max.ms). Back-to-back transactions meet
        // CONCURRENT_TRANSACTIONS on AddOffsetsToTxn until the previous
        // one's markers are written; librdkafka retries AddPartitionsToTxn
        // after 20 ms but AddOffsetsToTxn after this (100 ms by default),
        // which held every commit ~100 ms. 20 ms, as the Java client.
        c.set("retry.backoff.ms", "20");
    }
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    // The delivery guarantee, after the user's options (which cannot set
    // these: config refuses them).
    c.set("enable.idempotence", "true").set("acks", "all");
    if let Some(t) = &cfg.transactions {
        let timeout = t.timeout.as_millis().to_string();
        c.set("transactional.id", &t.id)
            .set("transaction.timeout.ms", &timeout)
            .set("message.timeout.ms", &timeout);
    }
    c.create_with_context(ctx).map_err(SinkError::Create)
}

/// A changelog flush of one partition: settled once all its records are.
#[derive(Debug)]
pub struct FlushAck {
    partition: i32,
    seq: u64,
    remaining: AtomicUsize,
}

/// Where an output record's input came from, and timing for metrics: the
/// delivery opaque of every record.
#[derive(Debug, Clone)]
pub struct Origin {
    /// A changelog record: the flush it belongs to (None for others, and
    /// for changelog records nothing committable waits for).
    state: Option<Arc<FlushAck>>,
    /// False for shadow records: they do not hold input offsets back.
    track: bool,
    partition: i32,
    offset: i64,
    consumed_at: Option<Instant>,
    event_time: Option<i64>,
    /// The input record's Kafka timestamp (ms).
    produced_at: Option<i64>,
    /// Handed to the producer.
    enqueued_at: Option<Instant>,
    /// A dead letter (not a scored record).
    dead_letter: bool,
    /// Re-sends so far (backoff grows with it).
    attempts: u32,
}

impl Origin {
    fn untracked() -> Self {
        Self {
            track: false,
            partition: -1,
            offset: -1,
            consumed_at: None,
            event_time: None,
            produced_at: None,
            enqueued_at: None,
            dead_letter: false,
            attempts: 0,
            state: None,
        }
    }

    fn dead_letter(partition: i32, offset: i64) -> Self {
        Self {
            track: true,
            partition,
            offset,
            enqueued_at: Some(Instant::now()),
            dead_letter: true,
            ..Self::untracked()
        }
    }
}

/// A delivery that failed for good: what the sink task does with it.
struct Failed {
    origin: Origin,
    msg: OwnedMessage,
    code: Option<RDKafkaErrorCode>,
}

/// The producer's context: the shared [`SinkState`] (a producer renewed
/// after a fatal transactional error shares it with the one it replaces).
pub struct SinkContext(Arc<SinkState>);

impl std::ops::Deref for SinkContext {
    type Target = SinkState;

    fn deref(&self) -> &SinkState {
        &self.0
    }
}

impl SinkContext {
    pub fn new(
        cfg: &SinkConfig,
        commits: Arc<Commits>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Self {
        Self(Arc::new(SinkState::new(cfg, commits, metrics, cancel)))
    }
}

/// Settles deliveries: offsets, metrics, the record limit, failed records.
pub struct SinkState {
    commits: Arc<Commits>,
    metrics: Arc<Metrics>,
    /// Stop after this many handled records (tests, benchmarks): `cancel`
    /// is cancelled.
    max_records: Option<u64>,
    cancel: CancellationToken,
    in_flight: AtomicUsize,
    /// Deliveries that failed after librdkafka's retries: handled by the sink task.
    failed: Mutex<Vec<Failed>>,
    /// Summary of delivery failures (WARN at most once per interval).
    failures: Mutex<crate::metrics::LogSummary>,
}

impl SinkState {
    fn new(
        cfg: &SinkConfig,
        commits: Arc<Commits>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            commits,
            metrics,
            max_records: cfg.max_records,
            cancel,
            in_flight: AtomicUsize::new(0),
            failed: Mutex::new(Vec::new()),
            failures: Mutex::new(crate::metrics::LogSummary::new(
                "deliveries failed",
                crate::metrics::summary::DEFAULT_INTERVAL,
            )),
        }
    }

    /// A record's input is done: after its output was delivered, or
    /// without output (a dead letter the DLQ refused even small).
    fn settle(&self, origin: &Origin) {
        self.commits.delivered(origin.partition, origin.offset);
    }

    fn delivered(&self, origin: &Origin) {
        let now = Instant::now();
        // The worker's delivered count is this run's handled count.
        let handled = self.metrics.delivered.add(1);
        self.metrics.first_delivered.get_or_init(|| now);
        if self.max_records.is_some_and(|m| handled == m / 2) {
            self.metrics.half_delivered.get_or_init(|| now);
        }
        let m = &self.metrics;
        if let Some(t) = origin.enqueued_at {
            m.delivery_seconds
                .record(now.saturating_duration_since(t).as_secs_f64());
        }
        if let Some(c) = origin.consumed_at {
            m.processing_seconds
                .record(now.saturating_duration_since(c).as_secs_f64());
        }
        if origin.event_time.is_some() || origin.produced_at.is_some() {
            let wall = now_ms();
            if let Some(t) = origin.event_time {
                m.event_lag_seconds.record((wall - t) as f64 / 1000.0);
            }
            // Exactly-once: a reader sees it when its transaction commits
            // (recorded there).
            if let Some(t) = origin.produced_at.filter(|_| !self.commits.exactly_once()) {
                m.end_to_end_seconds.record((wall - t) as f64 / 1000.0);
            }
        }
        self.settle(origin);
        if self.max_records.is_some_and(|m| handled >= m) {
            self.cancel.cancel();
        }
    }

    /// Records handed to the producer and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A changelog record is acknowledged (or refused for good): the last
    /// one of its flush lets the offsets it covers be committed.
    fn state_settled(&self, ack: &FlushAck) {
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.commits.flush_acked(ack.partition, ack.seq);
    }

    /// Scored records and dead letters delivered so far.
    pub fn handled(&self) -> u64 {
        self.metrics.delivered.get()
    }
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Origin>;

    fn delivery(&self, result: &DeliveryResult<'_>, origin: Box<Origin>) {
        match result {
            Ok(_) if origin.track => match &origin.state {
                Some(ack) => self.state_settled(ack),
                None => self.delivered(&origin),
            },
            Ok(_) => {}
            // Shadow records are best effort: not re-sent.
            Err((e, _)) if !origin.track => {
                tracing::debug!(error = %e, "shadow record not delivered");
            }
            Err((e, msg)) => {
                let code = e.rdkafka_error_code();
                tracing::debug!(topic = msg.topic(), partition = origin.partition, offset = origin.offset, error = %e, "delivery failed");
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .note(code.map_or("unknown", error_name), || {
                        format!(
                            "{} for input partition {} offset {}: {e}",
                            msg.topic(),
                            origin.partition,
                            origin.offset
                        )
                    });
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Failed {
                        origin: *origin,
                        msg: msg.detach(),
                        code,
                    });
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A short, stable name for a librdkafka error code (metric label, logs).
pub fn error_name(code: RDKafkaErrorCode) -> &'static str {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut => "message_timed_out",
        C::QueueFull => "queue_full",
        C::MessageSizeTooLarge => "message_size_too_large",
        C::MessageBatchTooLarge => "message_batch_too_large",
        C::InvalidMessageSize => "invalid_message_size",
        C::InvalidTimestamp => "invalid_timestamp",
        C::InvalidRecord => "invalid_record",
        C::InvalidMessage => "invalid_message",
        C::TopicAuthorizationFailed => "topic_authorization_failed",
        C::ClusterAuthorizationFailed => "cluster_authorization_failed",
        C::UnknownTopicOrPartition => "unknown_topic_or_partition",
        C::UnknownTopic => "unknown_topic",
        C::NotEnoughReplicas => "not_enough_replicas",
        C::NotLeaderForPartition => "not_leader_for_partition",
        C::RequestTimedOut => "request_timed_out",
        C::BrokerTransportFailure => "transport",
        C::AllBrokersDown => "all_brokers_down",
        C::PurgeQueue | C::PurgeInflight => "purged",
        _ => "other",
    }
}

/// The label of a transient delivery error's retry: [`error_name`] of
/// the codes [`classify`] calls transient (`unknown`: no code).
fn retry_reason(code: Option<RDKafkaErrorCode>) -> RetryReason {
    use RDKafkaErrorCode as C;
    match code {
        None => RetryReason::Unknown,
        Some(C::MessageTimedOut) => RetryReason::MessageTimedOut,
        Some(C::QueueFull) => RetryReason::QueueFull,
        Some(C::NotEnoughReplicas) => RetryReason::NotEnoughReplicas,
        Some(C::NotLeaderForPartition) => RetryReason::NotLeaderForPartition,
        Some(C::RequestTimedOut) => RetryReason::RequestTimedOut,
        Some(C::BrokerTransportFailure) => RetryReason::Transport,
        Some(C::AllBrokersDown) => RetryReason::AllBrokersDown,
        Some(C::PurgeQueue | C::PurgeInflight) => RetryReason::Purged,
        Some(_) => RetryReason::Other,
    }
}

/// The sink stage's settings.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub brokers: String,
    /// librdkafka pass-through options (may hold secrets: never logged).
    pub kafka: BTreeMap<String, String>,
    pub output_topic: String,
    pub dlq_topic: String,
    pub input_topic: String,
    pub shadow_topic: Option<String>,
    /// The state changelog (None: state off).
    pub state_topic: Option<String>,
    pub max_in_flight: usize,
    /// Longest shutdown may take from the stop request: deliveries still
    /// unsettled after 3/4 of it are abandoned (offsets not committed).
    pub drain_timeout: Duration,
    /// Bytes of the original payload a dead letter carries.
    pub dlq_max_payload: usize,
    /// Stop after this many records were delivered (tests, benchmarks).
    pub max_records: Option<u64>,
    /// Exactly-once: the transactional producer (None: at-least-once).
    pub transactions: Option<TransactionSettings>,
}

impl SinkConfig {
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MIN_DLQ_PAYLOAD: usize = 1024;

    /// Cross-field checks; problems are appended to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if self.drain_timeout < Duration::from_secs(1) {
            errors.push("drain_timeout_ms: must be at least 1000".into());
        }
        if self.dlq_max_payload < Self::MIN_DLQ_PAYLOAD {
            errors.push(format!(
                "dlq_max_payload_bytes: must be at least {}",
                Self::MIN_DLQ_PAYLOAD
            ));
        }
    }
}

/// Why a record was not handed to the producer.
enum NotSent {
    /// The producer refused the record itself (too large): dead-letter it.
    Record(RDKafkaErrorCode),
    /// Shutdown's drain time ran out.
    Abandoned,
    /// Exactly-once: the transaction was aborted (the rest of the item is
    /// discarded; a rewind brings it again).
    Aborted,
}

/// Sink state: producer, topics, in-flight bound.
pub struct Sink {
    /// Replaced when a fatal transactional error (not a fencing) leaves it
    /// unusable ([`Sink::renew_producer`]).
    producer: std::sync::RwLock<OutputProducer>,
    state: Arc<SinkState>,
    settings: SinkConfig,
    /// When the stop request was first seen.
    stopping_since: std::sync::OnceLock<Instant>,
    /// Exactly-once: the open transaction.
    txn: Option<Mutex<transaction::TxnState>>,
}

impl Sink {
    pub fn new(settings: SinkConfig, producer: OutputProducer) -> Self {
        Self {
            txn: transaction::state(settings.transactions.as_ref()),
            state: producer.context().0.clone(),
            producer: std::sync::RwLock::new(producer),
            settings,
            stopping_since: std::sync::OnceLock::new(),
        }
    }

    fn ctx(&self) -> &SinkState {
        &self.state
    }

    fn producer(&self) -> std::sync::RwLockReadGuard<'_, OutputProducer> {
        self.producer.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether shutdown's drain time is used up (3/4 of `drain_timeout`
    /// since the stop request; the rest is left for the final commit).
    fn drain_expired(&self) -> bool {
        if !self.ctx().cancel.is_cancelled() {
            return false;
        }
        let since = self.stopping_since.get_or_init(Instant::now);
        since.elapsed() >= self.settings.drain_timeout.mul_f64(0.75)
    }

    /// Runs until the channel closes and every delivery is settled (or the
    /// drain time runs out). Returns the records handled (scored and
    /// dead-lettered, delivered).
    pub async fn run(self, mut rx: mpsc::Receiver<SinkItem>) -> Result<u64, SinkError> {
        let mut abandoned = false;
        loop {
            // Wake at least every 200 ms: failed deliveries are re-sent
            // also while no input arrives.
            let item = tokio::select! {
                item = rx.recv() => item,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if !self.handle_failed().await? {
                        abandoned = true;
                        break;
                    }
                    continue;
                }
            };
            let Some(item) = item else { break };
            if !self.handle_failed().await? {
                abandoned = true;
                break;
            }
            if self.transactional(&item)?.is_some() {
                continue;
            }
            if !self.handle(item).await? {
                abandoned = true;
                break;
            }
        }
        // Input closed: settle everything still in flight, re-sending failures.
        while !abandoned {
            if !self.handle_failed().await? {
                abandoned = true;
                break;
            }
            if self.ctx().in_flight() == 0 && self.failed_is_empty() {
                break;
            }
            if self.drain_expired() {
                abandoned = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Exactly-once: the scoring stage ended the last transaction; one
        // still open was abandoned.
        self.abort_open();
        if abandoned {
            self.abandon(&mut rx);
        }
        let ctx = self.ctx();
        if let Ok(mut f) = ctx.failures.lock() {
            f.flush();
        }
        Ok(ctx.handled())
    }

    /// Drain time is up: drop what is queued here and in librdkafka, and say so.
    fn abandon(&self, rx: &mut mpsc::Receiver<SinkItem>) {
        rx.close();
        let mut queued = 0u64;
        while let Ok(item) = rx.try_recv() {
            queued += item.records();
        }
        let failed =
            std::mem::take(&mut *self.ctx().failed.lock().unwrap_or_else(|e| e.into_inner()));
        let in_flight = self.ctx().in_flight();
        self.producer()
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        DrainAbandoned {
            queued,
            failed: failed.len() as u64,
            in_flight: in_flight as u64,
            drain_timeout_s: self.settings.drain_timeout.as_secs_f64(),
        }
        .emit(&self.ctx().metrics);
    }

    /// Hands one item's records to the producer; false once the drain time
    /// ran out.
    async fn handle(&self, item: SinkItem) -> Result<bool, SinkError> {
        match item {
            SinkItem::Scored(batch) => {
                // One clock read per batch, not per record.
                let enqueued = Instant::now();
                self.produced_in_transaction(batch.records.iter().filter_map(|r| r.produced_at));
                for r in batch.records {
                    match self.refused_before(r.partition, r.offset) {
                        Refused::No => {}
                        refused => {
                            if !self.send_refused_again(&r, refused).await? {
                                return Ok(false);
                            }
                            continue;
                        }
                    }
                    let origin = Origin {
                        track: true,
                        partition: r.partition,
                        offset: r.offset,
                        consumed_at: Some(r.consumed_at),
                        event_time: Some(r.event_time),
                        produced_at: r.produced_at,
                        enqueued_at: Some(enqueued),
                        dead_letter: false,
                        attempts: 0,
                        state: None,
                    };
                    let rec = BaseRecord::with_opaque_to(
                        &self.settings.output_topic,
                        Box::new(origin.clone()),
                    )
                    .key(r.key.as_bytes())
                    .payload(&r.payload)
                    .timestamp(r.event_time);
                    match self.send(rec).await? {
                        Ok(()) => {}
                        Err(NotSent::Abandoned) => return Ok(false),
                        Err(NotSent::Aborted) => return Ok(true),
                        Err(NotSent::Record(code)) => {
                            let d = output_refused(&origin, r.key.as_bytes(), &r.payload, code);
                            if !self.send_dead(&d, self.settings.dlq_max_payload).await? {
                                return Ok(false);
                            }
                        }
                    }
                }
                for d in &batch.dead {
                    if !self.send_dead(d, self.settings.dlq_max_payload).await? {
                        return Ok(false);
                    }
                }
                if let Some(topic) = &self.settings.shadow_topic {
                    for r in batch.shadow {
                        let rec = BaseRecord::with_opaque_to(topic, Box::new(Origin::untracked()))
                            .key(r.key.as_bytes())
                            .payload(&r.payload)
                            .timestamp(r.event_time);
                        match self.send(rec).await? {
                            Err(NotSent::Abandoned) => return Ok(false),
                            Err(NotSent::Aborted) => return Ok(true),
                            _ => {}
                        }
                    }
                }
                Ok(true)
            }
            SinkItem::Dead(d) => self.send_dead(&d, self.settings.dlq_max_payload).await,
            SinkItem::State(f) => self.send_state(f).await,
            // Exactly-once only ([`Sink::transactional`] takes them).
            SinkItem::Commit { .. } | SinkItem::Rewound(_) => Ok(true),
        }
    }

    /// Writes one partition's changelog records to the same partition of
    /// the changelog topic. False once the drain time ran out.
    async fn send_state(&self, f: crate::message::StateFlush) -> Result<bool, SinkError> {
        let Some(topic) = &self.settings.state_topic else {
            return Ok(true);
        };
        let ack = f.seq.map(|seq| {
            Arc::new(FlushAck {
                partition: f.partition,
                seq,
                remaining: AtomicUsize::new(f.records.len() + 1),
            })
        });
        for (key, payload) in &f.records {
            let origin = Origin {
                track: ack.is_some(),
                partition: f.partition,
                state: ack.clone(),
                ..Origin::untracked()
            };
            let mut rec = BaseRecord::with_opaque_to(topic, Box::new(origin))
                .key(key.as_bytes())
                .partition(f.partition);
            if let Some(p) = payload {
                rec = rec.payload(p.as_slice());
            }
            match self.send(rec).await? {
                Ok(()) => {}
                Err(NotSent::Abandoned) => return Ok(false),
                Err(NotSent::Aborted) => return Ok(true),
                Err(NotSent::Record(code)) => self.state_refused(ack.as_deref(), code),
            }
        }
        // The flush's own share: settles it even when it had no records.
        if let Some(a) = &ack {
            self.ctx().state_settled(a);
        }
        Ok(true)
    }

    /// Exactly-once: a scored record whose output the broker refused in an
    /// aborted transaction: its small dead letter, or nothing if that was
    /// refused too. False once the drain time ran out.
    async fn send_refused_again(
        &self,
        r: &crate::message::ScoredRecord,
        refused: Refused,
    ) -> Result<bool, SinkError> {
        let origin = Origin::dead_letter(r.partition, r.offset);
        match refused {
            Refused::No => Ok(true),
            Refused::Small(code) => {
                let d = output_refused(&origin, r.key.as_bytes(), &r.payload, code);
                self.send_dead(&d, DLQ_SMALL_PAYLOAD).await
            }
            Refused::Lost(code) => {
                self.lost(&origin, code);
                Ok(true)
            }
        }
    }

    /// A changelog record refused for good (too large for the topic):
    /// counted and logged; its flush still settles, so input goes on.
    fn state_refused(&self, ack: Option<&FlushAck>, code: RDKafkaErrorCode) {
        let ctx = self.ctx();
        ChangelogRefused { error: &code }.emit(&ctx.metrics);
        if let Some(a) = ack {
            ctx.state_settled(a);
        }
    }

    /// A dead letter's headers: the input's (bounded by the source) and
    /// `riskstream.*` with the reason and the input's coordinates.
    fn dead_letter_headers(&self, d: &DeadLetter, max_payload: usize) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &d.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let partition = d.partition.to_string();
        let offset = d.offset.to_string();
        let payload_len = d.payload.as_ref().map_or(0, Vec::len);
        let truncated_from = payload_len.to_string();
        let mut extra: Vec<(&str, &str)> = vec![
            ("riskstream.reason", d.reason.as_str()),
            ("riskstream.error", d.detail.as_str()),
            (
                "riskstream.source.topic",
                self.settings.input_topic.as_str(),
            ),
            ("riskstream.source.partition", partition.as_str()),
            ("riskstream.source.offset", offset.as_str()),
        ];
        if payload_len > max_payload {
            extra.push(("riskstream.truncated_from", truncated_from.as_str()));
        }
        if d.headers_dropped {
            extra.push(("riskstream.headers_dropped", "true"));
        }
        for (k, v) in extra {
            // The error text is ours, but may quote input: bounded too.
            let v = &v.as_bytes()[..v.len().min(4096)];
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        headers
    }

    /// Writes a dead letter: the original key and at most `max_payload`
    /// bytes of its payload, the input headers (bounded by the source), and
    /// `riskstream.*` headers with the reason and the input's coordinates.
    /// False once the drain time ran out.
    async fn send_dead(&self, d: &DeadLetter, max_payload: usize) -> Result<bool, SinkError> {
        let ctx = self.ctx();
        match self.refused_before(d.partition, d.offset) {
            Refused::Small(_) if max_payload > DLQ_SMALL_PAYLOAD => {
                return Box::pin(self.send_dead(d, DLQ_SMALL_PAYLOAD)).await
            }
            Refused::Lost(code) => return Ok(self.lost_dead_letter(d, code)),
            _ => {}
        }
        let headers = self.dead_letter_headers(d, max_payload);
        let origin = Origin::dead_letter(d.partition, d.offset);
        let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> =
            BaseRecord::with_opaque_to(&self.settings.dlq_topic, Box::new(origin.clone()))
                .headers(headers);
        if let Some(k) = &d.key {
            rec = rec.key(&k[..k.len().min(max_payload)]);
        }
        if let Some(p) = &d.payload {
            rec = rec.payload(&p[..p.len().min(max_payload)]);
        }
        match self.send(rec).await? {
            Ok(()) => {
                DeadLettered {
                    source_topic: &self.settings.input_topic,
                    partition: d.partition,
                    offset: d.offset,
                    reason: d.reason,
                    detail: &d.detail,
                }
                .emit(&ctx.metrics);
                Ok(true)
            }
            Err(NotSent::Abandoned) => Ok(false),
            Err(NotSent::Aborted) => Ok(true),
            Err(NotSent::Record(code)) if max_payload > DLQ_SMALL_PAYLOAD => {
                // Even the copy is too large (a small topic limit): once more, small.
                tracing::debug!(error = %code, "dead letter refused; re-sending a smaller copy");
                let small = DeadLetter {
                    headers: Vec::new(),
                    headers_dropped: !d.headers.is_empty() || d.headers_dropped,
                    key: d.key.clone(),
                    payload: d.payload.clone(),
                    detail: d.detail.clone(),
                    ..*d
                };
                Box::pin(self.send_dead(&small, DLQ_SMALL_PAYLOAD)).await
            }
            Err(NotSent::Record(code)) => {
                self.lost(&origin, code);
                Ok(true)
            }
        }
    }

    /// A dead letter the DLQ refuses even small: the record is settled
    /// without output (its partition moves on), counted and logged.
    fn lost_dead_letter(&self, d: &DeadLetter, code: RDKafkaErrorCode) -> bool {
        self.lost(&Origin::dead_letter(d.partition, d.offset), code);
        true
    }

    fn lost(&self, origin: &Origin, code: RDKafkaErrorCode) {
        let ctx = self.ctx();
        DeadLetterLost {
            partition: origin.partition,
            offset: origin.offset,
            error: &code,
            dlq: &self.settings.dlq_topic,
        }
        .emit(&ctx.metrics);
        ctx.settle(origin);
    }

    /// Hands a record to librdkafka; waits while the queue is full or
    /// `max_in_flight` records are unsettled (until the drain time runs out).
    async fn send<K, P>(
        &self,
        mut rec: BaseRecord<'_, K, P, Box<Origin>>,
    ) -> Result<Result<(), NotSent>, SinkError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        while self.ctx().in_flight() >= self.settings.max_in_flight {
            if self.drain_expired() {
                return Ok(Err(NotSent::Abandoned));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Counted before the send: the delivery callback may run at once.
        self.ctx().in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            let sent = self.producer().send(rec);
            match sent {
                Ok(()) => return Ok(Ok(())),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if self.drain_expired() {
                        self.ctx().in_flight.fetch_sub(1, Ordering::AcqRel);
                        return Ok(Err(NotSent::Abandoned));
                    }
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    self.ctx().in_flight.fetch_sub(1, Ordering::AcqRel);
                    return match e.rdkafka_error_code().map(classify) {
                        Some(Class::Record(_)) => Ok(Err(NotSent::Record(
                            e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                        ))),
                        // The transaction is in an abortable state.
                        _ if self.txn.is_some()
                            && self.producer().client().fatal_error().is_none() =>
                        {
                            tracing::warn!(error = %e, "the open transaction refuses records; aborting");
                            self.abort(true)?;
                            Ok(Err(NotSent::Aborted))
                        }
                        _ => Err(SinkError::Fatal(e)),
                    };
                }
            }
        }
    }

    fn failed_is_empty(&self) -> bool {
        self.ctx()
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Deals with deliveries that failed after librdkafka's retries:
    /// transient → re-sent after a backoff; the record's fault → its dead
    /// letter; the topic's or cluster's → stop. False once the drain time
    /// ran out.
    async fn handle_failed(&self) -> Result<bool, SinkError> {
        let failed =
            std::mem::take(&mut *self.ctx().failed.lock().unwrap_or_else(|e| e.into_inner()));
        if failed.is_empty() {
            return Ok(true);
        }
        // A fatal producer error (e.g. the idempotent producer fenced) fails
        // every delivery from now on: stop rather than re-send forever.
        if let Some((code, reason)) = self.producer().client().fatal_error() {
            tracing::error!(error = %code, reason, "fatal producer error");
            return Err(SinkError::Fatal(KafkaError::MessageProduction(code)));
        }
        if self.txn.is_some() {
            // Exactly-once: the transaction is aborted and rewound instead.
            self.transaction_failed(failed)?;
            return Ok(true);
        }
        let mut resend = Vec::new();
        for f in failed {
            let class = f.code.map_or(Class::Transient, classify);
            match class.outcome() {
                Outcome::Stop => return Err(refused(&f, class)),
                Outcome::DeadLetter if f.origin.state.is_some() => {
                    let code = f.code.unwrap_or(RDKafkaErrorCode::Fail);
                    self.state_refused(f.origin.state.as_deref(), code);
                }
                Outcome::DeadLetter => {
                    if !self.dead_letter_failed(&f).await? {
                        return Ok(false);
                    }
                }
                Outcome::Retry => {
                    let reason = retry_reason(f.code);
                    DeliveryRetried { reason }.emit(&self.ctx().metrics);
                    resend.push(f);
                }
            }
        }
        if resend.is_empty() {
            return Ok(true);
        }
        let attempts = resend.iter().map(|f| f.origin.attempts).max().unwrap_or(0);
        if !self.back_off(attempts).await {
            self.ctx()
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(resend);
            return Ok(false);
        }
        for f in resend {
            if !self.resend(f).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A delivery that failed for the record's own sake: its dead letter
    /// (a refused dead letter: once more, small, else skipped). False once
    /// the drain time ran out.
    async fn dead_letter_failed(&self, f: &Failed) -> Result<bool, SinkError> {
        let code = f.code.unwrap_or(RDKafkaErrorCode::Fail);
        if !f.origin.dead_letter {
            let key = f.msg.key().unwrap_or_default();
            let d = output_refused(&f.origin, key, f.msg.payload().unwrap_or_default(), code);
            return self.send_dead(&d, self.settings.dlq_max_payload).await;
        }
        let d = DeadLetter {
            partition: f.origin.partition,
            offset: f.origin.offset,
            key: f.msg.key().map(<[u8]>::to_vec),
            payload: f.msg.payload().map(<[u8]>::to_vec),
            headers: Vec::new(),
            headers_dropped: true,
            reason: dead_reason(&f.msg),
            detail: format!("dead letter refused by the topic: {}", error_name(code)),
        };
        if d.payload
            .as_ref()
            .is_some_and(|p| p.len() > DLQ_SMALL_PAYLOAD)
        {
            return self.send_dead(&d, DLQ_SMALL_PAYLOAD).await;
        }
        self.lost(&f.origin, code);
        Ok(true)
    }

    /// The broker or topic may be recovering: 100 ms, doubling to 5 s.
    /// False if the drain time ran out meanwhile.
    async fn back_off(&self, attempts: u32) -> bool {
        let pause = Duration::from_millis(100 << attempts.min(6)).min(Duration::from_secs(5));
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if self.drain_expired() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Sends a failed record again, as it was. False once the drain time
    /// ran out.
    async fn resend(&self, f: Failed) -> Result<bool, SinkError> {
        let (mut origin, msg) = (f.origin, f.msg);
        origin.attempts += 1;
        if msg.topic().is_empty() {
            return Err(SinkError::Fatal(KafkaError::Canceled));
        }
        let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> =
            BaseRecord::with_opaque_to(msg.topic(), Box::new(origin.clone()));
        if let Some(k) = msg.key() {
            rec = rec.key(k);
        }
        if let Some(p) = msg.payload() {
            rec = rec.payload(p);
        }
        if let Some(h) = msg.headers() {
            rec = rec.headers(h.clone());
        }
        if let Some(t) = msg.timestamp().to_millis() {
            rec = rec.timestamp(t);
        }
        match self.send(rec).await? {
            Ok(()) | Err(NotSent::Aborted) => Ok(true),
            Err(NotSent::Abandoned) => Ok(false),
            Err(NotSent::Record(code)) => {
                let key = msg.key().unwrap_or_default();
                let d = output_refused(&origin, key, msg.payload().unwrap_or_default(), code);
                self.send_dead(&d, self.settings.dlq_max_payload).await
            }
        }
    }
}

/// The error that stops the worker for a delivery the topic or cluster refused.
fn refused(f: &Failed, class: Class) -> SinkError {
    let code = f.code.unwrap_or(RDKafkaErrorCode::Fail);
    let fix = match class {
        Class::Fatal(fix) => fix,
        _ => "see the broker's error",
    };
    tracing::error!(topic = f.msg.topic(), error = %code, "{fix}");
    SinkError::Refused {
        topic: f.msg.topic().to_string(),
        code,
        fix,
    }
}

/// The reason header of a dead letter being re-sent.
fn dead_reason(msg: &OwnedMessage) -> DeadLetterReason {
    use rdkafka::message::Headers as _;
    let reason = msg.headers().and_then(|h| {
        (0..h.count())
            .filter_map(|i| h.try_get(i))
            .find(|x| x.key == "riskstream.reason")
            .and_then(|x| x.value)
            .map(<[u8]>::to_vec)
    });
    reason
        .and_then(|r| DeadLetterReason::from_name(std::str::from_utf8(&r).ok()?))
        .unwrap_or(DeadLetterReason::DeliveryRejected)
}

/// The dead letter of a scored record the producer or topic refused.
fn output_refused(
    origin: &Origin,
    key: &[u8],
    payload: &[u8],
    code: RDKafkaErrorCode,
) -> DeadLetter {
    let reason = match classify(code) {
        Class::Record(r) => r,
        _ => DeadLetterReason::DeliveryRejected,
    };
    DeadLetter {
        partition: origin.partition,
        offset: origin.offset,
        key: Some(key.to_vec()),
        // The scored record's bytes (the input's are gone by now), cut to
        // the dead-letter limit by `send_dead`.
        payload: Some(payload.to_vec()),
        headers: Vec::new(),
        headers_dropped: false,
        reason,
        detail: format!(
            "output of {} bytes refused: {code} ({})",
            payload.len(),
            error_name(code)
        ),
    }
}
