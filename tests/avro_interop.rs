//! Avro interoperability with another implementation, through the real
//! broker: transactions written by fastavro (Python, confluent-kafka) are
//! scored, and fastavro reads the scored and dead-letter topics back with
//! the specification's fingerprint. The peer is tests/interop/fastavro_peer.py,
//! run with the Python of `scripts/pyenv.sh` (RISKSTREAM_PYTHON).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;

fn python() -> String {
    std::env::var("RISKSTREAM_PYTHON").unwrap_or_else(|_| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/pyenv.sh"))
            .output()
            .expect("scripts/pyenv.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn peer(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/interop/fastavro_peer.py"))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "fastavro peer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn schema(name: &str) -> String {
    repo().join("schemas").join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn fastavro_written_transactions_are_scored_and_fastavro_reads_every_output() {
    let t = Topics::new("interop");
    t.create(2).await;
    let txs: Vec<_> = rows(25, 300).iter().map(|r| r.transaction()).collect();
    // Records as fastavro takes them; one of them is a bad record that
    // must come back as a dead letter fastavro can read too.
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("tx.jsonl");
    let mut f = std::fs::File::create(&jsonl).unwrap();
    for (i, tx) in txs.iter().enumerate() {
        let mut v = serde_json::to_value(tx).unwrap();
        if i == 100 {
            v["amount"] = serde_json::json!(-1.0);
        }
        writeln!(f, "{v}").unwrap();
    }
    drop(f);
    let produced = peer(&[
        "produce",
        &brokers(),
        &t.input,
        &schema("transaction.avsc"),
        jsonl.to_str().unwrap(),
        "customer_id",
    ]);
    assert!(
        produced.contains(&format!("\"produced\": {}", txs.len())),
        "{produced}"
    );

    let mut w = Worker::start(&t, &[]);
    // Our own reader sees every good record scored.
    let ours = scored(&t.output, txs.len() - 1, Duration::from_secs(60));
    assert_eq!(ours.len(), txs.len() - 1, "log:\n{}", w.log_text());
    let dead = read_topic(&t.dlq, 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1);
    w.stop_cleanly(Duration::from_secs(30));
    assert!(
        !w.log_text().contains("unknown_fingerprint"),
        "fastavro's fingerprint was not recognised:\n{}",
        w.log_text()
    );

    // fastavro decodes every scored record with the spec fingerprint.
    let lines = peer(&[
        "consume",
        &brokers(),
        &t.output,
        &schema("scored_transaction.avsc"),
        &(txs.len() - 1).to_string(),
    ]);
    let by_id: HashMap<_, _> = txs.iter().map(|t| (t.transaction_id.clone(), t)).collect();
    let mut n = 0;
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        let rec = &v["value"];
        let tx = by_id[rec["transaction_id"].as_str().unwrap()];
        assert_eq!(rec["amount"].as_f64(), Some(tx.amount));
        assert_eq!(rec["event_time"].as_i64(), Some(tx.event_time));
        let score = rec["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(rec["model_name"], "fraud-mlp");
        n += 1;
    }
    assert_eq!(n, txs.len() - 1);

    // The dead letter carries fastavro's original bytes: fastavro reads them.
    let lines = peer(&[
        "consume",
        &brokers(),
        &t.dlq,
        &schema("transaction.avsc"),
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["headers"]["riskstream.reason"], "invalid_amount");
    assert_eq!(v["value"]["transaction_id"], txs[100].transaction_id);
}
