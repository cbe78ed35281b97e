//! `riskstream replay`: streams a handbook transactions CSV to the input
//! topic (key = customer id, Kafka timestamp = event time, or the time it
//! was sent with `--timestamp-now`) and each label to the labels topic one
//! label delay (7 days of event time) later, as fast as possible or at a
//! fixed rate.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::codec::Codec;
use crate::dataset::{day_index, for_each_row, HandbookRow};
use crate::kafka::{client_config, ensure_topics};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Transactions CSV in the handbook's format (.csv or .csv.gz).
    #[arg(long)]
    pub csv: PathBuf,
    #[arg(long, env = "RISKSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Input topic.
    #[arg(long, default_value = "transactions")]
    pub topic: String,
    /// Labels topic ("" to send no labels).
    #[arg(long, default_value = "transactions.labels")]
    pub labels_topic: String,
    /// Partitions of topics created here.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Events per second (transactions); unlimited when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this many transactions.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Stamp transactions with the time they are sent (Kafka CreateTime, as
    /// most producers do) instead of their event time: the worker's
    /// `riskstream_end_to_end_seconds` then measures produced → scored.
    #[arg(long)]
    pub timestamp_now: bool,
    /// First day (YYYY-MM-DD) to send.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day (YYYY-MM-DD, inclusive) to send.
    #[arg(long)]
    pub to: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Confluent Schema Registry (http[s]://[user:password@]host[:port][/path]): frame
    /// records with `0x00` + schema id.
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaSetupError),
    #[error(transparent)]
    Schema(#[from] crate::codec::SchemaError),
    #[error("the replay producer failed")]
    Produce(#[from] KafkaError),
    #[error("{0} records could not be delivered")]
    Undelivered(u64),
    /// The replay task panicked or was cancelled.
    #[error("the replay task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Counts failed deliveries.
#[derive(Default)]
struct Counting {
    failed: AtomicU64,
}
impl ClientContext for Counting {}
impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            if self.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                tracing::error!(error = %e, "delivery failed");
            }
        }
    }
}

/// What a replay sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayReport {
    pub transactions: u64,
    pub labels: u64,
    pub seconds: f64,
}

