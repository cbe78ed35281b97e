//! The label reader: assigns every partition of the labels topic (no group:
//! every instance reads all labels) and forwards labels to the scoring
//! stage in chunks. Undecodable or out-of-bounds labels are counted and
//! skipped (labels are feedback, not records we owe an output for).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::guard;
use super::{decode_waiting, SourceError};
use crate::codec::{DecodeError, FraudLabel};
use crate::kafka::client_config;
use crate::message::{now_ms, LabelProgress, Shared, CHUNK};
use crate::metrics::events::{Emit as _, LabelSkipped};
use crate::metrics::LogSummary;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The label reader's settings.
#[derive(Debug, Clone)]
pub struct LabelConfig {
    pub brokers: String,
    /// librdkafka pass-through options (may hold secrets: never logged).
    pub kafka: BTreeMap<String, String>,
    /// The worker's group; the reader's client id is `<group>.labels`.
    pub group: String,
    pub labels_topic: String,
    /// The input topic: where its oldest unscored record stands in event
    /// time decides how far back labels are read.
    pub input_topic: String,
}

/// Context of the label reader.
pub type LabelContext = crate::kafka::ReadToEnd;

/// Bounds on a label before it may touch terminal state: ids no longer
/// than the input guard's default, event time after 2000-01-01 and not
/// more than a day ahead of the wall clock.
fn check_label(l: &FraudLabel) -> Result<(), DecodeError> {
    let limits = guard::InputLimits::default();
    let max = limits.max_id_bytes;
    for (field, id) in [
        ("transaction_id", &l.transaction_id),
        ("customer_id", &l.customer_id),
        ("terminal_id", &l.terminal_id),
    ] {
        if id.is_empty() || id.len() > max {
            return Err(DecodeError::Invalid {
                field,
                detail: format!("{} bytes (1..={max} accepted)", id.len()),
            });
        }
    }
    if l.event_time < guard::Y2000_MS {
        return Err(DecodeError::EventTimeOutOfRange(format!(
            "{} is before 2000-01-01",
            l.event_time
        )));
    }
    let future = limits.event_time_max_future.as_millis() as i64;
    if l.event_time > now_ms().saturating_add(future) {
        return Err(DecodeError::EventTimeOutOfRange(format!(
            "{} is more than {future} ms ahead of the wall clock",
            l.event_time
        )));
    }
    Ok(())
}

/// Label topics shorter than this are read whole (no lookup needed).
const SHORT_LABEL_TOPIC: i64 = 10_000;
/// Read labels reported up to a day before the window's start.
const LABEL_MARGIN_MS: i64 = crate::features::DAY_MS;

/// Offsets before a partition's end read for its newest timestamp: the
/// last offsets need not be records (a transactional producer's commit
/// markers, records compaction removed).
const NEWEST_TAIL: i64 = 100;

/// The newest record timestamp of a partition (`low`..`high`): read from
/// just before its end to the end of the partition.
fn newest_timestamp(
    consumer: &BaseConsumer<LabelContext>,
    topic: &str,
    partition: i32,
    low: i64,
    high: i64,
) -> Option<i64> {
    let from = (high - NEWEST_TAIL).max(low);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .ok()?;
    consumer.assign(&tpl).ok()?;
    let mut newest = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                newest = newest.max(m.timestamp().to_millis());
                if m.offset() >= high - 1 {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
            _ => {}
        }
    }
    let _ = consumer.unassign();
    newest
}

/// Where each label partition stands: at its end, and the newest report time.
#[derive(Default)]
struct Positions {
    at_end: HashMap<i32, bool>,
    newest: HashMap<i32, i64>,
}

impl Positions {
    /// Publishes the reader's progress (after the labels it covers were
    /// handed over).
    fn publish(&self, progress: &LabelProgress) {
        let all = self.at_end.values().all(|e| *e);
        let wm = self
            .at_end
            .iter()
            .filter(|(_, e)| !**e)
            .map(|(p, _)| self.newest.get(p).copied().unwrap_or(i64::MIN))
            .min()
            .unwrap_or(i64::MAX);
        progress.watermark.store(wm, Ordering::Release);
        progress.caught_up.store(all, Ordering::Release);
        if all {
            progress.initial_load_done.store(true, Ordering::Release);
        }
    }
}

