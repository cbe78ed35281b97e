//! Sink: the idempotent producer that writes scored records and dead
//! letters, and the only place offsets become committable.
//!
//! Every record is enqueued without blocking; a full producer queue means
//! "wait for a delivery, then retry", never an error. A failed delivery is
//! re-sent (librdkafka already retried it). Only when a record's output is
//! acknowledged is its input offset marked done in the [`OffsetTracker`],
//! and the contiguous delivered prefix stored for auto-commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::Message;
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

pub fn producer(cfg: &RunConfig) -> Result<FutureProducer, SinkError> {
    let mut c = client_config(&cfg.brokers, &cfg.kafka);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000");
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    c.create().map_err(SinkError::Create)
}

/// Where an output record's input came from, and timing for metrics.
#[derive(Debug, Clone, Copy)]
struct Origin {
    /// False for shadow records: they do not hold input offsets back.
    track: bool,
    partition: i32,
    offset: i64,
    consumed_at: Option<Instant>,
    event_time: Option<i64>,
    /// Handed to the producer (set by `track`).
    enqueued_at: Option<Instant>,
}

type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Origin, Result<(), (KafkaError, OwnedMessage)>)> + Send>,
>;

fn track(mut origin: Origin, fut: DeliveryFuture) -> Pending {
    origin.enqueued_at.get_or_insert_with(Instant::now);
    Box::pin(async move {
        let r = match fut.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, m))) => Err((e, m)),
            // The producer was dropped with the message in flight.
            Err(_) => Err((
                KafkaError::Canceled,
                OwnedMessage::new(
                    None,
                    None,
                    String::new(),
                    rdkafka::Timestamp::NotAvailable,
                    0,
                    0,
                    None,
                ),
            )),
        };
        (origin, r)
    })
}

/// Sink state: producer, topics, in-flight deliveries.
pub struct Sink {
    producer: FutureProducer,
    consumer: Arc<InputConsumer>,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
    output_topic: String,
    dlq_topic: String,
    input_topic: String,
    shadow_topic: Option<String>,
    max_in_flight: usize,
    /// Stop after this many handled records (tests, benchmarks).
    max_records: Option<u64>,
    handled: u64,
    /// Producer → broker ack latencies not yet merged into the metrics.
    delivery: LocalHistogram,
}

