//! `riskstream passthrough`: consume and produce the same records with no
//! decoding, features or model. The end-to-end benchmark's upper bound: how
//! fast this broker and librdkafka move records at all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::kafka::client_config;
use crate::metrics::Metrics;

/// When a record was consumed, and its Kafka timestamp (ms).
type Origin = (Instant, Option<i64>);

/// Records consume → broker ack latency of every record, and input
/// Kafka timestamp → ack (end to end, where producers stamp send time),
/// in the worker's own series (`riskstream_processing_seconds`,
/// `riskstream_end_to_end_seconds`), so both are bucketed alike.
#[derive(Default)]
pub struct LatencyContext {
    pub metrics: Metrics,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Origin>;
    fn delivery(&self, r: &DeliveryResult<'_>, origin: Self::DeliveryOpaque) {
        let (consumed_at, produced_at) = *origin;
        if r.is_ok() {
            let m = &self.metrics;
            m.processing_seconds
                .record(consumed_at.elapsed().as_secs_f64());
            if let Some(t) = produced_at {
                m.end_to_end_seconds
                    .record((crate::message::now_ms() - t) as f64 / 1000.0);
            }
        }
    }
}

/// What a passthrough run measured.
#[derive(Debug, Clone)]
pub struct PassthroughReport {
    pub records: u64,
    /// First record consumed to the last delivered.
    pub seconds: f64,
    /// Consume → ack, milliseconds: p50, p99, p99.9.
    pub latency_ms: [f64; 3],
    /// Input Kafka timestamp → ack, milliseconds: p50, p99, p99.9.
    pub end_to_end_ms: [f64; 3],
    /// Records per second over the second half (steady state).
    pub steady_records_per_second: f64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PassthroughArgs {
    #[arg(long, env = "RISKSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long)]
    pub input_topic: String,
    #[arg(long)]
    pub output_topic: String,
    /// Stop after this many records.
    #[arg(long)]
    pub max: u64,
}

/// Records moved and seconds from the first record to the last delivery.
/// The output topic must exist (a broker may not auto-create it, and where
/// it does, the first sends wait for it): `main` creates it first.
pub fn passthrough(args: &PassthroughArgs) -> Result<PassthroughReport, KafkaError> {
    let mut c = client_config(&args.brokers, &BTreeMap::new());
    c.set("group.id", format!("passthrough-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    consumer.subscribe(&[&args.input_topic])?;
    let mut p = client_config(&args.brokers, &BTreeMap::new());
    p.set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("compression.type", "lz4");
    let producer: ThreadedProducer<LatencyContext> =
        p.create_with_context(LatencyContext::default())?;
    let mut n = 0;
    let mut start = None;
    let mut half = None;
    while n < args.max {
        let Some(res) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = res?;
        start.get_or_insert_with(Instant::now);
        let origin = Box::new((Instant::now(), m.timestamp().to_millis()));
        let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> =
            BaseRecord::with_opaque_to(&args.output_topic, origin);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
        n += 1;
        if n == args.max / 2 {
            half = Some(Instant::now());
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let text = producer.context().metrics.render();
    let ms = |name: &str, p| crate::metrics::quantile_of(&text, name, p).unwrap_or(0.0) * 1e3;
    let q = |p| ms("riskstream_processing_seconds", p);
    let e2e = |p| ms("riskstream_end_to_end_seconds", p);
    Ok(PassthroughReport {
        records: n,
        seconds: start.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        latency_ms: [q(0.5), q(0.99), q(0.999)],
        end_to_end_ms: [e2e(0.5), e2e(0.99), e2e(0.999)],
        steady_records_per_second: half.map_or(0.0, |h: Instant| {
            (n - args.max / 2) as f64 / h.elapsed().as_secs_f64().max(1e-9)
        }),
    })
}
