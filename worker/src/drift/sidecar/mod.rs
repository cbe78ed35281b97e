//! The drift sidecar stage of `riskstream run`: built from the drift
//! settings and the champion's reference; off (with a WARN saying why)
//! when drift is disabled or the model has no usable reference. With the
//! merged verdict on (default), it also reads every instance's slices.
//!
//! - [`output`]: its records (reports, slices, days) out and back, gauges, alert logs;
//! - [`global`]: the merged verdict's transport (`<drift topic>.slices`);
//! - [`task`]: the thread (bounded channel, drop when full) and its sender.

pub mod global;
pub mod output;
pub mod task;

use std::sync::Arc;

pub use global::slices_topic;
use global::Global;
use output::DriftOutput;
pub use task::DriftSender;

use crate::drift::monitor::DriftMonitor;
use crate::drift::reference::Reference;
use crate::drift::DriftConfig;
use crate::message::Shared;
use crate::model::Scorer;

/// The running sidecar: its sender (for the scoring stage) and its thread.
pub struct DriftSidecar {
    pub sender: DriftSender,
    pub thread: std::thread::JoinHandle<()>,
}

impl DriftSidecar {
    /// Starts the sidecar for `champion`, publishing with a producer on
    /// `brokers`/`kafka`; None when it is off (logged). `member_id`: the
    /// static group membership id, when set (see [`instance_name`]).
    pub fn start(
        cfg: &DriftConfig,
        champion: &Scorer,
        shared: &Shared,
        client: rdkafka::ClientConfig,
        member_id: Option<&str>,
    ) -> Option<Self> {
        let topic = cfg.topic.clone()?;
        let reference = Reference::read(&champion.location.dir)
            .map_err(|e| tracing::warn!(error = %crate::outcome::chain(&e), "drift monitoring off: the model has no usable reference"))
            .ok()?;
        let monitor = DriftMonitor::new(&reference, &champion.card.inputs, cfg.settings.clone())
            .map_err(|e| tracing::warn!(error = %crate::outcome::chain(&e), "drift monitoring off"))
            .ok()?;
        let producer = client
            .clone()
            .set("linger.ms", "100")
            // In order, once: the merge takes an instance's slice as
            // complete when a later one of the same instance has arrived.
            .set("enable.idempotence", "true")
            .create()
            .map_err(|e| tracing::warn!(error = %e, "drift reports will not be published (gauges and logs only)"))
            .ok();
        let instance = instance_name(member_id);
        let global = if cfg.global && producer.is_some() {
            let slices = slices_topic(&topic);
            Global::start(&client, &slices, monitor.clone(), &instance)
                .map_err(|e| tracing::warn!(error = %e, topic = %slices, "drift verdict per instance only: cannot read the slices topic"))
                .ok()
        } else {
            None
        };
        let out = DriftOutput {
            producer,
            topic,
            codec: Arc::clone(&shared.codec),
            model_name: champion.location.name.clone(),
            model_version: champion.location.version.clone(),
            instance,
        };
        task::spawn(
            monitor,
            out,
            global,
            shared.metrics.clone(),
            cfg.channel_batches,
            cfg.performance.clone(),
        )
        .map_err(|e| tracing::warn!(error = %e, "drift monitoring off: cannot start its thread"))
        .ok()
        .map(|(sender, thread)| Self { sender, thread })
    }
}

/// This instance's name in drift reports and in the merge of the global
/// verdict, which keys every instance's slices by it (so it must be unique
/// among the running instances): the static group membership id where one
/// is set (Kafka fences duplicates; the manifests set it from the pod
/// name), else the host name and the process id (several instances on one
/// host, or containers that share a host name, stay apart).
pub fn instance_name(member_id: Option<&str>) -> String {
    if let Some(id) = member_id.filter(|m| !m.is_empty()) {
        return id.to_string();
    }
    let pid = std::process::id();
    match std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
        Some(host) => format!("{host}-{pid}"),
        None => format!("pid-{pid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::instance_name;

    #[test]
    fn instance_names_are_unique_per_process_unless_a_member_id_names_them() {
        assert_eq!(instance_name(Some("riskstream-2")), "riskstream-2");
        let own = instance_name(None);
        assert!(own.ends_with(&format!("-{}", std::process::id())), "{own}");
        assert_eq!(instance_name(Some("")), own);
    }
}
