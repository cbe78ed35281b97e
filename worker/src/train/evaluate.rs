//! Evaluate: the handbook's published protocol. For each split: train on 7
//! days, skip the 7-day label delay, test on the next 7 days, after removing
//! known-compromised cards; report AUC ROC, average precision and Card
//! Precision@100; mean ± std over the prequential folds.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::metrics::{average_precision, roc_auc};
use super::{fit, fit_standardisation, predict, standardise_with, Hyper, TrainError};
use crate::dataset::{date_of_day, day_index, featurise, Featurised, HandbookRow};
use crate::model::MlpShape;

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    #[arg(long, default_value = "../shared/data/handbook/transactions.csv.gz")]
    pub csv: PathBuf,
    /// `ch3` (the single baseline split), `prequential` (4 test folds),
    /// `validation` (the 4 validation folds), or a training start date.
    #[arg(long, default_value = "prequential")]
    pub split: String,
    /// First training day of the (latest) fold; overrides --split.
    #[arg(long)]
    pub train_start: Option<String>,
    /// With --train-start: this many folds, each starting 7 days before the next.
    #[arg(long, default_value_t = 1)]
    pub folds: usize,
    /// Evaluate this trained model (its own standardisation and weights)
    /// instead of training one per fold.
    #[arg(long = "model")]
    pub model_ref: Option<String>,
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// The model to evaluate (`--hidden ""` = logistic regression).
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Directory for the Markdown report.
    #[arg(long, default_value = "reports/evaluate")]
    pub report: PathBuf,
}

/// Metrics of one test week.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FoldMetrics {
    pub auc_roc: f64,
    pub average_precision: f64,
    pub card_precision_100: f64,
    pub n_test: usize,
    pub n_fraud: usize,
}

impl FoldMetrics {
    /// AUC and AP of scored, labelled records, with their CP@100.
    fn of(scores: &[f32], labels: &[bool], card_precision_100: f64) -> Self {
        Self {
            auc_roc: roc_auc(scores, labels).unwrap_or(f64::NAN),
            average_precision: average_precision(scores, labels).unwrap_or(f64::NAN),
            card_precision_100,
            n_test: labels.len(),
            n_fraud: labels.iter().filter(|l| **l).count(),
        }
    }
}

/// Training-week starts of a named split.
pub fn split_starts(split: &str) -> Result<Vec<i64>, TrainError> {
    let days = |ds: &[&str]| {
        ds.iter()
            .map(|d| day_index(d).map_err(TrainError::from))
            .collect()
    };
    match split {
        "ch3" => days(&["2018-07-25"]),
        "prequential" => days(&["2018-08-15", "2018-08-08", "2018-08-01", "2018-07-25"]),
        "validation" => days(&["2018-07-11", "2018-07-04", "2018-06-27", "2018-06-20"]),
        d => Ok(vec![day_index(d)?]),
    }
}

/// Test rows of a split after known-compromised card removal.
pub fn test_indices(rows: &[HandbookRow], train_start: i64) -> (Vec<usize>, Vec<usize>) {
    let train: Vec<usize> = (0..rows.len())
        .filter(|&i| (train_start..train_start + 7).contains(&rows[i].time_days))
        .collect();
    let mut known: HashSet<u64> = train
        .iter()
        .filter(|&&i| rows[i].fraud == 1)
        .map(|&i| rows[i].customer_id)
        .collect();
    let mut test = Vec::new();
    for k in 0..7 {
        let newly = train_start + 7 + k - 1;
        for r in rows.iter().filter(|r| r.time_days == newly && r.fraud == 1) {
            known.insert(r.customer_id);
        }
        let day = train_start + 14 + k;
        test.extend(
            (0..rows.len())
                .filter(|&i| rows[i].time_days == day && !known.contains(&rows[i].customer_id)),
        );
    }
    (train, test)
}

/// Card Precision@100, the handbook's way: per test day, drop cards already
/// detected, take each card's max score and label, precision of the top 100.
pub fn card_precision_at_k(rows: &[HandbookRow], idx: &[usize], scores: &[f32], k: usize) -> f64 {
    let days: Vec<i64> = idx.iter().map(|&i| rows[i].time_days).collect();
    let cards: Vec<u64> = idx.iter().map(|&i| rows[i].customer_id).collect();
    let labels: Vec<bool> = idx.iter().map(|&i| rows[i].fraud == 1).collect();
    cp_at_k(&days, &cards, &labels, scores, k)
}

