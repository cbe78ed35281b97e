//! Train: offline features with the same engine as the worker, MLP training
//! with burn's autodiff, threshold choice on a validation period, and the
//! model version written to the registry.

pub mod evaluate;
pub mod metrics;
pub mod plots;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::dataset::day_index;
/// Offline features moved to [`crate::dataset`]; re-exported for callers of `train::featurise`.
pub use crate::dataset::{featurise, Featurised};
use crate::features::{FeatureVector, FEATURE_NAMES, N_FEATURES};
use crate::model::{Mlp, MlpShape, ModelCard, CARD_FILE, WEIGHTS_FILE};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Registry(#[from] crate::registry::ModelRegistryError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot create {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    WriteWeights {
        path: String,
        #[source]
        source: burn::store::RecordError,
    },
    #[error("cannot write the drift reference to {path}")]
    WriteReference {
        path: String,
        #[source]
        source: crate::drift::DriftError,
    },
    #[error("cannot write {path}")]
    WriteCsv {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error("cannot open {path}")]
    OpenCsv {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ReadCsv(csv::Error),
    #[error("cannot write {path}")]
    WriteReport {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read topic {topic}")]
    ReadTopic {
        topic: String,
        #[source]
        source: crate::dataset::topic::TopicError,
    },
}

/// The network and how it is trained; shared by `train` and `evaluate`.
/// Defaults were chosen on the handbook's 4 validation folds.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Hidden layer widths, comma separated ("" = logistic regression).
    #[arg(long, default_value = "128,64")]
    pub hidden: String,
    /// Inputs: `all` engine features, `published` (the handbook's 15), or names.
    #[arg(long, default_value = "all")]
    pub inputs: String,
    #[arg(long, default_value_t = 0.2)]
    pub dropout: f64,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Weight of the fraud class in the loss (1 = unweighted).
    #[arg(long, default_value_t = 1.0)]
    pub pos_weight: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl ModelArgs {
    /// The network shape and the optimisation settings.
    pub fn resolve(&self, progress: bool) -> Result<(Vec<usize>, MlpShape, Hyper), TrainError> {
        let inputs = parse_inputs(&self.inputs)?;
        let shape = MlpShape {
            d_in: inputs.len(),
            hidden: parse_hidden(&self.hidden)?,
            dropout: self.dropout,
        };
        let hyper = Hyper {
            lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            pos_weight: self.pos_weight,
            seed: self.seed,
            progress,
        };
        Ok((inputs, shape, hyper))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Transactions CSV (handbook format).
    #[arg(long, default_value = "../shared/data/handbook/transactions.csv.gz")]
    pub csv: PathBuf,
    /// First training day (YYYY-MM-DD).
    #[arg(long, default_value = "2018-06-01")]
    pub from: String,
    /// Last training day (inclusive).
    #[arg(long, default_value = "2018-07-24")]
    pub to: String,
    /// Validation days after the 7-day label delay (threshold, early look).
    #[arg(long, default_value_t = 7)]
    pub valid_days: i64,
    /// Protocol mode: train on `--train-days` days from this date and use
    /// the 7 days before it for validation and the threshold; nothing on or
    /// after the end of the training days is read. Overrides --from/--to.
    #[arg(long)]
    pub train_start: Option<String>,
    #[arg(long, default_value_t = 7)]
    pub train_days: i64,
    #[arg(long, default_value = "fraud-mlp")]
    pub name: String,
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Point the `champion` alias at the new version.
    #[arg(long)]
    pub promote: bool,
}

/// Standardisation of the columns `idx`, fitted on `rows`.
pub fn fit_standardisation(rows: &[FeatureVector], idx: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; idx.len()];
    for r in rows {
        for (k, &j) in idx.iter().enumerate() {
            mean[k] += r[j] / n;
        }
    }
    let mut var = vec![0.0; idx.len()];
    for r in rows {
        for (k, &j) in idx.iter().enumerate() {
            var[k] += (r[j] - mean[k]).powi(2) / n;
        }
    }
    let std = var
        .into_iter()
        .map(|v| if v.sqrt() > 1e-12 { v.sqrt() } else { 1.0 })
        .collect();
    (mean, std)
}

/// Which engine features a model reads: `all`, `published` (the handbook's
/// 15) or a comma-separated list of names.
pub fn parse_inputs(s: &str) -> Result<Vec<usize>, TrainError> {
    match s {
        "all" => Ok((0..N_FEATURES).collect()),
        "published" => Ok((0..crate::features::N_PUBLISHED).collect()),
        list => crate::model::input_indices(
            &list
                .split(',')
                .map(|x| x.trim().to_string())
                .collect::<Vec<_>>(),
        )
        .map_err(TrainError::Invalid),
    }
}

fn bce_with_logits(z: Tensor<2>, y: Tensor<2>, pos_weight: f32) -> Tensor<1> {
    let pos = (y.clone() * log_sigmoid(z.clone())).mul_scalar(pos_weight);
    let neg = (1.0f32 - y) * log_sigmoid(-z);
    (pos + neg).neg().mean()
}

/// Trains a network on standardised inputs; returns the inference model.
/// Optimisation settings of one training run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hyper {
    pub lr: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub pos_weight: f32,
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
}

