//! Exactly-once: the sink's side of the transactions.
//!
//! Everything the sink writes goes into the open transaction (begun at its
//! first record); [`SinkItem::Commit`] from the scoring stage ends it with
//! the input offsets it covers (`send_offsets_to_transaction` with the
//! consumer's group metadata, so a zombie's commit is refused). A failed
//! delivery, or a commit the broker refuses, aborts the transaction and
//! asks for a rewind ([`Commits::request_rewind`]): the sink then discards
//! what it receives until the scoring stage reports the rewind done
//! ([`SinkItem::Rewound`]). A fatal error (fenced by a newer instance with
//! the same `transactional.id`) stops the worker.
//!
//! A record the broker refuses for good (too large for the topic) aborts
//! its transaction once: its input coordinates are remembered, and when it
//! comes round again after the rewind it is dead-lettered small instead
//! (or, refused again, counted as lost), so it never aborts for ever.
//!
//! [`Commits::request_rewind`]: crate::commit::Commits::request_rewind

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;

use super::{Class, Failed, Sink, SinkError};
use crate::message::SinkItem;
use crate::metrics::events::{Emit as _, TransactionEnded, TransactionOutcome};

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// How long one transactional call may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `init_transactions` calls of a replacement producer (each up to the
/// transaction timeout) before the worker stops.
const INIT_TRIES: u32 = 4;
/// Refused input coordinates remembered at most (the oldest go first).
const MAX_REFUSED: usize = 10_000;

/// The transactional producer's settings.
#[derive(Debug, Clone)]
pub struct TransactionSettings {
    pub id: String,
    /// `transaction.timeout.ms`: an open transaction of a crashed
    /// instance that no successor fences is aborted by the broker after
    /// this long (read_committed readers wait for it meanwhile).
    pub timeout: Duration,
}

