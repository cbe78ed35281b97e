//! The merged verdict's transport, inside the drift sidecar thread: this
//! instance's closed slices go to `<drift topic>.slices` (one partition,
//! keyed by model), and every instance's slices are read back, merged
//! ([`Merger`]) and judged by a second monitor that sees all the
//! traffic. The slices topic is read from two days back (by timestamp),
//! so a restarted or new instance catches up on the longest window without
//! reading the topic's whole history.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::output::{self, DriftOutput};
use crate::codec::SlicesRecord;
use crate::drift::merge::{Merged, Merger};
use crate::drift::monitor::{DriftMonitor, WindowReport};
use crate::drift::performance::{PerformanceReport, PerformanceSettings};
use crate::drift::summary::{Slice, SLICE_MS};

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
    /// Every instance's slices and closed days of realised performance.
    merger: Merger,
    monitor: DriftMonitor,
    /// Slices this instance read that were not usable (another model
    /// version, other variables, undecodable).
    pub skipped: u64,
    /// Late slices already counted in the metrics.
    late_counted: u64,
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
            merger: Merger::new(INSTANCE_IDLE, WARM_UP, Instant::now()),
            monitor,
            skipped: 0,
            late_counted: 0,
        })
    }

    /// Sends this instance's closed slices.
    pub(crate) fn publish(&self, slices: &[Slice], names: &[&str], out: &DriftOutput) {
        if out.producer.is_none() {
            return;
        }
        for s in slices {
            match out
                .codec
                .encode_drift_slice(&output::slice_record(s, names, out))
            {
                Ok(payload) => out.send(&self.topic, &out.model_name, &payload, "drift slice"),
                Err(e) => tracing::warn!(error = %e, "cannot encode a drift slice"),
            }
        }
    }

    /// Slices that came late since the last call (see [`Merger::late`]).
    pub(crate) fn take_late(&mut self) -> u64 {
        let new = self.merger.late() - self.late_counted;
        self.late_counted = self.merger.late();
        new
    }

    /// Reads what arrived, merges, and judges every complete slice.
    ///
    /// An instance counts as silent by the topic's clock while this reader
    /// is behind (its newest record is that far behind the newest read),
    /// and by the wall clock only once the reader has caught up: a reader
    /// that fell behind must not take the records it has not read yet for
    /// silence and judge slices without them.
    pub(crate) fn poll(&mut self, out: &DriftOutput, reports: &mut Vec<GlobalReport>) {
        let now = Instant::now();
        let now_ms = crate::message::now_ms();
        let names: Vec<String> = self.monitor.names().iter().map(|s| s.to_string()).collect();
        let (mut caught_up, mut newest_read) = (false, None);
        for _ in 0..10_000 {
            let Some(m) = self.consumer.poll(Duration::ZERO) else {
                caught_up = true;
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
            newest_read = newest_read.max(Some(seen));
            let record = m
                .payload()
                .and_then(|p| out.codec.decode_slices_record(p).ok());
            let (model, version) = (&out.model_name, &out.model_version);
            match record {
                Some(SlicesRecord::Performance(r)) => match output::performance_of(*r) {
                    Some((instance, r)) => self.merger.add_day(&instance, r, seen),
                    None => self.skipped += 1,
                },
                Some(SlicesRecord::Slice(s)) => match output::slice_of(s, &names, model, version) {
                    Some((instance, slice)) => self.merger.add_slice(&instance, slice, seen),
                    None => self.skipped += 1,
                },
                None => self.skipped += 1,
            }
        }
        let clock = if caught_up {
            now
        } else {
            newest_read.unwrap_or(now)
        };
        for Merged { slice, instances } in self.merger.ready_slices(clock) {
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
    pub(crate) fn publish_performance(&self, payload: &[u8], out: &DriftOutput) {
        out.send(&self.topic, &out.model_name, payload, "performance report");
    }

    /// Days of realised performance every live instance has reported,
    /// merged and judged, with who contributed.
    pub(crate) fn performance_ready(
        &mut self,
        settings: &PerformanceSettings,
    ) -> Vec<(PerformanceReport, Vec<String>)> {
        self.merger.ready_days(Instant::now(), settings)
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