/// Parses `--hidden 64,32` ("" = logistic regression).
pub fn parse_hidden(s: &str) -> Result<Vec<usize>, TrainError> {
    s.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| TrainError::Invalid(format!("--hidden {s:?} is not a width")))
        })
        .collect()
}

/// Trains a network on standardised inputs; returns the inference model.
pub fn fit(shape: &MlpShape, x: &[f32], y: &[f32], args: &Hyper, device: &Device) -> Mlp {
    device.seed(args.seed);
    let ad = device.clone().autodiff();
    let mut model = shape.init(&ad);
    let mut optim = AdamConfig::new().init();
    let n = y.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let bar = if args.progress {
        indicatif::ProgressBar::new(args.epochs as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {pos}/{len} {bar:30} [{elapsed}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let width = shape.d_in;
    let mut xb = Vec::with_capacity(args.batch_size * width);
    let mut yb = Vec::with_capacity(args.batch_size);
    for _epoch in 0..args.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut batches) = (0.0f64, 0usize);
        for chunk in order.chunks(args.batch_size) {
            xb.clear();
            yb.clear();
            for &i in chunk {
                xb.extend_from_slice(&x[i * width..(i + 1) * width]);
                yb.push(y[i]);
            }
            let m = chunk.len();
            let xt = Tensor::<2>::from_data(TensorData::new(xb.clone(), [m, width]), &ad);
            let yt = Tensor::<2>::from_data(TensorData::new(yb.clone(), [m, 1]), &ad);
            let loss = bce_with_logits(model.forward(xt), yt, args.pos_weight);
            let grads = loss.backward();
            if batches % 50 == 0 {
                loss_sum += f64::from(loss.into_scalar::<f32>());
            }
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(args.lr, model, grads);
            batches += 1;
        }
        bar.set_message(format!(
            "loss {:.4}",
            loss_sum / (batches.div_ceil(50)) as f64
        ));
        bar.inc(1);
    }
    bar.finish();
    model.valid()
}

/// Scores standardised rows with an inference model.
pub fn predict(model: &Mlp, x: &[f32], width: usize, device: &Device) -> Vec<f32> {
    let n = x.len() / width;
    let mut out = Vec::with_capacity(n);
    for chunk in x.chunks(4096 * width) {
        let m = chunk.len() / width;
        let t = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [m, width]), device);
        let p = sigmoid(model.forward(t));
        out.extend(p.try_into_vec_as::<f32>().unwrap_or_else(|_| vec![0.0; m]));
    }
    out
}

fn standardise(card: &ModelCard, rows: &[FeatureVector]) -> Vec<f32> {
    let mut v = Vec::new();
    card.standardise(rows, &mut v);
    v
}

