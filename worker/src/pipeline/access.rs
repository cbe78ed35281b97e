//! The permissions `run` needs on the cluster, by resource (README, "Access
//! control", lists the same; tests/auth.rs grants exactly that list and
//! checks each entry is needed).

use crate::config::RunConfig;
use crate::kafka::access::{Need, Operation, Resource};

/// The prefix of the drift sidecar's per-instance consumer groups
/// (`riskstream-drift-<instance>`).
pub const DRIFT_GROUP_PREFIX: &str = "riskstream-drift-";

/// Every permission a worker with `cfg` uses.
pub fn needs(cfg: &RunConfig, drift_instance: &str) -> Vec<Need> {
    let need = |resource, name: &str, operation, why| Need {
        resource,
        name: name.to_string(),
        operation,
        why,
    };
    use Operation::{Describe, Read, Write};
    use Resource::{Group, Topic};
    let mut v = vec![
        need(Topic, &cfg.input_topic, Read, "the input"),
        need(
            Group,
            &cfg.group,
            Read,
            "the consumer group: joins, commits",
        ),
        need(Topic, &cfg.output_topic, Write, "the scored records"),
        need(Topic, &cfg.dlq_topic, Write, "the dead letters"),
        need(Topic, &cfg.labels_topic, Read, "the label feedback"),
        need(
            Group,
            &format!("{}.labels", cfg.group),
            Describe,
            "the label reader's coordinator lookup",
        ),
    ];
    if cfg.state.enabled {
        v.push(need(
            Topic,
            &cfg.state.topic,
            Read,
            "the state changelog: restore",
        ));
        v.push(need(
            Topic,
            &cfg.state.topic,
            Write,
            "the state changelog: flushes",
        ));
        v.push(need(
            Group,
            &format!("{}.restore", cfg.group),
            Describe,
            "the changelog reader's coordinator lookup",
        ));
    }
    if let Some(t) = &cfg.drift.topic {
        v.push(need(Topic, t, Write, "the drift reports"));
        if cfg.drift.global {
            let slices = crate::drift::sidecar::global::slices_topic(t);
            v.push(need(
                Topic,
                &slices,
                Read,
                "the drift slices of every instance",
            ));
            v.push(need(Topic, &slices, Write, "this instance's drift slices"));
            v.push(need(
                Group,
                &format!("{DRIFT_GROUP_PREFIX}{drift_instance}"),
                Describe,
                "the drift slices reader's coordinator lookup",
            ));
        }
    }
    if let Some(t) = &cfg.serving.shadow_topic {
        v.push(need(Topic, t, Write, "the shadow scores"));
    }
    v
}
