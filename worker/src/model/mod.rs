//! Model: the burn MLP, its model card, and the [`Scorer`] that turns
//! feature vectors into fraud probabilities on the chosen device.
//!
//! A version directory holds `card.json` ([`ModelCard`]) and `model.bpk`
//! (burnpack weights). The card lists the inputs in order and the
//! standardisation fitted on the training set, so a scorer rebuilt from the
//! directory computes exactly what training validated.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::features::{FeatureVector, FEATURE_NAMES, N_FEATURES};
use crate::outcome::{decide, Domain, Input, Outcome};

/// Where scoring runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware wgpu adapter if one exists and it scores a full batch
    /// faster than the CPU (measured at start-up), else the CPU.
    #[default]
    Auto,
    /// burn's `flex` CPU backend.
    Cpu,
    /// burn's wgpu backend (needs the `wgpu` cargo feature).
    Wgpu,
}

/// Positions in the engine's feature vector of the named inputs.
pub fn input_indices(inputs: &[String]) -> Result<Vec<usize>, String> {
    inputs
        .iter()
        .map(|n| {
            FEATURE_NAMES
                .iter()
                .position(|f| f == n)
                .ok_or_else(|| format!("input {n:?} is not a feature the engine computes"))
        })
        .collect()
}
use crate::registry::ModelLocation;

pub const CARD_FILE: &str = "card.json";
pub const WEIGHTS_FILE: &str = "model.bpk";
/// Largest model card read (a card is a few KiB).
pub const MAX_CARD_BYTES: u64 = 1 << 20;
/// Widest hidden layer and most layers a card may declare (checked before
/// anything is allocated for them).
pub const MAX_LAYER_WIDTH: usize = 16_384;
pub const MAX_LAYERS: usize = 16;

/// Why a file was refused before it was read.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    #[error(transparent)]
    Stat(std::io::Error),
    #[error("{len} bytes, more than the {max} accepted")]
    TooLarge { len: u64, max: u64 },
}