/// Standardised columns `idx` of the rows, row-major f32.
pub fn standardise_with(
    mean: &[f64],
    std: &[f64],
    idx: &[usize],
    rows: &[FeatureVector],
) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows.len() * idx.len());
    for r in rows {
        for (k, &j) in idx.iter().enumerate() {
            v.push(((r[j] - mean[k]) / std[k]) as f32);
        }
    }
    v
}

pub fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The day ranges of one training run (inclusive day indices).
#[derive(Debug, Clone, Copy)]
struct Periods {
    from: i64,
    to: i64,
    valid_from: i64,
    valid_to: i64,
}

impl Periods {
    /// Protocol mode (`--train-start`: validation is the week before), or
    /// `--from`/`--to` with validation after the label delay.
    fn of(args: &TrainArgs) -> Result<Self, TrainError> {
        let p = match &args.train_start {
            Some(d) => {
                let from = day_index(d)?;
                let to = from + args.train_days.max(1) - 1;
                Self {
                    from,
                    to,
                    valid_from: from - 7,
                    valid_to: from - 1,
                }
            }
            None => {
                let from = day_index(&args.from)?;
                let to = day_index(&args.to)?;
                Self {
                    from,
                    to,
                    valid_from: to + 8,
                    valid_to: to + 7 + args.valid_days,
                }
            }
        };
        if p.to < p.from {
            return Err(TrainError::Invalid(format!(
                "--to {} is before --from {}",
                args.to, args.from
            )));
        }
        Ok(p)
    }

    fn is_training(&self, day: i64) -> bool {
        (self.from..=self.to).contains(&day)
    }

    fn is_validation(&self, day: i64) -> bool {
        (self.valid_from..=self.valid_to).contains(&day)
    }
}

/// Feature vectors and labels of the training and validation periods.
struct Split {
    train_x: Vec<FeatureVector>,
    train_y: Vec<f32>,
    /// Event times of the training rows (ms), for the drift reference's time profile.
    train_t: Vec<i64>,
    valid_x: Vec<FeatureVector>,
    valid_y: Vec<bool>,
}

impl Split {
    fn of(data: &Featurised, periods: &Periods) -> Result<Self, TrainError> {
        let mut s = Self {
            train_x: Vec::new(),
            train_y: Vec::new(),
            train_t: Vec::new(),
            valid_x: Vec::new(),
            valid_y: Vec::new(),
        };
        for (r, f) in data.rows.iter().zip(&data.features) {
            if periods.is_training(r.time_days) {
                s.train_x.push(*f);
                s.train_y.push(f32::from(r.fraud));
                s.train_t.push(r.event_time());
            } else {
                s.valid_x.push(*f);
                s.valid_y.push(r.fraud == 1);
            }
        }
        if s.train_x.is_empty() || s.valid_x.is_empty() {
            return Err(TrainError::Invalid(
                "training or validation period holds no transactions".into(),
            ));
        }
        Ok(s)
    }
}

/// Validation metrics of a trained model and the threshold chosen on them.
struct Validation {
    auc: Option<f64>,
    ap: Option<f64>,
    threshold: f32,
    f1: f64,
}

