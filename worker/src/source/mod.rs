//! Source: the consumer-group consumer on the input topic and the
//! label-feedback reader.
//!
//! The input consumer runs on its own thread (a `BaseConsumer` polled in a
//! loop), so blocking on a full downstream queue (backpressure) or on a
//! revoke drain never stalls the async runtime. Offsets are stored only by
//! the sink, for delivered records, through [`OffsetTracker`]; librdkafka's
//! auto-commit then commits what was stored.
//!
//! The label reader assigns every partition of the labels topic (no group:
//! every instance reads all labels) and forwards labels to the scoring thread.

pub mod offsets;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::codec::{Codec, FraudLabel, Transaction};
use crate::config::RunConfig;
use crate::kafka::client_config;
use crate::metrics::Metrics;
pub use offsets::OffsetTracker;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot create consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("fatal consumer error (check brokers, credentials and topic ACLs): {0}")]
    Fatal(#[source] KafkaError),
}

/// A decoded transaction on its way to scoring.
#[derive(Debug)]
pub struct Incoming {
    pub partition: i32,
    pub offset: i64,
    pub tx: Transaction,
    pub consumed_at: Instant,
    /// The record's Kafka timestamp (ms), for end-to-end latency.
    pub produced_at: Option<i64>,
}

/// What the scoring thread receives from the source.
#[derive(Debug)]
pub enum Work {
    /// Score this record and produce its output.
    Score(Incoming),
    /// Add this earlier record to customer state without output (state
    /// rebuild after a partition was assigned), from this partition.
    Replay(i32, Transaction),
    /// Several of the above, in order: the source hands over what one
    /// poll burst returned at once (one channel operation and at most one
    /// wake-up instead of one per record).
    Many(Vec<Work>),
    /// The source has nothing more buffered (the fetched burst is used up):
    /// a batch being gathered should be scored now rather than wait out
    /// its linger for records that are not there yet.
    Drained,
}

/// Records the source gathers before handing them to scoring.
pub const CHUNK: usize = 256;

/// A record that failed decoding or validation, on its way to the DLQ.
#[derive(Debug)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub reason: &'static str,
    pub detail: String,
}

/// What the sink receives.
#[derive(Debug)]
pub enum SinkItem {
    Scored(crate::scoring::ScoredBatch),
    Dead(DeadLetter),
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
            if let Ok(mut l) = self.metrics.consumer_lag.lock() {
                *l = (self.topic.clone(), lag);
            }
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
    fn replay_bound(&self, partition: i32, offset: i64) -> Option<i64> {
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
            let drained = self.tracker.wait_drained(&parts, Duration::from_secs(60));
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

/// Context of the label reader: end-of-partition is how it knows it caught
/// up, not an error worth logging.
pub struct LabelContext;

impl ClientContext for LabelContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(error = %error, reason, "labels consumer error");
        }
    }
}

impl ConsumerContext for LabelContext {}