/// Refuses a file larger than `max` bytes before reading it.
fn check_size(path: &Path, max: u64) -> Result<(), SizeError> {
    let len = std::fs::metadata(path).map_err(SizeError::Stat)?.len();
    if len > max {
        return Err(SizeError::TooLarge { len, max });
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model card {path}")]
    CardSize {
        path: String,
        #[source]
        source: SizeError,
    },
    /// The network the card describes is beyond the accepted limits.
    #[error("cannot read model card {path}: {detail}")]
    CardShape { path: String, detail: String },
    #[error("cannot read model card {path}")]
    ReadCard {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model card {path} is not a valid card")]
    ParseCard {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("model card {path} does not fit this worker: {detail}")]
    Incompatible { path: String, detail: String },
    #[error("cannot load weights {path}")]
    WeightsSize {
        path: String,
        #[source]
        source: SizeError,
    },
    #[error("cannot load weights {path}")]
    LoadWeights {
        path: String,
        #[source]
        source: burn::store::RecordError,
    },
    #[error("cannot serialise the model card for {path}")]
    SerialiseCard {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write model to {path}")]
    WriteCard {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("device {0:?} is not available: {1}")]
    Device(DeviceChoice, String),
    #[error("inference failed")]
    Inference(#[source] burn::tensor::TensorReadError),
    #[error("cannot read the weights of a layer")]
    ReadWeights(#[source] burn::tensor::DataError),
}

impl ModelError {
    /// Whose fault it is: the model files the worker was pointed at, the
    /// device it was told to use, or (inference) the worker itself.
    pub fn domain(&self) -> Domain {
        match self {
            ModelError::CardSize { .. }
            | ModelError::CardShape { .. }
            | ModelError::ReadCard { .. }
            | ModelError::ParseCard { .. }
            | ModelError::Incompatible { .. }
            | ModelError::WeightsSize { .. }
            | ModelError::LoadWeights { .. }
            | ModelError::Device(..) => Domain::Input(Input::Settings),
            ModelError::SerialiseCard { .. } | ModelError::WriteCard { .. } => {
                Domain::External { transient: false }
            }
            ModelError::Inference(_) | ModelError::ReadWeights(_) => Domain::Internal,
        }
    }

    /// What follows ([`crate::outcome::decide`]).
    pub fn outcome(&self) -> Outcome {
        decide(self.domain())
    }
}

/// Hyper-parameters that define the network's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlpShape {
    pub d_in: usize,
    /// Hidden layer widths; empty = logistic regression.
    pub hidden: Vec<usize>,
    pub dropout: f64,
}

/// A feed-forward network: Linear → ReLU → Dropout … → Linear → logit.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    dropout: Dropout,
}

impl MlpShape {
    pub fn init(&self, device: &Device) -> Mlp {
        let mut dims = vec![self.d_in];
        dims.extend(self.hidden.iter().copied());
        dims.push(1);
        let layers = dims
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Mlp {
            layers,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// One dense layer as plain numbers: `weight` is `[d_in, d_out]` row-major
/// (y = x · W + b).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DenseLayer {
    pub d_in: usize,
    pub d_out: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Mlp {
    /// The weights as plain numbers (for export to other runtimes).
    pub fn dense_layers(&self) -> Result<Vec<DenseLayer>, ModelError> {
        self.layers
            .iter()
            .map(|l| {
                let w = l.weight.val();
                let [d_in, d_out] = w.dims();
                let weight = w
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(ModelError::ReadWeights)?;
                let bias = match &l.bias {
                    Some(b) => b
                        .val()
                        .into_data()
                        .try_to_vec::<f32>()
                        .map_err(ModelError::ReadWeights)?,
                    None => vec![0.0; d_out],
                };
                Ok(DenseLayer {
                    d_in,
                    d_out,
                    weight,
                    bias,
                })
            })
            .collect()
    }

    /// Logits of standardised inputs.
    ///
    /// # Shapes
    /// - x: `[batch, d_in]`
    /// - output: `[batch, 1]`
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = self.dropout.forward(relu(x));
            }
        }
        x
    }
}

/// What a model version is and how to feed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    /// Input feature names, in the order the network reads them.
    pub inputs: Vec<String>,
    /// Standardisation fitted on the training set: (x - mean) / std.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Scores at or above this flag fraud.
    pub threshold: f32,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    pub shape: MlpShape,
    /// Training facts: date range, rows, hyper-parameters, seed.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Validation (and test) metrics.
    #[serde(default)]
    pub metrics: serde_json::Value,
    #[serde(default)]
    pub git_revision: String,
    #[serde(default)]
    pub created_at: String,
    /// Positions of `inputs` in the engine's feature vector (derived).
    #[serde(skip)]
    pub input_index: Vec<usize>,
}

impl ModelCard {
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(CARD_FILE);
        check_size(&path, MAX_CARD_BYTES).map_err(|source| ModelError::CardSize {
            path: path.display().to_string(),
            source,
        })?;
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::ReadCard {
            path: path.display().to_string(),
            source,
        })?;
        let mut card: ModelCard =
            serde_json::from_str(&text).map_err(|source| ModelError::ParseCard {
                path: path.display().to_string(),
                source,
            })?;
        let shape = &card.shape;
        if shape.hidden.len() > MAX_LAYERS
            || shape.d_in > MAX_LAYER_WIDTH
            || shape.hidden.iter().any(|h| *h == 0 || *h > MAX_LAYER_WIDTH)
        {
            return Err(ModelError::CardShape {
                path: path.display().to_string(),
                detail: format!(
                    "shape {:?} is beyond the accepted {MAX_LAYERS} layers of at most {MAX_LAYER_WIDTH} units",
                    shape
                ),
            });
        }
        card.check(&path)?;
        card.input_index =
            input_indices(&card.inputs).map_err(|detail| ModelError::Incompatible {
                path: path.display().to_string(),
                detail,
            })?;
        Ok(card)
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |detail: String| ModelError::Incompatible {
            path: path.display().to_string(),
            detail,
        };
        if self.inputs.is_empty() || self.shape.d_in != self.inputs.len() {
            return Err(bad(format!(
                "{} inputs but the network reads {}",
                self.inputs.len(),
                self.shape.d_in
            )));
        }
        if let Err(detail) = input_indices(&self.inputs) {
            return Err(bad(detail));
        }
        if self.mean.len() != self.inputs.len() || self.std.len() != self.inputs.len() {
            return Err(bad("standardisation has the wrong length".into()));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(bad("a standard deviation is not positive".into()));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(bad(format!("threshold {} not in [0, 1]", self.threshold)));
        }
        Ok(())
    }

    pub fn write(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(CARD_FILE);
        let text =
            serde_json::to_string_pretty(self).map_err(|source| ModelError::SerialiseCard {
                path: path.display().to_string(),
                source,
            })?;
        std::fs::write(&path, text + "\n").map_err(|source| ModelError::WriteCard {
            path: path.display().to_string(),
            source,
        })
    }

    /// Standardised inputs (the card's, in its order), row-major f32.
    pub fn standardise(&self, rows: &[FeatureVector], out: &mut Vec<f32>) {
        out.clear();
        out.reserve(rows.len() * self.input_index.len());
        for r in rows {
            for (k, &j) in self.input_index.iter().enumerate() {
                out.push(((r[j] - self.mean[k]) / self.std[k]) as f32);
            }
        }
    }

    /// Number of network inputs.
    pub fn width(&self) -> usize {
        self.input_index.len()
    }
}

