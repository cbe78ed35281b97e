//! Health and readiness as values with reasons: what `/healthz` and
//! `/readyz` answer, recomputed every 100 ms by the pipeline's watch task
//! from a typed [`Readiness`].
//!
//! - ready: the group is joined, the label history is read (or its load
//!   timed out: then ready, saying so), no assigned partition is rebuilding;
//! - live: not stuck: records are waiting (in flight, or held for the schema
//!   registry) but nothing was delivered for `stall_timeout`, so Kubernetes
//!   restarts the pod.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Where start-up (and shutdown) stands: what `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Model, device, topics.
    Starting,
    JoiningGroup,
    /// Reading the label history before scoring.
    LoadingLabels,
    /// Assigned partitions replay their history into customer state.
    RebuildingState,
    Ready,
    /// Ready although the label history did not load within
    /// `labels_load_timeout`: terminal features use what was read.
    ReadyLabelsBehind {
        behind_s: i64,
    },
    ShuttingDown,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready | Readiness::ReadyLabelsBehind { .. })
    }

    /// The probe's answer: Ok(body) when ready, Err(body) when not.
    pub fn verdict(&self) -> Result<String, String> {
        let text = match self {
            Readiness::Starting => {
                "not ready: starting (model, group join, label history)".to_string()
            }
            Readiness::JoiningGroup => "not ready: joining the consumer group".to_string(),
            Readiness::LoadingLabels => "not ready: reading the label history".to_string(),
            Readiness::RebuildingState => {
                "not ready: rebuilding customer state of assigned partitions".to_string()
            }
            Readiness::Ready => "ready".to_string(),
            Readiness::ReadyLabelsBehind { behind_s } => format!(
                "ready (labels: the label history did not load within labels_load_timeout; \
                 terminal features use what was read; {behind_s} s behind)"
            ),
            Readiness::ShuttingDown => "not ready: shutting down".to_string(),
        };
        if self.is_ready() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

/// What the probes answer now.
#[derive(Debug)]
pub struct PipelineHealth {
    ready: Mutex<Result<String, String>>,
    live: Mutex<Result<String, String>>,
}

impl Default for PipelineHealth {
    fn default() -> Self {
        Self {
            ready: Mutex::new(Readiness::Starting.verdict()),
            live: Mutex::new(Ok("ok".into())),
        }
    }
}

impl PipelineHealth {
    pub fn set_ready(&self, r: &Readiness) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = r.verdict();
    }

    pub fn set_live(&self, r: Result<String, String>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.lock().map(|r| r.is_ok()).unwrap_or(false)
    }
}

impl crate::metrics::http::Probes for PipelineHealth {
    fn live(&self) -> Result<String, String> {
        self.live
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn ready(&self) -> Result<String, String> {
        self.ready
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// Stall detection: progress is the delivered count moving.
#[derive(Debug)]
pub struct StallWatch {
    timeout: Option<Duration>,
    last_delivered: u64,
    since: Instant,
}

impl StallWatch {
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            last_delivered: 0,
            since: Instant::now(),
        }
    }

    /// The liveness verdict given `waiting` records (in flight or held).
    pub fn check(&mut self, metrics: &Metrics, waiting: usize) -> Result<String, String> {
        let delivered = metrics.delivered.get();
        if delivered != self.last_delivered || waiting == 0 {
            self.last_delivered = delivered;
            self.since = Instant::now();
            return Ok("ok".into());
        }
        match self.timeout {
            Some(t) if self.since.elapsed() >= t => Err(format!(
                "stuck: no record delivered for {} s while {waiting} records wait (broker, output topic or schema registry unreachable?)",
                self.since.elapsed().as_secs()
            )),
            _ => Ok("ok".into()),
        }
    }
}

/// Shared handle of the probes.
pub type Health = Arc<PipelineHealth>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_only_while_records_wait_without_progress() {
        let m = Metrics::default();
        let mut w = StallWatch::new(Some(Duration::ZERO));
        assert!(w.check(&m, 0).is_ok(), "nothing waiting: never stuck");
        let e = w.check(&m, 5).unwrap_err();
        assert!(
            e.contains("no record delivered") && e.contains("5 records"),
            "{e}"
        );
        m.delivered.add(1);
        assert!(w.check(&m, 5).is_ok(), "progress clears it");
        let mut off = StallWatch::new(None);
        off.check(&m, 5).unwrap();
        assert!(Readiness::ReadyLabelsBehind { behind_s: 3 }
            .verdict()
            .unwrap()
            .contains("3 s behind"));
        assert!(Readiness::RebuildingState.verdict().is_err());
        assert!(off.check(&m, 5).is_ok(), "no timeout: never stuck");
    }
}
