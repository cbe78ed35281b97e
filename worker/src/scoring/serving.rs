//! Serving: which model decides which record, and model changes without a
//! restart.
//!
//! The champion decides every record unless A/B routes its customer (a
//! stable hash of the key) to the challenger; in shadow mode the challenger
//! also scores every record for the shadow topic and never decides. The
//! registry watcher polls the aliases; when one moves it loads, checks and
//! warms the new version beside the old one (on its own thread) and hands
//! it to the scoring thread, which switches between two batches. A version
//! that fails to load or check is refused and the old one keeps serving.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::drift::{DriftMonitor, DriftSettings, Reference};
use crate::features::{FeatureVector, N_FEATURES};
use crate::metrics::events::{Emit as _, WatcherFailed, WatcherPanicked};
use crate::model::DeviceChoice;
use crate::model::{choose_device, ModelError, Scorer};
use crate::registry::ModelLocation;

/// Which slot a model serves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Champion,
    Challenger,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
        }
    }
}

/// A checked, warmed model for the scoring thread to switch to.
pub struct ModelUpdate {
    pub role: Role,
    pub scorer: Scorer,
    /// The drift monitor against the new version's reference (champion only).
    pub drift: Option<DriftMonitor>,
}

/// The models the scoring thread holds.
#[derive(Debug)]
pub struct ModelSet {
    pub champion: Scorer,
    pub challenger: Option<Scorer>,
    /// Share of customers the challenger decides (0: none).
    pub ab_share: f64,
    /// The challenger also scores every record for the shadow topic.
    pub shadow: bool,
}

impl ModelSet {
    /// Whether the challenger decides this customer's records.
    pub fn routes_to_challenger(&self, key: &str) -> bool {
        self.challenger.is_some() && self.ab_share > 0.0 && ab_fraction(key) < self.ab_share
    }

    /// Swaps a model in; returns the one it replaced.
    pub fn apply(&mut self, scorer: Scorer, role: Role) -> Option<Scorer> {
        match role {
            Role::Champion => Some(std::mem::replace(&mut self.champion, scorer)),
            Role::Challenger => self.challenger.replace(scorer),
        }
    }
}

/// A customer's place in [0, 1): FNV-1a (64 bit) of the key over 2⁶⁴. The
/// same on every instance, platform and release (std's hasher is seeded
/// per process), so a customer stays in its arm across restarts.
pub fn ab_fraction(key: &str) -> f64 {
    let mut h = crate::features::fnv1a(key);
    // Fold the high bits in: FNV's low bits mix poorly for short keys.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Loads a version, checks it and warms it: refused when the card or
/// weights do not load, its inputs are not computable, or a probe batch
/// gives scores that are not finite probabilities.
pub fn load_checked(
    location: &ModelLocation,
    device: DeviceChoice,
    batch_max: usize,
) -> Result<Scorer, ModelError> {
    let chosen = choose_device(device)?;
    // `auto` found a GPU: keep it only if it scores a full batch faster
    // than the CPU (for small models it does not: see the README).
    let measure = device == DeviceChoice::Auto && chosen.pad_batches;
    let scorer = checked(location, chosen, batch_max)?;
    if !measure {
        return Ok(scorer);
    }
    let mut gpu = scorer;
    let mut cpu = checked(location, choose_device(DeviceChoice::Cpu)?, batch_max)?;
    let gpu_ms = batch_millis(&mut gpu, batch_max)?;
    let cpu_ms = batch_millis(&mut cpu, batch_max)?;
    let gpu_name = gpu.device_description().to_string();
    // The GPU must win outright: it also costs more host CPU and memory.
    let keep = if gpu_ms < cpu_ms { gpu } else { cpu };
    tracing::info!(
        gpu = %gpu_name, gpu_ms, cpu_ms, batch = batch_max,
        "device auto: a batch of {batch_max} takes {gpu_ms:.3} ms on the GPU and {cpu_ms:.3} ms on the CPU: scoring on {}",
        keep.device_description()
    );
    Ok(keep)
}

/// Median time of a full batch (5 runs after the warm-up), milliseconds.
fn batch_millis(scorer: &mut Scorer, rows: usize) -> Result<f64, ModelError> {
    let batch: Vec<FeatureVector> = (0..rows)
        .map(|i| std::array::from_fn(|j| ((i + j) % 11) as f64))
        .collect();
    let mut t: Vec<f64> = Vec::with_capacity(5);
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        scorer.score(&batch)?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[2])
}

/// Loads a version on a device, checks it can score, and warms it.
fn checked(
    location: &ModelLocation,
    device: crate::model::ChosenDevice,
    batch_max: usize,
) -> Result<Scorer, ModelError> {
    let mut scorer = Scorer::load(location, device)?;
    let incompatible = |detail: String| ModelError::Incompatible {
        path: location.dir.display().to_string(),
        detail,
    };
    crate::model::input_indices(&scorer.card.inputs).map_err(incompatible)?;
    let probe: Vec<FeatureVector> = (0..64)
        .map(|i| std::array::from_fn(|j| ((i * N_FEATURES + j) % 7) as f64))
        .collect();
    let s = scorer.score(&probe)?;
    if let Some(bad) = s.iter().find(|x| !x.is_finite() || **x < 0.0 || **x > 1.0) {
        return Err(incompatible(format!(
            "a probe batch scored {bad}: not a probability"
        )));
    }
    if !(0.0..=1.0).contains(&scorer.card.threshold) {
        return Err(incompatible(format!(
            "threshold {} is not a probability",
            scorer.card.threshold
        )));
    }
    scorer.warm_up(batch_max)?;
    Ok(scorer)
}

