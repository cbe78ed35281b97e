//! Scoring: the one thread that owns the feature engine and the model.
//!
//! It gathers micro-batches (up to `batch_max` records, or whatever arrived
//! within `linger` of the batch's first record), folds in the labels that
//! arrived meanwhile, waits (bounded) for the label stream to reach the
//! batch's event time so terminal features match the offline ones, computes
//! features, scores the batch in one call and hands the encoded records to
//! the sink.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, FraudLabel, Verdict};
use crate::commit::Commits;
use crate::drift::performance::tx_fingerprint;
use crate::drift::sidecar::DriftSender;
use crate::features::{FeatureEngine, FeatureVector, LabelRef, TxRef};
use crate::message::{
    now_ms, DeadLetter, Decision, DriftBatch, Incoming, LabelProgress, ScoredBatch, ScoredRecord,
    ShadowRecord, SinkItem, StateFlush, StateOp, Validation, VersionInfo, Work,
};
use crate::metrics::events::{DeadLetterReason, Emit as _, StateCapsHit};
use crate::metrics::Metrics;
use crate::model::ModelError;
use crate::state::{Changelog, Draft};
pub use crate::watermark::PartitionClocks;

pub mod batcher;
pub mod serving;
mod transaction;
pub use batcher::{Batcher, Gathered, Inbox, Side, SystemClock};
pub use serving::{ModelSet, ModelUpdate, Role};

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl ScoringError {
    /// Whose fault it is: the model's ([`ModelError::domain`]).
    pub fn domain(&self) -> crate::outcome::Domain {
        match self {
            ScoringError::Model(e) => e.domain(),
        }
    }

    /// What follows ([`crate::outcome::decide`]): the worker stops.
    pub fn outcome(&self) -> crate::outcome::Outcome {
        crate::outcome::decide(self.domain())
    }
}

/// Applies a chunk of labels, in order.
pub fn apply_labels(engine: &mut FeatureEngine, labels: &[FraudLabel]) {
    for l in labels {
        apply_label(engine, l);
    }
}

/// Applies a label to the engine.
pub fn apply_label(engine: &mut FeatureEngine, l: &FraudLabel) {
    engine.observe_label(LabelRef {
        transaction_id: &l.transaction_id,
        terminal_id: &l.terminal_id,
        event_time: l.event_time,
        is_fraud: l.is_fraud,
    });
}

/// Computes features for a batch in arrival order.
pub fn features_of(engine: &mut FeatureEngine, batch: &[Incoming]) -> Vec<FeatureVector> {
    batch
        .iter()
        .map(|i| {
            engine.observe_transaction_on(
                i.partition,
                TxRef {
                    transaction_id: &i.tx.transaction_id,
                    event_time: i.tx.event_time,
                    customer_id: &i.tx.customer_id,
                    terminal_id: &i.tx.terminal_id,
                    amount: i.tx.amount,
                },
            )
        })
        .collect()
}

/// The scoring stage's settings (built by `config`, checked by [`ScoringConfig::check`]).
#[derive(Debug, Clone)]
pub struct ScoringConfig {
    pub batch_max: usize,
    /// Longest the first record of a batch waits for more; the batch is
    /// scored earlier when full or when the source reports it has nothing
    /// more buffered (`drained` of [`Work::Records`]).
    pub linger: Duration,
    pub labels_wait: Duration,
    /// Longest scoring waits for the label history at start; then it
    /// scores with what it has (readiness and a WARN say so).
    pub labels_load_timeout: Duration,
}

impl ScoringConfig {
    pub const DEFAULT_BATCH_MAX: usize = 512;
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
    pub const DEFAULT_LABELS_WAIT: Duration = Duration::from_millis(2000);
    pub const DEFAULT_LABELS_LOAD_TIMEOUT: Duration = Duration::from_secs(120);
    pub const MAX_BATCH: usize = 65_536;

    /// Cross-field checks; problems are appended to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if self.batch_max == 0 || self.batch_max > Self::MAX_BATCH {
            errors.push(format!(
                "batch_max: {} not in 1..={}",
                self.batch_max,
                Self::MAX_BATCH
            ));
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            batch_max: Self::DEFAULT_BATCH_MAX,
            linger: Self::DEFAULT_LINGER,
            labels_wait: Self::DEFAULT_LABELS_WAIT,
            labels_load_timeout: Self::DEFAULT_LABELS_LOAD_TIMEOUT,
        }
    }
}