impl Sink {
    pub fn new(
        cfg: &RunConfig,
        producer: FutureProducer,
        consumer: Arc<InputConsumer>,
        tracker: Arc<OffsetTracker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            producer,
            consumer,
            tracker,
            metrics,
            output_topic: cfg.output_topic.clone(),
            dlq_topic: cfg.dlq_topic.clone(),
            input_topic: cfg.input_topic.clone(),
            shadow_topic: cfg.serving.shadow_topic.clone(),
            max_in_flight: cfg.queue_records,
            max_records: cfg.max_records,
            handled: 0,
            delivery: LocalHistogram::default(),
        }
    }

    /// Runs until the channel closes and every delivery is settled.
    /// Calls `on_limit` once `max_records` records were handled.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<SinkItem>,
        on_limit: impl Fn(),
    ) -> Result<u64, SinkError> {
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut open = true;
        let mut lag = LocalHistogram::default();
        let mut proc = LocalHistogram::default();
        // Owned copies: `enqueue` borrows `self` mutably.
        let (output_topic, dlq_topic, input_topic, shadow_topic) = (
            self.output_topic.clone(),
            self.dlq_topic.clone(),
            self.input_topic.clone(),
            self.shadow_topic.clone(),
        );
        while open || !pending.is_empty() {
            tokio::select! {
                // Acks first: they free queue space and advance offsets.
                biased;
                Some((origin, res)) = pending.next(), if !pending.is_empty() => {
                    self.settle(origin, res, &mut pending, &mut lag, &mut proc).await?;
                    if pending.is_empty() || self.handled.is_multiple_of(256) {
                        self.metrics.event_lag_seconds.merge(&std::mem::take(&mut lag));
                        self.metrics.processing_seconds.merge(&std::mem::take(&mut proc));
                        self.metrics.delivery_seconds.merge(&std::mem::take(&mut self.delivery));
                    }
                    if self.max_records.is_some_and(|m| self.handled >= m) {
                        on_limit();
                    }
                }
                item = rx.recv(), if open && pending.len() < self.max_in_flight => {
                    match item {
                        None => open = false,
                        Some(SinkItem::Scored(batch)) => {
                            // One clock read per batch, not per record.
                            let enqueued = Instant::now();
                            for r in batch.records {
                                let origin = Origin {
                                    track: true,
                                    partition: r.partition,
                                    offset: r.offset,
                                    consumed_at: Some(r.consumed_at),
                                    event_time: Some(r.event_time),
                                    enqueued_at: Some(enqueued),
                                };
                                let rec = FutureRecord::to(&output_topic)
                                    .key(r.key.as_bytes())
                                    .payload(&r.payload)
                                    .timestamp(r.event_time);
                                let fut = self.enqueue(rec, &mut pending, &mut lag, &mut proc).await?;
                                pending.push(track(origin, fut));
                            }
                            if let Some(topic) = &shadow_topic {
                                for r in batch.shadow {
                                    let origin = Origin { track: false, partition: -1, offset: -1, consumed_at: None, event_time: None, enqueued_at: None };
                                    let rec = FutureRecord::to(topic)
                                        .key(r.key.as_bytes())
                                        .payload(&r.payload)
                                        .timestamp(r.event_time);
                                    let fut = self.enqueue(rec, &mut pending, &mut lag, &mut proc).await?;
                                    pending.push(track(origin, fut));
                                }
                            }
                        }
                        Some(SinkItem::Dead(d)) => {
                            self.metrics.dead_letter(d.reason);
                            let mut headers = OwnedHeaders::new();
                            for (k, v) in &d.headers {
                                headers = headers.insert(Header { key: k, value: Some(v) });
                            }
                            let partition = d.partition.to_string();
                            let offset = d.offset.to_string();
                            for (k, v) in [
                                ("riskstream.reason", d.reason),
                                ("riskstream.error", d.detail.as_str()),
                                ("riskstream.source.topic", input_topic.as_str()),
                                ("riskstream.source.partition", partition.as_str()),
                                ("riskstream.source.offset", offset.as_str()),
                            ] {
                                headers = headers.insert(Header { key: k, value: Some(v) });
                            }
                            let mut rec: FutureRecord<'_, [u8], [u8]> =
                                FutureRecord::to(&dlq_topic).headers(headers);
                            if let Some(k) = &d.key {
                                rec = rec.key(k.as_slice());
                            }
                            if let Some(p) = &d.payload {
                                rec = rec.payload(p.as_slice());
                            }
                            let origin = Origin { track: true, partition: d.partition, offset: d.offset, consumed_at: None, event_time: None, enqueued_at: None };
                            let fut = self.enqueue(rec, &mut pending, &mut lag, &mut proc).await?;
                            pending.push(track(origin, fut));
                        }
                    }
                }
            }
        }
        self.metrics.event_lag_seconds.merge(&lag);
        self.metrics.processing_seconds.merge(&proc);
        self.metrics.delivery_seconds.merge(&self.delivery);
        Ok(self.handled)
    }

    /// Enqueues a record; on a full queue, settles deliveries and retries.
    async fn enqueue<'a, K, P>(
        &mut self,
        mut rec: FutureRecord<'a, K, P>,
        pending: &mut FuturesUnordered<Pending>,
        lag: &mut LocalHistogram,
        proc: &mut LocalHistogram,
    ) -> Result<DeliveryFuture, SinkError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(rec) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    if let Some((origin, res)) = pending.next().await {
                        Box::pin(self.settle(origin, res, pending, lag, proc)).await?;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err((e, _)) => return Err(SinkError::Fatal(e)),
            }
        }
    }

    async fn settle(
        &mut self,
        origin: Origin,
        res: Result<(), (KafkaError, OwnedMessage)>,
        pending: &mut FuturesUnordered<Pending>,
        lag: &mut LocalHistogram,
        proc: &mut LocalHistogram,
    ) -> Result<(), SinkError> {
        match res {
            Ok(()) if !origin.track => Ok(()),
            Ok(()) => {
                let now = Instant::now();
                if let Some(t) = origin.enqueued_at {
                    self.delivery
                        .observe(now.saturating_duration_since(t).as_secs_f64());
                }
                self.handled += 1;
                self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                self.metrics.first_delivered.get_or_init(Instant::now);
                if self.max_records.is_some_and(|m| self.handled == m / 2) {
                    self.metrics.half_delivered.get_or_init(Instant::now);
                }
                if let Some(c) = origin.consumed_at {
                    proc.observe(now.saturating_duration_since(c).as_secs_f64());
                }
                if let Some(t) = origin.event_time {
                    lag.observe((now_ms() - t) as f64 / 1000.0);
                }
                if let Some(o) = self.tracker.complete(origin.partition, origin.offset) {
                    if let Err(e) =
                        self.consumer
                            .store_offset(&self.input_topic, origin.partition, o)
                    {
                        tracing::debug!(partition = origin.partition, offset = o, error = %e, "offset not stored (partition no longer assigned)");
                    }
                }
                Ok(())
            }
            Err((e, msg)) => {
                if matches!(e, KafkaError::Canceled) || msg.topic().is_empty() {
                    return Err(SinkError::Fatal(e));
                }
                tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; re-sending");
                tokio::time::sleep(Duration::from_millis(100)).await;
                let headers = msg.headers().cloned();
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(msg.topic());
                if let Some(k) = msg.key() {
                    rec = rec.key(k);
                }
                if let Some(p) = msg.payload() {
                    rec = rec.payload(p);
                }
                if let Some(h) = headers {
                    rec = rec.headers(h);
                }
                let fut = loop {
                    match self.producer.send_result(rec) {
                        Ok(f) => break f,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            rec = r;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => return Err(SinkError::Fatal(e)),
                    }
                };
                pending.push(track(origin, fut));
                Ok(())
            }
        }
    }
}
