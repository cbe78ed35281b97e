//! Kafka plumbing shared by every stage: client configuration (with
//! librdkafka pass-through options), topic creation, the permissions
//! check at start-up ([`access`]), and the log bridge.

pub mod access;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create a Kafka client for {brokers}")]
    Client {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot create topic {topic} on {brokers}")]
    CreateTopics {
        topic: String,
        brokers: String,
        /// Boxed: it would double the size of every `Result` this error is in.
        #[source]
        source: Box<KafkaError>,
    },
    #[error("cannot create topic {topic} on {brokers}: {code}")]
    TopicRefused {
        topic: String,
        brokers: String,
        code: RDKafkaErrorCode,
    },
    #[error("the state changelog {changelog} has {changelog_partitions} partitions but the input {input} has {input_partitions}: they must be co-partitioned (delete the changelog, or set --state-topic)")]
    NotCoPartitioned {
        changelog: String,
        changelog_partitions: usize,
        input: String,
        input_partitions: usize,
    },
    #[error("not authorized to {operation} {resource} {name} ({why}): grant this principal {operation} on {resource} {name} (README, \"Access control\")")]
    NotAuthorized {
        operation: access::Operation,
        resource: access::Resource,
        name: String,
        why: &'static str,
    },
    #[error("cannot reach the Kafka cluster at {brokers} to check this principal's permissions")]
    AccessCheck {
        brokers: String,
        #[source]
        source: access::CheckFailed,
    },
    #[error("cannot reach the Kafka cluster at {brokers}")]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
}

/// Replication factor of the topics riskstream creates: -1, the cluster's
/// `default.replication.factor` (Kafka 2.4 and later).
const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// `fetch.wait.max.ms` of the consumers that read partitions to their end
/// and move on (the changelog restore, the label reader). Kafka holds a
/// fetch that finds nothing new for this long, and librdkafka sends a
/// broker its next fetch only once the last one returned: with the 500 ms
/// default, each partition a restore moved on to waited up to half a
/// second behind the held fetch of the one before (8 partitions restored in
/// 7.1 s instead of 1.1 s), and the label history loaded in 2.0 s instead
/// of 0.2 s. Users' `--kafka` options still win for the label reader.
pub(crate) const READ_TO_END_FETCH_WAIT_MS: &str = "10";

/// Context of a consumer that reads partitions to their end
/// (`enable.partition.eof`): the end of a partition is how it knows it
/// caught up, not an error worth logging (rust-rdkafka's default context
/// logs it at ERROR). Other errors: WARN for a reader that runs all the
/// time (`ReadToEnd::LABELS`), DEBUG for one whose reads decide what a
/// failure means themselves (the changelog restore: a read that fails
/// falls back, and says so once).
pub struct ReadToEnd {
    what: &'static str,
    warn: bool,
}

impl ReadToEnd {
    pub const LABELS: Self = Self {
        what: "labels",
        warn: true,
    };
    pub const CHANGELOG: Self = Self {
        what: "state changelog",
        warn: false,
    };
}

impl ClientContext for ReadToEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if eof {
            return;
        }
        if self.warn {
            tracing::warn!(error = %error, reason, "{} consumer error", self.what);
        } else {
            tracing::debug!(error = %error, reason, "{} consumer error", self.what);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadToEnd {}

/// `fetch.wait.max.ms` of the input consumer. Kafka answers a fetch as soon
/// as records arrive, so this bounds only how long an idle fetch is held;
/// but a `seek` (each restored partition resumes with one) waits in
/// librdkafka's broker thread until the outstanding fetch returns: with
/// the 500 ms default a restore of 4 partitions took 1.1 s, half of it in
/// those waits. 50 ms: at most 20 idle fetches a second per broker.
pub(crate) const INPUT_FETCH_WAIT_MS: &str = "50";

/// `segment.ms` of the changelog riskstream creates (an hour).
const CHANGELOG_SEGMENT_MS: &str = "3600000";

/// Base client config: brokers, quiet librdkafka logging, pass-through options.
pub fn client_config(brokers: &str, passthrough: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    // librdkafka's own `debug` contexts (e.g. `--kafka debug=cgrp,fetch`)
    // log at debug level: let them through to the `librdkafka` target
    // (shown with `RISKSTREAM_LOG=info,librdkafka=debug`).
    c.set_log_level(if passthrough.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    for (k, v) in passthrough {
        c.set(k, v);
    }
    c
}

/// Creates the topics that are missing; existing ones are left as they are.
pub async fn ensure_topics(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    topics: &[&str],
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    let admin = admin(brokers, passthrough)?;
    // Fail fast with a clear message when nothing listens.
    let md = metadata(&admin, brokers)?;
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|t| partitions_of(&md, t) == 0)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                partitions,
                TopicReplication::Fixed(BROKER_DEFAULT_REPLICATION),
            )
        })
        .collect();
    create(&admin, &new, brokers).await
}

fn admin(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
) -> Result<AdminClient<DefaultClientContext>, KafkaSetupError> {
    client_config(brokers, passthrough)
        .create()
        .map_err(|source| KafkaSetupError::Client {
            brokers: brokers.to_string(),
            source,
        })
}

/// The metadata of every topic. Asking for one topic by name instead
/// makes a broker with auto-creation on create it (default partition
/// count, no compaction).
fn metadata(
    admin: &AdminClient<DefaultClientContext>,
    brokers: &str,
) -> Result<rdkafka::metadata::Metadata, KafkaSetupError> {
    admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|source| KafkaSetupError::Unreachable {
            brokers: brokers.to_string(),
            source,
        })
}

