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

pub mod guard;
pub mod offsets;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
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
    /// Input headers beyond [`DEAD_LETTER_HEADER_BYTES`] were left out.
    pub headers_dropped: bool,
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
        revoke_drain: cfg.drain_timeout.min(Duration::from_secs(60)),
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

/// Header budget of a dead-letter copy: at most this many bytes of input
/// headers are carried (keys and values); the rest is dropped and flagged.
pub const DEAD_LETTER_HEADER_BYTES: usize = 16 * 1024;

/// The record's headers as raw bytes, read through librdkafka's C API:
/// rdkafka 0.38's `Headers::iter` panics on a key that is not UTF-8. Keys
/// are carried lossily (invalid bytes become U+FFFD), values as bytes, at
/// most `budget` bytes in all; the flag says whether any were dropped.
pub fn raw_headers(m: &BorrowedMessage<'_>, budget: usize) -> (Vec<(String, Vec<u8>)>, bool) {
    use rdkafka::bindings as rd;
    let mut out = Vec::new();
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a live message for the borrow's lifetime; the
    // headers it returns are owned by the message and only read here.
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut hdrs) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return (out, false);
    }
    // SAFETY: `hdrs` is non-null and valid while `m` is.
    let n = unsafe { rd::rd_kafka_header_cnt(hdrs) };
    let mut used = 0usize;
    let mut dropped = false;
    for i in 0..n {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: index within `rd_kafka_header_cnt`; out-pointers are locals.
        let e = unsafe { rd::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
        if e != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka header names are NUL-terminated.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value: &[u8] = if value.is_null() {
            &[]
        } else {
            // SAFETY: `value` points at `size` bytes owned by the message.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
        };
        if used + key.len() + value.len() > budget {
            dropped = true;
            continue;
        }
        used += key.len() + value.len();
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    (out, dropped)
}

/// The input stage: polls the group consumer, decodes and guards each
/// record, hands good ones to scoring in chunks and bad ones to the sink
/// as dead letters. Blocking sends give backpressure: a full queue stops
/// polling.
pub struct Source {
    pub consumer: Arc<InputConsumer>,
    pub codec: Arc<Codec>,
    pub tracker: Arc<OffsetTracker>,
    pub metrics: Arc<Metrics>,
    pub to_scoring: SyncSender<Work>,
    pub to_sink: mpsc::Sender<SinkItem>,
    pub stop: Arc<AtomicBool>,
    pub topic: String,
    pub guard: guard::InputGuard,
    /// Interval of the WARN summary of dead letters.
    pub log_interval: Duration,
}

/// Longest pause between two attempts while the schema registry is down.
const REGISTRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Calls `decode` until it no longer fails because the schema registry is
/// unavailable: the record is held and the caller does not poll further,
/// so nothing behind it is scored, dead-lettered or committed. None if
/// `stop` was set meanwhile.
pub fn decode_waiting<T>(
    metrics: &Metrics,
    stop: &AtomicBool,
    mut decode: impl FnMut() -> Result<T, crate::codec::DecodeError>,
) -> Option<Result<T, crate::codec::DecodeError>> {
    // No clock is read unless the registry is down: this runs per record,
    // and a clock read is a few percent of the hot path on a VM.
    let mut backoff = Duration::from_millis(100);
    let mut since: Option<Instant> = None;
    let mut last_warn: Option<Instant> = None;
    loop {
        match decode() {
            Err(e @ crate::codec::DecodeError::RegistryUnavailable { .. }) => {
                let t0 = *since.get_or_insert_with(|| {
                    metrics.registry_waiting.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "schema registry unavailable: input waits (nothing is dead-lettered or committed meanwhile)");
                    Instant::now()
                });
                let last = *last_warn.get_or_insert(t0);
                if last.elapsed() >= Duration::from_secs(30) {
                    last_warn = Some(Instant::now());
                    tracing::warn!(error = %e, waited_s = t0.elapsed().as_secs(), "schema registry still unavailable; input waits");
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::Acquire) {
                        metrics.registry_waiting.fetch_sub(1, Ordering::Relaxed);
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(REGISTRY_BACKOFF_MAX);
            }
            other => {
                if let Some(t0) = since {
                    metrics.registry_waiting.fetch_sub(1, Ordering::Relaxed);
                    tracing::info!(
                        waited_ms = t0.elapsed().as_millis() as u64,
                        "schema registry reachable again; input resumes"
                    );
                }
                return Some(other);
            }
        }
    }
}

impl Source {
    /// The input loop: runs until `stop` (or scoring/sink have gone).
    pub fn run(mut self) -> Result<(), SourceError> {
        let mut chunk: Vec<Work> = Vec::with_capacity(CHUNK);
        // Records handed over since the last `Drained` marker.
        let mut unmarked = false;
        let mut dead = crate::metrics::LogSummary::new(
            "records sent to the dead-letter topic",
            self.log_interval,
        );
        let mut errors =
            crate::metrics::LogSummary::new("consumer errors (retrying)", self.log_interval);
        let to_scoring = self.to_scoring.clone();
        // Hands the gathered records over; false when scoring has gone.
        let flush = |chunk: &mut Vec<Work>, unmarked: &mut bool| -> bool {
            if chunk.is_empty() {
                return true;
            }
            *unmarked = true;
            let items = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
            to_scoring.send(Work::Many(items)).is_ok()
        };
        let consumer = self.consumer.clone();
        // The guard's wall clock, read once per chunk rather than per record
        // (its bound is a day; a clock read is ~5 % of the hot path).
        let mut wall_ms = crate::message::now_ms();
        while !self.stop.load(Ordering::Acquire) {
            if chunk.is_empty() {
                wall_ms = crate::message::now_ms();
            }
            dead.maybe_flush();
            errors.maybe_flush();
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
                    tracing::debug!(error = %e, "consumer error (retrying)");
                    errors.note("consumer_error", || e.to_string());
                    continue;
                }
            };
            let (partition, offset) = (m.partition(), m.offset());
            let Some(decoded) = decode_waiting(&self.metrics, &self.stop, || {
                self.codec.decode_transaction(m.key(), m.payload())
            }) else {
                // Stopped while the registry was down: the held record was
                // not registered, so its offset is not committed.
                break;
            };
            let decoded =
                decoded.and_then(|tx| self.guard.check(partition, &tx, wall_ms).map(|r| (tx, r)));
            if let Ok((_, guard::Resync::Jumped { partition, by_ms })) = &decoded {
                self.metrics.event("event_clock_resyncs", "ahead_run", 1);
                tracing::warn!(partition, jumped_ms = by_ms, "partition event-time clock moved forward after a run of far-ahead records (a gap in the stream?)");
            }
            if consumer.context().replay_bound(partition, offset).is_some() {
                // History before the committed offset: state only, no output.
                if let Ok((tx, _)) = decoded {
                    self.metrics.replayed.fetch_add(1, Ordering::Relaxed);
                    chunk.push(Work::Replay(partition, tx));
                    if chunk.len() >= CHUNK && !flush(&mut chunk, &mut unmarked) {
                        break;
                    }
                }
                continue;
            }
            self.metrics.consumed.fetch_add(1, Ordering::Relaxed);
            self.metrics.first_consumed.get_or_init(Instant::now);
            self.tracker.register(partition, offset);
            match decoded {
                Ok((tx, _)) => {
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
                    tracing::debug!(
                        topic = %self.topic, partition, offset, reason = e.reason(), error = %e,
                        "record sent to the dead-letter topic"
                    );
                    dead.note(e.reason(), || {
                        format!("{}/{partition}@{offset}", self.topic)
                    });
                    let (headers, headers_dropped) = raw_headers(&m, DEAD_LETTER_HEADER_BYTES);
                    let dl = DeadLetter {
                        partition,
                        offset,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers,
                        headers_dropped,
                        reason: e.reason(),
                        detail: e.to_string(),
                    };
                    if self.to_sink.blocking_send(SinkItem::Dead(dl)).is_err() {
                        break;
                    }
                }
            }
        }
        flush(&mut chunk, &mut unmarked);
        Ok(())
    }
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

