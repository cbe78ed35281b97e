//! Sink: the idempotent producer that writes scored records and dead
//! letters, and the only place offsets become committable.
//!
//! Records are handed to librdkafka without blocking; each carries its
//! [`Origin`] as the delivery opaque. Acknowledgements are settled in the
//! producer's delivery callback ([`SinkContext::delivery`], on librdkafka's
//! polling thread): only when a record's output is acknowledged is its input
//! offset marked done in the [`OffsetTracker`] and the contiguous delivered
//! prefix stored for auto-commit. No future, channel or wake-up per record.
//! A full producer queue or too many records in flight means "wait a
//! millisecond, then retry", never an error. A failed delivery (librdkafka
//! already retried it) is handed back to the sink task and re-sent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::mpsc;

use crate::config::RunConfig;
use crate::kafka::client_config;
use crate::metrics::{LocalHistogram, Metrics};
use crate::scoring::now_ms;
use crate::source::{InputConsumer, OffsetTracker, SinkItem};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create producer: {0}")]
    Create(#[source] KafkaError),
    #[error("fatal producer error (check brokers, credentials and topic ACLs): {0}")]
    Fatal(#[source] KafkaError),
}

/// The output producer: librdkafka's polling thread runs [`SinkContext`].
pub type OutputProducer = ThreadedProducer<SinkContext>;

pub fn producer(cfg: &RunConfig, ctx: SinkContext) -> Result<OutputProducer, SinkError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000");
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    c.create_with_context(ctx).map_err(SinkError::Create)
}

/// Where an output record's input came from, and timing for metrics: the
/// delivery opaque of every record.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// False for shadow records: they do not hold input offsets back.
    track: bool,
    partition: i32,
    offset: i64,
    consumed_at: Option<Instant>,
    event_time: Option<i64>,
    /// The input record's Kafka timestamp (ms).
    produced_at: Option<i64>,
    /// Handed to the producer.
    enqueued_at: Option<Instant>,
}

/// Latencies observed on the polling thread, merged into the metrics every
/// `MERGE_EVERY` deliveries and whenever nothing is left in flight.
#[derive(Default)]
struct Locals {
    lag: LocalHistogram,
    proc: LocalHistogram,
    delivery: LocalHistogram,
    end_to_end: LocalHistogram,
}

const MERGE_EVERY: u64 = 256;

/// Settles deliveries: offsets, metrics, the record limit, failed records.
pub struct SinkContext {
    consumer: Arc<InputConsumer>,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
    input_topic: String,
    /// Stop after this many handled records (tests, benchmarks): `stop` is set.
    max_records: Option<u64>,
    stop: Arc<AtomicBool>,
    in_flight: AtomicUsize,
    locals: Mutex<Locals>,
    /// Deliveries that failed after librdkafka's retries: re-sent by the sink.
    failed: Mutex<Vec<(Origin, OwnedMessage)>>,
}

