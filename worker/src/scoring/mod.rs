//! Scoring: the one thread that owns the feature engine and the model.
//!
//! It gathers micro-batches (up to `batch_max` records, or whatever arrived
//! within `linger` of the batch's first record), folds in the labels that
//! arrived meanwhile, waits (bounded) for the label stream to reach the
//! batch's event time so terminal features match the offline ones, computes
//! features, scores the batch in one call and hands the encoded records to
//! the sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::codec::{Codec, FraudLabel, Verdict};
use crate::drift::task::{DriftBatch, DriftSender};
use crate::features::{FeatureEngine, FeatureVector, LabelRef, TxRef};
use crate::metrics::Metrics;
use crate::model::ModelError;
use crate::source::{DeadLetter, Incoming, LabelProgress, SinkItem, Work};

pub mod serving;
pub use serving::{ModelSet, ModelUpdate, Role};

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One encoded output record and where its input came from.
#[derive(Debug)]
pub struct ScoredRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: Vec<u8>,
    pub consumed_at: Instant,
    pub event_time: i64,
    /// The input record's Kafka timestamp (ms).
    pub produced_at: Option<i64>,
}

/// A challenger's score of a record, for the shadow topic.
#[derive(Debug)]
pub struct ShadowRecord {
    pub key: String,
    pub payload: Vec<u8>,
    pub event_time: i64,
    pub flagged: bool,
}

/// A scored micro-batch.
#[derive(Debug, Default)]
pub struct ScoredBatch {
    pub records: Vec<ScoredRecord>,
    /// Shadow scores (best effort: they do not hold back input offsets).
    pub shadow: Vec<ShadowRecord>,
    /// Records the model gave no finite score: dead-lettered
    /// (`non_finite_score`), never written with a NaN.
    pub dead: Vec<DeadLetter>,
}

/// Settings of the scoring loop.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub batch_max: usize,
    /// Longest the first record of a batch waits for more; the batch is
    /// scored earlier when full or when the source reports it has nothing
    /// more buffered ([`Work::Drained`]).
    pub linger: Duration,
    pub labels_wait: Duration,
    /// Longest scoring waits for the label history at start; then it
    /// scores with what it has (readiness and a WARN say so).
    pub labels_load_timeout: Duration,
}

/// The latest event time seen on each assigned input partition. Their
/// minimum caps the feature engine's eviction clock, so state a lagging
/// partition still needs is kept while others run ahead (a backlog is
/// consumed unevenly). An assigned partition not seen yet holds eviction
/// back entirely; one silent for 10 minutes (idle) stops holding it back.
#[derive(Debug, Default)]
pub struct PartitionClocks {
    /// Per partition: latest event time, whether it was seen since the last
    /// watermark, and when it was last seen (stamped by `watermark`, so
    /// recording a record reads no clock).
    latest: std::collections::HashMap<i32, (i64, bool, Instant)>,
    /// When an assigned partition was first found without records.
    unseen_since: std::collections::HashMap<i32, Instant>,
    /// The consumer's assignment (shared with its rebalance callbacks).
    pub assigned: Arc<std::sync::Mutex<Vec<i32>>>,
}

impl PartitionClocks {
    pub const SILENT: Duration = Duration::from_secs(600);

    pub fn saw(&mut self, partition: i32, event_time: i64) {
        match self.latest.get_mut(&partition) {
            Some(e) => {
                e.0 = e.0.max(event_time);
                e.1 = true;
            }
            None => {
                self.latest
                    .insert(partition, (event_time, true, Instant::now()));
            }
        }
    }

    /// The slowest live assigned partition's latest event time; `i64::MIN`
    /// (evict nothing) while an assigned partition has not been seen yet.
    pub fn watermark(&mut self) -> Option<i64> {
        let assigned = self.assigned.lock().map(|a| a.clone()).unwrap_or_default();
        let now = Instant::now();
        for (_, touched, seen) in self.latest.values_mut() {
            if std::mem::take(touched) {
                *seen = now;
            }
        }
        let mut wm: Option<i64> = None;
        for p in assigned {
            match self.latest.get(&p) {
                Some((t, _, seen)) if now.duration_since(*seen) < Self::SILENT => {
                    wm = Some(wm.map_or(*t, |w| w.min(*t)));
                }
                Some(_) => {}
                None => {
                    let since = *self.unseen_since.entry(p).or_insert_with(Instant::now);
                    if since.elapsed() < Self::SILENT {
                        return Some(i64::MIN);
                    }
                }
            }
        }
        wm
    }
}