impl TransactionSettings {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// `riskstream-<group>-<instance>`: the instance is the static group
    /// member id when there is one (a restart fences its predecessor at
    /// once), else this host and process.
    pub fn new(group: &str, group_instance_id: Option<&str>) -> Self {
        let instance = group_instance_id.map_or_else(
            || {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "host".into());
                format!("{host}-{}", std::process::id())
            },
            str::to_string,
        );
        Self {
            id: format!("riskstream-{group}-{instance}"),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// The open transaction, as the sink sees it.
#[derive(Debug, Default)]
pub(super) struct TxnState {
    open: bool,
    /// The newest rewind whose end ([`SinkItem::Rewound`]) arrived.
    rewound: u64,
    /// Input coordinates whose output the broker refused: failures so far.
    refused: HashMap<(i32, i64), (RDKafkaErrorCode, u32)>,
    /// The input records' Kafka timestamps (ms) of the open transaction's
    /// outputs: end to end is measured when a reader can see them.
    produced: Vec<i64>,
}

/// What to write for an input whose output was refused before.
pub(super) enum Refused {
    /// Nothing remembered: as usual.
    No,
    /// Refused once: a small dead letter instead.
    Small(RDKafkaErrorCode),
    /// Refused again: nothing (counted as a lost dead letter).
    Lost(RDKafkaErrorCode),
}

impl Sink {
    fn txn(&self) -> Option<MutexGuard<'_, TxnState>> {
        self.txn
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Exactly-once: whether `item` is discarded (a rewind is pending; an
    /// open transaction is aborted first), or handled here (commit,
    /// rewind's end). `Some(true)`: done with it; `None`: write it.
    pub(super) fn transactional(&self, item: &SinkItem) -> Result<Option<bool>, SinkError> {
        let Some(mut t) = self.txn() else {
            return Ok(None);
        };
        if let SinkItem::Rewound(n) = item {
            t.rewound = t.rewound.max(*n);
            if t.open {
                // Written before the rewind (a rewind the source asked
                // for may reach here before anything was discarded).
                drop(t);
                self.abort(false)?;
                return Ok(Some(true));
            }
        }
        if self.ctx().commits.rewinds_requested() > t.rewound {
            if t.open {
                drop(t);
                self.abort(false)?;
            }
            if let SinkItem::Commit {
                barrier: Some(b), ..
            } = item
            {
                self.ctx().commits.barrier_done(*b, false);
            }
            return Ok(Some(true));
        }
        match item {
            SinkItem::Rewound(_) => Ok(Some(true)),
            SinkItem::Commit { offsets, barrier } => {
                drop(t);
                self.commit(offsets, *barrier)?;
                Ok(Some(true))
            }
            _ if t.open => Ok(None),
            _ => {
                self.producer()
                    .begin_transaction()
                    .map_err(|e| self.txn_error(e))?;
                t.open = true;
                Ok(None)
            }
        }
    }

    /// Outputs of inputs produced at these times (ms) go into the open
    /// transaction (one lock per batch).
    pub(super) fn produced_in_transaction(&self, ms: impl Iterator<Item = i64>) {
        if let Some(mut t) = self.txn() {
            t.produced.extend(ms);
        }
    }

    /// Commits the open transaction with `offsets` (partition, next
    /// offset); a refused commit aborts and asks for a rewind.
    fn commit(&self, offsets: &[(i32, i64)], barrier: Option<u64>) -> Result<(), SinkError> {
        let commits = &self.ctx().commits;
        let open = self.txn().is_some_and(|t| t.open);
        if !open && offsets.is_empty() {
            if let Some(b) = barrier {
                commits.barrier_done(b, true);
            }
            return Ok(());
        }
        if !open {
            self.producer()
                .begin_transaction()
                .map_err(|e| self.txn_error(e))?;
            if let Some(mut t) = self.txn() {
                t.open = true;
            }
        }
        let t0 = std::time::Instant::now();
        let result = tokio::task::block_in_place(|| self.commit_blocking(offsets));
        self.ctx()
            .metrics
            .transaction_commit_seconds
            .record(t0.elapsed().as_secs_f64());
        let committed = match result {
            Ok(()) => {
                if let Some(mut t) = self.txn() {
                    t.open = false;
                    t.refused
                        .retain(|(p, o), _| offsets.iter().all(|(q, next)| q != p || o >= next));
                    let now = crate::message::now_ms();
                    let e2e = &self.ctx().metrics.end_to_end_seconds;
                    for ms in t.produced.drain(..) {
                        e2e.record((now - ms) as f64 / 1000.0);
                    }
                }
                TransactionEnded {
                    outcome: TransactionOutcome::Committed,
                }
                .emit(&self.ctx().metrics);
                true
            }
            Err(CommitFailure::Hung) => {
                tracing::warn!(
                    timeout_s = CALL_TIMEOUT.as_secs(),
                    "send_offsets_to_transaction did not return (group coordinator lost); replacing the producer and rewinding"
                );
                if let Some(b) = barrier {
                    commits.barrier_done(b, false);
                }
                return self.recover(KafkaError::Canceled);
            }
            Err(CommitFailure::Kafka(e))
                if is_fatal(&e) || self.producer().client().fatal_error().is_some() =>
            {
                if let Some(b) = barrier {
                    commits.barrier_done(b, false);
                }
                return self.recover(e);
            }
            Err(CommitFailure::Kafka(e)) => {
                tracing::warn!(error = %e, "transaction commit failed; aborting");
                self.abort(true)?;
                false
            }
        };
        if let Some(b) = barrier {
            commits.barrier_done(b, committed);
        }
        Ok(())
    }

    fn commit_blocking(&self, offsets: &[(i32, i64)]) -> Result<(), CommitFailure> {
        if !offsets.is_empty() {
            let (tpl, meta) = self
                .ctx()
                .commits
                .transaction_offsets(offsets)
                .ok_or(KafkaError::Canceled)?;
            self.send_offsets(tpl, meta)?;
        }
        self.settle(CALL_TIMEOUT);
        // A retriable error (a timeout while a broker fails over) may be
        // retried as it is; the transaction stays as it was.
        retrying(
            "transaction commit",
            3,
            || false,
            || self.producer().commit_transaction(CALL_TIMEOUT),
        )
        .map_err(CommitFailure::Kafka)
    }

    /// `send_offsets_to_transaction` on a thread of its own, waited for at
    /// most [`CALL_TIMEOUT`] and a margin. librdkafka (2.12; open upstream
    /// as confluentinc/librdkafka#5456 and #5511) can block in it for ever
    /// when the group coordinator's broker is lost: its timeout is not
    /// checked on the coordinator request. Seen here: both instances of the
    /// coordinator-kill test stuck in it for minutes. A call that does not
    /// return is given up with its producer ([`CommitFailure::Hung`]): the
    /// thread keeps its handle until librdkafka lets go.
    fn send_offsets(
        &self,
        tpl: rdkafka::TopicPartitionList,
        meta: rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), CommitFailure> {
        let producer = self.producer().clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("txn-offsets".into())
            .spawn(move || {
                let _ = tx.send(producer.send_offsets_to_transaction(&tpl, &meta, CALL_TIMEOUT));
            })
            .map_err(|_| CommitFailure::Hung)?;
        match rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(5)) {
            Ok(result) => result.map_err(CommitFailure::Kafka),
            Err(_) => Err(CommitFailure::Hung),
        }
    }

    /// Waits (1 ms steps, at most `limit`) until every record handed to
    /// the producer is settled. rust-rdkafka's `commit_transaction`
    /// flushes first by polling the producer's event queue up to 100 ms
    /// at a time, while the `ThreadedProducer`'s own thread serves the
    /// delivery reports it waits for: a commit with a record still in
    /// flight stalled 100 ms (seen in `debug=eos` logs: 100 ms between
    /// `send_offsets_to_transaction` returning and the commit starting).
    /// With the queue empty its flush returns at once.
    fn settle(&self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        while self.producer().in_flight_count() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Aborts the open transaction; `rewind`: asks the source to rewind
    /// (false when a rewind is pending already). A fatal error stops.
    pub(super) fn abort(&self, rewind: bool) -> Result<(), SinkError> {
        // Retriable while the coordinator moves (a broker lost): a minute
        // at most, then the producer is replaced.
        let result = tokio::task::block_in_place(|| {
            retrying(
                "transaction abort",
                6,
                || false,
                || self.producer().abort_transaction(CALL_TIMEOUT),
            )
        });
        if let Err(e) = result {
            return self.recover(e);
        }
        if let Some(mut t) = self.txn() {
            t.open = false;
            t.produced.clear();
        }
        if rewind {
            self.ctx().commits.request_rewind();
        }
        TransactionEnded {
            outcome: TransactionOutcome::Aborted,
        }
        .emit(&self.ctx().metrics);
        Ok(())
    }

    /// Failed deliveries under exactly-once: the records refused for good
    /// are remembered, and the transaction they were in is aborted. False:
    /// not a transaction (at-least-once handles them).
    pub(super) fn transaction_failed(&self, failed: Vec<Failed>) -> Result<bool, SinkError> {
        let Some(mut t) = self.txn() else {
            return Ok(false);
        };
        let mut abort = false;
        for f in failed {
            let Some(code) = f.code else {
                abort = true;
                continue;
            };
            if matches!(
                code,
                RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
            ) {
                // Purged by an abort.
                continue;
            }
            abort = true;
            match super::classify(code) {
                Class::Fatal(_) => return Err(super::refused(&f, super::classify(code))),
                Class::Record(_) => {
                    if t.refused.len() >= MAX_REFUSED {
                        t.refused.clear();
                    }
                    let e = t
                        .refused
                        .entry((f.origin.partition, f.origin.offset))
                        .or_insert((code, 0));
                    e.1 += 1;
                }
                Class::Transient => {}
            }
        }
        let open = t.open;
        drop(t);
        if abort && open && self.ctx().commits.rewinds_requested() <= self.rewound() {
            tracing::warn!("a delivery in the open transaction failed; aborting");
            self.abort(true)?;
        }
        Ok(true)
    }

    fn rewound(&self) -> u64 {
        self.txn().map_or(0, |t| t.rewound)
    }

    /// Whether the output of the input at (`partition`, `offset`) was
    /// refused before.
    pub(super) fn refused_before(&self, partition: i32, offset: i64) -> Refused {
        let Some(t) = self.txn() else {
            return Refused::No;
        };
        match t.refused.get(&(partition, offset)) {
            None => Refused::No,
            Some((code, 1)) => Refused::Small(*code),
            Some((code, _)) => Refused::Lost(*code),
        }
    }

    /// Shutdown: an open transaction the scoring stage did not end is
    /// aborted (its inputs were not committed).
    pub(super) fn abort_open(&self) {
        if self.txn().is_some_and(|t| t.open) {
            if let Err(e) = self.abort(false) {
                tracing::warn!(error = %crate::outcome::chain(&e), "cannot abort the open transaction");
            }
        }
    }

    /// A fatal transactional error. Fenced (a newer instance with the same
    /// `transactional.id`), this instance stops. Otherwise (the coordinator
    /// lost the transaction's state while it moved: `INVALID_TXN_STATE`)
    /// the producer is replaced by a new one with the same id, whose
    /// `init_transactions` aborts what was open, and the input is rewound.
    fn recover(&self, e: KafkaError) -> Result<(), SinkError> {
        use RDKafkaErrorCode as C;
        let fatal = self.producer().client().fatal_error();
        let fenced = matches!(
            fatal.as_ref().map(|(c, _)| *c),
            Some(C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch)
        );
        let Some(settings) = self.settings.transactions.as_ref().filter(|_| !fenced) else {
            return Err(self.txn_error(e));
        };
        if let Some((code, reason)) = &fatal {
            tracing::warn!(error = %code, reason, "fatal transactional producer error; replacing the producer and rewinding");
        }
        let ctx = super::SinkContext(self.state.clone());
        let fresh = super::producer(&self.settings, ctx)?;
        let timeout = settings.timeout.max(Duration::from_secs(30));
        // Retriable (CONCURRENT_TRANSACTIONS while the coordinator still
        // aborts what the old producer left open, its markers waiting for a
        // lost partition leader; a timeout): the same call again, a few
        // times unless the worker is stopping.
        tokio::task::block_in_place(|| {
            retrying(
                "the new transactional producer's start",
                INIT_TRIES - 1,
                || self.ctx().cancel.is_cancelled(),
                || fresh.init_transactions(timeout),
            )
        })
        .map_err(SinkError::Transaction)?;
        let old = std::mem::replace(
            &mut *self.producer.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        if let Some(mut t) = self.txn() {
            t.open = false;
            t.produced.clear();
        }
        self.ctx().commits.request_rewind();
        TransactionEnded {
            outcome: TransactionOutcome::Aborted,
        }
        .emit(&self.ctx().metrics);
        Ok(())
    }

    fn txn_error(&self, e: KafkaError) -> SinkError {
        if let Some((code, reason)) = self.producer().client().fatal_error() {
            tracing::error!(error = %code, reason, "fatal transactional producer error (fenced by a newer instance with the same transactional.id?)");
        }
        SinkError::Transaction(e)
    }
}

/// Why a commit did not happen.
enum CommitFailure {
    Kafka(KafkaError),
    /// A librdkafka call that did not return in time.
    Hung,
}

impl From<KafkaError> for CommitFailure {
    fn from(e: KafkaError) -> Self {
        CommitFailure::Kafka(e)
    }
}

/// `call`, and again while it fails retriably, at most `retries` more
/// times and not once `stop()`; each retry logged.
fn retrying(
    what: &str,
    retries: u32,
    stop: impl Fn() -> bool,
    mut call: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let mut tries = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < retries && !stop() => {
                tries += 1;
                tracing::warn!(error = %e, tries, "{what} failed retriably; retrying");
            }
            other => return other,
        }
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(r) if r.is_fatal())
}

/// The transactional state of the sink (None: at-least-once).
pub(super) fn state(settings: Option<&TransactionSettings>) -> Option<Mutex<TxnState>> {
    settings.map(|_| Mutex::new(TxnState::default()))
}
