//! Interoperability with the JVM, through the real broker: Avro's reference
//! implementation (Java, `GenericRecord`, `BinaryMessageEncoder` and
//! `BinaryMessageDecoder` for single-object encoding) and Apache Kafka's Java
//! client, with transactions: a transactional Java producer's committed
//! records are scored exactly once and its aborted ones never, and the
//! reference implementation decodes every scored record and reads every dead
//! letter. The peer is tests/interop/java, a jar built by
//! `scripts/javapeer.sh`, named by RISKSTREAM_JAVA_PEER (scripts/test.sh sets
//! it); without it these tests fail.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use riskstream::codec::{Codec, ScoredTransaction, Transaction};
use serde_json::Value;

/// The peer's jar; a test that needs it fails without it.
fn jar() -> String {
    let jar = std::env::var("RISKSTREAM_JAVA_PEER").unwrap_or_else(|_| {
        panic!(
            "RISKSTREAM_JAVA_PEER is not set: the Java interoperability tests need the JVM \
             peer's jar. Build it and point at it with \
             `export RISKSTREAM_JAVA_PEER=\"$(scripts/javapeer.sh)\"` (scripts/test.sh does)"
        )
    });
    assert!(
        Path::new(&jar).is_file(),
        "RISKSTREAM_JAVA_PEER={jar} is not a file (scripts/javapeer.sh prints the jar)"
    );
    jar
}

/// What one run of the peer printed: its JSON lines, and the JSON summary
/// that `consume` and `consume-dlq` end their stderr with.
struct Peer {
    ok: bool,
    lines: Vec<Value>,
    /// The same lines as printed (for [`exact`]).
    raw: Vec<String>,
    summary: Value,
    stderr: String,
}