/// `riskstream train`: returns the directory of the new version.
pub fn train(args: &TrainArgs) -> Result<PathBuf, TrainError> {
    let periods = Periods::of(args)?;
    let (idx, shape, hyper) = args.model.resolve(true)?;
    let data = featurise(&args.csv, periods.valid_to.max(periods.to), |d| {
        periods.is_training(d) || periods.is_validation(d)
    })?;
    let split = Split::of(&data, &periods)?;
    let (mean, std) = fit_standardisation(&split.train_x, &idx);
    let version = crate::registry::next_version(&args.models_dir, &args.name);
    let mut card = ModelCard {
        name: args.name.clone(),
        version: version.clone(),
        inputs: idx.iter().map(|&j| FEATURE_NAMES[j].to_string()).collect(),
        input_index: idx.clone(),
        mean,
        std,
        threshold: 0.5,
        threshold_rule: "maximises F1 on the validation period".into(),
        shape: shape.clone(),
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
        git_revision: git_revision(),
        created_at: utc_now_rfc3339(),
    };
    let device = Device::flex();
    let x = standardise(&card, &split.train_x);
    let model = fit(&shape, &x, &split.train_y, &hyper, &device);
    let vs = predict(
        &model,
        &standardise(&card, &split.valid_x),
        idx.len(),
        &device,
    );
    let (threshold, f1) = metrics::best_f1_threshold(&vs, &split.valid_y);
    let v = Validation {
        auc: metrics::roc_auc(&vs, &split.valid_y),
        ap: metrics::average_precision(&vs, &split.valid_y),
        threshold,
        f1,
    };
    card.threshold = threshold;
    card.training = training_record(args, &periods, &split, &shape, &hyper);
    card.metrics = serde_json::json!({
        "validation": {"auc_roc": v.auc, "average_precision": v.ap, "f1_at_threshold": v.f1}
    });
    let dir = args.models_dir.join(&args.name).join(&version);
    write_version(&dir, &model, &card)?;
    let train_scores = predict(&model, &x, idx.len(), &device);
    write_reference(
        &dir,
        &split.train_x,
        &train_scores,
        threshold,
        &split.train_t,
    )?;
    let aliases = crate::registry::read_aliases(&args.models_dir, &args.name)?;
    if args.promote || !aliases.contains_key("champion") {
        crate::registry::set_alias(&args.models_dir, &args.name, "champion", &version)?;
    }
    eprintln!(
        "wrote {} ({}): validation AUC {:.4} AP {:.4}, threshold {:.4} (F1 {:.3})",
        dir.display(),
        CARD_FILE,
        v.auc.unwrap_or(f64::NAN),
        v.ap.unwrap_or(f64::NAN),
        v.threshold,
        v.f1
    );
    Ok(dir)
}

/// The card's `training` section: data, periods and settings of the run.
fn training_record(
    args: &TrainArgs,
    p: &Periods,
    split: &Split,
    shape: &MlpShape,
    hyper: &Hyper,
) -> serde_json::Value {
    use crate::dataset::date_of_day;
    serde_json::json!({
        "csv": args.csv.display().to_string(),
        "from": date_of_day(p.from), "to": date_of_day(p.to),
        "rows": split.train_y.len(), "frauds": split.train_y.iter().filter(|y| **y > 0.5).count(),
        "validation": {"from": date_of_day(p.valid_from), "to": date_of_day(p.valid_to), "rows": split.valid_y.len()},
        "epochs": hyper.epochs, "batch_size": hyper.batch_size, "lr": hyper.lr,
        "pos_weight": hyper.pos_weight, "dropout": shape.dropout, "seed": hyper.seed,
        "optimizer": "adam", "backend": "burn flex (CPU)",
    })
}

/// Writes the weights and the card of a new version into `dir`.
fn write_version(dir: &Path, model: &Mlp, card: &ModelCard) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::CreateDir {
        path: dir.display().to_string(),
        source,
    })?;
    model
        .clone()
        .save_file(dir.join(WEIGHTS_FILE))
        .map_err(|source| TrainError::WriteWeights {
            path: dir.join(WEIGHTS_FILE).display().to_string(),
            source,
        })?;
    card.write(dir)?;
    Ok(())
}

/// Writes the drift reference of the training period into `dir`.
fn write_reference(
    dir: &Path,
    features: &[FeatureVector],
    scores: &[f32],
    threshold: f32,
    times: &[i64],
) -> Result<(), TrainError> {
    crate::drift::Reference::build(features, scores, threshold, times)
        .write(dir)
        .map_err(|source| TrainError::WriteReference {
            path: dir.display().to_string(),
            source,
        })
}

/// The wall clock as an RFC 3339 UTC timestamp to the second
/// (`YYYY-MM-DDTHH:MM:SSZ`), for model cards.
pub fn utc_now_rfc3339() -> String {
    let secs = crate::message::now_ms().div_euclid(1000);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Transactions CSV in the handbook's format (.csv or .csv.gz).
    #[arg(long)]
    pub csv: PathBuf,
    /// Output CSV: every input row with its columns, plus score and is_fraud.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "fraud-mlp@champion")]
    pub model: String,
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Only write rows from this day on (earlier rows still build state).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
}