/// Card Precision@k over parallel slices (day, card, label, score).
pub fn cp_at_k(days: &[i64], cards: &[u64], labels: &[bool], scores: &[f32], k: usize) -> f64 {
    let mut uniq: Vec<i64> = days.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let mut detected: HashSet<u64> = HashSet::new();
    let mut total = 0.0;
    for day in &uniq {
        let mut per_card: std::collections::HashMap<u64, (f32, bool)> =
            std::collections::HashMap::new();
        for j in 0..days.len() {
            if days[j] != *day || detected.contains(&cards[j]) {
                continue;
            }
            let e = per_card
                .entry(cards[j])
                .or_insert((f32::NEG_INFINITY, false));
            e.0 = e.0.max(scores[j]);
            e.1 |= labels[j];
        }
        let mut ranked: Vec<(u64, f32, bool)> =
            per_card.into_iter().map(|(c, (s, l))| (c, s, l)).collect();
        // Highest score first; ties broken by card id for reproducibility.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top = &ranked[..ranked.len().min(k)];
        total += top.iter().filter(|c| c.2).count() as f64 / k as f64;
        detected.extend(top.iter().filter(|c| c.2).map(|c| c.0));
    }
    total / uniq.len().max(1) as f64
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateStreamArgs {
    #[arg(long, env = "RISKSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The worker's output topic.
    #[arg(long, default_value = "transactions.scored")]
    pub scored_topic: String,
    #[arg(long, default_value = "transactions.labels")]
    pub labels_topic: String,
    /// Stop reading a topic after this many seconds without a new record.
    #[arg(long, default_value_t = 5.0)]
    pub idle_timeout: f64,
}

/// Metrics of a finished stream run: scored records joined with their labels
/// (duplicates from at-least-once delivery count once).
pub fn evaluate_stream(args: &EvaluateStreamArgs) -> Result<FoldMetrics, TrainError> {
    use crate::dataset::topic::{read_topic, TopicRead};
    let read = |topic: &str| -> Result<Vec<serde_json::Value>, TrainError> {
        let mut out = Vec::new();
        read_topic(
            &TopicRead {
                topic: topic.to_string(),
                brokers: args.brokers.clone(),
                from_beginning: true,
                max: None,
                idle_timeout: Some(args.idle_timeout),
                schema_registry_url: std::env::var("RISKSTREAM_SCHEMA_REGISTRY_URL").ok(),
            },
            |v| {
                out.push(v);
                Ok(())
            },
        )
        .map_err(|source| TrainError::ReadTopic {
            topic: topic.to_string(),
            source,
        })?;
        Ok(out)
    };
    let labels: std::collections::HashMap<String, bool> = read(&args.labels_topic)?
        .into_iter()
        .filter_map(|v| {
            Some((
                v["transaction_id"].as_str()?.to_string(),
                v["is_fraud"].as_bool()?,
            ))
        })
        .collect();
    let mut seen = HashSet::new();
    let (mut days, mut cards, mut ys, mut scores) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in read(&args.scored_topic)? {
        let (Some(id), Some(score), Some(t), Some(c)) = (
            v["transaction_id"].as_str(),
            v["score"].as_f64(),
            v["event_time"].as_i64(),
            v["customer_id"].as_str(),
        ) else {
            continue;
        };
        let Some(&y) = labels.get(id) else { continue };
        if !seen.insert(id.to_string()) {
            continue;
        }
        days.push(t.div_euclid(crate::features::DAY_MS));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(c, &mut h);
        cards.push(std::hash::Hasher::finish(&h));
        ys.push(y);
        scores.push(score as f32);
    }
    if ys.is_empty() {
        return Err(TrainError::Invalid(
            "no scored record has a label yet".into(),
        ));
    }
    let cp = cp_at_k(&days, &cards, &ys, &scores, 100);
    Ok(FoldMetrics::of(&scores, &ys, cp))
}

/// Tests an already trained model on one split's test week.
pub fn evaluate_model(
    data: &Featurised,
    train_start: i64,
    scorer: &mut crate::model::Scorer,
) -> Result<(FoldMetrics, Vec<f32>, Vec<bool>), TrainError> {
    let (_, test) = test_indices(&data.rows, train_start);
    let te: Vec<_> = test.iter().map(|&i| data.features[i]).collect();
    let scores = scorer.score_all(&te)?;
    let labels: Vec<bool> = test.iter().map(|&i| data.rows[i].fraud == 1).collect();
    let cp = card_precision_at_k(&data.rows, &test, &scores, 100);
    Ok((FoldMetrics::of(&scores, &labels, cp), scores, labels))
}

/// Trains on one split and tests it.
pub fn evaluate_split(
    data: &Featurised,
    train_start: i64,
    inputs: &[usize],
    shape: &MlpShape,
    hyper: &Hyper,
    device: &Device,
) -> Result<(FoldMetrics, Vec<f32>, Vec<bool>), TrainError> {
    let (train, test) = test_indices(&data.rows, train_start);
    if train.is_empty() || test.is_empty() {
        return Err(TrainError::Invalid(format!(
            "split starting {} has no training or test data",
            date_of_day(train_start)
        )));
    }
    let tr: Vec<_> = train.iter().map(|&i| data.features[i]).collect();
    let (mean, std) = fit_standardisation(&tr, inputs);
    let x = standardise_with(&mean, &std, inputs, &tr);
    let y: Vec<f32> = train
        .iter()
        .map(|&i| f32::from(data.rows[i].fraud))
        .collect();
    let model = fit(shape, &x, &y, hyper, device);
    let te: Vec<_> = test.iter().map(|&i| data.features[i]).collect();
    let scores = predict(
        &model,
        &standardise_with(&mean, &std, inputs, &te),
        inputs.len(),
        device,
    );
    let labels: Vec<bool> = test.iter().map(|&i| data.rows[i].fraud == 1).collect();
    let cp = card_precision_at_k(&data.rows, &test, &scores, 100);
    Ok((FoldMetrics::of(&scores, &labels, cp), scores, labels))
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    // Population std (numpy's default), as the published table reports.
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt();
    (m, s)
}

/// `riskstream evaluate`: prints the table and writes the report.
pub fn evaluate(args: &EvaluateArgs) -> Result<String, TrainError> {
    let starts = fold_starts(args)?;
    let mut fixed = match &args.model_ref {
        Some(r) => {
            let loc = crate::registry::resolve(&args.models_dir, r)?;
            Some(crate::model::Scorer::load_cpu(&loc)?)
        }
        None => None,
    };
    let last = starts.iter().max().copied().unwrap_or(0) + 20;
    let first = starts.iter().min().copied().unwrap_or(0);
    let data = featurise(&args.csv, last, |d| d >= first && d <= last)?;
    let (inputs, shape, hyper) = args.model.resolve(false)?;
    let device = Device::flex();
    let bar = indicatif::ProgressBar::new(starts.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("fold {pos}/{len} {bar:30} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut folds = Vec::new();
    let mut curves = Vec::new();
    for &s in &starts {
        let (m, scores, labels) = match fixed.as_mut() {
            Some(scorer) => evaluate_model(&data, s, scorer)?,
            None => evaluate_split(&data, s, &inputs, &shape, &hyper, &device)?,
        };
        folds.push((s, m));
        curves.push((scores, labels));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let kind = match &fixed {
        Some(sc) => format!(
            "model {}/{} as trained",
            sc.location.name, sc.location.version
        ),
        None if shape.hidden.is_empty() => "logistic regression (burn, linear)".to_string(),
        None => format!("MLP {:?} (burn)", shape.hidden),
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# riskstream evaluate — {kind}, split `{}`\n",
        args.split
    );
    write_fold_table(&mut md, &folds);
    let _ = writeln!(
        md,
        "\nHyper-parameters: {}; inputs {} ({}); epochs {}, batch {}, lr {}, pos_weight {}, dropout {}, seed {}.",
        kind, args.model.inputs, inputs.len(), hyper.epochs, hyper.batch_size, hyper.lr, hyper.pos_weight, shape.dropout, hyper.seed
    );
    write_report(&args.report, &md, &curves)?;
    Ok(md)
}

/// Training-week starts of the folds: `--train-start` and the `--folds`
/// weeks before it, or the named `--split`.
fn fold_starts(args: &EvaluateArgs) -> Result<Vec<i64>, TrainError> {
    match &args.train_start {
        Some(d) => {
            let d = day_index(d)?;
            Ok((0..args.folds.max(1) as i64).map(|k| d - 7 * k).collect())
        }
        None => split_starts(&args.split),
    }
}

/// The Markdown table of the folds, with their mean ± std.
fn write_fold_table(md: &mut String, folds: &[(i64, FoldMetrics)]) {
    let _ = writeln!(
        md,
        "| train start | test week | test tx | frauds | AUC ROC | Avg precision | CP@100 |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (s, m) in folds {
        let _ = writeln!(
            md,
            "| {} | {} … {} | {} | {} | {:.4} | {:.4} | {:.4} |",
            date_of_day(*s),
            date_of_day(s + 14),
            date_of_day(s + 20),
            m.n_test,
            m.n_fraud,
            m.auc_roc,
            m.average_precision,
            m.card_precision_100
        );
    }
    let of = |metric: fn(&FoldMetrics) -> f64| {
        mean_std(&folds.iter().map(|f| metric(&f.1)).collect::<Vec<_>>())
    };
    let (a, sa) = of(|m| m.auc_roc);
    let (p, sp) = of(|m| m.average_precision);
    let (c, sc) = of(|m| m.card_precision_100);
    let _ = writeln!(
        md,
        "| **mean ± std** | | | | **{a:.3} ± {sa:.3}** | **{p:.3} ± {sp:.3}** | **{c:.3} ± {sc:.3}** |"
    );
}

fn write_report(dir: &Path, md: &str, curves: &[(Vec<f32>, Vec<bool>)]) -> Result<(), TrainError> {
    let werr = |source: std::io::Error| TrainError::WriteReport {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut text = md.to_string();
    match super::plots::roc_pr(dir, curves) {
        Ok(files) => {
            text.push('\n');
            for f in files {
                let _ = writeln!(text, "![{f}]({f})");
            }
        }
        Err(e) => tracing::warn!(error = %crate::outcome::chain(&*e), "plots not written"),
    }
    std::fs::write(dir.join("report.md"), text).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, day: i64, customer: u64, fraud: u8) -> HandbookRow {
        HandbookRow {
            transaction_id: id,
            customer_id: customer,
            terminal_id: 0,
            amount: 1.0,
            time_seconds: day * 86_400,
            time_days: day,
            fraud,
            scenario: 0,
        }
    }

    #[test]
    fn known_compromised_cards_leave_the_test_set() {
        // Customer 1 defrauded in training, customer 2 during the delay
        // (day 7, known from test day 1 on), customer 3 clean.
        let rows = vec![
            row(0, 0, 1, 1),
            row(1, 7, 2, 1),
            row(2, 14, 1, 0),
            row(3, 14, 2, 0),
            row(4, 15, 2, 0),
            row(5, 15, 3, 0),
        ];
        let (train, test) = test_indices(&rows, 0);
        assert_eq!(train, vec![0]);
        assert_eq!(test, vec![3, 5]);
    }

    #[test]
    fn card_precision_counts_each_card_once_per_day_and_drops_detected_cards() {
        let rows = vec![
            row(0, 14, 1, 1),
            row(1, 14, 1, 0),
            row(2, 14, 2, 0),
            row(3, 15, 1, 1),
            row(4, 15, 3, 1),
        ];
        let idx: Vec<usize> = (0..rows.len()).collect();
        let scores = [0.9, 0.1, 0.5, 0.9, 0.2];
        // Day 14: cards 1 (fraud) and 2 → 1 hit of k=2; day 15: card 1 is
        // already detected, card 3 is fraud → 1 hit of 2.
        let cp = card_precision_at_k(&rows, &idx, &scores, 2);
        assert!((cp - 0.5).abs() < 1e-12, "{cp}");
    }
}