/// What the registry watcher needs.
#[derive(Clone)]
pub struct WatchConfig {
    pub models_dir: PathBuf,
    /// (role, model reference such as `fraud-mlp@champion`).
    pub refs: Vec<(Role, String)>,
    /// Versions served now, by role.
    pub serving: HashMap<Role, String>,
    pub device: DeviceChoice,
    pub batch_max: usize,
    pub poll: Duration,
    /// Drift settings for the champion's new monitor (None: drift is off).
    pub drift: Option<DriftSettings>,
}

/// Starts the registry watcher thread.
pub fn spawn_watcher(
    cfg: WatchConfig,
    updates: SyncSender<ModelUpdate>,
    metrics: Arc<crate::metrics::Metrics>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("registry".into())
        .spawn(move || {
            // A panic in the watcher must not end hot swap silently: counted,
            // logged at ERROR, and the watch starts again after a pause.
            loop {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    watch(cfg.clone(), updates.clone(), metrics.clone(), &cancel)
                }));
                match run {
                    Ok(()) => return,
                    Err(p) => {
                        let what = p
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        WatcherPanicked { panic: &what }.emit(&metrics);
                        std::thread::sleep(cfg.poll.max(std::time::Duration::from_secs(1)));
                        if cancel.is_cancelled() {
                            return;
                        }
                    }
                }
            }
        })
}

fn watch(
    mut cfg: WatchConfig,
    updates: SyncSender<ModelUpdate>,
    metrics: Arc<crate::metrics::Metrics>,
    cancel: &tokio_util::sync::CancellationToken,
) {
    // Refused versions are not retried until their card or weights change.
    let mut refused: HashMap<(Role, String), Option<std::time::SystemTime>> = HashMap::new();
    let stamp = |loc: &ModelLocation| {
        [crate::model::CARD_FILE, crate::model::WEIGHTS_FILE]
            .iter()
            .filter_map(|f| std::fs::metadata(loc.dir.join(f)).ok()?.modified().ok())
            .max()
    };
    let mut last_error: Option<String> = None;
    while !cancel.is_cancelled() {
        std::thread::sleep(cfg.poll);
        for (role, reference) in cfg.refs.clone() {
            let loc = match crate::registry::resolve(&cfg.models_dir, &reference) {
                Ok(l) => l,
                Err(e) => {
                    // Counted every time, logged at ERROR once per distinct error.
                    let text = crate::outcome::chain(&e).to_string();
                    WatcherFailed {
                        error: &text,
                        reference: &reference,
                        repeated: last_error.as_ref() == Some(&text),
                    }
                    .emit(&metrics);
                    last_error = Some(text);
                    continue;
                }
            };
            if cfg.serving.get(&role) == Some(&loc.version) {
                continue;
            }
            let key = (role, loc.version.clone());
            if refused.get(&key).is_some_and(|s| *s == stamp(&loc)) {
                continue;
            }
            let old = cfg.serving.get(&role).cloned().unwrap_or_default();
            tracing::info!(
                model = %loc.name, version = %loc.version, role = role.as_str(), serving = %old,
                "{reference} moved: loading {}/{} beside {}/{old}", loc.name, loc.version, loc.name
            );
            let t0 = std::time::Instant::now();
            let checked = load_checked(&loc, cfg.device, cfg.batch_max).map(|scorer| {
                let drift = match (&cfg.drift, role) {
                    (Some(settings), Role::Champion) => Reference::read(&loc.dir)
                        .and_then(|r| DriftMonitor::new(&r, &scorer.card.inputs, settings.clone()))
                        .map_err(|e| tracing::warn!(error = %crate::outcome::chain(&e), "the new version has no usable drift reference: drift monitoring stops"))
                        .ok(),
                    _ => None,
                };
                ModelUpdate { role, scorer, drift }
            });
            match checked {
                Ok(update) => {
                    tracing::info!(
                        model = %loc.name, version = %loc.version, role = role.as_str(),
                        ms = t0.elapsed().as_millis() as u64,
                        "{}/{} loaded, checked and warmed; switching at the next batch", loc.name, loc.version
                    );
                    if updates.send(update).is_err() {
                        return;
                    }
                    cfg.serving.insert(role, loc.version.clone());
                }
                Err(e) => {
                    metrics.model_refused.increment(1);
                    tracing::error!(
                        model = %loc.name, version = %loc.version, role = role.as_str(), error = %crate::outcome::chain(&e),
                        "refusing {}/{}: {}; {}/{old} keeps serving", loc.name, loc.version, crate::outcome::chain(&e), loc.name
                    );
                    refused.insert(key, stamp(&loc));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ab_split_is_within_two_percent_on_100k_customers() {
        for share in [0.1, 0.3, 0.5] {
            let n = 100_000;
            let hits = (0..n)
                .filter(|i| ab_fraction(&format!("C{i:07}")) < share)
                .count();
            let got = hits as f64 / f64::from(n);
            assert!((got - share).abs() < 0.02, "{share}: {got}");
        }
        // Stable: the same key lands in the same place.
        assert_eq!(ab_fraction("C0000042"), ab_fraction("C0000042"));
        assert_ne!(ab_fraction("C0000042"), ab_fraction("C0000043"));
    }
}
