//! The feature engine reproduces the handbook's published features.

mod common;

use std::collections::HashMap;

use riskstream::features::{FEATURE_NAMES, N_FEATURES};
use riskstream::train::featurise;

#[test]
fn offline_features_equal_the_published_july_2018_features() {
    let csv = common::repo().join("../shared/data/handbook/features-2018-07.csv.gz");
    let file = std::fs::File::open(&csv).expect("features file");
    let mut rdr = csv::Reader::from_reader(flate2::read::GzDecoder::new(file));
    let headers = rdr.headers().unwrap().clone();
    let cols: Vec<usize> = FEATURE_NAMES
        .iter()
        .map(|n| headers.iter().position(|h| h == *n).expect(n))
        .collect();
    let mut reference: HashMap<u64, [f64; N_FEATURES]> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let id: u64 = rec[0].parse().unwrap();
        let mut f = [0.0; N_FEATURES];
        for (j, c) in cols.iter().enumerate() {
            f[j] = rec[*c].parse().unwrap();
        }
        reference.insert(id, f);
    }
    assert!(reference.len() > 250_000, "{} rows", reference.len());
    let ours = featurise(&common::handbook_csv(), 121, |d| (91..=121).contains(&d)).unwrap();
    assert_eq!(ours.rows.len(), reference.len());
    let mut exceptions = 0;
    let mut per_feature = [0usize; N_FEATURES];
    for (r, f) in ours.rows.iter().zip(&ours.features) {
        let want = reference[&r.transaction_id];
        let mut bad = false;
        for j in 0..N_FEATURES {
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