/// `java -jar PEER command --brokers B args...`.
fn java(command: &str, args: &[&str]) -> Peer {
    let out = Command::new("java")
        .arg("-jar")
        .arg(jar())
        .args([command, "--brokers", &brokers()])
        .args(args)
        .output()
        .expect("java runs (a JDK 17+ on PATH)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let raw: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let lines = raw
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    Peer {
        ok: out.status.success(),
        lines,
        raw,
        summary,
        stderr,
    }
}

/// The number `field` of a peer's JSON line, parsed from its text as
/// printed: serde_json's default float parsing (without its
/// `float_roundtrip` feature) can be an ulp off, Rust's `parse` is exact.
fn exact<T: std::str::FromStr>(raw: &str, field: &str) -> T {
    let key = format!("\"{field}\":");
    let at = raw
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in {raw}"))
        + key.len();
    let text: String = raw[at..]
        .chars()
        .take_while(|c| !matches!(c, ',' | '}'))
        .collect();
    text.parse()
        .unwrap_or_else(|_| panic!("{field} = {text} is not a number: {raw}"))
}

fn schema(name: &str) -> String {
    repo().join("schemas").join(name).display().to_string()
}

/// The transactions as JSON lines (serde's field names are the schema's).
fn write_jsonl(path: &Path, txs: &[Transaction]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for tx in txs {
        writeln!(f, "{}", serde_json::to_value(tx).unwrap()).unwrap();
    }
}

/// Produces `txs` from Java in transactions of `batch`, every `abort_every`-th
/// aborted; returns (committed, aborted) transactions.
fn java_produce(
    topic: &str,
    txs: &[Transaction],
    batch: usize,
    abort_every: usize,
) -> (Vec<Transaction>, Vec<Transaction>) {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("tx.jsonl");
    write_jsonl(&jsonl, txs);
    let p = java(
        "produce",
        &[
            "--topic",
            topic,
            "--schema",
            &schema("transaction.avsc"),
            "--input",
            jsonl.to_str().unwrap(),
            "--transactional-id",
            &unique("java-peer"),
            "--batch",
            &batch.to_string(),
            "--abort-every",
            &abort_every.to_string(),
        ],
    );
    assert!(p.ok, "java produce failed:\n{}", p.stderr);
    let (mut committed, mut aborted) = (Vec::new(), Vec::new());
    for t in &p.lines {
        let first = t["first"].as_u64().unwrap() as usize;
        let these = &txs[first..first + t["count"].as_u64().unwrap() as usize];
        match t["outcome"].as_str() {
            Some("commit") => committed.extend_from_slice(these),
            Some("abort") => aborted.extend_from_slice(these),
            other => panic!("outcome {other:?}"),
        }
    }
    assert_eq!(committed.len() + aborted.len(), txs.len());
    (committed, aborted)
}

/// `java consume` of a topic with a schema: every record must decode.
fn java_consume(topic: &str, schema_file: &str) -> Peer {
    let p = java(
        "consume",
        &[
            "--topic",
            topic,
            "--schema",
            &schema(schema_file),
            "--isolation",
            "read_committed",
            "--timeout-ms",
            "20000",
        ],
    );
    let failed: Vec<_> = p
        .lines
        .iter()
        .filter(|l| l.get("error").is_some())
        .collect();
    assert!(
        p.ok && failed.is_empty(),
        "the reference implementation cannot decode {} record(s) of {topic}: {:?}\n{}",
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        p.stderr
    );
    p
}

/// Per partition, the Java consumer's position at the end of its read.
fn positions(p: &Peer, partitions: usize) -> Vec<i64> {
    (0..partitions)
        .map(|i| p.summary["positions"][i.to_string()].as_i64().unwrap())
        .collect()
}

/// A scored record as the reference implementation decoded it, checked
/// against our own decoding of the same record and the input transaction.
fn check_scored(raw: &str, line: &Value, ours: &ScoredTransaction, input: &Transaction) {
    let v = &line["value"];
    assert_eq!(v["transaction_id"], ours.transaction_id.as_str());
    assert_eq!(v["event_time"].as_i64(), Some(input.event_time));
    assert_eq!(v["customer_id"], input.customer_id.as_str());
    assert_eq!(v["terminal_id"], input.terminal_id.as_str());
    assert_eq!(exact::<f64>(raw, "amount"), input.amount, "{raw}");
    assert_eq!(v["currency"], input.currency.as_str());
    assert_eq!(exact::<f32>(raw, "score"), ours.score, "{raw}");
    assert!((0.0..=1.0).contains(&ours.score));
    assert_eq!(v["is_fraud"].as_bool(), Some(ours.is_fraud));
    assert_eq!(exact::<f32>(raw, "threshold"), ours.threshold, "{raw}");
    assert_eq!(v["model_name"], ours.model_name.as_str());
    assert_eq!(v["model_version"], ours.model_version.as_str());
    assert_eq!(v["scored_at"].as_i64(), Some(ours.scored_at));
    assert_eq!(line["key"], input.customer_id.as_str(), "output key");
}

/// Java's decoding of every record of `output`, checked against ours and the
/// input: exactly the transactions of `want`, each once.
fn java_reads_exactly(output: &str, want: &[Transaction]) {
    let java = java_consume(output, "scored_transaction.avsc");
    assert_eq!(
        java.lines.len(),
        want.len(),
        "scored records the reference implementation read"
    );
    let ours: HashMap<(i64, i64), ScoredTransaction> =
        scored(output, want.len(), Duration::from_secs(30))
            .into_iter()
            .map(|(r, s)| ((r.partition as i64, r.offset), s))
            .collect();
    let by_id: HashMap<&str, &Transaction> = want
        .iter()
        .map(|t| (t.transaction_id.as_str(), t))
        .collect();
    let mut seen = HashSet::new();
    for (line, raw) in java.lines.iter().zip(&java.raw) {
        let at = (
            line["partition"].as_i64().unwrap(),
            line["offset"].as_i64().unwrap(),
        );
        let id = line["value"]["transaction_id"].as_str().unwrap();
        let input = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} was scored but is not a committed input: {line}"));
        assert!(seen.insert(id.to_string()), "{id} was scored twice");
        check_scored(raw, line, &ours[&at], input);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_a_java_transactional_producer_writes_are_all_scored_once() {
    jar();
    let t = Topics::new("java-txn");
    t.create(2).await;
    let txs: Vec<_> = rows(30, 2000).iter().map(|r| r.transaction()).collect();
    let mut w = Worker::start(&t, &[]);
    // 20 transactions of 100 while the worker runs; every 4th aborted after
    // its records reached the log, the last one included.
    let (kept, aborted) = java_produce(&t.input, &txs, 100, 4);
    assert_eq!((kept.len(), aborted.len()), (1500, 500));

    // The Java consumer (read_committed) sees exactly the committed records;
    // its position at the end, past the commit and abort markers, is the end.
    let input = java_consume(&t.input, "transaction.avsc");
    let ids: HashSet<&str> = kept.iter().map(|t| t.transaction_id.as_str()).collect();
    assert_eq!(input.lines.len(), kept.len());
    assert!(input
        .lines
        .iter()
        .all(|l| ids.contains(l["value"]["transaction_id"].as_str().unwrap())));
    let end = positions(&input, 2);
    let records_end = last_record_ends(&input, 2);

    // The worker handles every committed record...
    let handled = wait_for(Duration::from_secs(60), || {
        let c = committed(&t.group, &t.input, 2);
        c.iter().zip(&records_end).all(|(c, r)| c >= r)
    });
    assert!(handled, "log:\n{}", w.log_text());
    // ...scoring each committed transaction once and no aborted one; the
    // reference implementation decodes every scored record.
    java_reads_exactly(&t.output, &kept);
    let aborted_ids: HashSet<&str> = aborted.iter().map(|t| t.transaction_id.as_str()).collect();
    let out = scored(&t.output, kept.len() + 1, Duration::from_secs(3));
    assert!(out
        .iter()
        .all(|(_, s)| !aborted_ids.contains(s.transaction_id.as_str())));
    assert_eq!(lost(&kept, &out), 0);
    assert!(
        read_topic(&t.dlq, 1, Duration::from_secs(2)).is_empty(),
        "no dead letters"
    );

    // ...and its committed offsets reach the end, past the last
    // transaction's records and marker, while it runs and after it stops.
    let reached = wait_for(Duration::from_secs(15), || {
        committed(&t.group, &t.input, 2) == end
    });
    let running = committed(&t.group, &t.input, 2);
    w.stop_cleanly(Duration::from_secs(30));
    let stopped = committed(&t.group, &t.input, 2);
    assert!(
        reached && stopped == end,
        "the worker's committed offsets stop short of the end of the input {end:?} \
         (the Java read_committed consumer's position): {running:?} while running, \
         {stopped:?} after a clean stop; its last committed records end at {records_end:?}"
    );
}

/// Per partition, the offset after its last data record (what a consumer
/// that never moves past control records would commit).
fn last_record_ends(p: &Peer, partitions: usize) -> Vec<i64> {
    let mut end = vec![0; partitions];
    for l in &p.lines {
        let i = l["partition"].as_u64().unwrap() as usize;
        end[i] = end[i].max(l["offset"].as_i64().unwrap() + 1);
    }
    end
}

/// A poison record: key, payload, and the dead-letter reason it gets.
type Poison = (Option<Vec<u8>>, Vec<u8>, &'static str);

/// Poison records from outside Java (rdkafka, not transactional): each with
/// the dead-letter reason riskstream gives it.
fn garbage(good: &Transaction) -> Vec<Poison> {
    let codec = Codec::new().unwrap();
    let valid = codec.encode_transaction(good).unwrap();
    let key = Some(good.customer_id.as_bytes().to_vec());
    let mut unknown_fp = vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8];
    unknown_fp.extend_from_slice(&valid[10..]);
    // Bytes of no format (a fixed xorshift sequence).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 0x80
        })
        .collect();
    vec![
        (key.clone(), noise, "not_single_object"),
        (
            key.clone(),
            b"{\"amount\": 1}".to_vec(),
            "not_single_object",
        ),
        (key.clone(), unknown_fp, "unknown_fingerprint"),
        (
            key.clone(),
            valid[..valid.len() - 4].to_vec(),
            "malformed_avro",
        ),
        (key.clone(), Vec::new(), "empty_payload"),
        (None, valid.clone(), "missing_key"),
        (Some(b"someone-else".to_vec()), valid, "invalid_field"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_implementation_decodes_every_scored_record_and_dead_letter() {
    jar();
    let t = Topics::new("java-dlq");
    t.create(2).await;
    let mut txs: Vec<_> = rows(35, 1000).iter().map(|r| r.transaction()).collect();
    // Poison from Java: a negative amount encodes fine and fails validation.
    for tx in txs.iter_mut().skip(13).step_by(97) {
        tx.amount = -1.0;
    }
    // Transactions of 50, every 5th aborted (its poison must not come back).
    let (kept, _aborted) = java_produce(&t.input, &txs, 50, 5);
    let (good, poison): (Vec<_>, Vec<_>) = kept.into_iter().partition(|t| t.amount >= 0.0);
    let junk = garbage(&good[0]);
    let raw: Vec<_> = junk
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    produce_raw(&t.input, &raw).await;
    assert!(!poison.is_empty());

    // Every input record the worker will read, with its original bytes.
    let inputs: HashMap<(i32, i64), Rec> = read_topic(
        &t.input,
        good.len() + poison.len() + junk.len(),
        Duration::from_secs(20),
    )
    .into_iter()
    .map(|r| ((r.partition, r.offset), r))
    .collect();
    assert_eq!(inputs.len(), good.len() + poison.len() + junk.len());

    let mut w = Worker::start(&t, &[]);
    let total = (good.len() + poison.len() + junk.len()) as f64;
    assert!(
        wait_for(Duration::from_secs(60), || w.delivered() >= total),
        "delivered {} of {total}\nlog:\n{}",
        w.delivered(),
        w.log_text()
    );
    w.stop_cleanly(Duration::from_secs(30));

    java_reads_exactly(&t.output, &good);
    let dlq = java(
        "consume-dlq",
        &[
            "--topic",
            &t.dlq,
            "--schema",
            &schema("transaction.avsc"),
            "--timeout-ms",
            "20000",
        ],
    );
    assert!(dlq.ok, "java consume-dlq failed:\n{}", dlq.stderr);
    assert_eq!(
        dlq.lines.len(),
        poison.len() + junk.len(),
        "{:?}",
        dlq.lines
    );
    let poison_ids: HashSet<&str> = poison.iter().map(|t| t.transaction_id.as_str()).collect();
    let junk_reason: HashMap<(Option<&[u8]>, &[u8]), &str> = junk
        .iter()
        .map(|(k, v, r)| ((k.as_deref(), v.as_slice()), *r))
        .collect();
    for d in &dlq.lines {
        check_dead_letter(d, &t.input, &inputs, &poison_ids, &junk_reason);
    }
}

/// One dead letter as Java read it: its headers name the input record it
/// stands for, it carries that record's key and bytes, and its reason is the
/// one expected of that record.
fn check_dead_letter(
    d: &Value,
    input_topic: &str,
    inputs: &HashMap<(i32, i64), Rec>,
    poison_ids: &HashSet<&str>,
    junk_reason: &HashMap<(Option<&[u8]>, &[u8]), &str>,
) {
    let h = &d["headers"];
    assert_eq!(h["riskstream.source.topic"], input_topic, "{d}");
    let at = (
        h["riskstream.source.partition"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        h["riskstream.source.offset"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    let src = inputs
        .get(&at)
        .unwrap_or_else(|| panic!("a dead letter of no committed input record: {d}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(d["value_base64"].as_str().unwrap_or_default())
        .unwrap();
    assert_eq!(bytes, src.payload.clone().unwrap_or_default(), "{d}");
    assert_eq!(
        d["key"].as_str().map(str::as_bytes),
        src.key.as_deref(),
        "{d}"
    );
    let reason = h["riskstream.reason"].as_str().unwrap();
    assert!(
        !h["riskstream.error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{d}"
    );
    match d["decoded"]["transaction_id"].as_str() {
        // Java's own record, decoded again by Java from the dead letter.
        Some(id) if poison_ids.contains(id) => {
            assert_eq!(reason, "invalid_amount", "{d}");
            assert_eq!(d["decoded"]["amount"].as_f64(), Some(-1.0));
        }
        // Rust's poison: what riskstream rejects, the reference rejects too
        // (but for the two valid records under a wrong or missing key).
        _ => {
            let want = junk_reason
                .get(&(src.key.as_deref(), bytes.as_slice()))
                .unwrap_or_else(|| panic!("a dead letter of no poison record: {d}"));
            if !matches!(*want, "missing_key" | "invalid_field") {
                assert!(d.get("decode_error").is_some(), "Java decodes it: {d}");
            }
            assert_eq!(reason, *want, "{d}");
        }
    }
}