/// The scoring stage's channels.
pub struct ScoringIo {
    pub input: Receiver<Work>,
    pub labels: Receiver<Vec<FraudLabel>>,
    /// Checked, warmed models from the registry watcher.
    pub updates: Receiver<ModelUpdate>,
    pub to_sink: mpsc::Sender<SinkItem>,
    /// The drift sidecar, when it runs.
    pub drift: Option<DriftSender>,
    /// The state changelog's writer side, when it is on.
    pub changelog: Option<Changelog>,
    /// Where changelog flushes are begun (commits wait for them).
    pub offsets: Arc<Commits>,
    /// Exactly-once: (commit interval, records after which a transaction
    /// commits sooner); None: at-least-once.
    pub transactions: Option<(Duration, usize)>,
}

/// The scoring stage: owns the feature engine and the models.
pub struct Scoring {
    cfg: ScoringConfig,
    models: ModelSet,
    inbox: Inbox,
    labels: Receiver<Vec<FraudLabel>>,
    updates: Receiver<ModelUpdate>,
    to_sink: mpsc::Sender<SinkItem>,
    drift: Option<DriftSender>,
    codec: Arc<Codec>,
    metrics: Arc<Metrics>,
    progress: Arc<LabelProgress>,
    cancel: CancellationToken,
    state: State,
    offsets: Arc<Commits>,
    last_behind_warn: Instant,
}

/// Feature state and the clocks that bound its eviction.
struct State {
    engine: FeatureEngine,
    clocks: PartitionClocks,
    replayed: u64,
    changelog: Option<Changelog>,
    /// Changelog records drained and not yet handed to the sink, in order.
    drafts: Vec<Draft>,
    /// A revoke waits: flush right after the current batch.
    flush_now: bool,
    /// When the state size gauges were last set.
    sized_at: Instant,
    /// Dead letters of the source, in order with the records, sent after
    /// the batch being gathered.
    dead: Vec<DeadLetter>,
    /// Exactly-once: the open transaction.
    txn: Option<transaction::OpenTransaction>,
    /// Exactly-once: dead letters that came before a revoke's barrier.
    before_barrier: Vec<DeadLetter>,
}

impl State {
    /// A replayed record or a state ownership change, in order with the
    /// records around it.
    fn side(&mut self, s: Side, metrics: &Metrics) {
        match s {
            Side::Replay(p, tx) => self.replay(p, &tx),
            Side::State(StateOp::Restore {
                partition,
                customers,
            }) => {
                for (key, txs) in &customers {
                    self.engine.restore_customer(partition, key, txs);
                }
                metrics
                    .state_restored_customers
                    .increment(customers.len() as u64);
            }
            Side::Dead(d) => self.dead.push(d),
            Side::State(StateOp::Flush) => self.flush_now = true,
            Side::State(StateOp::Revoke(parts)) => {
                if let Some(log) = self.changelog.as_mut() {
                    self.drafts.extend(log.drain(&mut self.engine));
                }
                if let Some(t) = self.txn.as_mut() {
                    // Committed at the revoke's barrier: a later transaction
                    // must not carry them (another instance owns them now).
                    t.forget(&parts);
                    self.dead.retain(|d| !parts.contains(&d.partition));
                }
                let dropped = self.engine.drop_partitions(&parts);
                tracing::debug!(partitions = ?parts, customers = dropped, "state of revoked partitions dropped");
            }
            Side::State(StateOp::Commit(barrier)) => {
                if let Some(t) = self.txn.as_mut() {
                    t.barrier(barrier);
                    self.before_barrier.append(&mut self.dead);
                }
            }
            Side::State(StateOp::Rewind { partitions, rewind }) => self.rewind(&partitions, rewind),
            Side::State(StateOp::Positions(positions)) => {
                if let Some(t) = self.txn.as_mut() {
                    for (p, next) in positions {
                        t.position(p, next);
                    }
                }
            }
        }
    }

