//! Serving against the real broker: an alias moved under load swaps the
//! model between batches (every record scored once, by the version it
//! names); a broken version is refused while the old one keeps serving;
//! A/B routes customers by a stable hash and shadow scoring fills its topic.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use common::*;
use riskstream::codec::{ScoredTransaction, Transaction};
use riskstream::model::{choose_device, Scorer};
use riskstream::scoring::serving::ab_fraction;

/// A private registry: fraud-mlp 1 (champion) and 2 (challenger).
fn registry() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for v in ["1", "2"] {
        let to = dir.path().join("fraud-mlp").join(v);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["card.json", "model.bpk", "reference.json"] {
            std::fs::copy(repo().join("models/fraud-mlp").join(v).join(f), to.join(f)).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("fraud-mlp/aliases.json"),
        r#"{"champion": "1", "challenger": "2"}"#,
    )
    .unwrap();
    dir
}

fn promote(models: &Path, version: &str) {
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "models",
            "promote",
            "fraud-mlp",
            version,
            "--alias",
            "champion",
            "--models-dir",
        ])
        .arg(models)
        .status()
        .unwrap();
    assert!(st.success());
}

/// transaction id → score of each version, offline (no labels: terminal
/// features are empty online and offline alike).
fn offline(input: &[Transaction]) -> HashMap<String, HashMap<String, f32>> {
    let feats = offline_features(input);
    let mut out: HashMap<String, HashMap<String, f32>> = HashMap::new();
    for v in ["1", "2"] {
        let loc = riskstream::registry::resolve(&repo().join("models"), &format!("fraud-mlp/{v}"))
            .unwrap();
        let mut s = Scorer::load(
            &loc,
            choose_device(riskstream::config::DeviceChoice::Cpu).unwrap(),
        )
        .unwrap();
        let scores = s.score(&feats).unwrap();
        for (t, x) in input.iter().zip(scores) {
            out.entry(t.transaction_id.clone())
                .or_default()
                .insert(v.to_string(), x);
        }
    }
    out
}

fn check_scores(out: &[(Rec, ScoredTransaction)], want: &HashMap<String, HashMap<String, f32>>) {
    for (_, s) in out {
        let w = want[&s.transaction_id][&s.model_version];
        assert!(
            (w - s.score).abs() < 1e-5,
            "{} v{}: {} vs {w}",
            s.transaction_id,
            s.model_version,
            s.score
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_moved_under_load_swaps_between_batches_and_a_broken_version_is_refused() {
    let t = Topics::new("swap");
    t.create(4).await;
    let models = registry();
    let mdir = models.path().to_str().unwrap().to_string();
    let input: Vec<Transaction> = rows(100, 12_000).iter().map(|r| r.transaction()).collect();
    let want = offline(&input);
    let w = Worker::start(
        &t,
        &[
            "--models-dir",
            &mdir,
            "--registry-poll-ms",
            "100",
            "--linger-ms",
            "2",
        ],
    );
    // Records keep flowing while the alias moves: 24 chunks, ~100 ms apart.
    let feeder = {
        let (topic, input) = (t.input.clone(), input.clone());
        tokio::spawn(async move {
            for chunk in input.chunks(500) {
                produce_transactions(&topic, chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    assert!(
        wait_for(Duration::from_secs(60), || read_topic(
            &t.output,
            2000,
            Duration::from_millis(300)
        )
        .len()
            >= 2000),
        "log:\n{}",
        w.log_text()
    );
    promote(models.path(), "2");
    assert!(
        wait_for(Duration::from_secs(30), || w
            .log_text()
            .contains("now serving fraud-mlp/2 as champion")),
        "log:\n{}",
        w.log_text()
    );
    // Version 3: a card but no usable weights.
    let v3 = models.path().join("fraud-mlp/3");
    std::fs::create_dir_all(&v3).unwrap();
    std::fs::copy(
        models.path().join("fraud-mlp/2/card.json"),
        v3.join("card.json"),
    )
    .unwrap();
    std::fs::write(v3.join("model.bpk"), b"not a model").unwrap();
    promote(models.path(), "3");
    assert!(
        wait_for(Duration::from_secs(30), || w
            .log_text()
            .contains("refusing fraud-mlp/3")),
        "log:\n{}",
        w.log_text()
    );
    feeder.await.unwrap();
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    // Exactly once.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, s) in &out {
        *seen.entry(s.transaction_id.as_str()).or_default() += 1;
    }
    assert_eq!(out.len(), input.len(), "log:\n{}", w.log_text());
    assert!(seen.values().all(|n| *n == 1));
    // Scored by the version each record names; the switch happened once,
    // between batches: per partition every v1 record precedes every v2 one.
    check_scores(&out, &want);
    let mut by_partition: BTreeMap<i32, Vec<(i64, &str)>> = BTreeMap::new();
    for (r, s) in &out {
        by_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, s.model_version.as_str()));
    }
    let mut versions = std::collections::BTreeSet::new();
    for recs in by_partition.values_mut() {
        recs.sort();
        let v: Vec<&str> = recs.iter().map(|(_, v)| *v).collect();
        assert!(
            v.windows(2).all(|p| p[0] <= p[1]),
            "versions out of order: {v:?}"
        );
        versions.extend(v);
    }
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), vec!["1", "2"]);
    let (_, metrics) = http_get(&w.log_text(), "/metrics");
    assert!(
        metrics.contains("riskstream_model_swaps_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("riskstream_model_refused_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("riskstream_model_info{model=\"fraud-mlp\",version=\"2\""),
        "{metrics}"
    );
    assert!(metrics.contains("riskstream_records_scored_total{model=\"fraud-mlp\",version=\"1\"}"));
    assert!(metrics.contains("riskstream_records_scored_total{model=\"fraud-mlp\",version=\"2\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_routes_customers_by_hash_and_shadow_scores_every_record() {
    let t = Topics::new("ab");
    t.create(4).await;
    let shadow = format!("{}.shadow", t.output);
    let input: Vec<Transaction> = rows(100, 4000).iter().map(|r| r.transaction()).collect();
    let want = offline(&input);
    produce_transactions(&t.input, &input).await;
    let w = Worker::start(
        &t,
        &[
            "--challenger",
            "fraud-mlp@challenger",
            "--ab-share",
            "0.3",
            "--shadow-topic",
            &shadow,
        ],
    );
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    assert_eq!(out.len(), input.len(), "log:\n{}", w.log_text());
    let mut to_challenger = 0;
    for (_, s) in &out {
        let routed = ab_fraction(&s.customer_id) < 0.3;
        assert_eq!(
            s.model_version,
            if routed { "2" } else { "1" },
            "{}",
            s.customer_id
        );
        to_challenger += usize::from(routed);
    }
    check_scores(&out, &want);
    let share = to_challenger as f64 / out.len() as f64;
    assert!((0.2..0.4).contains(&share), "{share}");
    // Shadow: the challenger's score of every record, never the decision.
    let sh = scored(&shadow, input.len(), Duration::from_secs(30));
    assert_eq!(sh.len(), input.len());
    assert!(sh.iter().all(|(_, s)| s.model_version == "2"));
    check_scores(&sh, &want);
    let (_, metrics) = http_get(&w.log_text(), "/metrics");
    assert!(
        metrics.contains(&format!(
            "riskstream_records_scored_total{{model=\"fraud-mlp\",version=\"2\"}} {to_challenger}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "riskstream_shadow_scored_total{{model=\"fraud-mlp\",version=\"2\"}} {}",
        input.len()
    )));
    assert!(metrics.contains("role=\"challenger\""));
}
