//! `riskstream tail`: prints any riskstream topic as JSON lines.
//! Records that do not decode (dead letters) print their headers and the
//! original bytes in base64. The reading itself is
//! [`crate::dataset::topic`].

use std::io::Write;

use crate::dataset::topic::{read_topic, TopicRead};
pub use crate::dataset::topic::{record_json, TopicError as TailError};

#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long, env = "RISKSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Start at the beginning of each partition (default: only new records).
    #[arg(long)]
    pub from_beginning: bool,
    /// Exit after this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Exit after this many seconds without a new record.
    #[arg(long)]
    pub idle_timeout: Option<f64>,
    /// Confluent Schema Registry (http[s]://[user:password@]host[:port][/path]) to decode
    /// `0x00`-framed records.
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
}

impl TailArgs {
    /// The read these flags ask for.
    pub fn topic_read(&self) -> TopicRead {
        TopicRead {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            from_beginning: self.from_beginning,
            max: self.max,
            idle_timeout: self.idle_timeout,
            schema_registry_url: self.schema_registry_url.clone(),
        }
    }
}

/// Reads the topic and calls `out` with each JSON record. Returns the count.
pub fn tail_with(
    args: &TailArgs,
    out: impl FnMut(serde_json::Value) -> Result<(), TailError>,
) -> Result<u64, TailError> {
    read_topic(&args.topic_read(), out)
}

pub fn tail(args: &TailArgs) -> Result<u64, TailError> {
    let stdout = std::io::stdout();
    tail_with(args, |v| {
        let mut lock = stdout.lock();
        writeln!(lock, "{v}")?;
        Ok(())
    })
}
