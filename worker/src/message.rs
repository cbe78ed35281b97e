//! Messages between the pipeline stages, and the wall clock they are
//! stamped with. The floor of the module graph: it imports only the types
//! it carries (codec records, feature vectors), never a stage.

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::codec::Codec;
use crate::metrics::Metrics;

use crate::codec::Transaction;
use crate::features::{CustomerTx, FeatureVector};

/// Records the source (and the label reader) gather before handing them on.
pub const CHUNK: usize = 256;

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

/// What the scoring stage receives from the source: records and control
/// messages, in consumption order.
#[derive(Debug)]
pub enum Work {
    /// Records of one hand-over (one channel operation and at most one
    /// wake-up per poll burst instead of one per record). `drained`: the
    /// source holds nothing more (the fetched burst is used up), so a batch
    /// being gathered should be scored now rather than wait out its linger.
    Records { records: Vec<Record>, drained: bool },
    /// A change of which partitions' state this instance owns, after the
    /// records handed over before it.
    State(StateOp),
}

/// One input record on its way to scoring.
#[derive(Debug)]
pub enum Record {
    /// Score it and produce its output.
    Score(Incoming),
    /// Add this earlier record to customer state without output (state
    /// rebuild after a partition was assigned), from this partition.
    Replay(i32, Transaction),
    /// A record that failed decoding or its guard: its dead letter, in
    /// order with the records around it.
    Dead(DeadLetter),
}

/// Ownership changes of customer state, in order with the records.
#[derive(Debug)]
pub enum StateOp {
    /// A partition's customers as its changelog holds them: before any
    /// record of that partition is handed over.
    Restore {
        partition: i32,
        customers: Vec<(String, Vec<CustomerTx>)>,
    },
    /// Write every changed customer's state now (a revoke waits for it).
    Flush,
    /// These partitions were revoked, or are about to be rebuilt by a
    /// replay: their customers are dropped.
    Revoke(Vec<i32>),
    /// Exactly-once: commit a transaction now covering everything handed
    /// over before this (a revoke waits for barrier `u64`).
    Commit(u64),
    /// Exactly-once: the open transaction was aborted; these partitions'
    /// customers are dropped without a changelog write (their state is read
    /// again from the changelog) and the sink is told with
    /// [`SinkItem::Rewound`] carrying `rewind`.
    Rewind { partitions: Vec<i32>, rewind: u64 },
    /// Exactly-once: idle partitions' positions (past upstream transaction
    /// markers), to commit with the next transaction.
    Positions(Vec<(i32, i64)>),
}

/// Changelog records of one partition, covering input offsets up to the
/// flush `seq` the offset tracker knows (None: nothing waits for them).
#[derive(Debug)]
pub struct StateFlush {
    pub partition: i32,
    pub seq: Option<u64>,
    /// (customer id, state record or tombstone).
    pub records: Vec<(String, Option<Vec<u8>>)>,
}

/// A record that failed decoding, validation or scoring, on its way to the DLQ.
#[derive(Debug)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Input headers beyond the source's header budget were left out.
    pub headers_dropped: bool,
    /// Stable reason code (dead-letter header, metric label).
    pub reason: crate::metrics::events::DeadLetterReason,
    pub detail: String,
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

/// What the sink receives from scoring.
#[derive(Debug)]
pub enum SinkItem {
    Scored(ScoredBatch),
    Dead(DeadLetter),
    /// Changelog records (settle no input record by themselves).
    State(StateFlush),
    /// Exactly-once: commit the open transaction with these input offsets
    /// (partition, next offset to read); `barrier`: a revoke waits for it.
    Commit {
        offsets: Vec<(i32, i64)>,
        barrier: Option<u64>,
    },
    /// Exactly-once: everything before this belongs to an aborted
    /// transaction; rewind number `u64` is done, what follows is new.
    Rewound(u64),
}

impl SinkItem {
    /// Input records this item settles.
    pub fn records(&self) -> u64 {
        match self {
            SinkItem::Scored(b) => (b.records.len() + b.dead.len()) as u64,
            SinkItem::Dead(_) => 1,
            SinkItem::State(_) | SinkItem::Commit { .. } | SinkItem::Rewound(_) => 0,
        }
    }
}

/// A version's validation values (from its model card).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Validation {
    pub auc_roc: Option<f64>,
    pub average_precision: Option<f64>,
    pub f1: Option<f64>,
}

impl Validation {
    /// From a card's `metrics` (`validation.auc_roc`, `.average_precision`,
    /// `.f1_at_threshold`).
    pub fn from_card(metrics: &serde_json::Value) -> Self {
        let v = &metrics["validation"];
        Self {
            auc_roc: v["auc_roc"].as_f64(),
            average_precision: v["average_precision"].as_f64(),
            f1: v["f1_at_threshold"].as_f64(),
        }
    }

    pub fn of(&self, metric: &str) -> Option<f64> {
        match metric {
            "auc_roc" => self.auc_roc,
            "average_precision" => self.average_precision,
            "f1" => self.f1,
            _ => None,
        }
    }
}

/// A model version whose decisions are tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// "name/version".
    pub model: String,
    pub validation: Validation,
}

/// One scored transaction, as the sidecar receives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub tx: u64,
    pub event_time: i64,
    pub score: f32,
    pub flagged: bool,
    /// Index into the batch's versions.
    pub version: u8,
}

/// One label, as the sidecar receives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelKey {
    pub tx: u64,
    pub event_time: i64,
    pub fraud: bool,
}

/// One scored batch as the drift sidecar sees it (champion decisions).
#[derive(Debug, Default)]
pub struct DriftBatch {
    pub features: Vec<FeatureVector>,
    pub scores: Vec<f32>,
    pub flagged: Vec<bool>,
    pub event_times: Vec<i64>,
    /// Input partition of each record (the sidecar's event-time clocks).
    pub partitions: Vec<i32>,
    /// The scoring thread's event-time watermark when it scored the batch
    /// (the slowest assigned partition's latest event time, `i64::MIN`
    /// while an assigned partition has not been seen); None: unknown.
    pub watermark: Option<i64>,
    /// How far back the feature state reached when the batch was scored:
    /// drift does not judge a window its features had not filled yet.
    pub history: crate::features::History,
    /// Every decision of the batch (champion, challenger and shadow) for
    /// performance monitoring, with the versions they index.
    pub decisions: Vec<Decision>,
    pub versions: Vec<VersionInfo>,
}

/// How far the label stream has been read: written by the label reader,
/// read by scoring (how long to wait for labels) and readiness.
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

/// What every stage of one pipeline shares: the codec, the metrics and the
/// shutdown token (cancelled once: stop taking input, finish what is held).
#[derive(Debug, Clone)]
pub struct Shared {
    pub codec: Arc<Codec>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
}