    /// The open transaction was aborted: what `partitions` changed since
    /// the last commit is forgotten (their customers come back from the
    /// changelog), and the sink is told once the state is rewound.
    fn rewind(&mut self, partitions: &[i32], rewind: u64) {
        if let Some(log) = self.changelog.as_mut() {
            log.forget(partitions);
        }
        self.drafts.retain(|d| !partitions.contains(&d.partition));
        self.dead.retain(|d| !partitions.contains(&d.partition));
        self.before_barrier.clear();
        let dropped = self.engine.drop_partitions(partitions);
        self.engine.forget_evictions(partitions);
        if let Some(t) = self.txn.as_mut() {
            t.forget(partitions);
            t.rewound(rewind);
        }
        tracing::info!(partitions = ?partitions, customers = dropped, rewind, "aborted transaction: customer state is read again from the changelog");
    }

    /// Notes the batch's customers as changed (before it is scored).
    fn note_changed(&mut self, batch: &[Incoming]) {
        if let Some(log) = self.changelog.as_mut() {
            for i in batch {
                log.note(i.partition, &i.tx.customer_id, Some(i.offset));
            }
        }
    }

    /// Drains the changelog when its interval passed or a revoke waits.
    fn maybe_drain(&mut self, force: bool) {
        let Some(log) = self.changelog.as_mut() else {
            return;
        };
        if force || self.flush_now || log.due() {
            self.flush_now = false;
            self.drafts.extend(log.drain(&mut self.engine));
        }
    }

    /// Sets the state size gauges, at most every few seconds (a pass over
    /// every customer).
    fn publish_size(&mut self, metrics: &Metrics) {
        if self.sized_at.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.sized_at = Instant::now();
        let (c, ct, t, tl) = self.engine.state_size();
        for (g, v) in metrics.state_size.iter().zip([c, ct, t, tl]) {
            g.set(v as f64);
        }
    }

    /// A record before the committed offset: customer state only.
    fn replay(&mut self, partition: i32, tx: &crate::codec::Transaction) {
        self.clocks.saw(partition, tx.event_time);
        self.replayed += 1;
        if let Some(log) = self.changelog.as_mut() {
            log.note(partition, &tx.customer_id, None);
        }
        if self.replayed.is_multiple_of(256) {
            if let Some(wm) = self.clocks.watermark() {
                self.engine.set_clock_limit(wm);
            }
        }
        self.engine.replay_transaction(
            partition,
            TxRef {
                transaction_id: &tx.transaction_id,
                event_time: tx.event_time,
                customer_id: &tx.customer_id,
                terminal_id: &tx.terminal_id,
                amount: tx.amount,
            },
        );
    }

    /// Eviction follows the slowest partition, not the fastest; returns
    /// that watermark (drift closes its slices by it too).
    fn advance_eviction_clock(&mut self, batch: &[Incoming]) -> Option<i64> {
        for i in batch {
            self.clocks.saw(i.partition, i.tx.event_time);
        }
        let wm = self.clocks.watermark();
        if let Some(wm) = wm {
            self.engine.set_clock_limit(wm);
        }
        wm
    }
}

impl Scoring {
    /// `assigned` is the input consumer's assignment (eviction watermark).
    pub fn new(
        cfg: ScoringConfig,
        models: ModelSet,
        io: ScoringIo,
        shared: &crate::message::Shared,
        progress: Arc<LabelProgress>,
        assigned: Arc<std::sync::Mutex<Vec<i32>>>,
    ) -> Self {
        let mut engine = FeatureEngine::new();
        engine.track_evictions(io.changelog.is_some());
        Self {
            state: State {
                engine,
                clocks: PartitionClocks {
                    assigned,
                    ..Default::default()
                },
                replayed: 0,
                changelog: io.changelog,
                drafts: Vec::new(),
                flush_now: false,
                sized_at: Instant::now(),
                dead: Vec::new(),
                txn: io
                    .transactions
                    .map(|(interval, max)| transaction::OpenTransaction::new(interval, max)),
                before_barrier: Vec::new(),
            },
            offsets: io.offsets,
            inbox: Inbox::new(io.input),
            labels: io.labels,
            updates: io.updates,
            to_sink: io.to_sink,
            drift: io.drift,
            codec: shared.codec.clone(),
            metrics: shared.metrics.clone(),
            cancel: shared.cancel.clone(),
            progress,
            models,
            cfg,
            last_behind_warn: Instant::now(),
        }
    }