/// The label-reader stage.
pub struct LabelReader {
    cfg: LabelConfig,
    shared: Shared,
    to_scoring: SyncSender<Vec<FraudLabel>>,
    progress: Arc<LabelProgress>,
    chunk: Vec<FraudLabel>,
    positions: Positions,
    skipped: LogSummary,
    errors: LogSummary,
}

impl LabelReader {
    /// `shared.cancel` stops it (the pipeline cancels the reader's own
    /// token after scoring has drained).
    pub fn new(
        cfg: LabelConfig,
        shared: Shared,
        to_scoring: SyncSender<Vec<FraudLabel>>,
        progress: Arc<LabelProgress>,
    ) -> Self {
        let interval = crate::metrics::summary::DEFAULT_INTERVAL;
        Self {
            cfg,
            shared,
            to_scoring,
            progress,
            chunk: Vec::with_capacity(CHUNK),
            positions: Positions::default(),
            skipped: LogSummary::new("label records skipped", interval),
            errors: LogSummary::new("labels consumer errors (retrying)", interval),
        }
    }

    fn consumer(&self) -> Result<BaseConsumer<LabelContext>, SourceError> {
        let mut c = client_config(&self.cfg.brokers, &self.cfg.kafka);
        c.set("group.id", format!("{}.labels", self.cfg.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", crate::kafka::READ_TO_END_FETCH_WAIT_MS);
        // The user's options win (`isolation.level` is refused by config:
        // aborted labels never reach terminal state).
        for (k, v) in &self.cfg.kafka {
            c.set(k, v);
        }
        c.set("isolation.level", "read_committed");
        c.create_with_context(crate::kafka::ReadToEnd::LABELS)
            .map_err(SourceError::Create)
    }

    /// Waits for the labels topic to exist (without labels terminal
    /// features stay 0, and scoring need not wait); its partition count.
    fn wait_for_topic(&self, consumer: &BaseConsumer<LabelContext>) -> usize {
        while !self.shared.cancel.is_cancelled() {
            let n = crate::kafka::partition_count(consumer.client(), &self.cfg.labels_topic)
                .unwrap_or(0);
            if n > 0 {
                return n;
            }
            self.progress.caught_up.store(true, Ordering::Release);
            self.progress
                .initial_load_done
                .store(true, Ordering::Release);
            std::thread::sleep(Duration::from_secs(1));
        }
        0
    }

    /// Hands the gathered labels over; false when scoring has gone.
    fn flush(&mut self) -> bool {
        if self.chunk.is_empty() {
            return true;
        }
        self.shared
            .metrics
            .labels
            .increment(self.chunk.len() as u64);
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.to_scoring.send(chunk).is_ok()
    }

    /// The event time of the oldest input record the group has still to
    /// score: per input partition, the record at the group's committed
    /// offset (the partition's first where none), decoded. None where the
    /// input is empty or a lookup fails.
    fn oldest_unscored(&self) -> Option<i64> {
        let mut c = client_config(&self.cfg.brokers, &self.cfg.kafka);
        c.set("group.id", &self.cfg.group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", crate::kafka::READ_TO_END_FETCH_WAIT_MS)
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = c.create().ok()?;
        let topic = &self.cfg.input_topic;
        let n = crate::kafka::partition_count(consumer.client(), topic).ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n as i32 {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .ok()?;
        let mut at = TopicPartitionList::new();
        for e in committed.elements_for_topic(topic) {
            let start = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            at.add_partition_offset(topic, e.partition(), start).ok()?;
        }
        consumer.assign(&at).ok()?;
        // One record (or the end) of each partition is enough.
        let mut oldest = None::<i64>;
        let mut seen = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < n && std::time::Instant::now() < deadline {
            let p = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Ok(tx) = self.shared.codec.decode_transaction(m.key(), m.payload()) {
                        oldest = Some(oldest.map_or(tx.event_time, |o| o.min(tx.event_time)));
                    }
                    m.partition()
                }
                Some(Err(KafkaError::PartitionEOF(p))) => p,
                _ => continue,
            };
            seen.insert(p);
        }
        oldest
    }

    /// Where each label partition is read from: the labels that can still
    /// reach a terminal window, i.e. reported after (the older of the
    /// newest label time and the oldest input record still to score − 37
    /// days − a day's margin), found by the broker's timestamp index. A
    /// live stream reads about the window; a backlog (an instance down for
    /// a day, a replay of history) reads back to what its records need.
    /// The beginning where the topic is short or the lookup fails.
    fn start_offsets(&self, consumer: &BaseConsumer<LabelContext>, n_parts: usize) -> Vec<Offset> {
        let topic = &self.cfg.labels_topic;
        let begin = vec![Offset::Beginning; n_parts];
        let mut newest = i64::MIN;
        let mut total = 0i64;
        for p in 0..n_parts as i32 {
            let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))
            else {
                return begin;
            };
            total += high - low;
            if high > low {
                newest =
                    newest.max(newest_timestamp(consumer, topic, p, low, high).unwrap_or(i64::MIN));
            }
        }
        if total < SHORT_LABEL_TOPIC || newest == i64::MIN {
            return begin;
        }
        let oldest_unscored = self.oldest_unscored();
        let from = newest.min(oldest_unscored.unwrap_or(i64::MAX))
            - crate::features::TERMINAL_HORIZON_MS
            - LABEL_MARGIN_MS;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n_parts as i32 {
            if tpl
                .add_partition_offset(topic, p, Offset::Offset(from))
                .is_err()
            {
                return begin;
            }
        }
        let found = match consumer.offsets_for_times(tpl, Duration::from_secs(10)) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "label timestamp lookup failed; reading the labels topic from its beginning");
                return begin;
            }
        };
        let starts: Vec<Offset> = (0..n_parts as i32)
            .map(
                |p| match found.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Offset::Offset(o),
                    Some(Offset::End) => Offset::End,
                    _ => Offset::Beginning,
                },
            )
            .collect();
        tracing::info!(from_ms = from, newest_label_ms = newest, oldest_unscored_ms = ?oldest_unscored, starts = ?starts, "reading the labels that can reach a terminal window");
        starts
    }

    /// Reads every partition of the labels topic (from where labels can
    /// still matter) until cancelled or scoring has gone.
    pub fn run(mut self) -> Result<(), SourceError> {
        let consumer = self.consumer()?;
        let n_parts = self.wait_for_topic(&consumer);
        let starts = self.start_offsets(&consumer, n_parts);
        let mut tpl = TopicPartitionList::new();
        for (p, start) in starts.into_iter().enumerate() {
            let p = p as i32;
            tpl.add_partition_offset(&self.cfg.labels_topic, p, start)
                .map_err(SourceError::Create)?;
            self.positions.at_end.insert(p, false);
        }
        consumer.assign(&tpl).map_err(SourceError::Create)?;
        self.progress.caught_up.store(false, Ordering::Release);
        while !self.shared.cancel.is_cancelled() {
            self.skipped.maybe_flush();
            self.errors.maybe_flush();
            let wait = if self.chunk.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            let go_on = match consumer.poll(wait) {
                None => self.flush_and_publish(),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let ok = self.flush();
                    self.positions.at_end.insert(p, true);
                    self.positions.publish(&self.progress);
                    ok
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "labels consumer error (retrying)");
                    self.errors.note("consumer_error", || e.to_string());
                    true
                }
                Some(Ok(m)) => self.take(&m),
            };
            if !go_on {
                break;
            }
        }
        self.flush();
        Ok(())
    }

    fn flush_and_publish(&mut self) -> bool {
        let ok = self.flush();
        self.positions.publish(&self.progress);
        ok
    }

    /// One label record; false when the reader should stop.
    fn take(&mut self, m: &BorrowedMessage<'_>) -> bool {
        let partition = m.partition();
        self.positions.at_end.insert(partition, false);
        let codec = self.shared.codec.clone();
        let Some(decoded) = decode_waiting(&self.shared.metrics, &self.shared.cancel, || {
            codec.decode_label(m.payload())
        }) else {
            return false;
        };
        match decoded.and_then(|l| check_label(&l).map(|()| l)) {
            Ok(l) => {
                self.positions.newest.insert(partition, l.reported_at);
                self.chunk.push(l);
            }
            Err(e) => {
                let topic = &self.cfg.labels_topic;
                LabelSkipped {
                    topic,
                    partition,
                    offset: m.offset(),
                    reason: e.code(),
                    error: &e,
                }
                .emit(&self.shared.metrics);
                self.skipped
                    .note(e.reason(), || format!("{topic}/{partition}@{}", m.offset()));
            }
        }
        if self.chunk.len() >= CHUNK {
            return self.flush_and_publish();
        }
        true
    }
}