/// The device that scores, and how it was chosen (for the log line).
#[derive(Debug, Clone)]
pub struct ChosenDevice {
    pub device: Device,
    /// "flex (CPU)" or "wgpu: <adapter>".
    pub description: String,
    /// Whether batches are padded to fixed shapes (wgpu compiles per shape).
    pub pad_batches: bool,
}

/// Picks the scoring device. `auto` takes a hardware wgpu adapter when the
/// binary has the `wgpu` feature and one exists, the CPU otherwise.
pub fn choose_device(choice: DeviceChoice) -> Result<ChosenDevice, ModelError> {
    let cpu = || ChosenDevice {
        device: Device::flex(),
        description: "flex (CPU)".into(),
        pad_batches: false,
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Auto => Ok(find_gpu(true).unwrap_or_else(cpu)),
        DeviceChoice::Wgpu => find_gpu(false).ok_or_else(|| {
            ModelError::Device(
                choice,
                if cfg!(feature = "wgpu") {
                    "no wgpu adapter found (install a Vulkan driver, or use --device cpu)".into()
                } else {
                    "this binary was built without the `wgpu` feature (cargo build --features wgpu)"
                        .into()
                },
            )
        }),
    }
}

#[cfg(feature = "wgpu")]
fn find_gpu(hardware_only: bool) -> Option<ChosenDevice> {
    use burn::tensor::DeviceType;
    for dev in Device::enumerate(DeviceType::Wgpu) {
        if let Some(id) = dev.identity() {
            if id.physical.is_some() || !hardware_only {
                let kind = if id.physical.is_some() {
                    "hardware"
                } else {
                    "software"
                };
                return Some(ChosenDevice {
                    device: dev,
                    description: format!("wgpu: {} ({kind})", id.name),
                    pad_batches: true,
                });
            }
        }
    }
    None
}

#[cfg(not(feature = "wgpu"))]
fn find_gpu(_hardware_only: bool) -> Option<ChosenDevice> {
    None
}

/// A loaded model on its device: standardise → MLP → sigmoid.
/// Owned by one scoring thread (burn modules are `Send`).
#[derive(Debug)]
pub struct Scorer {
    pub card: ModelCard,
    pub location: ModelLocation,
    mlp: Mlp,
    device: ChosenDevice,
    scratch: Vec<f32>,
}

/// Batch sizes a padded device is warmed for.
pub fn padded_size(n: usize) -> usize {
    n.next_power_of_two().max(16)
}

