//! The feature engine reproduces the handbook's published features.

mod common;

use std::collections::HashMap;

use riskstream::features::{FEATURE_NAMES, N_PUBLISHED};
use riskstream::train::featurise;

#[test]
fn offline_features_equal_the_published_july_2018_features() {
    let csv = common::repo().join("../shared/data/handbook/features-2018-07.csv.gz");
    let file = std::fs::File::open(&csv).expect("features file");
    let mut rdr = csv::Reader::from_reader(flate2::read::GzDecoder::new(file));
    let headers = rdr.headers().unwrap().clone();
    let cols: Vec<usize> = FEATURE_NAMES[..N_PUBLISHED]
        .iter()
        .map(|n| headers.iter().position(|h| h == *n).expect(n))
        .collect();
    let mut reference: HashMap<u64, [f64; N_PUBLISHED]> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let id: u64 = rec[0].parse().unwrap();
        let mut f = [0.0; N_PUBLISHED];
        for (j, c) in cols.iter().enumerate() {
            f[j] = rec[*c].parse().unwrap();
        }
        reference.insert(id, f);
    }
    assert!(reference.len() > 250_000, "{} rows", reference.len());
    let ours = featurise(&common::handbook_csv(), 121, |d| (91..=121).contains(&d)).unwrap();
    assert_eq!(ours.rows.len(), reference.len());
    let mut exceptions = 0;
    let mut per_feature = [0usize; N_PUBLISHED];
    for (r, f) in ours.rows.iter().zip(&ours.features) {
        let want = reference[&r.transaction_id];
        let mut bad = false;
        for j in 0..N_PUBLISHED {
            let tol = 1e-9 * want[j].abs().max(1.0);
            if (f[j] - want[j]).abs() > tol {
                per_feature[j] += 1;
                bad = true;
            }
        }
        exceptions += usize::from(bad);
    }
    eprintln!("rows differing: {exceptions}; per feature: {per_feature:?}");
    assert!(
        exceptions <= 25,
        "{exceptions} rows differ; per feature {per_feature:?}"
    );
}

/// The protocol code (split, card removal, metrics) reproduces the published
/// logistic-regression baseline on `ch3_baseline` within 0.005.
#[test]
fn evaluate_reproduces_the_published_logistic_regression_baseline() {
    use riskstream::train::evaluate::{evaluate_split, split_starts};
    use riskstream::train::Hyper;
    let start = split_starts("ch3").unwrap()[0];
    let data = featurise(&common::handbook_csv(), start + 20, |d| {
        (start..=start + 20).contains(&d)
    })
    .unwrap();
    let inputs: Vec<usize> = (0..N_PUBLISHED).collect();
    let shape = riskstream::model::MlpShape {
        d_in: N_PUBLISHED,
        hidden: vec![],
        dropout: 0.0,
    };
    let hyper = Hyper {
        lr: 0.003,
        epochs: 100,
        batch_size: 512,
        pos_weight: 1.0,
        seed: 42,
        progress: false,
    };
    let (m, _, _) = evaluate_split(
        &data,
        start,
        &inputs,
        &shape,
        &hyper,
        &burn::tensor::Device::flex(),
    )
    .unwrap();
    eprintln!("{m:?}");
    assert_eq!(
        (m.n_test, m.n_fraud),
        (58_264, 385),
        "published test-set size"
    );
    // Published (handbook, ch3_baseline, logistic regression): 0.871 / 0.606 / 0.291.
    assert!((m.auc_roc - 0.871).abs() < 0.005, "AUC {}", m.auc_roc);
    assert!(
        (m.average_precision - 0.606).abs() < 0.005,
        "AP {}",
        m.average_precision
    );
    assert!(
        (m.card_precision_100 - 0.291).abs() < 0.005,
        "CP@100 {}",
        m.card_precision_100
    );
}

/// `riskstream score` writes the same features and scores as the engine.
#[test]
fn batch_scoring_writes_one_row_per_transaction_with_its_features() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let rows =
        riskstream::dataset::read_rows(&common::handbook_csv(), Some(100), Some(101)).unwrap();
    common::write_handbook_csv(&input, &rows);
    let out = dir.path().join("out.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "score",
            "--csv",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--models-dir",
            common::repo().join("models").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rdr = csv::Reader::from_path(&out).unwrap();
    let headers = rdr.headers().unwrap().clone();
    assert_eq!(headers.len(), 11);
    assert_eq!(&headers[9], "score");
    assert_eq!(&headers[10], "is_fraud");
    let recs: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), rows.len());
    // Scores equal the engine + champion model, in input order.
    let expected = featurise(&input, i64::MAX, |_| true).unwrap();
    let loc = riskstream::registry::resolve(&common::repo().join("models"), "fraud-mlp@champion")
        .unwrap();
    let mut scorer = riskstream::model::Scorer::load(
        &loc,
        riskstream::model::choose_device(riskstream::config::DeviceChoice::Cpu).unwrap(),
    )
    .unwrap();
    let want = scorer.score(&expected.features).unwrap();
    for ((rec, r), w) in recs.iter().zip(&rows).zip(want) {
        assert_eq!(rec[0].parse::<u64>().unwrap(), r.transaction_id);
        let s: f32 = rec[9].parse().unwrap();
        assert!((s - w).abs() < 1e-6, "{s} vs {w}");
        assert_eq!(&rec[10], if s >= scorer.card.threshold { "1" } else { "0" });
    }
}
