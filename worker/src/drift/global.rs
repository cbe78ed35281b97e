//! The merged verdict's transport, inside the drift sidecar thread: this
//! instance's closed slices go to `<drift topic>.slices` (one partition,
//! keyed by model), and every instance's slices are read back, merged
//! ([`SliceMerger`]) and judged by a second monitor that sees all the
//! traffic. The slices topic is read from two days back (by timestamp),
//! so a restarted or new instance catches up on the longest window without
//! reading the topic's whole history.

use std::time::{Duration, Instant};

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::merge::{Merged, SliceMerger};
use super::monitor::{DriftMonitor, WindowReport};
use super::performance::{PerformanceReport, PerformanceSettings};
use super::realised::PerfMerger;
use super::summary::{Slice, VarSummary, SLICE_MS};
use super::task::DriftOutput;
use crate::codec::Codec;

/// How far back the slices topic is read at start.
const CATCH_UP_MS: i64 = 2 * 86_400_000;
/// An instance not heard from for this long is no longer waited for (two
/// slices: every instance publishes one per quarter hour of event time).
pub const INSTANCE_IDLE: Duration = Duration::from_secs(120);
/// At start, nothing is judged before every running instance had this
/// long to be heard from.
const WARM_UP: Duration = Duration::from_secs(10);

/// The slices topic of a drift topic.
pub fn slices_topic(drift_topic: &str) -> String {
    format!("{drift_topic}.slices")
}

/// A merged evaluation with the instances that contributed to its newest slice.
pub struct GlobalReport {
    pub report: WindowReport,
    pub instances: Vec<String>,
}

/// The global verdict of this model across every instance.
pub struct Global {
    consumer: BaseConsumer,
    topic: String,
    merger: SliceMerger,
    monitor: DriftMonitor,
    /// Every instance's closed days of realised performance.
    perf: PerfMerger,
    /// Slices this instance read that were not usable (another model
    /// version, other variables, undecodable).
    pub skipped: u64,
}