    /// The stage body. Returns when the input channel closes (after
    /// scoring what it held), when the sink has gone, or on a model error.
    pub fn run(mut self) -> Result<(), ScoringError> {
        self.load_label_history();
        let batcher = Batcher::new(self.cfg.batch_max, self.cfg.linger);
        let mut batch: Vec<Incoming> = Vec::with_capacity(self.cfg.batch_max);
        loop {
            let (state, metrics) = (&mut self.state, &self.metrics);
            let gathered = batcher.gather(&mut self.inbox, &SystemClock, &mut batch, &mut |w| {
                state.side(w, metrics);
            });
            // A rewind or a revoke's barrier, before what came after it.
            if !self.end_transaction_for_state_change() {
                break;
            }
            let open = match gathered {
                Gathered::Idle => {
                    self.apply_pending_labels();
                    self.state.maybe_drain(false);
                    self.state.publish_size(&self.metrics);
                    if !self.send_dead(None) || !self.send_drafts() || !self.maybe_commit(false) {
                        break;
                    }
                    continue;
                }
                Gathered::Closed => break,
                Gathered::Batch { open } => open,
            };
            self.wait_for_labels(&batch);
            let watermark = self.state.advance_eviction_clock(&batch);
            if let Some(d) = &self.drift {
                d.set_watermark(watermark);
            }
            self.state.note_changed(&batch);
            if let Some(t) = self.state.txn.as_mut() {
                for i in &batch {
                    t.handed(i.partition, i.offset);
                }
            }
            // Model changes land between batches.
            while let Ok(u) = self.updates.try_recv() {
                switch_model(&mut self.models, u, &self.metrics, self.drift.as_ref());
            }
            let out = score_batch(
                &mut self.models,
                &self.codec,
                &self.metrics,
                &mut self.state.engine,
                &mut batch,
                self.drift.as_ref(),
            )?;
            if !self.send_dead(Some(out)) {
                break;
            }
            self.state.maybe_drain(!open);
            self.state.publish_size(&self.metrics);
            if !self.send_drafts() || !self.maybe_commit(!open) || !open {
                break;
            }
        }
        // Input closed: what changed since the last flush goes out too.
        self.send_dead(None);
        self.state.maybe_drain(true);
        self.send_drafts();
        self.maybe_commit(true);
        Ok(())
    }

    /// Sends a scored batch (if any) with the source's dead letters that
    /// came with it; false when the sink has gone.
    fn send_dead(&mut self, batch: Option<ScoredBatch>) -> bool {
        let dead = std::mem::take(&mut self.state.dead);
        if let Some(t) = self.state.txn.as_mut() {
            for d in &dead {
                t.handed(d.partition, d.offset);
            }
        }
        match batch {
            Some(mut out) => {
                out.dead.extend(dead);
                self.to_sink.blocking_send(SinkItem::Scored(out)).is_ok()
            }
            None => dead
                .into_iter()
                .all(|d| self.to_sink.blocking_send(SinkItem::Dead(d)).is_ok()),
        }
    }

    /// Exactly-once: ends the transaction when it is due (`force`: the
    /// input closed); false when the sink has gone.
    ///
    /// The changelog is written at its own interval, not at every commit:
    /// it may trail the committed offsets (never lead them: a flush is in
    /// the transaction of the records it covers), and a restore replays the
    /// input between (state only, no output), as after any restore. A
    /// flush at every commit would write each customer changed in the last
    /// 100 ms with its whole history, ten times a second. At shutdown and
    /// at a revoke's barrier it is flushed whole (less to replay).
    fn maybe_commit(&mut self, force: bool) -> bool {
        let Some(t) = self.state.txn.as_mut() else {
            return true;
        };
        if !t.due(force) {
            return true;
        }
        let whole = force || t.barrier_pending();
        self.state.maybe_drain(whole);
        if !self.send_drafts() {
            return false;
        }
        let commit = self.state.txn.as_mut().map(|t| t.commit());
        commit.is_none_or(|c| self.to_sink.blocking_send(c).is_ok())
    }

