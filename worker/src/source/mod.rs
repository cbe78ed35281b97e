//! Source: the consumer-group consumer on the input topic and the
//! label-feedback reader.
//!
//! The input consumer runs on its own thread (a `BaseConsumer` polled in a
//! loop), so blocking on a full downstream queue (backpressure) or on a
//! revoke drain never stalls the async runtime. Offsets are stored only by
//! the sink, for delivered records, through [`OffsetTracker`]; librdkafka's
//! auto-commit then commits what was stored.
//!
//! The label reader ([`labels::LabelReader`]) assigns every partition of
//! the labels topic (no group: every instance reads all labels) and
//! forwards labels to the scoring stage.

pub mod consumer;
pub mod guard;
pub mod headers;
pub mod labels;
mod lifecycle;

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;

pub use consumer::{
    input_consumer, Assignment, GroupProtocol, InputConsumer, SourceConfig, SourceContext,
};
pub use headers::{raw_headers, DEAD_LETTER_HEADER_BYTES};
pub use labels::{LabelConfig, LabelReader};

use crate::codec::DecodeError;
use crate::commit::Commits;
use crate::message::{now_ms, DeadLetter, Incoming, Record, Shared, StateOp, Work, CHUNK};
use crate::metrics::events::{
    Emit as _, EventClockResynced, RestoreOutcome, RetentionGap, StateRestored,
};
use crate::metrics::{LogSummary, Metrics};
use lifecycle::{Resumed, Route};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot create the Kafka consumer")]
    Create(#[source] KafkaError),
    #[error("cannot subscribe to {topic}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("fatal consumer error (check brokers, credentials and topic ACLs)")]
    Fatal(#[source] KafkaError),
    #[error("the broker fenced this consumer's group.instance.id (another process with the same --group-instance-id?)")]
    Fenced(#[source] KafkaError),
}

impl SourceError {
    /// Whose fault it is: librdkafka refusing the client options is the
    /// settings'; a subscription or consumer the cluster refuses is the
    /// cluster's, and not transient (librdkafka retries the rest itself).
    pub fn domain(&self) -> crate::outcome::Domain {
        use crate::outcome::{Domain, Input};
        match self {
            SourceError::Create(_) => Domain::Input(Input::Settings),
            SourceError::Subscribe { .. } | SourceError::Fatal(_) | SourceError::Fenced(_) => {
                Domain::External { transient: false }
            }
        }
    }

    /// The broker fenced the consumer as a static member: another member
    /// joined with its `group.instance.id`, or (seen on Apache Kafka 4.1
    /// with librdkafka 2.12) the consumer's own rejoin after its group
    /// coordinator's broker was lost. A fenced consumer is dead for good;
    /// the pipeline starts again with a new one ([`crate::pipeline::run`]).
    pub fn is_fenced_static_member(&self) -> bool {
        matches!(self, SourceError::Fenced(_))
    }

    /// What follows ([`crate::outcome::decide`]): the worker stops.
    pub fn outcome(&self) -> crate::outcome::Outcome {
        crate::outcome::decide(self.domain())
    }
}

/// The input stage: polls the group consumer, decodes and guards each
/// record, hands good ones to scoring in chunks and bad ones to the sink
/// as dead letters. Blocking sends give backpressure: a full queue stops
/// polling.
pub struct Source {
    consumer: Arc<InputConsumer>,
    shared: Shared,
    commits: Arc<Commits>,
    topic: String,
    guard: guard::InputGuard,
    /// Shared with the consumer context (a revoke hands it over); only
    /// this thread and the rebalance callbacks (on this thread, inside
    /// `poll`) lock it, so it is never contended.
    chunk: Arc<Mutex<Chunk>>,
    /// The changelog is on: scored records wait for it to commit.
    stateful: bool,
    /// When idle partitions' positions were last stored for commit.
    idle_stored_at: Instant,
    dead: LogSummary,
    errors: LogSummary,
}

/// Records gathered for one hand-over to scoring.
struct Chunk {
    items: Vec<Record>,
    /// None once the source has stopped (scoring then sees the channel close).
    to_scoring: Option<SyncSender<Work>>,
    /// Records were handed over since the last `Drained` marker.
    unmarked: bool,
}

impl Chunk {
    fn new(to_scoring: SyncSender<Work>) -> Self {
        Self {
            items: Vec::with_capacity(CHUNK),
            to_scoring: Some(to_scoring),
            unmarked: false,
        }
    }

    fn send(&self, w: Work) -> bool {
        self.to_scoring
            .as_ref()
            .is_some_and(|tx| tx.send(w).is_ok())
    }

    /// Hands the gathered records over; `drained`: nothing more is
    /// buffered. False when scoring has gone.
    fn hand_over(&mut self, drained: bool) -> bool {
        let records = std::mem::replace(&mut self.items, Vec::with_capacity(CHUNK));
        self.send(Work::Records { records, drained })
    }

    /// Hands the gathered records over; false when scoring has gone.
    fn flush(&mut self) -> bool {
        if self.items.is_empty() {
            return true;
        }
        self.unmarked = true;
        self.hand_over(false)
    }

    /// Adds a record, handing the chunk over when full; false when scoring
    /// has gone.
    fn push(&mut self, r: Record) -> bool {
        self.items.push(r);
        self.items.len() < CHUNK || self.flush()
    }

    /// Hands over what is gathered, then `op`; false when scoring has gone.
    fn control(&mut self, op: StateOp) -> bool {
        self.flush() && self.send(Work::State(op))
    }

    /// Nothing more is buffered: hand over what we have and say so.
    fn drained(&mut self) -> bool {
        if !self.unmarked && self.items.is_empty() {
            return true;
        }
        self.unmarked = false;
        self.hand_over(true)
    }
}

/// What handling one polled record asks of the loop.
enum Next {
    Continue,
    /// Stop polling (downstream gone, or cancelled while holding a record).
    Stop,
}

impl Source {
    /// `log_interval`: of the WARN summaries of dead letters and errors.
    /// Records go to scoring through the consumer's hand-over (see
    /// [`input_consumer`]), dead letters with them.
    pub fn new(
        consumer: Arc<InputConsumer>,
        shared: Shared,
        commits: Arc<Commits>,
        cfg: &SourceConfig,
        log_interval: Duration,
    ) -> Self {
        let chunk = consumer.context().handover.clone();
        let stateful = consumer.context().state.is_some();
        Self {
            consumer,
            shared,
            commits,
            topic: cfg.input_topic.clone(),
            guard: guard::InputGuard::new(cfg.input.clone()),
            chunk,
            stateful,
            idle_stored_at: Instant::now(),
            dead: LogSummary::new("records sent to the dead-letter topic", log_interval),
            errors: LogSummary::new("consumer errors (retrying)", log_interval),
        }
    }

    /// The input loop: runs until cancelled (or scoring/sink have gone,
    /// or a fatal error); then hands over what it holds and closes the
    /// channel to scoring.
    pub fn run(mut self) -> Result<(), SourceError> {
        let r = self.poll_loop();
        let mut chunk = self.chunk();
        chunk.flush();
        // The consumer context shares the chunk: close the channel here.
        chunk.to_scoring = None;
        r
    }

    fn poll_loop(&mut self) -> Result<(), SourceError> {
        let consumer = self.consumer.clone();
        // The guard's wall clock, read once per chunk rather than per record
        // (its bound is a day; a clock read is ~5 % of the hot path).
        let mut wall_ms = now_ms();
        while !self.shared.cancel.is_cancelled() {
            let idle = self.chunk().items.is_empty();
            if idle {
                wall_ms = now_ms();
            }
            self.dead.maybe_flush();
            self.errors.maybe_flush();
            // Block only when nothing is waiting to be handed over.
            let wait = if idle {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            let polled = consumer.poll(wait);
            let revoked = consumer.context().partitions.take_revoked();
            if !revoked.is_empty() {
                // Their event-time clocks go with them: a later owner of
                // the partition starts its own.
                self.guard.forget(&revoked);
            }
            if let Some(rewind) = self.commits.rewind_due() {
                if !self.rewind(rewind) {
                    break;
                }
            }
            if !self.apply_restores() {
                break;
            }
            let next = match polled {
                None if self.chunk().drained() => {
                    // A fatal error (a fenced static member) comes through
                    // the error callback only; the consumer then has no
                    // assignment and its polls return nothing, for ever.
                    if consumer.client().fatal_error().is_some() {
                        return Err(fatal(&consumer, None));
                    }
                    self.store_idle_positions();
                    Next::Continue
                }
                None => Next::Stop,
                Some(Ok(m)) => self.take(&m, wall_ms),
                Some(Err(e)) if consumer::is_fatal(&e) => return Err(fatal(&consumer, Some(e))),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "consumer error (retrying)");
                    self.errors.note("consumer_error", || e.to_string());
                    Next::Continue
                }
            };
            if let Next::Stop = next {
                break;
            }
        }
        Ok(())
    }

    /// Every 500 ms at most, while no partition is restoring, replaying or
    /// resuming: idle partitions' positions go to [`Commits::store_idle`].
    fn store_idle_positions(&mut self) {
        let ctx = self.consumer.context();
        if self.idle_stored_at.elapsed() < Duration::from_millis(500) || ctx.partitions.settling() {
            return;
        }
        self.idle_stored_at = Instant::now();
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        if !self.commits.exactly_once() {
            self.commits.store_idle(&positions);
            return;
        }
        // Exactly-once: in order after every record handed over, into the
        // next transaction.
        let at: Vec<(i32, i64)> = positions
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o > 0 => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        if !at.is_empty() {
            self.chunk().control(StateOp::Positions(at));
        }
    }

    /// Exactly-once: the open transaction was aborted (or must not
    /// commit). What the source holds is dropped; scoring forgets every
    /// assigned partition's changes since the last commit and tells the
    /// sink, which discards everything before that; the partitions are
    /// restored from the changelog and resume at their committed offsets,
    /// as at an assignment. False when scoring has gone.
    fn rewind(&mut self, rewind: u64) -> bool {
        let ctx = self.consumer.context();
        let partitions = ctx.assigned.lock().map(|a| a.clone()).unwrap_or_default();
        tracing::warn!(partitions = ?partitions, rewind, "transaction aborted: rewinding to the last committed offsets and state");
        let mut chunk = self.chunk();
        chunk.items.clear();
        let op = StateOp::Rewind {
            partitions: partitions.clone(),
            rewind,
        };
        if !chunk.control(op) {
            return false;
        }
        drop(chunk);
        ctx.restore_again(&self.consumer, &partitions);
        true
    }

    fn chunk(&self) -> MutexGuard<'_, Chunk> {
        self.chunk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands finished changelog reads to scoring and resumes their
    /// partitions where the state leaves off; false when scoring has gone.
    fn apply_restores(&mut self) -> bool {
        let Some(state) = &self.consumer.context().state else {
            return true;
        };
        let partitions = &self.consumer.context().partitions;
        for d in state.take_done() {
            let p = d.partition;
            if !partitions.restored(p, d.generation) {
                // Revoked (or re-assigned) while its changelog was read.
                continue;
            }
            let (outcome, replay) = restore_outcome(&d);
            let covers = d.result.as_ref().ok().and_then(|r| r.covers);
            let low = d.input_low.unwrap_or(0);
            let (customers, records, ms) = match d.result {
                Ok(r) => (r.customers, r.records, r.elapsed.as_millis() as u64),
                Err(e) => {
                    tracing::warn!(partition = p, error = %crate::outcome::chain(&e), "cannot read the state changelog");
                    (Vec::new(), 0, 0)
                }
            };
            let restored = StateRestored {
                partition: p,
                outcome,
                customers: customers.len(),
                changelog_records: records,
                restore_ms: ms,
            };
            let op = StateOp::Restore {
                partition: p,
                customers,
            };
            if !self.chunk().control(op) {
                return false;
            }
            match (replay, d.committed) {
                (true, Some(c)) => {
                    tracing::warn!(partition = p, outcome = outcome.as_str(), committed = c, "the state changelog does not cover the committed offset: replaying what the input topic still holds");
                    self.replay_from_start(p, c, low);
                }
                (_, Some(c)) => {
                    // The state is kept where the records since are gone.
                    let r = Resumed {
                        from: resume_from(covers, c),
                        committed: c,
                    };
                    let from = self.above_log_start(p, r, low);
                    if from < c {
                        // The changelog trails the commit (dead letters at
                        // the end change no state; otherwise a changelog
                        // behind its input): the records between are
                        // replayed into state, not scored. A transaction
                        // already in a history is not counted twice.
                        tracing::info!(partition = p, covers = ?covers, committed = c, "the state changelog trails the committed offset: replaying the records between (state only)");
                        partitions.replay(p, c);
                    }
                    partitions.resumed(p, Resumed { from, committed: c });
                    self.resume_at(p, Offset::Offset(from));
                }
                (_, None) => self.resume_at(p, Offset::Beginning),
            }
            restored.emit(&self.shared.metrics);
        }
        true
    }

    /// Replays `partition` from its beginning (`low`, its low watermark
    /// when known, else 0) into state, scoring from `until` (the committed
    /// offset) on.
    fn replay_from_start(&self, partition: i32, until: i64, low: i64) {
        let partitions = &self.consumer.context().partitions;
        partitions.replay(partition, until);
        let r = Resumed {
            from: 0,
            committed: until,
        };
        let from = self.above_log_start(partition, r, low);
        partitions.resumed(partition, Resumed { from, ..r });
        self.resume_at(partition, Offset::Beginning);
    }

    fn resume_at(&self, partition: i32, start: Offset) {
        // A partition whose fetch has not started yet refuses a seek with
        // `Erroneous state`: its committed offset is still being fetched
        // (under read_committed that waits while a transaction holding the
        // group's offsets is open, e.g. a killed predecessor's until it is
        // fenced). Resuming without the seek would skip the records the
        // state needs replayed: it is retried, for up to 30 s.
        let mut tries = 0;
        while let Err(e) =
            self.consumer
                .seek(&self.topic, partition, start, Duration::from_secs(10))
        {
            tries += 1;
            if tries >= 600 {
                tracing::error!(partition, error = %e, "cannot seek the restored partition; it resumes where the group committed");
                break;
            }
            tracing::debug!(partition, error = %e, "seek refused; retrying");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(partition, error = %e, "cannot resume the restored partition");
        }
        consumer::wake_fetchers(&self.consumer, &self.topic, &[partition]);
    }

    /// The first record of `partition` after its restore, at `offset`.
    /// Past the resume offset is normal on its own (transaction markers,
    /// compaction); where the partition's low watermark is past it too, the
    /// topic's retention deleted records between the restore's lookup and
    /// this fetch: the restored state is kept and the gap counted.
    fn check_resumed(&self, partition: i32, offset: i64, r: Resumed) {
        if offset <= r.from {
            return;
        }
        let low = crate::kafka::low_watermark(self.consumer.client(), &self.topic, partition);
        if let Some(low) = low.filter(|low| *low > r.from) {
            self.count_retention_gap(partition, r, low.min(offset));
        }
    }

    /// `r.from` raised to the partition's low watermark `low`: a resume
    /// never seeks below the log start; the records it skips are gone
    /// (counted, logged).
    fn above_log_start(&self, partition: i32, r: Resumed, low: i64) -> i64 {
        if low <= r.from {
            return r.from;
        }
        self.count_retention_gap(partition, r, low);
        low
    }

    /// Records `r.from..first` were deleted before the restore read them:
    /// those below the committed offset were scored, but their changes to
    /// state are missing; the rest are never scored.
    fn count_retention_gap(&self, partition: i32, r: Resumed, first: i64) {
        let (state_only, unscored) = r.deleted_before(first);
        RetentionGap {
            partition,
            resumed_at: r.from,
            committed: r.committed,
            first_held: first,
            state_only: state_only as u64,
            unscored: unscored as u64,
        }
        .emit(&self.shared.metrics);
    }

    /// One polled record: routed by its partition's phase, decoded,
    /// registered, handed over (replayed, scored or dead-lettered).
    fn take(&mut self, m: &BorrowedMessage<'_>, wall_ms: i64) -> Next {
        let (partition, offset) = (m.partition(), m.offset());
        let (route, resumed) = self.consumer.context().partitions.route(partition, offset);
        if let Some(r) = resumed {
            self.check_resumed(partition, offset, r);
        }
        if route == Route::Skip {
            return Next::Continue;
        }
        let Some(decoded) = self.decode(m, wall_ms) else {
            // Cancelled while the registry was down: the held record was
            // not registered, so its offset is not committed.
            return Next::Stop;
        };
        let handed = match (route, decoded) {
            // History before the committed offset: state only, no output.
            (Route::Replay, Ok(tx)) => {
                self.shared.metrics.replayed.increment(1);
                self.chunk().push(Record::Replay(partition, tx))
            }
            (Route::Replay, Err(_)) => true,
            (_, decoded) => {
                let metrics = &self.shared.metrics;
                metrics.consumed.increment(1);
                metrics.first_consumed.get_or_init(Instant::now);
                self.commits
                    .register(partition, offset, self.stateful && decoded.is_ok());
                match decoded {
                    Ok(tx) => self.chunk().push(Record::Score(Incoming {
                        partition,
                        offset,
                        tx,
                        consumed_at: Instant::now(),
                        produced_at: m.timestamp().to_millis(),
                    })),
                    Err(e) => self.dead_letter(m, &e),
                }
            }
        };
        if handed {
            Next::Continue
        } else {
            Next::Stop
        }
    }

    /// Decodes a record and checks it against the input guard; None if
    /// cancelled while waiting for the schema registry.
    fn decode(
        &mut self,
        m: &BorrowedMessage<'_>,
        wall_ms: i64,
    ) -> Option<Result<crate::codec::Transaction, DecodeError>> {
        let codec = self.shared.codec.clone();
        let decoded = decode_waiting(&self.shared.metrics, &self.shared.cancel, || {
            codec.decode_transaction(m.key(), m.payload())
        })?;
        let partition = m.partition();
        let checked = decoded.and_then(|tx| {
            let resync = self.guard.check(partition, &tx, wall_ms)?;
            Ok((tx, resync))
        });
        Some(checked.map(|(tx, resync)| {
            if let guard::Resync::Jumped { partition, by_ms } = resync {
                EventClockResynced {
                    partition,
                    jumped_ms: by_ms,
                }
                .emit(&self.shared.metrics);
            }
            tx
        }))
    }

    /// Hands a record that failed decoding or its guard on as a dead
    /// letter, in order with the records; false when scoring has gone.
    fn dead_letter(&mut self, m: &BorrowedMessage<'_>, e: &DecodeError) -> bool {
        let (partition, offset) = (m.partition(), m.offset());
        let topic = &self.topic;
        self.dead
            .note(e.reason(), || format!("{topic}/{partition}@{offset}"));
        let (headers, headers_dropped) = raw_headers(m, DEAD_LETTER_HEADER_BYTES);
        let dl = DeadLetter {
            partition,
            offset,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
            headers_dropped,
            reason: e.code().into(),
            detail: e.to_string(),
        };
        self.chunk().push(Record::Dead(dl))
    }
}

/// How a partition's state was restored (metric reason) and whether the
/// input must be replayed from its beginning up to the committed offset.
///
/// Any changelog record of the partition means the changelog is the state
/// up to its highest covered offset, which may trail the commit (by
/// dead-lettered records, which change no state, or, exactly once, by the
/// records since the last flush: they are replayed into state). An empty changelog
/// under a commit (first start with the changelog, or a deleted one) or a
/// failed read falls back to replaying the input.
fn restore_outcome(d: &consumer::RestoreDone) -> (RestoreOutcome, bool) {
    match (&d.result, d.committed) {
        (_, None | Some(0)) => (RestoreOutcome::NoCommit, false),
        (Ok(r), Some(_)) if r.covers.is_some() => (RestoreOutcome::Changelog, false),
        (Ok(_), Some(_)) => (RestoreOutcome::ReplayedNoChangelog, true),
        (Err(_), Some(_)) => (RestoreOutcome::ReplayedReadFailed, true),
    }
}

/// Where a partition restored from its changelog resumes: just after the
/// newest input offset the changelog covers, if that is below the
/// committed offset (the gap is replayed into state), else at the commit.
fn resume_from(covers: Option<i64>, committed: i64) -> i64 {
    covers.map_or(committed, |c| (c + 1).clamp(0, committed))
}

/// A fatal consumer error (`polled`: the one a poll returned), with
/// librdkafka's own cause logged (e.g. a static member still held by a
/// predecessor the broker has not expired yet, KIP-848's
/// UNRELEASED_INSTANCE_ID): a consumer fenced as a static member is
/// [`SourceError::Fenced`] (the pipeline starts again), any other
/// [`SourceError::Fatal`].
fn fatal(consumer: &InputConsumer, polled: Option<KafkaError>) -> SourceError {
    let cause = consumer.client().fatal_error();
    if let Some((code, reason)) = &cause {
        tracing::error!(error = %code, reason, "fatal consumer error");
    }
    let code = cause.map_or(RDKafkaErrorCode::Fatal, |(c, _)| c);
    if code == RDKafkaErrorCode::FencedInstanceId {
        return SourceError::Fenced(KafkaError::Global(code));
    }
    SourceError::Fatal(polled.unwrap_or(KafkaError::Global(code)))
}

/// Longest pause between two attempts while the schema registry is down.
const REGISTRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Calls `decode` until it no longer fails for a reason that retrying
/// fixes (the schema registry is unavailable): the record is held and the
/// caller does not poll further, so nothing behind it is scored,
/// dead-lettered or committed. None if cancelled meanwhile.
pub fn decode_waiting<T>(
    metrics: &Metrics,
    cancel: &CancellationToken,
    mut decode: impl FnMut() -> Result<T, DecodeError>,
) -> Option<Result<T, DecodeError>> {
    // No clock is read unless the registry is down: this runs per record,
    // and a clock read is a few percent of the hot path on a VM.
    let mut wait = RegistryWait::default();
    loop {
        match decode() {
            Err(e) if e.outcome() == crate::outcome::Outcome::Retry => {
                if !wait.pause(metrics, cancel, &e) {
                    return None;
                }
            }
            other => {
                wait.end(metrics);
                return Some(other);
            }
        }
    }
}

/// The state of one wait for the schema registry.
struct RegistryWait {
    backoff: Duration,
    since: Option<Instant>,
    last_warn: Option<Instant>,
}

impl Default for RegistryWait {
    fn default() -> Self {
        Self {
            backoff: Duration::from_millis(100),
            since: None,
            last_warn: None,
        }
    }
}

impl RegistryWait {
    /// Waits one backoff step (logging now and then); false if cancelled.
    fn pause(&mut self, metrics: &Metrics, cancel: &CancellationToken, e: &DecodeError) -> bool {
        let t0 = *self.since.get_or_insert_with(|| {
            metrics.registry_waiting.add(1);
            tracing::warn!(error = %e, "schema registry unavailable: input waits (nothing is dead-lettered or committed meanwhile)");
            Instant::now()
        });
        let last = *self.last_warn.get_or_insert(t0);
        if last.elapsed() >= Duration::from_secs(30) {
            self.last_warn = Some(Instant::now());
            tracing::warn!(error = %e, waited_s = t0.elapsed().as_secs(), "schema registry still unavailable; input waits");
        }
        let until = Instant::now() + self.backoff;
        while Instant::now() < until {
            if cancel.is_cancelled() {
                metrics.registry_waiting.add(-1);
                self.since = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.backoff = (self.backoff * 2).min(REGISTRY_BACKOFF_MAX);
        true
    }

    /// The registry answered again.
    fn end(&mut self, metrics: &Metrics) {
        if let Some(t0) = self.since.take() {
            metrics.registry_waiting.add(-1);
            tracing::info!(
                waited_ms = t0.elapsed().as_millis() as u64,
                "schema registry reachable again; input resumes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::consumer::RestoreDone;
    use super::{restore_outcome, resume_from};
    use crate::state::restore::Restored;

    fn done(
        committed: Option<i64>,
        result: Result<Restored, crate::state::StateError>,
    ) -> RestoreDone {
        RestoreDone {
            partition: 0,
            generation: 1,
            committed,
            input_low: Some(0),
            result,
        }
    }

    fn outcome(d: RestoreDone) -> (&'static str, bool) {
        let (o, replay) = restore_outcome(&d);
        (o.as_str(), replay)
    }

    #[test]
    fn each_restore_case_has_a_decided_outcome() {
        let with = |covers| Restored {
            covers,
            ..Restored::default()
        };
        assert_eq!(outcome(done(None, Ok(with(None)))), ("no_commit", false));
        assert_eq!(
            outcome(done(Some(0), Ok(with(Some(5))))),
            ("no_commit", false)
        );
        assert_eq!(
            outcome(done(Some(100), Ok(with(Some(97))))),
            ("changelog", false),
            "a changelog record covers the commit (dead letters change no state)"
        );
        assert_eq!(
            outcome(done(Some(100), Ok(with(None)))),
            ("replayed_no_changelog", true)
        );
        assert_eq!(resume_from(Some(99), 100), 100, "covers the commit");
        assert_eq!(resume_from(Some(150), 100), 100, "ahead of the commit");
        assert_eq!(resume_from(Some(97), 100), 98, "behind: replay 98, 99");
        assert_eq!(resume_from(None, 100), 100);
        let failed = Err(crate::state::StateError::RestoreTimeout {
            topic: "t".into(),
            partition: 0,
            read: 3,
            waited: std::time::Duration::from_secs(1),
        });
        assert_eq!(
            outcome(done(Some(100), failed)),
            ("replayed_read_failed", true)
        );
    }
}
