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

use crate::codec::{Codec, FraudLabel, ScoredTransaction};
use crate::drift::task::{DriftBatch, DriftSender};
use crate::features::{FeatureEngine, FeatureVector, LabelRef, TxRef};
use crate::metrics::Metrics;
use crate::model::{ModelError, Scorer};
use crate::source::{Incoming, LabelProgress, SinkItem, Work};

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot encode a scored record: {0}")]
    Encode(String),
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
}

/// A scored micro-batch.
#[derive(Debug, Default)]
pub struct ScoredBatch {
    pub records: Vec<ScoredRecord>,
}

/// Settings of the scoring loop.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub batch_max: usize,
    pub linger: Duration,
    pub labels_wait: Duration,
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

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The scoring thread body. Returns when the input channel closes (after
/// scoring what it held) or on a model error.
#[allow(clippy::too_many_arguments)]
pub fn run_scoring_loop(
    mut scorer: Scorer,
    codec: Arc<Codec>,
    metrics: Arc<Metrics>,
    policy: BatchPolicy,
    input: Receiver<Work>,
    labels: Receiver<FraudLabel>,
    progress: Arc<LabelProgress>,
    to_sink: mpsc::Sender<SinkItem>,
    stop: Arc<AtomicBool>,
    drift: Option<DriftSender>,
) -> Result<(), ScoringError> {
    let mut engine = FeatureEngine::new();
    let mut batch: Vec<Incoming> = Vec::with_capacity(policy.batch_max);
    let mut open = true;
    // Terminal features need the label history: read it all before scoring.
    let t0 = Instant::now();
    while !progress.initial_load_done.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
        match labels.recv_timeout(Duration::from_millis(10)) {
            Ok(l) => apply_label(&mut engine, &l),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    while let Ok(l) = labels.try_recv() {
        apply_label(&mut engine, &l);
    }
    tracing::info!(
        labels = engine.state_size().3,
        ms = t0.elapsed().as_millis() as u64,
        "label history loaded"
    );
    let replay = |engine: &mut FeatureEngine, tx: &crate::codec::Transaction| {
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
        match input.recv_timeout(Duration::from_millis(50)) {
            Ok(Work::Score(i)) => batch.push(i),
            Ok(Work::Replay(tx)) => {
                replay(&mut engine, &tx);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                while let Ok(l) = labels.try_recv() {
                    apply_label(&mut engine, &l);
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
                input.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                input.recv_timeout(wait)
            };
            match got {
                Ok(Work::Score(i)) => batch.push(i),
                Ok(Work::Replay(tx)) => replay(&mut engine, &tx),
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
                apply_label(&mut engine, &l);
            }
            if caught_up
                || wm >= newest
                || Instant::now() >= wait_until
                || stop.load(Ordering::Acquire)
            {
                break;
            }
            match labels.recv_timeout(Duration::from_millis(2)) {
                Ok(l) => apply_label(&mut engine, &l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let out = score_batch(
            &mut scorer,
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

/// Features → model → encoded records, for one batch (drained from `batch`).
pub fn score_batch(
    scorer: &mut Scorer,
    codec: &Codec,
    metrics: &Metrics,
    engine: &mut FeatureEngine,
    batch: &mut Vec<Incoming>,
    drift: Option<&DriftSender>,
) -> Result<ScoredBatch, ScoringError> {
    let feats = features_of(engine, batch);
    let t0 = Instant::now();
    let scores = scorer.score(&feats)?;
    metrics
        .inference_seconds
        .observe(t0.elapsed().as_secs_f64());
    metrics.batch_size.observe(batch.len() as f64);
    metrics.batches.fetch_add(1, Ordering::Relaxed);
    let threshold = scorer.card.threshold;
    let scored_at = now_ms();
    let mut records = Vec::with_capacity(batch.len());
    let mut flagged = 0;
    let mut sample = drift.map(|_| DriftBatch {
        flagged: Vec::with_capacity(batch.len()),
        event_times: Vec::with_capacity(batch.len()),
        scores: scores.clone(),
        features: feats,
    });
    for (i, score) in batch.drain(..).zip(scores) {
        let is_fraud = score >= threshold;
        flagged += u64::from(is_fraud);
        if let Some(d) = &mut sample {
            d.flagged.push(is_fraud);
            d.event_times.push(i.tx.event_time);
        }
        let s = ScoredTransaction {
            transaction_id: i.tx.transaction_id,
            event_time: i.tx.event_time,
            customer_id: i.tx.customer_id,
            terminal_id: i.tx.terminal_id,
            amount: i.tx.amount,
            currency: i.tx.currency,
            score,
            is_fraud,
            threshold,
            model_name: scorer.location.name.clone(),
            model_version: scorer.location.version.clone(),
            scored_at,
        };
        let payload = codec
            .encode_scored(&s)
            .map_err(|e| ScoringError::Encode(e.to_string()))?;
        records.push(ScoredRecord {
            partition: i.partition,
            offset: i.offset,
            key: s.customer_id,
            payload,
            consumed_at: i.consumed_at,
            event_time: s.event_time,
        });
    }
    metrics
        .scored
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    metrics.flagged.fetch_add(flagged, Ordering::Relaxed);
    if let (Some(d), Some(sample)) = (drift, sample) {
        d.offer(sample);
    }
    Ok(ScoredBatch { records })
}