/// The scoring thread's end of the source channel: unpacks `Work::Many`.
struct Inbox {
    rx: Receiver<Work>,
    pending: std::collections::VecDeque<Work>,
}

impl Inbox {
    fn unpack(&mut self, w: Work) -> Work {
        match w {
            Work::Many(items) => {
                self.pending.extend(items);
                self.pending.pop_front().unwrap_or(Work::Many(Vec::new()))
            }
            w => w,
        }
    }

    fn recv_timeout(&mut self, d: Duration) -> Result<Work, RecvTimeoutError> {
        match self.pending.pop_front() {
            Some(w) => Ok(w),
            None => self.rx.recv_timeout(d).map(|w| self.unpack(w)),
        }
    }

    fn try_recv(&mut self) -> Result<Work, std::sync::mpsc::TryRecvError> {
        match self.pending.pop_front() {
            Some(w) => Ok(w),
            None => self.rx.try_recv().map(|w| self.unpack(w)),
        }
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
            engine.observe_transaction(TxRef {
                transaction_id: &i.tx.transaction_id,
                event_time: i.tx.event_time,
                customer_id: &i.tx.customer_id,
                terminal_id: &i.tx.terminal_id,
                amount: i.tx.amount,
            })
        })
        .collect()
}

pub use crate::message::now_ms;