impl Global {
    /// Reads `topic` from two days back; `monitor` is a fresh monitor of the
    /// same model and settings as the local one.
    pub fn start(
        client: &rdkafka::ClientConfig,
        topic: &str,
        monitor: DriftMonitor,
        instance: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = client
            .clone()
            .set("group.id", format!("riskstream-drift-{instance}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        // Every partition (the topic is created with one; a pre-existing one
        // may have more), each from two days back.
        let parts = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))?
            .topics()
            .first()
            .map_or(1, |t| t.partitions().len().max(1)) as i32;
        let from = crate::message::now_ms() - CATCH_UP_MS;
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
        }
        let found = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .ok();
        let mut assign = TopicPartitionList::new();
        for p in 0..parts {
            let start = match found
                .as_ref()
                .and_then(|f| f.find_partition(topic, p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Offset::Offset(o),
                Some(Offset::End) => Offset::End,
                _ => Offset::Beginning,
            };
            assign.add_partition_offset(topic, p, start)?;
        }
        consumer.assign(&assign)?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            merger: SliceMerger::new(INSTANCE_IDLE, WARM_UP, Instant::now()),
            monitor,
            perf: PerfMerger::new(),
            skipped: 0,
        })
    }

    /// Sends this instance's closed slices.
    pub fn publish(&self, slices: &[Slice], names: &[&str], out: &DriftOutput) {
        let Some(p) = &out.producer else { return };
        for s in slices {
            match out.codec.encode_drift_slice(slice_fields(s, names, out)) {
                Ok(payload) => {
                    let rec = BaseRecord::to(&self.topic)
                        .key(out.model_name.as_str())
                        .payload(&payload);
                    if let Err((e, _)) = p.send(rec) {
                        tracing::warn!(error = %e, topic = %self.topic, "cannot send a drift slice");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode a drift slice"),
            }
        }
    }

    /// Reads what arrived, merges, and judges every complete slice.
    pub fn poll(&mut self, codec: &Codec, out: &DriftOutput, reports: &mut Vec<GlobalReport>) {
        let now = Instant::now();
        let now_ms = crate::message::now_ms();
        let names: Vec<String> = self.monitor.names().iter().map(|s| s.to_string()).collect();
        for _ in 0..10_000 {
            let Some(m) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            let Ok(m) = m else {
                break;
            };
            let age = m
                .timestamp()
                .to_millis()
                .map_or(0, |t| (now_ms - t).max(0) as u64);
            let seen = now.checked_sub(Duration::from_millis(age)).unwrap_or(now);
            let Some(j) = m.payload().and_then(|p| codec.to_json(p).ok()) else {
                self.skipped += 1;
                continue;
            };
            if let Some((instance, r)) = super::realised::decode(&j) {
                self.perf.add(&instance, r, seen);
                continue;
            }
            match decode_slice_json(&j, &names, &out.model_name, &out.model_version) {
                Some((instance, slice)) => self.merger.add(&instance, slice, seen),
                None => self.skipped += 1,
            }
        }
        for Merged { slice, instances } in self.merger.ready(now) {
            let at = (slice.index + 1) * SLICE_MS;
            let mut out = Vec::new();
            self.monitor.push_slice(slice, at, &mut out);
            for report in out {
                reports.push(GlobalReport {
                    report,
                    instances: instances.clone(),
                });
            }
        }
    }

    /// Sends one of this instance's closed days of realised performance
    /// (encoded) for the merge.
    pub fn publish_performance(&self, payload: &[u8], out: &DriftOutput) {
        let Some(p) = &out.producer else { return };
        let rec = BaseRecord::to(&self.topic)
            .key(out.model_name.as_str())
            .payload(payload);
        if let Err((e, _)) = p.send(rec) {
            tracing::warn!(error = %e, topic = %self.topic, "cannot send a performance report");
        }
    }

    /// Days of realised performance every live instance has reported,
    /// merged and judged, with who contributed.
    pub fn performance_ready(
        &mut self,
        settings: &PerformanceSettings,
    ) -> Vec<(PerformanceReport, Vec<String>)> {
        let now = Instant::now();
        let live: Vec<String> = self
            .merger
            .live(now)
            .into_iter()
            .map(str::to_string)
            .collect();
        self.perf.ready(&live, now, settings)
    }

    /// Whether this instance speaks for the verdict (smallest live name).
    pub fn is_judge(&self, instance: &str) -> bool {
        self.merger
            .judge(Instant::now())
            .is_none_or(|j| j == instance)
    }

    /// Instances heard from recently.
    pub fn live_instances(&self) -> usize {
        self.merger.live(Instant::now()).len()
    }

    /// Watches against a new champion from now on.
    pub fn switch(&mut self, monitor: DriftMonitor) {
        self.monitor = monitor;
    }
}

fn slice_fields<'a>(s: &Slice, names: &[&str], out: &'a DriftOutput) -> Vec<(&'a str, Value)> {
    let vars = s
        .vars
        .iter()
        .zip(names)
        .map(|(v, name)| {
            Value::Record(vec![
                ("name".into(), Value::String((*name).into())),
                ("n".into(), Value::Long(v.n as i64)),
                ("sum".into(), Value::Double(v.sum)),
                ("sum_of_squares".into(), Value::Double(v.sumsq)),
                (
                    "bins".into(),
                    Value::Array(v.bins.iter().map(|b| Value::Long(*b as i64)).collect()),
                ),
            ])
        })
        .collect();
    vec![
        ("model_name", Value::String(out.model_name.clone())),
        ("model_version", Value::String(out.model_version.clone())),
        ("instance", Value::String(out.instance.clone())),
        ("slice_start", Value::TimestampMillis(s.index * SLICE_MS)),
        ("records", Value::Long(s.records as i64)),
        ("variables", Value::Array(vars)),
    ]
}

/// A slice of this model version with exactly the monitor's variables, and
/// who wrote it; None for anything else (not an error: other versions
/// share the topic during a swap).
pub fn decode_slice_json(
    j: &serde_json::Value,
    names: &[String],
    model: &str,
    version: &str,
) -> Option<(String, Slice)> {
    if j["model_name"] != model || j["model_version"] != version {
        return None;
    }
    let vars = j["variables"].as_array()?;
    if vars.len() != names.len() || vars.iter().zip(names).any(|(v, n)| v["name"] != n.as_str()) {
        return None;
    }
    let start = j["slice_start"].as_i64()?;
    let summaries = vars
        .iter()
        .map(|v| {
            Some(VarSummary {
                n: v["n"].as_u64()?,
                sum: v["sum"].as_f64()?,
                sumsq: v["sum_of_squares"].as_f64()?,
                bins: v["bins"]
                    .as_array()?
                    .iter()
                    .map(|b| b.as_u64())
                    .collect::<Option<Vec<u64>>>()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((
        j["instance"].as_str()?.to_string(),
        Slice {
            index: start.div_euclid(SLICE_MS),
            records: j["records"].as_u64()?,
            vars: summaries,
        },
    ))
}