fn send(
    p: &ThreadedProducer<Counting>,
    topic: &str,
    key: &str,
    payload: &[u8],
    ts: i64,
) -> Result<(), KafkaError> {
    let mut rec = BaseRecord::to(topic)
        .key(key)
        .payload(payload)
        .timestamp(ts);
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

pub async fn replay(args: &ReplayArgs) -> Result<ReplayReport, ReplayError> {
    let mut topics = vec![args.topic.as_str()];
    if !args.labels_topic.is_empty() {
        topics.push(&args.labels_topic);
    }
    ensure_topics(&args.brokers, &BTreeMap::new(), &topics, args.partitions).await?;
    let args = args.clone();
    match tokio::task::spawn_blocking(move || replay_blocking(&args)).await {
        Ok(r) => r,
        Err(e) => Err(ReplayError::Task(e)),
    }
}

fn replay_blocking(args: &ReplayArgs) -> Result<ReplayReport, ReplayError> {
    let codec = replay_codec(args)?;
    let from = args.from.as_deref().map(day_index).transpose()?;
    let to = args.to.as_deref().map(day_index).transpose()?;
    let producer = replay_producer(args)?;
    let bar = progress_bar(args.quiet);
    let mut replay = Replay {
        args,
        producer: &producer,
        codec: &codec,
        started: Instant::now(),
        report: ReplayReport::default(),
        pending_labels: VecDeque::new(),
    };
    for_each_row::<ReplayError>(&args.csv, |row| {
        if from.is_some_and(|d| row.time_days < d) || to.is_some_and(|d| row.time_days > d) {
            return Ok(true);
        }
        if args.limit.is_some_and(|l| replay.report.transactions >= l) {
            return Ok(false);
        }
        if replay.report.transactions == 0 {
            // The clock (pace, rate) starts at the first row sent, not
            // before the rows ahead of `--from` were read and skipped: a
            // paced replay from a late day opened with a burst.
            replay.started = Instant::now();
        }
        replay.send_row(row)?;
        if replay.report.transactions.is_multiple_of(1024) {
            bar.set_position(replay.report.transactions);
        }
        replay.pace();
        Ok(true)
    })?;
    replay.send_remaining_labels()?;
    let mut report = replay.report;
    let started = replay.started;
    bar.set_position(report.transactions);
    bar.set_message("flushing");
    producer.flush(Duration::from_secs(60))?;
    bar.finish_with_message("done");
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(ReplayError::Undelivered(failed));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The codec, registering the written schemas when a registry is given.
fn replay_codec(args: &ReplayArgs) -> Result<Codec, ReplayError> {
    let mut codec = Codec::new()?;
    if let Some(url) = &args.schema_registry_url {
        codec.connect_registry(url)?;
        codec.register_output(crate::codec::Written::Transaction, &args.topic)?;
        if !args.labels_topic.is_empty() {
            codec.register_output(crate::codec::Written::Label, &args.labels_topic)?;
        }
    }
    Ok(codec)
}

/// An idempotent producer, connected to the input topic's leaders.
fn replay_producer(args: &ReplayArgs) -> Result<ThreadedProducer<Counting>, ReplayError> {
    let mut cfg = client_config(&args.brokers, &BTreeMap::new());
    cfg.set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.type", "lz4");
    let producer: ThreadedProducer<Counting> = cfg.create_with_context(Counting::default())?;
    // Connect and learn the topic's leaders before the clock starts, so a
    // paced replay does not open with a second's worth of queued records
    // (it would show as latency downstream).
    if let Err(e) = producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
    {
        tracing::warn!(topic = %args.topic, error = %e, "no metadata yet; sending anyway");
    }
    Ok(producer)
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replay {pos} transactions [{elapsed_precise}] {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b
}

/// A replay under way: what was sent, and the labels not yet due.
struct Replay<'a> {
    args: &'a ReplayArgs,
    producer: &'a ThreadedProducer<Counting>,
    codec: &'a Codec,
    started: Instant,
    report: ReplayReport,
    /// Sent transactions whose labels are reported later (event time order).
    pending_labels: VecDeque<HandbookRow>,
}

impl Replay<'_> {
    fn labels(&self) -> bool {
        !self.args.labels_topic.is_empty()
    }

    /// Sends the labels due by `row`'s event time, then `row`'s transaction.
    fn send_row(&mut self, row: HandbookRow) -> Result<(), ReplayError> {
        let t = row.event_time();
        if self.labels() {
            while self
                .pending_labels
                .front()
                .is_some_and(|r| r.label().reported_at <= t)
            {
                if let Some(r) = self.pending_labels.pop_front() {
                    self.send_label(&r)?;
                }
            }
        }
        let tx = row.transaction();
        let payload = self.codec.encode_transaction(&tx)?;
        let ts = if self.args.timestamp_now {
            crate::message::now_ms()
        } else {
            t
        };
        send(
            self.producer,
            &self.args.topic,
            &tx.customer_id,
            &payload,
            ts,
        )?;
        self.report.transactions += 1;
        if self.labels() {
            self.pending_labels.push_back(row);
        }
        Ok(())
    }

    /// The stream ended: the remaining labels are reported a week later.
    fn send_remaining_labels(&mut self) -> Result<(), ReplayError> {
        while let Some(r) = self.pending_labels.pop_front() {
            self.send_label(&r)?;
        }
        Ok(())
    }

    fn send_label(&mut self, r: &HandbookRow) -> Result<(), ReplayError> {
        send_label(self.producer, self.codec, &self.args.labels_topic, r)?;
        self.report.labels += 1;
        Ok(())
    }

    /// With `--rate`: sleeps until the next transaction is due.
    fn pace(&self) {
        if let Some(rate) = self.args.rate {
            let due = Duration::from_secs_f64(self.report.transactions as f64 / rate);
            let el = self.started.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
    }
}

fn send_label(
    p: &ThreadedProducer<Counting>,
    codec: &Codec,
    topic: &str,
    r: &HandbookRow,
) -> Result<(), ReplayError> {
    let l = r.label();
    let payload = codec.encode_label(&l)?;
    Ok(send(p, topic, &l.customer_id, &payload, l.reported_at)?)
}