/// Creates the group consumer and subscribes it to the input topic.
pub fn input_consumer(
    cfg: &RunConfig,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
) -> Result<Arc<InputConsumer>, SourceError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("group.id", &cfg.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout_ms / 3).max(100).to_string(),
        )
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", crate::kafka::FETCH_WAIT_MAX_MS)
        .set("statistics.interval.ms", "5000");
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    let ctx = SourceContext {
        tracker,
        topic: cfg.input_topic.clone(),
        replay_until: std::sync::Mutex::new(HashMap::default()),
        metrics,
        assigned: Arc::new(std::sync::Mutex::new(Vec::new())),
        joined: AtomicBool::new(false),
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

fn headers_of(m: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|hd| {
                    (
                        hd.key.to_string(),
                        hd.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The input loop: poll, register, decode, hand on. Runs until `stop`.
/// Blocking sends give backpressure: a full queue stops polling.
#[allow(clippy::too_many_arguments)]
pub fn run_input_loop(
    consumer: Arc<InputConsumer>,
    codec: Arc<Codec>,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
    to_scoring: SyncSender<Work>,
    to_sink: mpsc::Sender<SinkItem>,
    stop: Arc<AtomicBool>,
    input_topic: String,
) -> Result<(), SourceError> {
    input_loop(
        &consumer,
        &codec,
        &tracker,
        &metrics,
        &to_scoring,
        &to_sink,
        &stop,
        &input_topic,
    )
}

#[allow(clippy::too_many_arguments)]
fn input_loop(
    consumer: &InputConsumer,
    codec: &Codec,
    tracker: &OffsetTracker,
    metrics: &Metrics,
    to_scoring: &SyncSender<Work>,
    to_sink: &mpsc::Sender<SinkItem>,
    stop: &AtomicBool,
    input_topic: &str,
) -> Result<(), SourceError> {
    let mut chunk: Vec<Work> = Vec::with_capacity(CHUNK);
    // Records handed over since the last `Drained` marker.
    let mut unmarked = false;
    // Hands the gathered records over; false when scoring has gone.
    let flush = |chunk: &mut Vec<Work>, unmarked: &mut bool| -> bool {
        if chunk.is_empty() {
            return true;
        }
        *unmarked = true;
        let items = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
        to_scoring.send(Work::Many(items)).is_ok()
    };
    while !stop.load(Ordering::Acquire) {
        // Block only when nothing is waiting to be handed over.
        let wait = if chunk.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        let Some(res) = consumer.poll(wait) else {
            // Nothing more buffered: hand over what we have and say so.
            if unmarked || !chunk.is_empty() {
                chunk.push(Work::Drained);
                if !flush(&mut chunk, &mut unmarked) {
                    break;
                }
                unmarked = false;
            }
            continue;
        };
        let m = match res {
            Ok(m) => m,
            Err(e) => {
                if is_fatal(&e) {
                    return Err(SourceError::Fatal(e));
                }
                tracing::warn!(error = %e, "consumer error (retrying)");
                continue;
            }
        };
        let (partition, offset) = (m.partition(), m.offset());
        if consumer.context().replay_bound(partition, offset).is_some() {
            // History before the committed offset: state only, no output.
            if let Ok(tx) = codec.decode_transaction(m.key(), m.payload()) {
                metrics.replayed.fetch_add(1, Ordering::Relaxed);
                chunk.push(Work::Replay(partition, tx));
                if chunk.len() >= CHUNK && !flush(&mut chunk, &mut unmarked) {
                    break;
                }
            }
            continue;
        }
        metrics.consumed.fetch_add(1, Ordering::Relaxed);
        metrics.first_consumed.get_or_init(Instant::now);
        tracker.register(partition, offset);
        match codec.decode_transaction(m.key(), m.payload()) {
            Ok(tx) => {
                let item = Incoming {
                    partition,
                    offset,
                    tx,
                    consumed_at: Instant::now(),
                    produced_at: m.timestamp().to_millis(),
                };
                chunk.push(Work::Score(item));
                if chunk.len() >= CHUNK && !flush(&mut chunk, &mut unmarked) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(
                    topic = %input_topic, partition, offset, reason = e.reason(), error = %e,
                    "record sent to the dead-letter topic"
                );
                let dl = DeadLetter {
                    partition,
                    offset,
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers: headers_of(&m),
                    reason: e.reason(),
                    detail: e.to_string(),
                };
                if to_sink.blocking_send(SinkItem::Dead(dl)).is_err() {
                    break;
                }
            }
        }
    }
    flush(&mut chunk, &mut unmarked);
    Ok(())
}

fn is_fatal(e: &KafkaError) -> bool {
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

/// How far the label stream has been read, shared with the scoring thread.
#[derive(Debug)]
pub struct LabelProgress {
    /// Every label partition is at its end.
    pub caught_up: AtomicBool,
    /// Min over partitions (not at end) of the newest `reported_at` seen.
    pub watermark: AtomicI64,
    /// At least one pass over the labels topic reached the end (readiness).
    pub initial_load_done: AtomicBool,
}

impl Default for LabelProgress {
    fn default() -> Self {
        Self {
            caught_up: AtomicBool::new(false),
            watermark: AtomicI64::new(i64::MIN),
            initial_load_done: AtomicBool::new(false),
        }
    }
}

/// Reads every partition of the labels topic from the beginning and
/// forwards labels to the scoring thread. Undecodable labels are logged and
/// skipped (labels are feedback, not records we owe an output for).
pub fn run_label_loop(
    cfg: RunConfig,
    codec: Arc<Codec>,
    metrics: Arc<Metrics>,
    to_scoring: SyncSender<Vec<FraudLabel>>,
    progress: Arc<LabelProgress>,
    stop: Arc<AtomicBool>,
) -> Result<(), SourceError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("group.id", format!("{}.labels", cfg.group))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // With Tansu's held fetches the label history took ~1 s to read
        // at start (67k labels) instead of ~0.1 s.
        .set("fetch.wait.max.ms", crate::kafka::FETCH_WAIT_MAX_MS);
    // The user's options win.
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    let consumer: BaseConsumer<LabelContext> = c
        .create_with_context(LabelContext)
        .map_err(SourceError::Create)?;
    // Wait for the topic to exist; without labels terminal features stay 0.
    let mut n_parts = 0;
    while !stop.load(Ordering::Acquire) {
        n_parts = crate::kafka::partition_count(consumer.client(), &cfg.labels_topic).unwrap_or(0);
        if n_parts > 0 {
            break;
        }
        progress.caught_up.store(true, Ordering::Release);
        progress.initial_load_done.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..n_parts as i32 {
        tpl.add_partition_offset(&cfg.labels_topic, p, Offset::Beginning)
            .map_err(SourceError::Create)?;
    }
    consumer.assign(&tpl).map_err(SourceError::Create)?;
    let mut at_end: HashMap<i32, bool> = (0..n_parts as i32).map(|p| (p, false)).collect();
    let mut newest: HashMap<i32, i64> = HashMap::default();
    let publish = |at_end: &HashMap<i32, bool>, newest: &HashMap<i32, i64>| {
        let all = at_end.values().all(|e| *e);
        let wm = at_end
            .iter()
            .filter(|(_, e)| !**e)
            .map(|(p, _)| newest.get(p).copied().unwrap_or(i64::MIN))
            .min()
            .unwrap_or(i64::MAX);
        progress.watermark.store(wm, Ordering::Release);
        progress.caught_up.store(all, Ordering::Release);
        if all {
            progress.initial_load_done.store(true, Ordering::Release);
        }
    };
    progress.caught_up.store(false, Ordering::Release);
    // Labels go to scoring in chunks; progress is published only after the
    // labels it covers were handed over.
    let mut chunk: Vec<FraudLabel> = Vec::with_capacity(CHUNK);
    let flush = |chunk: &mut Vec<FraudLabel>| -> bool {
        if chunk.is_empty() {
            return true;
        }
        metrics
            .labels
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        to_scoring
            .send(std::mem::replace(chunk, Vec::with_capacity(CHUNK)))
            .is_ok()
    };
    while !stop.load(Ordering::Acquire) {
        let wait = if chunk.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match consumer.poll(wait) {
            None => {
                if !flush(&mut chunk) {
                    break;
                }
                publish(&at_end, &newest);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if !flush(&mut chunk) {
                    break;
                }
                at_end.insert(p, true);
                publish(&at_end, &newest);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "labels consumer error (retrying)"),
            Some(Ok(m)) => {
                at_end.insert(m.partition(), false);
                match codec.decode_label(m.payload()) {
                    Ok(l) => {
                        newest.insert(m.partition(), l.reported_at);
                        chunk.push(l);
                    }
                    Err(e) => tracing::warn!(
                        topic = %cfg.labels_topic, partition = m.partition(), offset = m.offset(),
                        reason = e.reason(), error = %e, "undecodable label skipped"
                    ),
                }
                if chunk.len() >= CHUNK {
                    if !flush(&mut chunk) {
                        break;
                    }
                    publish(&at_end, &newest);
                }
            }
        }
    }
    flush(&mut chunk);
    Ok(())
}