/// The scoring thread body. Returns when the input channel closes (after
/// scoring what it held) or on a model error.
#[allow(clippy::too_many_arguments)]
pub fn run_scoring_loop(
    mut models: ModelSet,
    updates: Receiver<ModelUpdate>,
    codec: Arc<Codec>,
    metrics: Arc<Metrics>,
    policy: BatchPolicy,
    input: Receiver<Work>,
    labels: Receiver<Vec<FraudLabel>>,
    progress: Arc<LabelProgress>,
    to_sink: mpsc::Sender<SinkItem>,
    stop: Arc<AtomicBool>,
    drift: Option<DriftSender>,
    assigned: Arc<std::sync::Mutex<Vec<i32>>>,
) -> Result<(), ScoringError> {
    let mut inbox = Inbox {
        rx: input,
        pending: std::collections::VecDeque::new(),
    };
    let mut engine = FeatureEngine::new();
    let mut batch: Vec<Incoming> = Vec::with_capacity(policy.batch_max);
    let mut open = true;
    // Terminal features need the label history: read it all before scoring.
    let t0 = Instant::now();
    while !progress.initial_load_done.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
        if t0.elapsed() >= policy.labels_load_timeout {
            progress.load_timed_out.store(true, Ordering::Release);
            tracing::warn!(
                timeout_s = policy.labels_load_timeout.as_secs_f64(),
                labels = engine.state_size().3,
                "label history not loaded within labels_load_timeout (topic without leader, unreadable or never at its end?); \
                 scoring starts, terminal features use the labels read so far (riskstream_labels_behind_seconds)"
            );
            break;
        }
        match labels.recv_timeout(Duration::from_millis(10)) {
            Ok(l) => apply_labels(&mut engine, &l),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    while let Ok(l) = labels.try_recv() {
        apply_labels(&mut engine, &l);
    }
    tracing::info!(
        labels = engine.state_size().3,
        ms = t0.elapsed().as_millis() as u64,
        "label history loaded"
    );
    let mut clocks = PartitionClocks {
        assigned,
        ..Default::default()
    };
    let mut replayed = 0u64;
    let mut last_behind_warn = Instant::now();
    let mut replay = |engine: &mut FeatureEngine,
                      clocks: &mut PartitionClocks,
                      partition: i32,
                      tx: &crate::codec::Transaction| {
        clocks.saw(partition, tx.event_time);
        replayed += 1;
        if replayed.is_multiple_of(256) {
            if let Some(wm) = clocks.watermark() {
                engine.set_clock_limit(wm);
            }
        }
        engine.replay_transaction(TxRef {
            transaction_id: &tx.transaction_id,
            event_time: tx.event_time,
            customer_id: &tx.customer_id,
            terminal_id: &tx.terminal_id,
            amount: tx.amount,
        })
    };
    while open {
        // First record of the batch: wait, checking labels now and then.
        match inbox.recv_timeout(Duration::from_millis(50)) {
            Ok(Work::Score(i)) => batch.push(i),
            Ok(Work::Replay(p, tx)) => {
                replay(&mut engine, &mut clocks, p, &tx);
                continue;
            }
            // Only an empty `Many` can get here: nothing to do.
            Ok(Work::Many(_) | Work::Drained) => continue,
            Err(RecvTimeoutError::Timeout) => {
                while let Ok(l) = labels.try_recv() {
                    apply_labels(&mut engine, &l);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let deadline = batch[0].consumed_at + policy.linger;
        while batch.len() < policy.batch_max {
            let now = Instant::now();
            let wait = deadline.saturating_duration_since(now);
            let got = if wait.is_zero() {
                inbox.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                inbox.recv_timeout(wait)
            };
            match got {
                Ok(Work::Score(i)) => batch.push(i),
                Ok(Work::Replay(p, tx)) => replay(&mut engine, &mut clocks, p, &tx),
                Ok(Work::Many(_)) => {}
                // The source has nothing more: score what we have now.
                Ok(Work::Drained) if inbox.pending.is_empty() => break,
                Ok(Work::Drained) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Terminal features need every label reported up to the batch's time.
        let newest = batch.iter().map(|i| i.tx.event_time).max().unwrap_or(0);
        let wait_until = Instant::now() + policy.labels_wait;
        loop {
            let caught_up = progress.caught_up.load(Ordering::Acquire);
            let wm = progress.watermark.load(Ordering::Acquire);
            while let Ok(l) = labels.try_recv() {
                apply_labels(&mut engine, &l);
            }
            if caught_up
                || wm >= newest
                || Instant::now() >= wait_until
                || stop.load(Ordering::Acquire)
            {
                break;
            }
            match labels.recv_timeout(Duration::from_millis(2)) {
                Ok(l) => apply_labels(&mut engine, &l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let wm = progress.watermark.load(Ordering::Acquire);
        let behind = if progress.caught_up.load(Ordering::Acquire) || wm >= newest {
            0
        } else if wm == i64::MIN {
            -1
        } else {
            (newest - wm) / 1000
        };
        metrics
            .labels_behind_seconds
            .store(behind, Ordering::Relaxed);
        if behind > 0 && last_behind_warn.elapsed() >= Duration::from_secs(60) {
            last_behind_warn = Instant::now();
            tracing::warn!(
                behind_s = behind,
                "labels are behind the records being scored; terminal features miss the newest labels"
            );
        }
        // Eviction follows the slowest partition, not the fastest.
        for i in &batch {
            clocks.saw(i.partition, i.tx.event_time);
        }
        if let Some(wm) = clocks.watermark() {
            engine.set_clock_limit(wm);
        }
        // Model changes land between batches.
        while let Ok(u) = updates.try_recv() {
            switch_model(&mut models, u, &metrics, drift.as_ref());
        }
        let out = score_batch(
            &mut models,
            &codec,
            &metrics,
            &mut engine,
            &mut batch,
            drift.as_ref(),
        )?;
        if to_sink.blocking_send(SinkItem::Scored(out)).is_err() {
            break;
        }
    }
    Ok(())
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
        reason: "non_finite_score",
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
    metrics.model_swaps.fetch_add(1, Ordering::Relaxed);
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
    *metrics.model_info.lock().unwrap_or_else(|e| e.into_inner()) = info;
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
            .observe(oldest.elapsed().as_secs_f64());
    }
    let feats = features_of(engine, batch);
    let (customer_cap, terminal_cap) = engine.take_cap_hits();
    if customer_cap > 0 {
        metrics.event("state_cap_hits", "customer_history", customer_cap);
    }
    if terminal_cap > 0 {
        metrics.event("state_cap_hits", "terminal_labels", terminal_cap);
    }
    let n = batch.len();
    let to_challenger: Vec<bool> = batch
        .iter()
        .map(|i| models.routes_to_challenger(&i.tx.customer_id))
        .collect();
    let ab = to_challenger.iter().any(|c| *c);
    let t0 = Instant::now();
    // Champion scores: every row unless A/B sends some away.
    let champion_scores = if ab {
        let rows: Vec<FeatureVector> = feats
            .iter()
            .zip(&to_challenger)
            .filter(|(_, c)| !**c)
            .map(|(f, _)| *f)
            .collect();
        models.champion.score(&rows)?
    } else {
        models.champion.score(&feats)?
    };
    // Challenger scores: every row in shadow mode, else the routed rows.
    let challenger_scores = match &mut models.challenger {
        Some(ch) if models.shadow => ch.score(&feats)?,
        Some(ch) if ab => {
            let rows: Vec<FeatureVector> = feats
                .iter()
                .zip(&to_challenger)
                .filter(|(_, c)| **c)
                .map(|(f, _)| *f)
                .collect();
            ch.score(&rows)?
        }
        _ => Vec::new(),
    };
    metrics
        .inference_seconds
        .observe(t0.elapsed().as_secs_f64());
    metrics.batch_size.observe(n as f64);
    metrics.batches.fetch_add(1, Ordering::Relaxed);
    let scored_at = now_ms();
    let mut records = Vec::with_capacity(n);
    let mut shadow = Vec::with_capacity(if models.shadow { n } else { 0 });
    // In shadow mode the challenger's scores cover every row; otherwise only
    // the routed ones, in order.
    let mut champion_it = champion_scores.into_iter();
    let (mut shadow_it, mut routed_it) = if models.shadow {
        (challenger_scores.into_iter(), Vec::new().into_iter())
    } else {
        (Vec::new().into_iter(), challenger_scores.into_iter())
    };
    let (mut champion_n, mut champion_flagged, mut challenger_n, mut challenger_flagged) =
        (0u64, 0u64, 0u64, 0u64);
    let mut sample = drift.map(|_| DriftBatch {
        features: Vec::with_capacity(n),
        scores: Vec::with_capacity(n),
        flagged: Vec::with_capacity(n),
        event_times: Vec::with_capacity(n),
    });
    let mut dead = Vec::new();
    for ((i, f), routed) in batch.drain(..).zip(&feats).zip(&to_challenger) {
        let shadow_score = shadow_it.next().filter(|x| x.is_finite());
        let (scorer, score) = match (&models.challenger, *routed) {
            (Some(ch), true) => (ch, shadow_score.or_else(|| routed_it.next())),
            _ => (&models.champion, champion_it.next()),
        };
        // A missing or non-finite score is never written: dead-lettered.
        let Some(score) = score.filter(|x| x.is_finite()) else {
            dead.push(non_finite(
                codec,
                i,
                &scorer.location.name,
                &scorer.location.version,
            ));
            continue;
        };
        let v = verdict(score, scorer, scored_at);
        let is_fraud = v.is_fraud;
        if *routed {
            challenger_n += 1;
            challenger_flagged += u64::from(is_fraud);
        } else {
            champion_n += 1;
            champion_flagged += u64::from(is_fraud);
            // Drift compares the champion's decisions with its reference.
            if let Some(d) = &mut sample {
                d.features.push(*f);
                d.scores.push(v.score);
                d.flagged.push(is_fraud);
                d.event_times.push(i.tx.event_time);
            }
        }
        // Encoded straight from the transaction: no per-record copies of
        // the model's name and version.
        let payload = codec.encode_scored_from(&i.tx, &v);
        if let (Some(ch), Some(x)) = (&models.challenger, shadow_score) {
            let v = verdict(x, ch, scored_at);
            shadow.push(ShadowRecord {
                key: i.tx.customer_id.clone(),
                payload: codec.encode_scored_from(&i.tx, &v),
                event_time: i.tx.event_time,
                flagged: v.is_fraud,
            });
        }
        records.push(ScoredRecord {
            partition: i.partition,
            offset: i.offset,
            key: i.tx.customer_id,
            payload,
            consumed_at: i.consumed_at,
            event_time: i.tx.event_time,
            produced_at: i.produced_at,
        });
    }
    let ch = &models.champion.location;
    metrics.count_version(&ch.name, &ch.version, champion_n, champion_flagged, false);
    if let Some(c) = &models.challenger {
        let l = &c.location;
        metrics.count_version(&l.name, &l.version, challenger_n, challenger_flagged, false);
        let shadow_flagged = shadow.iter().filter(|r| r.flagged).count() as u64;
        metrics.count_version(
            &l.name,
            &l.version,
            shadow.len() as u64,
            shadow_flagged,
            true,
        );
    }
    if let (Some(d), Some(sample)) = (drift, sample) {
        if !sample.scores.is_empty() {
            d.offer(sample);
        }
    }
    Ok(ScoredBatch {
        records,
        shadow,
        dead,
    })
}
