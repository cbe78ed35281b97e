//! riskstream: a streaming fraud-scoring worker. Kafka in → features →
//! burn model → Kafka out, at least once, scaled by starting more instances.
//!
//! # Modules (by pipeline stage)
//! - [`config`]   — settings, layered defaults < file < env < flags.
//! - [`codec`]    — Avro schemas and single-object encoding; poison detection.
//! - [`kafka`]    — client config, pass-through options, topic creation.
//! - [`source`]   — group consumer thread, offset low watermark, label reader.
//! - [`features`] — the one feature engine (online and offline).
//! - [`model`]    — the burn MLP, model card, device choice, [`model::Scorer`].
//! - [`scoring`]  — the scoring thread: micro-batches, features, inference.
//! - [`sink`]     — idempotent producer, dead letters, offset store on delivery.
//! - [`pipeline`] — wiring, start-up and graceful shutdown of `run`.
//! - [`registry`] — `models/<name>/<version>` and aliases.
//! - [`metrics`]  — counters and histograms, Prometheus text.
//! - [`drift`]    — reference distributions, drift statistics, the sidecar thread, `riskstream drift`.
//! - [`dataset`]  — the handbook CSV.
//! - [`train`]    — training and evaluation with burn.
//! - [`tools`]    — `replay`, `tail`, `demo`.
//!
//! # Data flow
//! ```text
//!  transactions ──► [source thread] ──decode──► bounded queue ──► [scoring thread] ──► bounded queue ──► [sink task] ──► transactions.scored
//!   (group)          │  register offset            (records)       features + model       (batches)        │ idempotent producer
//!                    └─ undecodable ───────────────────────────────────────────────────────────────────────►├──► transactions.dlq
//!  transactions.labels ──► [label thread] ──► labels queue ──► (terminal state)                             │
//!   (all partitions)                                                                  on delivery: offset low watermark → store → commit
//!                                                   [scoring thread] ──try_send (drop when full)──► [drift thread] ──► riskstream.drift, gauges, WARN alerts
//! ```

pub mod cli;
pub mod codec;
pub mod config;
pub mod dataset;
pub mod drift;
pub mod features;
pub mod kafka;
pub mod message;
pub mod metrics;
pub mod model;
pub mod outcome;
pub mod pipeline;
pub mod registry;
pub mod scoring;
pub mod sink;
pub mod source;
pub mod tools;
pub mod train;