/// Partitions of `topic` in `md` (0: it does not exist).
fn partitions_of(md: &rdkafka::metadata::Metadata, topic: &str) -> usize {
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len())
}

/// Creates `topics`; one that already exists is fine.
async fn create(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[NewTopic<'_>],
    brokers: &str,
) -> Result<(), KafkaSetupError> {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics.iter(), &opts)
        .await
        .map_err(|source| KafkaSetupError::CreateTopics {
            topic: topics.iter().map(|t| t.name).collect::<Vec<_>>().join(","),
            brokers: brokers.to_string(),
            source: Box::new(source),
        })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, RDKafkaErrorCode::TopicAuthorizationFailed)) => {
                return Err(KafkaSetupError::NotAuthorized {
                    operation: access::Operation::Create,
                    resource: access::Resource::Topic,
                    name: topic,
                    why: "it is missing or not visible to this principal (Describe)",
                })
            }
            Err((topic, code)) => {
                return Err(KafkaSetupError::TopicRefused {
                    topic,
                    brokers: brokers.to_string(),
                    code,
                })
            }
        }
    }
    Ok(())
}

/// Checks that this principal holds every permission in `needs` (see
/// [`access`]); the error names the first one missing.
pub fn check_access(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    needs: &[access::Need],
) -> Result<(), KafkaSetupError> {
    let admin = admin(brokers, passthrough)?;
    let names = |r: access::Resource| {
        let mut v: Vec<&str> = needs
            .iter()
            .filter(|n| n.resource == r)
            .map(|n| n.name.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let answers = match access::describe(
        admin.inner(),
        &names(access::Resource::Topic),
        &names(access::Resource::Group),
        Duration::from_secs(10),
    ) {
        Ok(a) => a,
        Err(source) if source.fatal => {
            return Err(KafkaSetupError::AccessCheck {
                brokers: brokers.to_string(),
                source,
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "permissions not checked: the cluster cannot say");
            return Ok(());
        }
    };
    match access::first_missing(needs, &answers) {
        Some(n) => Err(KafkaSetupError::NotAuthorized {
            operation: n.operation,
            resource: n.resource,
            name: n.name.clone(),
            why: n.why,
        }),
        None => {
            tracing::info!(
                permissions = needs.len(),
                "this principal holds every permission the worker needs"
            );
            Ok(())
        }
    }
}

/// Creates the state changelog when missing: compacted, with the input's
/// partition count (`default_partitions` when the input does not exist
/// yet, in which case it is created too, with the same count). An existing
/// changelog must have as many partitions as the input.
pub async fn ensure_changelog(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    input: &str,
    changelog: &str,
    default_partitions: i32,
) -> Result<(), KafkaSetupError> {
    let admin = admin(brokers, passthrough)?;
    let existing =
        |topic: &str| Ok::<_, KafkaSetupError>(partitions_of(&metadata(&admin, brokers)?, topic));
    let mut n_input = existing(input)?;
    if n_input == 0 {
        ensure_topics(brokers, passthrough, &[input], default_partitions).await?;
        n_input = existing(input)?;
    }
    let n_log = existing(changelog)?;
    if n_log > 0 {
        if n_log != n_input {
            return Err(KafkaSetupError::NotCoPartitioned {
                changelog: changelog.to_string(),
                changelog_partitions: n_log,
                input: input.to_string(),
                input_partitions: n_input,
            });
        }
        return Ok(());
    }
    let n = i32::try_from(n_input.max(1)).unwrap_or(default_partitions);
    let topic = NewTopic::new(
        changelog,
        n,
        TopicReplication::Fixed(BROKER_DEFAULT_REPLICATION),
    )
    .set("cleanup.policy", "compact")
    // Kafka compacts closed segments only: one rolled every hour (rather
    // than at 1 GiB or 7 days) keeps a restore's read near one record per
    // live customer.
    .set("segment.ms", CHANGELOG_SEGMENT_MS);
    create(&admin, &[topic], brokers).await?;
    tracing::info!(
        changelog,
        partitions = n,
        "created the state changelog (compacted, co-partitioned with the input)"
    );
    Ok(())
}

/// Number of partitions of a topic (0 when it does not exist).
pub fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<usize, KafkaError> {
    let md = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(partitions_of(&md, topic))
}

/// The low watermark (first held offset) of `topic`'s `partition`; None,
/// logged, when the broker does not answer.
pub fn low_watermark<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    match client.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
        Ok((low, _)) => Some(low),
        Err(e) => {
            tracing::warn!(topic, partition, error = %e, "cannot read the partition's low watermark");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    #[test]
    fn ssl_and_sasl_scram_are_built_in() {
        // librdkafka rejects these at create() when built without OpenSSL.
        for (proto, mech) in [
            ("SSL", None),
            ("SASL_SSL", Some("SCRAM-SHA-512")),
            ("SASL_PLAINTEXT", Some("PLAIN")),
        ] {
            let mut opts = BTreeMap::new();
            opts.insert("security.protocol".to_string(), proto.to_string());
            if let Some(m) = mech {
                opts.insert("sasl.mechanism".to_string(), m.to_string());
                opts.insert("sasl.username".to_string(), "u".to_string());
                opts.insert("sasl.password".to_string(), "p".to_string());
            }
            let p: Result<BaseProducer, _> = client_config("127.0.0.1:1", &opts).create();
            assert!(p.is_ok(), "{proto} {mech:?}: {:?}", p.err());
        }
    }
}
