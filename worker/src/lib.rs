//! riskstream: a streaming fraud-scoring worker. Kafka in → features →
//! burn model → Kafka out, at least once, scaled by starting more instances.
//!
//! # Modules, floor first (each imports only modules above it: `tests/structure.rs` checks)
//! - [`outcome`]  — whose fault an error is, and what follows (one decision); an error shown with each cause once.
//! - [`metrics`]  — series on the `metrics` crate, Prometheus exposition, HTTP endpoint.
//! - [`kafka`]    — client config, pass-through options, topic creation.
//! - [`registry`] — `models/<name>/<version>` and aliases.
//! - [`codec`]    — Avro schemas and single-object encoding; poison detection.
//! - [`features`] — the one feature engine (online and offline).
//! - [`watermark`] — the event-time watermark over input partitions (scoring and drift).
//! - [`message`]  — the messages between stages, the shared handles, the clock.
//! - [`commit`]   — the one place that decides when an input offset is committed.
//! - [`state`]    — the customer-state changelog: its records, flushes, restore.
//! - [`dataset`]  — the handbook CSV, offline featurising, reading a run's topics.
//! - [`model`]    — the burn MLP, model card, device choice, [`model::Scorer`].
//! - [`source`]   — the `Source` stage (group consumer, each partition's life:
//!   restore, replay, score, revoke), the `LabelReader`.
//! - [`drift`]    — reference distributions, statistics, the monitor, the `DriftSidecar`.
//! - [`scoring`]  — the `Scoring` stage: the `Batcher`, features, inference, serving.
//! - [`sink`]     — the `Sink` stage: idempotent producer, dead letters, deliveries reported to `commit`.
//! - [`config`]   — settings, layered defaults < file < env < flags; each stage's section.
//! - [`report`]   — `riskstream drift`: a CSV period against a model's reference, table and plots.
//! - [`pipeline`] — wiring, readiness, start-up and graceful shutdown of `run`.
//! - [`train`]    — training and evaluation with burn.
//! - [`tools`]    — `replay`, `tail`, `demo`, `passthrough`.
//! - [`cli`]      — the command line.
//!
//! # Data flow
//! ```text
//!  transactions ──► [Source] ──decode──► bounded queue ──► [Scoring] ──► bounded queue ──► [Sink] ──► transactions.scored
//!   (group)          │  register offset            (records)       features + model       (batches)        │ idempotent producer
//!                    └─ undecodable ───────────────────────────────────────────────────────────────────────►├──► transactions.dlq
//!  transactions.labels ──► [LabelReader] ──► labels queue ──► (terminal state)                             │
//!   (all partitions)                                                                  on delivery: offset low watermark → store → commit
//!                                                   [Scoring] ──try_send (drop when full)──► [DriftSidecar] ──► riskstream.drift, gauges, WARN alerts
//! ```

pub mod cli;
pub mod codec;
pub mod commit;
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
pub mod report;
pub mod scoring;
pub mod sink;
pub mod source;
pub mod state;
pub mod tools;
pub mod train;
pub mod watermark;