impl Scorer {
    pub fn load(location: &ModelLocation, device: ChosenDevice) -> Result<Self, ModelError> {
        let card = ModelCard::read(&location.dir)?;
        let weights = location.dir.join(WEIGHTS_FILE);
        // f32 parameters of the declared shape, with room for the record's
        // own framing: a larger file is not this model's weights.
        let widths: Vec<usize> = std::iter::once(card.shape.d_in)
            .chain(card.shape.hidden.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        let params: u64 = widths
            .windows(2)
            .map(|w| (w[0] as u64 + 1) * w[1] as u64)
            .sum();
        check_size(&weights, 8 * 4 * params + (1 << 20)).map_err(|source| {
            ModelError::WeightsSize {
                path: weights.display().to_string(),
                source,
            }
        })?;
        let mlp = card
            .shape
            .init(&device.device)
            .try_load_file(&weights)
            .map_err(|source| ModelError::LoadWeights {
                path: weights.display().to_string(),
                source,
            })?;
        Ok(Self {
            card,
            location: location.clone(),
            mlp,
            device,
            scratch: Vec::new(),
        })
    }

    /// Scores any number of rows in batches of 4,096 (offline tools).
    pub fn score_all(&mut self, rows: &[FeatureVector]) -> Result<Vec<f32>, ModelError> {
        let mut scores = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(4096) {
            scores.extend(self.score(chunk)?);
        }
        Ok(scores)
    }

    /// Loads a version on the CPU backend (offline tools: train, evaluate,
    /// score, drift, export).
    pub fn load_cpu(location: &ModelLocation) -> Result<Self, ModelError> {
        Self::load(location, choose_device(DeviceChoice::Cpu)?)
    }

    pub fn from_parts(
        card: ModelCard,
        location: ModelLocation,
        mlp: Mlp,
        device: ChosenDevice,
    ) -> Self {
        Self {
            card,
            location,
            mlp,
            device,
            scratch: Vec::new(),
        }
    }

    /// The network's weights as plain numbers.
    pub fn dense_layers(&self) -> Result<Vec<DenseLayer>, ModelError> {
        self.mlp.dense_layers()
    }

    pub fn device_description(&self) -> &str {
        &self.device.description
    }

    /// Runs every batch shape this device will see once, so the first real
    /// batch does not pay for kernel compilation.
    pub fn warm_up(&mut self, batch_max: usize) -> Result<(), ModelError> {
        let mut n = 1;
        loop {
            let rows = vec![[0.0; N_FEATURES]; n];
            self.score(&rows)?;
            if n >= batch_max || !self.device.pad_batches {
                break;
            }
            n = padded_size(n + 1);
        }
        Ok(())
    }

    /// Fraud probabilities for a batch of feature vectors.
    pub fn score(&mut self, rows: &[FeatureVector]) -> Result<Vec<f32>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let n = rows.len();
        let mut scratch = std::mem::take(&mut self.scratch);
        self.card.standardise(rows, &mut scratch);
        let padded = if self.device.pad_batches {
            padded_size(n)
        } else {
            n
        };
        let width = self.card.width();
        scratch.resize(padded * width, 0.0);
        let x = Tensor::<2>::from_data(
            TensorData::new(scratch.clone(), [padded, width]),
            &self.device.device,
        );
        self.scratch = scratch;
        let p = sigmoid(self.mlp.forward(x));
        let mut out = p.try_into_vec_as::<f32>().map_err(ModelError::Inference)?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(dir: &Path) -> ModelCard {
        ModelCard {
            name: "t".into(),
            version: "1".into(),
            inputs: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean: vec![0.0; N_FEATURES],
            std: vec![1.0; N_FEATURES],
            threshold: 0.5,
            threshold_rule: "test".into(),
            shape: MlpShape {
                d_in: N_FEATURES,
                hidden: vec![8],
                dropout: 0.0,
            },
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            git_revision: String::new(),
            created_at: dir.display().to_string(),
            input_index: (0..N_FEATURES).collect(),
        }
    }

    #[test]
    fn saved_model_scores_the_same_after_loading() {
        let dir = tempfile::tempdir().unwrap();
        let dev = choose_device(DeviceChoice::Cpu).unwrap();
        dev.device.seed(7);
        let c = card(dir.path());
        let mlp = c.shape.init(&dev.device);
        let loc = ModelLocation {
            name: "t".into(),
            version: "1".into(),
            dir: dir.path().to_path_buf(),
        };
        let mut a = Scorer::from_parts(c.clone(), loc.clone(), mlp.clone(), dev.clone());
        mlp.save_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        c.write(dir.path()).unwrap();
        let mut b = Scorer::load(&loc, dev).unwrap();
        let rows: Vec<FeatureVector> = (0..5).map(|i| [i as f64 * 0.3; N_FEATURES]).collect();
        let sa = a.score(&rows).unwrap();
        let sb = b.score(&rows).unwrap();
        assert_eq!(sa.len(), 5);
        assert!(sa.iter().all(|s| (0.0..=1.0).contains(s)));
        assert_eq!(sa, sb);
        // A batch of one scores like the same row inside a batch.
        let one = b.score(&rows[2..3]).unwrap();
        assert!((one[0] - sb[2]).abs() < 1e-6);
    }

    #[test]
    fn rejects_a_card_with_other_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = card(dir.path());
        c.inputs[0] = "NO_SUCH_FEATURE".into();
        c.write(dir.path()).unwrap();
        let err = ModelCard::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("NO_SUCH_FEATURE"), "{err}");
    }

    #[test]
    #[cfg(not(feature = "wgpu"))]
    fn wgpu_without_the_feature_is_a_clear_error() {
        let err = choose_device(DeviceChoice::Wgpu).unwrap_err().to_string();
        assert!(err.contains("--features wgpu"), "{err}");
    }
}