/// Bounds on a label before it may touch terminal state: ids no longer
/// than the input guard's default, event time after 2000-01-01 and not
/// more than a day ahead of the wall clock.
fn check_label(l: &FraudLabel) -> Result<(), crate::codec::DecodeError> {
    let max = guard::InputLimits::default().max_id_bytes;
    for (field, id) in [
        ("transaction_id", &l.transaction_id),
        ("customer_id", &l.customer_id),
        ("terminal_id", &l.terminal_id),
    ] {
        if id.is_empty() || id.len() > max {
            return Err(crate::codec::DecodeError::Invalid {
                field,
                detail: format!("{} bytes (1..={max} accepted)", id.len()),
            });
        }
    }
    if l.event_time < guard::Y2000_MS {
        return Err(crate::codec::DecodeError::EventTimeOutOfRange(format!(
            "{} is before 2000-01-01",
            l.event_time
        )));
    }
    let future = guard::InputLimits::default()
        .event_time_max_future
        .as_millis() as i64;
    if l.event_time > crate::message::now_ms().saturating_add(future) {
        return Err(crate::codec::DecodeError::EventTimeOutOfRange(format!(
            "{} is more than {future} ms ahead of the wall clock",
            l.event_time
        )));
    }
    Ok(())
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
    /// Scoring stopped waiting for the label history (labels_load_timeout).
    pub load_timed_out: AtomicBool,
}

impl Default for LabelProgress {
    fn default() -> Self {
        Self {
            caught_up: AtomicBool::new(false),
            watermark: AtomicI64::new(i64::MIN),
            initial_load_done: AtomicBool::new(false),
            load_timed_out: AtomicBool::new(false),
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
    let mut skipped = crate::metrics::LogSummary::new(
        "label records skipped",
        crate::metrics::summary::DEFAULT_INTERVAL,
    );
    let mut errors = crate::metrics::LogSummary::new(
        "labels consumer errors (retrying)",
        crate::metrics::summary::DEFAULT_INTERVAL,
    );
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
        skipped.maybe_flush();
        errors.maybe_flush();
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
            Some(Err(e)) => {
                tracing::debug!(error = %e, "labels consumer error (retrying)");
                errors.note("consumer_error", || e.to_string());
            }
            Some(Ok(m)) => {
                at_end.insert(m.partition(), false);
                let Some(decoded) =
                    decode_waiting(&metrics, &stop, || codec.decode_label(m.payload()))
                else {
                    break;
                };
                match decoded.and_then(|l| check_label(&l).map(|()| l)) {
                    Ok(l) => {
                        newest.insert(m.partition(), l.reported_at);
                        chunk.push(l);
                    }
                    Err(e) => {
                        tracing::debug!(
                            topic = %cfg.labels_topic, partition = m.partition(), offset = m.offset(),
                            reason = e.reason(), error = %e, "undecodable label skipped"
                        );
                        metrics.event("labels_skipped", e.reason(), 1);
                        skipped.note(e.reason(), || {
                            format!("{}/{}@{}", cfg.labels_topic, m.partition(), m.offset())
                        });
                    }
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