    /// Exactly-once: a rewind applied while gathering is reported to the
    /// sink, and a revoke's barrier commits what came before it, ahead of
    /// the records gathered after them; false when the sink has gone.
    fn end_transaction_for_state_change(&mut self) -> bool {
        let Some(t) = self.state.txn.as_mut() else {
            return true;
        };
        if let Some(marker) = t.take_rewound() {
            if self.to_sink.blocking_send(marker).is_err() {
                return false;
            }
        }
        if !t.barrier_pending() {
            return true;
        }
        let before = std::mem::take(&mut self.state.before_barrier);
        for d in &before {
            t.handed(d.partition, d.offset);
        }
        before
            .into_iter()
            .all(|d| self.to_sink.blocking_send(SinkItem::Dead(d)).is_ok())
            && self.maybe_commit(false)
    }

    /// Hands drained changelog records to the sink, each partition's
    /// flush begun in the offset tracker first (in order); false when the
    /// sink has gone.
    fn send_drafts(&mut self) -> bool {
        if let Some(t) = self
            .state
            .txn
            .as_mut()
            .filter(|_| !self.state.drafts.is_empty())
        {
            // Changelog records open a transaction too: it must end (a
            // restore reading `read_committed` waits for it).
            t.wrote();
        }
        for d in std::mem::take(&mut self.state.drafts) {
            let seq = d.covers.map(|c| self.offsets.flush_begun(d.partition, c));
            self.metrics
                .changelog_records
                .increment(d.records.len() as u64);
            let flush = StateFlush {
                partition: d.partition,
                seq,
                records: d.records,
            };
            if self.to_sink.blocking_send(SinkItem::State(flush)).is_err() {
                return false;
            }
        }
        true
    }

    fn apply_pending_labels(&mut self) {
        while let Ok(l) = self.labels.try_recv() {
            self.take_labels(&l);
        }
    }

    /// Labels into terminal state, and to the sidecar's performance monitor.
    fn take_labels(&mut self, l: &[FraudLabel]) {
        apply_labels(&mut self.state.engine, l);
        if let Some(d) = &self.drift {
            d.offer_labels(l);
        }
    }