/// `riskstream score`: offline scoring with the worker's feature engine and
/// model, for backfills. Returns the number of rows written.
pub fn score_csv(args: &ScoreArgs) -> Result<u64, TrainError> {
    let loc = crate::registry::resolve(&args.models_dir, &args.model)?;
    let mut scorer = crate::model::Scorer::load_cpu(&loc)?;
    let from = args.from.as_deref().map(day_index).transpose()?;
    let to = args
        .to
        .as_deref()
        .map(day_index)
        .transpose()?
        .unwrap_or(i64::MAX);
    let data = featurise(&args.csv, to, |d| from.is_none_or(|f| d >= f))?;
    let werr = |source: csv::Error| TrainError::WriteCsv {
        path: args.out.display().to_string(),
        source,
    };
    let mut w = csv::Writer::from_path(&args.out).map_err(werr)?;
    // Every input row with its own columns, plus score and is_fraud.
    let file = std::fs::File::open(&args.csv).map_err(|source| TrainError::OpenCsv {
        path: args.csv.display().to_string(),
        source,
    })?;
    let reader: Box<dyn std::io::Read> = if args.csv.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut raw = csv::Reader::from_reader(reader);
    let mut header: Vec<String> = raw
        .headers()
        .map_err(TrainError::ReadCsv)?
        .iter()
        .map(str::to_string)
        .collect();
    header.extend(["score".to_string(), "is_fraud".to_string()]);
    w.write_record(&header).map_err(werr)?;
    let mut raw_rows = raw.records();
    let bar = indicatif::ProgressBar::new(data.rows.len() as u64);
    let mut n = 0;
    for (rows, feats) in data.rows.chunks(4096).zip(data.features.chunks(4096)) {
        let scores = scorer.score(feats)?;
        for (r, s) in rows.iter().zip(scores) {
            // The raw row with the same transaction id (rows before --from are skipped).
            let rec = loop {
                match raw_rows.next() {
                    Some(Ok(rec)) if rec.get(0) == Some(r.transaction_id.to_string().as_str()) => {
                        break rec
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(TrainError::ReadCsv(e)),
                    None => return Err(TrainError::Invalid("input ended early".into())),
                }
            };
            let mut out: Vec<String> = rec.iter().map(str::to_string).collect();
            out.push(format!("{s}"));
            out.push(u8::from(s >= scorer.card.threshold).to_string());
            w.write_record(&out).map_err(werr)?;
            n += 1;
        }
        bar.inc(rows.len() as u64);
    }
    bar.finish_and_clear();
    w.flush().map_err(|e| werr(e.into()))?;
    Ok(n)
}

/// `riskstream models reference`: rebuilds a version's drift reference from
/// its training period (as recorded in the card), without retraining.
pub fn rebuild_reference(
    models_dir: &Path,
    model: &str,
    csv: &Path,
) -> Result<PathBuf, TrainError> {
    let loc = crate::registry::resolve(models_dir, model)?;
    let mut scorer = crate::model::Scorer::load_cpu(&loc)?;
    let period = |k: &str| {
        scorer.card.training[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| TrainError::Invalid(format!("the model card has no training.{k}")))
    };
    let (from, to) = (day_index(&period("from")?)?, day_index(&period("to")?)?);
    let data = featurise(csv, to, |d| d >= from)?;
    let scores = scorer.score_all(&data.features)?;
    let times: Vec<i64> = data.rows.iter().map(|r| r.event_time()).collect();
    write_reference(
        &loc.dir,
        &data.features,
        &scores,
        scorer.card.threshold,
        &times,
    )?;
    Ok(loc.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_is_rfc3339_utc_to_the_second() {
        let t = utc_now_rfc3339();
        let b = t.as_bytes();
        assert_eq!(b.len(), 20, "{t}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19]),
            (b'-', b'-', b'T', b':', b':', b'Z')
        );
        assert!(t.starts_with("20"), "{t}");
    }
}