impl SinkContext {
    pub fn new(
        cfg: &RunConfig,
        consumer: Arc<InputConsumer>,
        tracker: Arc<OffsetTracker>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            consumer,
            tracker,
            metrics,
            input_topic: cfg.input_topic.clone(),
            max_records: cfg.max_records,
            stop,
            in_flight: AtomicUsize::new(0),
            locals: Mutex::new(Locals::default()),
            failed: Mutex::new(Vec::new()),
        }
    }

    fn merge(&self, l: &mut Locals) {
        self.metrics
            .event_lag_seconds
            .merge(&std::mem::take(&mut l.lag));
        self.metrics
            .processing_seconds
            .merge(&std::mem::take(&mut l.proc));
        self.metrics
            .delivery_seconds
            .merge(&std::mem::take(&mut l.delivery));
        self.metrics
            .end_to_end_seconds
            .merge(&std::mem::take(&mut l.end_to_end));
    }

    fn delivered(&self, origin: &Origin) {
        let now = Instant::now();
        // The worker's delivered count is this run's handled count.
        let handled = self.metrics.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.first_delivered.get_or_init(|| now);
        if self.max_records.is_some_and(|m| handled == m / 2) {
            self.metrics.half_delivered.get_or_init(|| now);
        }
        {
            let mut l = self.locals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = origin.enqueued_at {
                l.delivery
                    .observe(now.saturating_duration_since(t).as_secs_f64());
            }
            if let Some(c) = origin.consumed_at {
                l.proc
                    .observe(now.saturating_duration_since(c).as_secs_f64());
            }
            if origin.event_time.is_some() || origin.produced_at.is_some() {
                let wall = now_ms();
                if let Some(t) = origin.event_time {
                    l.lag.observe((wall - t) as f64 / 1000.0);
                }
                if let Some(t) = origin.produced_at {
                    l.end_to_end.observe((wall - t) as f64 / 1000.0);
                }
            }
            // `in_flight` still counts this record: 1 means it was the last.
            if handled.is_multiple_of(MERGE_EVERY) || self.in_flight.load(Ordering::Acquire) <= 1 {
                self.merge(&mut l);
            }
        }
        if let Some(o) = self.tracker.complete(origin.partition, origin.offset) {
            if let Err(e) = self
                .consumer
                .store_offset(&self.input_topic, origin.partition, o)
            {
                tracing::debug!(partition = origin.partition, offset = o, error = %e, "offset not stored (partition no longer assigned)");
            }
        }
        if self.max_records.is_some_and(|m| handled >= m) {
            self.stop.store(true, Ordering::Release);
        }
    }

    /// Records handed to the producer and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Scored records and dead letters delivered so far.
    pub fn handled(&self) -> u64 {
        self.metrics.delivered.load(Ordering::Acquire)
    }
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Origin>;

    fn delivery(&self, result: &DeliveryResult<'_>, origin: Box<Origin>) {
        match result {
            Ok(_) if origin.track => self.delivered(&origin),
            Ok(_) => {}
            Err((e, msg)) => {
                tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; re-sending");
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((*origin, msg.detach()));
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sink state: producer, topics, in-flight bound.
pub struct Sink {
    producer: OutputProducer,
    output_topic: String,
    dlq_topic: String,
    input_topic: String,
    shadow_topic: Option<String>,
    max_in_flight: usize,
}

impl Sink {
    pub fn new(cfg: &RunConfig, producer: OutputProducer) -> Self {
        Self {
            producer,
            output_topic: cfg.output_topic.clone(),
            dlq_topic: cfg.dlq_topic.clone(),
            input_topic: cfg.input_topic.clone(),
            shadow_topic: cfg.serving.shadow_topic.clone(),
            max_in_flight: cfg.queue_records,
        }
    }

    fn ctx(&self) -> &SinkContext {
        self.producer.context()
    }

    /// Runs until the channel closes and every delivery is settled. Returns
    /// the records handled (scored and dead-lettered, delivered).
    pub async fn run(self, mut rx: mpsc::Receiver<SinkItem>) -> Result<u64, SinkError> {
        loop {
            // Wake at least every 200 ms: failed deliveries are re-sent
            // also while no input arrives.
            let item = tokio::select! {
                item = rx.recv() => item,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    self.resend_failed().await?;
                    continue;
                }
            };
            let Some(item) = item else { break };
            self.resend_failed().await?;
            match item {
                SinkItem::Scored(batch) => {
                    // One clock read per batch, not per record.
                    let enqueued = Instant::now();
                    for r in batch.records {
                        let origin = Origin {
                            track: true,
                            partition: r.partition,
                            offset: r.offset,
                            consumed_at: Some(r.consumed_at),
                            event_time: Some(r.event_time),
                            produced_at: r.produced_at,
                            enqueued_at: Some(enqueued),
                        };
                        let rec = BaseRecord::with_opaque_to(&self.output_topic, Box::new(origin))
                            .key(r.key.as_bytes())
                            .payload(&r.payload)
                            .timestamp(r.event_time);
                        self.send(rec).await?;
                    }
                    if let Some(topic) = &self.shadow_topic {
                        for r in batch.shadow {
                            let origin = Origin {
                                track: false,
                                partition: -1,
                                offset: -1,
                                consumed_at: None,
                                event_time: None,
                                produced_at: None,
                                enqueued_at: None,
                            };
                            let rec = BaseRecord::with_opaque_to(topic, Box::new(origin))
                                .key(r.key.as_bytes())
                                .payload(&r.payload)
                                .timestamp(r.event_time);
                            self.send(rec).await?;
                        }
                    }
                }
                SinkItem::Dead(d) => {
                    self.ctx().metrics.dead_letter(d.reason);
                    let mut headers = OwnedHeaders::new();
                    for (k, v) in &d.headers {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(v),
                        });
                    }
                    let partition = d.partition.to_string();
                    let offset = d.offset.to_string();
                    for (k, v) in [
                        ("riskstream.reason", d.reason),
                        ("riskstream.error", d.detail.as_str()),
                        ("riskstream.source.topic", self.input_topic.as_str()),
                        ("riskstream.source.partition", partition.as_str()),
                        ("riskstream.source.offset", offset.as_str()),
                    ] {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(v),
                        });
                    }
                    let origin = Origin {
                        track: true,
                        partition: d.partition,
                        offset: d.offset,
                        consumed_at: None,
                        event_time: None,
                        produced_at: None,
                        enqueued_at: Some(Instant::now()),
                    };
                    let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> =
                        BaseRecord::with_opaque_to(&self.dlq_topic, Box::new(origin))
                            .headers(headers);
                    if let Some(k) = &d.key {
                        rec = rec.key(k.as_slice());
                    }
                    if let Some(p) = &d.payload {
                        rec = rec.payload(p.as_slice());
                    }
                    self.send(rec).await?;
                }
            }
        }
        // Input closed: settle everything still in flight, re-sending failures.
        loop {
            self.resend_failed().await?;
            if self.ctx().in_flight() == 0 && self.failed_is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ctx = self.ctx();
        let mut l = ctx.locals.lock().unwrap_or_else(|e| e.into_inner());
        ctx.merge(&mut l);
        Ok(ctx.handled())
    }

    /// Hands a record to librdkafka; waits while the queue is full or
    /// `max_in_flight` records are unsettled.
    async fn send<K, P>(&self, mut rec: BaseRecord<'_, K, P, Box<Origin>>) -> Result<(), SinkError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        while self.ctx().in_flight() >= self.max_in_flight {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Counted before the send: the delivery callback may run at once.
        self.ctx().in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    self.ctx().in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(SinkError::Fatal(e));
                }
            }
        }
    }

    fn failed_is_empty(&self) -> bool {
        self.ctx()
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Re-sends records whose delivery failed (after a pause: the broker or
    /// topic may be recovering).
    async fn resend_failed(&self) -> Result<(), SinkError> {
        let failed =
            std::mem::take(&mut *self.ctx().failed.lock().unwrap_or_else(|e| e.into_inner()));
        if failed.is_empty() {
            return Ok(());
        }
        // A fatal producer error (e.g. the idempotent producer fenced) fails
        // every delivery from now on: stop rather than re-send forever.
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(error = %code, reason, "fatal producer error");
            return Err(SinkError::Fatal(KafkaError::MessageProduction(code)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (origin, msg) in failed {
            if msg.topic().is_empty() {
                return Err(SinkError::Fatal(KafkaError::Canceled));
            }
            let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> =
                BaseRecord::with_opaque_to(msg.topic(), Box::new(origin));
            if let Some(k) = msg.key() {
                rec = rec.key(k);
            }
            if let Some(p) = msg.payload() {
                rec = rec.payload(p);
            }
            if let Some(h) = msg.headers() {
                rec = rec.headers(h.clone());
            }
            if let Some(t) = msg.timestamp().to_millis() {
                rec = rec.timestamp(t);
            }
            self.send(rec).await?;
        }
        Ok(())
    }
}