    /// Terminal features need the label history: read it before scoring,
    /// at most `labels_load_timeout`.
    fn load_label_history(&mut self) {
        let t0 = Instant::now();
        while !self.progress.initial_load_done.load(Ordering::Acquire)
            && !self.cancel.is_cancelled()
        {
            if t0.elapsed() >= self.cfg.labels_load_timeout {
                self.progress.load_timed_out.store(true, Ordering::Release);
                tracing::warn!(
                    timeout_s = self.cfg.labels_load_timeout.as_secs_f64(),
                    labels = self.state.engine.state_size().3,
                    "label history not loaded within labels_load_timeout (topic without leader, unreadable or never at its end?); \
                     scoring starts, terminal features use the labels read so far (riskstream_labels_behind_seconds)"
                );
                break;
            }
            match self.labels.recv_timeout(Duration::from_millis(10)) {
                Ok(l) => self.take_labels(&l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.apply_pending_labels();
        tracing::info!(
            labels = self.state.engine.state_size().3,
            ms = t0.elapsed().as_millis() as u64,
            "label history loaded"
        );
    }

    /// Terminal features need every label reported up to the batch's time:
    /// waits (at most `labels_wait`) for the label stream to get there.
    fn wait_for_labels(&mut self, batch: &[Incoming]) {
        let newest = batch.iter().map(|i| i.tx.event_time).max().unwrap_or(0);
        let wait_until = Instant::now() + self.cfg.labels_wait;
        loop {
            let caught_up = self.progress.caught_up.load(Ordering::Acquire);
            let wm = self.progress.watermark.load(Ordering::Acquire);
            self.apply_pending_labels();
            if caught_up
                || wm >= newest
                || Instant::now() >= wait_until
                || self.cancel.is_cancelled()
            {
                break;
            }
            match self.labels.recv_timeout(Duration::from_millis(2)) {
                Ok(l) => self.take_labels(&l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.report_labels_behind(newest);
    }

    fn report_labels_behind(&mut self, newest: i64) {
        let wm = self.progress.watermark.load(Ordering::Acquire);
        let behind = if self.progress.caught_up.load(Ordering::Acquire) || wm >= newest {
            0
        } else if wm == i64::MIN {
            -1
        } else {
            (newest - wm) / 1000
        };
        self.metrics.labels_behind_seconds.set(behind);
        if behind > 0 && self.last_behind_warn.elapsed() >= Duration::from_secs(60) {
            self.last_behind_warn = Instant::now();
            tracing::warn!(
                behind_s = behind,
                "labels are behind the records being scored; terminal features miss the newest labels"
            );
        }
    }
}

/// The dead letter of a record the model gave no finite score.
fn non_finite(codec: &Codec, i: Incoming, model: &str, version: &str) -> DeadLetter {
    DeadLetter {
        partition: i.partition,
        offset: i.offset,
        key: Some(i.tx.customer_id.clone().into_bytes()),
        // The transaction re-encoded: scoring no longer holds the input bytes.
        payload: codec.encode_transaction(&i.tx).ok(),
        headers: Vec::new(),
        headers_dropped: false,
        reason: DeadLetterReason::NonFiniteScore,
        detail: format!("{model}/{version} gave no finite score for these features"),
    }
}

/// A model's verdict on one score (borrows the model's name and version).
fn verdict(score: f32, scorer: &crate::model::Scorer, scored_at: i64) -> Verdict<'_> {
    Verdict {
        score,
        is_fraud: score >= scorer.card.threshold,
        threshold: scorer.card.threshold,
        model_name: &scorer.location.name,
        model_version: &scorer.location.version,
        scored_at,
    }
}

/// Swaps a checked, warmed model in (between two batches).
pub fn switch_model(
    models: &mut ModelSet,
    u: ModelUpdate,
    metrics: &Metrics,
    drift: Option<&DriftSender>,
) {
    let new = u.scorer.location.clone();
    let old = models.apply(u.scorer, u.role);
    let old_version = old.map(|o| o.location.version).unwrap_or_default();
    metrics.model_swaps.increment(1);
    publish_model_info(models, metrics);
    tracing::info!(
        model = %new.name, version = %new.version, role = u.role.as_str(), previous = %old_version,
        "now serving {}/{} as {} (was version {old_version})", new.name, new.version, u.role.as_str()
    );
    if let (Some(d), Some(m)) = (drift, u.drift) {
        d.switch(m, new.name, new.version);
    }
}

/// `riskstream_model_info` for what is serving now.
pub fn publish_model_info(models: &ModelSet, metrics: &Metrics) {
    let mut info = vec![crate::metrics::ModelInfo {
        model: models.champion.location.name.clone(),
        version: models.champion.location.version.clone(),
        device: models.champion.device_description().to_string(),
        role: Role::Champion.as_str(),
    }];
    if let Some(c) = &models.challenger {
        info.push(crate::metrics::ModelInfo {
            model: c.location.name.clone(),
            version: c.location.version.clone(),
            device: c.device_description().to_string(),
            role: Role::Challenger.as_str(),
        });
    }
    metrics.set_model_info(&info);
}

/// Features → model(s) → encoded records, for one batch (drained from
/// `batch`). The champion decides unless A/B routes the customer to the
/// challenger; in shadow mode the challenger also scores every record.
pub fn score_batch(
    models: &mut ModelSet,
    codec: &Codec,
    metrics: &Metrics,
    engine: &mut FeatureEngine,
    batch: &mut Vec<Incoming>,
    drift: Option<&DriftSender>,
) -> Result<ScoredBatch, ScoringError> {
    if let Some(oldest) = batch.iter().map(|i| i.consumed_at).min() {
        metrics
            .scoring_wait_seconds
            .record(oldest.elapsed().as_secs_f64());
    }
    let feats = features_of(engine, batch);
    count_cap_hits(engine, metrics);
    let n = batch.len();
    let to_challenger: Vec<bool> = batch
        .iter()
        .map(|i| models.routes_to_challenger(&i.tx.customer_id))
        .collect();
    let t0 = Instant::now();
    let scores = BatchScores::compute(models, &feats, &to_challenger)?;
    metrics.inference_seconds.record(t0.elapsed().as_secs_f64());
    metrics.batch_size.record(n as f64);
    metrics.batches.increment(1);
    let mut out = Assembly::new(models, codec, n, drift.is_some());
    if let Some(d) = &mut out.sample {
        d.history = engine.history();
    }
    let mut scores = scores.into_iters(models.shadow);
    for ((i, f), routed) in batch.drain(..).zip(&feats).zip(&to_challenger) {
        let (shadow_score, score) = scores.next(*routed && models.challenger.is_some());
        out.push(i, f, *routed, score, shadow_score);
    }
    Ok(out.finish(metrics, drift))
}

/// Counts the feature engine's state-cap hits of the batch.
fn count_cap_hits(engine: &mut FeatureEngine, metrics: &Metrics) {
    let (customer_history, terminal_labels) = engine.take_cap_hits();
    StateCapsHit {
        customer_history,
        terminal_labels,
    }
    .emit(metrics);
}

/// The model calls of one batch.
struct BatchScores {
    champion: Vec<f32>,
    /// Every row in shadow mode, else only the rows routed to the challenger.
    challenger: Vec<f32>,
}

impl BatchScores {
    fn compute(
        models: &mut ModelSet,
        feats: &[FeatureVector],
        to_challenger: &[bool],
    ) -> Result<Self, ScoringError> {
        let ab = to_challenger.iter().any(|c| *c);
        let rows = |want: bool| -> Vec<FeatureVector> {
            feats
                .iter()
                .zip(to_challenger)
                .filter(|(_, c)| **c == want)
                .map(|(f, _)| *f)
                .collect()
        };
        // Champion scores: every row unless A/B sends some away.
        let champion = if ab {
            models.champion.score(&rows(false))?
        } else {
            models.champion.score(feats)?
        };
        let challenger = match &mut models.challenger {
            Some(ch) if models.shadow => ch.score(feats)?,
            Some(ch) if ab => ch.score(&rows(true))?,
            _ => Vec::new(),
        };
        Ok(Self {
            champion,
            challenger,
        })
    }

    fn into_iters(self, shadow: bool) -> ScoreIters {
        let (shadow_it, routed_it) = if shadow {
            (self.challenger.into_iter(), Vec::new().into_iter())
        } else {
            (Vec::new().into_iter(), self.challenger.into_iter())
        };
        ScoreIters {
            champion: self.champion.into_iter(),
            shadow: shadow_it,
            routed: routed_it,
        }
    }
}

/// Walks a batch's scores in record order.
struct ScoreIters {
    champion: std::vec::IntoIter<f32>,
    shadow: std::vec::IntoIter<f32>,
    routed: std::vec::IntoIter<f32>,
}

impl ScoreIters {
    /// (the shadow score if finite, the deciding score) of the next record.
    fn next(&mut self, routed: bool) -> (Option<f32>, Option<f32>) {
        let shadow = self.shadow.next().filter(|x| x.is_finite());
        let score = if routed {
            shadow.or_else(|| self.routed.next())
        } else {
            self.champion.next()
        };
        (shadow, score)
    }
}

/// The versions a batch's decisions index: the champion, then the challenger.
fn versions_of(models: &ModelSet) -> Vec<VersionInfo> {
    std::iter::once(&models.champion)
        .chain(models.challenger.as_ref())
        .map(|s| VersionInfo {
            model: format!("{}/{}", s.location.name, s.location.version),
            validation: Validation::from_card(&s.card.metrics),
        })
        .collect()
}

/// Encoded records, shadow records, dead letters and counts of one batch.
struct Assembly<'a> {
    models: &'a ModelSet,
    codec: &'a Codec,
    scored_at: i64,
    records: Vec<ScoredRecord>,
    shadow: Vec<ShadowRecord>,
    dead: Vec<DeadLetter>,
    /// (decided, flagged) by the champion and by the challenger.
    champion: (u64, u64),
    challenger: (u64, u64),
    sample: Option<DriftBatch>,
}

impl<'a> Assembly<'a> {
    fn new(models: &'a ModelSet, codec: &'a Codec, n: usize, drift: bool) -> Self {
        Self {
            models,
            codec,
            scored_at: now_ms(),
            records: Vec::with_capacity(n),
            shadow: Vec::with_capacity(if models.shadow { n } else { 0 }),
            dead: Vec::new(),
            champion: (0, 0),
            challenger: (0, 0),
            sample: drift.then(|| DriftBatch {
                features: Vec::with_capacity(n),
                scores: Vec::with_capacity(n),
                flagged: Vec::with_capacity(n),
                event_times: Vec::with_capacity(n),
                partitions: Vec::with_capacity(n),
                watermark: None,
                history: Default::default(),
                decisions: Vec::with_capacity(n),
                versions: versions_of(models),
            }),
        }
    }

    /// One record's outcome: its scored record (and shadow record), or a
    /// dead letter when the deciding model gave no finite score.
    fn push(
        &mut self,
        i: Incoming,
        f: &FeatureVector,
        routed: bool,
        score: Option<f32>,
        shadow_score: Option<f32>,
    ) {
        let models = self.models;
        let scorer = match (&models.challenger, routed) {
            (Some(ch), true) => ch,
            _ => &models.champion,
        };
        // A missing or non-finite score is never written: dead-lettered.
        let Some(score) = score.filter(|x| x.is_finite()) else {
            let l = &scorer.location;
            self.dead
                .push(non_finite(self.codec, i, &l.name, &l.version));
            return;
        };
        let v = verdict(score, scorer, self.scored_at);
        let is_fraud = v.is_fraud;
        let decider = u8::from(routed && models.challenger.is_some());
        if let Some(d) = &mut self.sample {
            let tx = tx_fingerprint(&i.tx.transaction_id);
            let decision = |version: u8, score: f32, flagged: bool| Decision {
                tx,
                event_time: i.tx.event_time,
                score,
                flagged,
                version,
            };
            d.decisions.push(decision(decider, v.score, is_fraud));
            // In shadow mode the challenger's score of every record it did
            // not decide counts for its version too.
            if let (Some(ch), Some(x), 0) = (&models.challenger, shadow_score, decider) {
                d.decisions.push(decision(1, x, x >= ch.card.threshold));
            }
        }
        if routed && models.challenger.is_some() {
            self.challenger.0 += 1;
            self.challenger.1 += u64::from(is_fraud);
        } else {
            self.champion.0 += 1;
            self.champion.1 += u64::from(is_fraud);
            // Drift compares the champion's decisions with its reference.
            if let Some(d) = &mut self.sample {
                d.features.push(*f);
                d.scores.push(v.score);
                d.flagged.push(is_fraud);
                d.event_times.push(i.tx.event_time);
                d.partitions.push(i.partition);
            }
        }
        // Encoded straight from the transaction: no per-record copies of
        // the model's name and version.
        let payload = self.codec.encode_scored_from(&i.tx, &v);
        if let (Some(ch), Some(x)) = (&models.challenger, shadow_score) {
            let v = verdict(x, ch, self.scored_at);
            self.shadow.push(ShadowRecord {
                key: i.tx.customer_id.clone(),
                payload: self.codec.encode_scored_from(&i.tx, &v),
                event_time: i.tx.event_time,
                flagged: v.is_fraud,
            });
        }
        self.records.push(ScoredRecord {
            partition: i.partition,
            offset: i.offset,
            key: i.tx.customer_id,
            payload,
            consumed_at: i.consumed_at,
            event_time: i.tx.event_time,
            produced_at: i.produced_at,
        });
    }

    /// Counts per version, hands the drift sample over, returns the batch.
    fn finish(self, metrics: &Metrics, drift: Option<&DriftSender>) -> ScoredBatch {
        let ch = &self.models.champion.location;
        metrics.count_version(
            &ch.name,
            &ch.version,
            self.champion.0,
            self.champion.1,
            false,
        );
        if let Some(c) = &self.models.challenger {
            let l = &c.location;
            metrics.count_version(
                &l.name,
                &l.version,
                self.challenger.0,
                self.challenger.1,
                false,
            );
            let shadow_flagged = self.shadow.iter().filter(|r| r.flagged).count() as u64;
            metrics.count_version(
                &l.name,
                &l.version,
                self.shadow.len() as u64,
                shadow_flagged,
                true,
            );
        }
        if let (Some(d), Some(sample)) = (drift, self.sample) {
            if !sample.scores.is_empty() || !sample.decisions.is_empty() {
                d.offer(sample);
            }
        }
        ScoredBatch {
            records: self.records,
            shadow: self.shadow,
            dead: self.dead,
        }
    }
}
