//! A topic read back as JSON records: the data set a stream run leaves
//! behind (`riskstream tail` prints it, `evaluate-stream` joins the scored
//! records with their labels). Records that do not decode (dead letters)
//! come as their headers and the original bytes in base64.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::codec::Codec;
use crate::kafka::{client_config, partition_count};

/// Which topic to read, from where, and when to stop.
#[derive(Debug, Clone)]
pub struct TopicRead {
    pub topic: String,
    pub brokers: String,
    /// Start at the beginning of each partition (else: only new records).
    pub from_beginning: bool,
    /// Stop after this many records.
    pub max: Option<u64>,
    /// Stop after this many seconds without a new record.
    pub idle_timeout: Option<f64>,
    /// Confluent Schema Registry to decode `0x00`-framed records.
    pub schema_registry_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("the Kafka client failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Schema(#[from] crate::codec::SchemaError),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("cannot write output")]
    Io(#[from] std::io::Error),
}

/// The JSON line for one record.
pub fn record_json(codec: &Codec, m: &BorrowedMessage<'_>) -> serde_json::Value {
    let decoded = m.payload().and_then(|p| codec.to_json(p).ok());
    let is_dead = m
        .headers()
        .is_some_and(|h| h.iter().any(|x| x.key == "riskstream.reason"));
    match decoded {
        Some(v) if !is_dead => v,
        _ => {
            let mut headers = serde_json::Map::new();
            if let Some(h) = m.headers() {
                for x in h.iter() {
                    headers.insert(
                        x.key.to_string(),
                        serde_json::Value::String(
                            x.value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default(),
                        ),
                    );
                }
            }
            let b64 = base64::engine::general_purpose::STANDARD;
            serde_json::json!({
                "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                "headers": headers,
                "payload_base64": m.payload().map(|p| b64.encode(p)),
                "partition": m.partition(),
                "offset": m.offset(),
            })
        }
    }
}

/// Reads the topic and calls `out` with each JSON record. Returns the count.
pub fn read_topic(
    args: &TopicRead,
    mut out: impl FnMut(serde_json::Value) -> Result<(), TopicError>,
) -> Result<u64, TopicError> {
    let mut codec = Codec::new()?;
    if let Some(url) = &args.schema_registry_url {
        codec.connect_registry(url)?;
    }
    let mut cfg = client_config(&args.brokers, &BTreeMap::new());
    cfg.set("group.id", "riskstream-tail")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let start = Instant::now();
    let mut n_parts = 0;
    while n_parts == 0 {
        n_parts = partition_count(consumer.client(), &args.topic)?;
        if n_parts == 0 {
            if args
                .idle_timeout
                .is_some_and(|t| start.elapsed().as_secs_f64() > t)
            {
                return Err(TopicError::NoTopic(args.topic.clone()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut tpl = TopicPartitionList::new();
    let offset = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for p in 0..n_parts as i32 {
        tpl.add_partition_offset(&args.topic, p, offset)?;
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    let mut last = Instant::now();
    loop {
        if args.max.is_some_and(|m| n >= m) {
            break;
        }
        if args
            .idle_timeout
            .is_some_and(|t| last.elapsed().as_secs_f64() > t)
        {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Some(Ok(m)) => {
                out(record_json(&codec, &m))?;
                n += 1;
                last = Instant::now();
            }
        }
    }
    Ok(n)
}
