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

use crate::dataset::{day_index, for_each_row, HandbookRow, RowIds};
use crate::features::{FeatureEngine, FeatureVector, FEATURE_NAMES, N_FEATURES};
use crate::model::{Mlp, MlpShape, ModelCard, CARD_FILE, WEIGHTS_FILE};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {detail}")]
    Write { path: String, detail: String },
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

/// Rows with their features, computed by one pass of the engine in
/// transaction order (labels fed as the stream would: the engine only
/// reads labels older than the delay).
pub struct Featurised {
    pub rows: Vec<HandbookRow>,
    pub features: Vec<FeatureVector>,
}

/// Computes features for every row of the CSV up to `last_day`, keeping
/// the rows with `keep(day)`.
pub fn featurise(
    csv: &Path,
    last_day: i64,
    keep: impl Fn(i64) -> bool,
) -> Result<Featurised, crate::dataset::DatasetError> {
    let mut engine = FeatureEngine::new();
    let mut out = Featurised {
        rows: Vec::new(),
        features: Vec::new(),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message("computing features");
    for_each_row::<crate::dataset::DatasetError>(csv, |r| {
        if r.time_days > last_day {
            return Ok(false);
        }
        let ids = RowIds::of(&r);
        let f = engine.observe_transaction(ids.tx_ref(&r));
        engine.observe_label(ids.label_ref(&r));
        if keep(r.time_days) {
            out.rows.push(r);
            out.features.push(f);
        }
        if out.rows.len().is_multiple_of(100_000) {
            bar.tick();
        }
        Ok(true)
    })?;
    bar.finish_and_clear();
    Ok(out)
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

/// `riskstream train`: returns the directory of the new version.
pub fn train(args: &TrainArgs) -> Result<PathBuf, TrainError> {
    let (from, to, v_from, v_to) = match &args.train_start {
        Some(d) => {
            let from = day_index(d)?;
            let to = from + args.train_days.max(1) - 1;
            (from, to, from - 7, from - 1)
        }
        None => {
            let from = day_index(&args.from)?;
            let to = day_index(&args.to)?;
            (from, to, to + 8, to + 7 + args.valid_days)
        }
    };
    if to < from {
        return Err(TrainError::Invalid(format!(
            "--to {} is before --from {}",
            args.to, args.from
        )));
    }
    let (idx, shape, hyper) = args.model.resolve(true)?;
    let data = featurise(&args.csv, v_to.max(to), |d| {
        (from..=to).contains(&d) || (v_from..=v_to).contains(&d)
    })?;
    let (mut tr_f, mut tr_y, mut va_f, mut va_y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, f) in data.rows.iter().zip(&data.features) {
        if (from..=to).contains(&r.time_days) {
            tr_f.push(*f);
            tr_y.push(f32::from(r.fraud));
        } else {
            va_f.push(*f);
            va_y.push(r.fraud == 1);
        }
    }
    if tr_f.is_empty() || va_f.is_empty() {
        return Err(TrainError::Invalid(
            "training or validation period holds no transactions".into(),
        ));
    }
    let (mean, std) = fit_standardisation(&tr_f, &idx);
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
        created_at: chrono_like_now(),
    };
    let device = Device::flex();
    let x = standardise(&card, &tr_f);
    let model = fit(&shape, &x, &tr_y, &hyper, &device);
    let vx = standardise(&card, &va_f);
    let vs = predict(&model, &vx, idx.len(), &device);
    let auc = metrics::roc_auc(&vs, &va_y);
    let ap = metrics::average_precision(&vs, &va_y);
    let (threshold, f1) = metrics::best_f1_threshold(&vs, &va_y);
    card.threshold = threshold;
    card.training = serde_json::json!({
        "csv": args.csv.display().to_string(),
        "from": crate::dataset::date_of_day(from), "to": crate::dataset::date_of_day(to),
        "rows": tr_y.len(), "frauds": tr_y.iter().filter(|y| **y > 0.5).count(),
        "validation": {"from": crate::dataset::date_of_day(v_from), "to": crate::dataset::date_of_day(v_to), "rows": va_y.len()},
        "epochs": hyper.epochs, "batch_size": hyper.batch_size, "lr": hyper.lr,
        "pos_weight": hyper.pos_weight, "dropout": shape.dropout, "seed": hyper.seed,
        "optimizer": "adam", "backend": "burn flex (CPU)",
    });
    card.metrics = serde_json::json!({
        "validation": {"auc_roc": auc, "average_precision": ap, "f1_at_threshold": f1}
    });
    let dir = args.models_dir.join(&args.name).join(&version);
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::Write {
        path: dir.display().to_string(),
        detail: e.to_string(),
    })?;
    model
        .clone()
        .save_file(dir.join(WEIGHTS_FILE))
        .map_err(|e| TrainError::Write {
            path: dir.join(WEIGHTS_FILE).display().to_string(),
            detail: format!("{e:?}"),
        })?;
    card.write(&dir)?;
    let train_scores = predict(&model, &x, idx.len(), &device);
    crate::drift::Reference::build(&tr_f, &train_scores, threshold)
        .write(&dir)
        .map_err(|e| TrainError::Write {
            path: dir.display().to_string(),
            detail: e.to_string(),
        })?;
    let aliases = crate::registry::read_aliases(&args.models_dir, &args.name)?;
    if args.promote || !aliases.contains_key("champion") {
        crate::registry::set_alias(&args.models_dir, &args.name, "champion", &version)?;
    }
    eprintln!(
        "wrote {} ({}): validation AUC {:.4} AP {:.4}, threshold {:.4} (F1 {:.3})",
        dir.display(),
        CARD_FILE,
        auc.unwrap_or(f64::NAN),
        ap.unwrap_or(f64::NAN),
        threshold,
        f1
    );
    Ok(dir)
}

/// UTC timestamp `YYYY-MM-DDTHH:MM:SSZ` without a date crate.
pub fn chrono_like_now() -> String {
    let s = crate::message::now_ms() / 1000;
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    let date =
        crate::dataset::date_of_day(days + crate::dataset::day_index("1970-01-01").unwrap_or(0));
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    let werr = |e: String| TrainError::Write {
        path: args.out.display().to_string(),
        detail: e,
    };
    let mut w = csv::Writer::from_path(&args.out).map_err(|e| werr(e.to_string()))?;
    // Every input row with its own columns, plus score and is_fraud.
    let file = std::fs::File::open(&args.csv)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", args.csv.display())))?;
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
        .map_err(|e| TrainError::Invalid(e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    header.extend(["score".to_string(), "is_fraud".to_string()]);
    w.write_record(&header).map_err(|e| werr(e.to_string()))?;
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
                    Some(Err(e)) => return Err(TrainError::Invalid(e.to_string())),
                    None => return Err(TrainError::Invalid("input ended early".into())),
                }
            };
            let mut out: Vec<String> = rec.iter().map(str::to_string).collect();
            out.push(format!("{s}"));
            out.push(u8::from(s >= scorer.card.threshold).to_string());
            w.write_record(&out).map_err(|e| werr(e.to_string()))?;
            n += 1;
        }
        bar.inc(rows.len() as u64);
    }
    bar.finish_and_clear();
    w.flush().map_err(|e| werr(e.to_string()))?;
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
    let threshold = scorer.card.threshold;
    crate::drift::Reference::build(&data.features, &scores, threshold)
        .write(&loc.dir)
        .map_err(|e| TrainError::Write {
            path: loc.dir.display().to_string(),
            detail: e.to_string(),
        })?;
    Ok(loc.dir)
}
