//! The worker against the real broker: delivery guarantees, dead letters,
//! scaling by instances, shutdown. Needs `scripts/broker.sh start` (the test
//! script does it).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use riskstream::codec::{Codec, KnownSchema, Transaction, HISTORY_SCHEMAS};

/// Runs `riskstream tail --from-beginning --max N` and parses its lines.
fn tail_json(topic: &str, max: usize) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "tail",
            "--brokers",
            &brokers(),
            "--topic",
            topic,
            "--from-beginning",
        ])
        .args(["--max", &max.to_string(), "--idle-timeout", "10"])
        .output()
        .expect("run tail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Every input id appears in the output; returns how many times each did.
fn counts(out: &[(Rec, riskstream::codec::ScoredTransaction)]) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for (_, s) in out {
        *c.entry(s.transaction_id.clone()).or_insert(0) += 1;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_scores_every_transaction_exactly_once_in_customer_order() {
    let t = Topics::new("clean");
    t.create(4).await;
    let input = txs(100, 3000);
    produce_transactions(&t.input, &input).await;
    let mut w = Worker::start(&t, &[]);
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    let c = counts(&out);
    assert_eq!(out.len(), input.len(), "log:\n{}", w.log_text());
    for tx in &input {
        assert_eq!(c.get(&tx.transaction_id), Some(&1), "{}", tx.transaction_id);
    }
    // Per customer, output order = input order (event time, then id).
    let mut last: HashMap<String, (i64, u64)> = HashMap::new();
    let mut by_partition: BTreeMap<i32, Vec<&riskstream::codec::ScoredTransaction>> =
        BTreeMap::new();
    for (r, s) in &out {
        by_partition.entry(r.partition).or_default().push(s);
    }
    for recs in by_partition.values() {
        for s in recs {
            let key = (s.event_time, s.transaction_id.parse::<u64>().unwrap());
            if let Some(prev) = last.insert(s.customer_id.clone(), key) {
                assert!(prev < key, "customer {} out of order", s.customer_id);
            }
        }
    }
    // The HTTP endpoint: alive, ready, and metrics that count what happened.
    let log = w.log_text();
    assert!(http_get(&log, "/healthz").0.contains("200"));
    assert!(http_get(&log, "/readyz").0.contains("200"));
    let (status, metrics) = http_get(&log, "/metrics");
    assert!(status.contains("200"));
    assert!(
        metrics.contains(&format!(
            "riskstream_records_scored_total{{model=\"fraud-mlp\",version=\"{}\"}} {}",
            out[0].1.model_version,
            input.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("riskstream_model_info{model=\"fraud-mlp\""),
        "{metrics}"
    );
    // A live worker's exposition passes Prometheus' own checker.
    let problems = common::promtool_check(&metrics);
    assert!(problems.is_empty(), "promtool check metrics:\n{problems}");
    assert!(http_get(&log, "/nope").0.contains("404"));
    // `riskstream tail` prints the records as JSON with the schema's names.
    let lines = tail_json(&t.output, 3);
    assert_eq!(lines.len(), 3);
    for l in &lines {
        for f in [
            "transaction_id",
            "score",
            "is_fraud",
            "model_name",
            "model_version",
            "scored_at",
        ] {
            assert!(l.get(f).is_some(), "{f} missing in {l}");
        }
    }
    // Records carry the model and a probability.
    let (_, s) = &out[0];
    assert_eq!(s.model_name, "fraud-mlp");
    assert!(!s.model_version.is_empty());
    assert!((0.0..=1.0).contains(&s.score));
    assert_eq!(s.is_fraud, s.score >= s.threshold);
    w.stop_cleanly(Duration::from_secs(30));
    assert!(
        w.log_text().contains("scoring on flex (CPU)"),
        "the log names the device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_good_ones_are_scored() {
    let t = Topics::new("poison");
    t.create(1).await;
    let codec = Codec::new().unwrap();
    let good = txs(100, 6);
    let enc = |tx: &Transaction| codec.encode_transaction(tx).unwrap();
    let key = |tx: &Transaction| Some(tx.customer_id.as_bytes().to_vec());
    let mut nan = good[0].clone();
    nan.transaction_id = "nan".into();
    nan.amount = f64::NAN;
    let truncated = enc(&good[1])[..12].to_vec();
    let mut unknown = enc(&good[2]);
    unknown[2..10].copy_from_slice(&[7; 8]);
    let records = vec![
        (key(&good[0]), enc(&good[0])),
        (key(&good[0]), b"\x00\x01garbage, not avro".to_vec()),
        (key(&good[1]), enc(&good[1])),
        (key(&good[1]), truncated),
        (key(&good[2]), enc(&good[2])),
        (key(&good[2]), unknown),
        (key(&good[3]), enc(&good[3])),
        (key(&nan), enc(&nan)),
        (key(&good[4]), enc(&good[4])),
        (None, enc(&good[5])),
    ];
    produce_raw(&t.input, &records).await;
    let mut w = Worker::start(&t, &[]);
    let out = scored(&t.output, 5, Duration::from_secs(60));
    let ids: HashSet<_> = out.iter().map(|(_, s)| s.transaction_id.clone()).collect();
    for g in &good[..5] {
        assert!(ids.contains(&g.transaction_id), "log:\n{}", w.log_text());
    }
    let dead = read_topic(&t.dlq, 5, Duration::from_secs(30));
    assert_eq!(dead.len(), 5, "log:\n{}", w.log_text());
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| d.headers["riskstream.reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "not_single_object",
            "malformed_avro",
            "unknown_fingerprint",
            "invalid_amount",
            "missing_key"
        ]
    );
    for (d, (_, orig)) in dead.iter().zip(records.iter().skip(1).step_by(2)) {
        assert_eq!(
            d.payload.as_deref(),
            Some(orig.as_slice()),
            "original bytes kept"
        );
        assert_eq!(d.headers["riskstream.source.topic"], t.input);
        assert_eq!(d.headers["riskstream.source.partition"], "0");
        assert!(
            d.headers["riskstream.source.offset"]
                .parse::<i64>()
                .unwrap()
                % 2
                == 1
        );
        assert!(!d.headers["riskstream.error"].is_empty());
    }
    assert!(dead[3].headers["riskstream.error"].contains("amount"));
    let log = w.log_text();
    assert!(log.contains("WARN") && log.contains("dead-letter"), "{log}");
    // `riskstream tail` shows dead letters with their headers and bytes.
    let lines = tail_json(&t.dlq, 5);
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0]["headers"]["riskstream.reason"],
        "not_single_object"
    );
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(lines[0]["payload_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, records[1].1);
    w.stop_cleanly(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_older_and_newer_writer_schemas_both_decode() {
    let t = Topics::new("evolution");
    t.create(2).await;
    let dir = tempfile::tempdir().unwrap();
    let v3 = r#"{"type":"record","name":"Transaction","namespace":"riskstream","fields":[
      {"name":"transaction_id","type":"string"},
      {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
      {"name":"customer_id","type":"string"},
      {"name":"terminal_id","type":"string"},
      {"name":"amount","type":"double"},
      {"name":"currency","type":"string","default":"EUR"},
      {"name":"channel","type":"string","default":"pos"}]}"#;
    std::fs::write(dir.path().join("transaction.v3.avsc"), v3).unwrap();
    let codec = Codec::new().unwrap();
    let old = KnownSchema::parse(HISTORY_SCHEMAS[0], "v1").unwrap();
    let new = KnownSchema::parse(v3, "v3").unwrap();
    let input = txs(100, 20);
    let mut recs = Vec::new();
    for (i, tx) in input.iter().enumerate() {
        let bytes = if i % 2 == 0 {
            codec.encode_transaction_as(&old, tx, vec![]).unwrap()
        } else {
            codec
                .encode_transaction_as(
                    &new,
                    tx,
                    vec![("channel", apache_avro::types::Value::String("web".into()))],
                )
                .unwrap()
        };
        recs.push((Some(tx.customer_id.as_bytes().to_vec()), bytes));
    }
    produce_raw(&t.input, &recs).await;
    let w = Worker::start(&t, &["--schema-dir", dir.path().to_str().unwrap()]);
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    assert_eq!(out.len(), input.len(), "log:\n{}", w.log_text());
    assert!(out.iter().all(|(_, s)| s.currency == "EUR"));
    assert!(read_topic(&t.dlq, 1, Duration::from_secs(2)).is_empty());
}

/// Committed offsets of a group on a topic.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_leaves_no_delivered_but_uncommitted_gap() {
    let t = Topics::new("graceful");
    t.create(2).await;
    let input = txs(100, 2000);
    produce_transactions(&t.input, &input).await;
    let mut w = Worker::start(&t, &[]);
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    assert_eq!(out.len(), input.len());
    w.stop_cleanly(Duration::from_secs(30));
    // Input ends per partition: offsets of what was consumed.
    let end = end_offsets(&t.input, input.len(), 2);
    assert_eq!(committed(&t.group, &t.input, 2), end);
    // A restarted instance has nothing left to score.
    let w2 = Worker::start(&t, &[]);
    std::thread::sleep(Duration::from_secs(8));
    let again = read_topic(&t.output, input.len() + 1, Duration::from_secs(3));
    assert_eq!(again.len(), input.len(), "log:\n{}", w2.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_share_partitions_and_score_everything() {
    let t = Topics::new("scale");
    t.create(4).await;
    let a = Worker::start(&t, &[]);
    let b = Worker::start(&t, &[]);
    let both = wait_for(Duration::from_secs(60), || {
        assigned(&a.log_text()) && assigned(&b.log_text())
    });
    assert!(both, "a:\n{}\nb:\n{}", a.log_text(), b.log_text());
    let input = txs(100, 4000);
    produce_transactions(&t.input, &input).await;
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    let c = counts(&out);
    for tx in &input {
        assert!(c.contains_key(&tx.transaction_id));
    }
    // Both instances scored a share: the partitions were really shared.
    let (sa, sb) = (scored_by(&a.log_text()), scored_by(&b.log_text()));
    assert!(
        sa > 0 && sb > 0,
        "scored by a: {sa}, by b: {sb}\na:\n{}\nb:\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(
        sa + sb >= input.len() as u64,
        "a {sa} + b {sb} < {}",
        input.len()
    );
    // Each owns some, together all (what an operator's alert sums).
    let owned = |log: &str| {
        metric(
            &http_get(log, "/metrics").1,
            "riskstream_partitions_assigned",
        )
    };
    let (pa, pb) = (owned(&a.log_text()), owned(&b.log_text()));
    assert!(
        pa >= 1.0 && pb >= 1.0 && pa + pb == 4.0,
        "a owns {pa}, b {pb}"
    );
}

/// Records an instance decided, from its /metrics.
fn scored_by(log: &str) -> u64 {
    let (_, metrics) = http_get(log, "/metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("riskstream_records_scored_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Whether the worker's log shows a non-empty assignment.
fn assigned(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("partitions assigned") && !l.contains("partitions=[]"))
}

/// SIGKILL of one of two instances mid-stream, and no replacement: once the
/// dead member's session expires, Kafka hands its partitions to the
/// survivor. Every transaction is scored at least once; duplicates come
/// only from the killed instance's uncommitted work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_instance_loses_nothing() {
    let t = Topics::new("kill");
    t.create(4).await;
    // The default assignment (cooperative-sticky).
    let a = Worker::start(&t, &[]);
    let mut b = Worker::start(&t, &[]);
    assert!(wait_for(Duration::from_secs(60), || assigned(
        &a.log_text()
    ) && assigned(
        &b.log_text()
    )));
    let input = txs(100, 20_000);
    let half = input.len() / 2;
    produce_transactions(&t.input, &input[..half]).await;
    // Kill one instance while it is mid-stream.
    assert!(wait_for(Duration::from_secs(60), || {
        read_topic(&t.output, half / 4, Duration::from_millis(500)).len() >= half / 4
    }));
    b.signal("KILL");
    let status = b.child.wait().expect("wait for the killed worker");
    assert!(!status.success());
    produce_transactions(&t.input, &input[half..]).await;
    let ids: HashSet<&str> = input.iter().map(|t| t.transaction_id.as_str()).collect();
    let mut out = Vec::new();
    let complete = wait_for(Duration::from_secs(120), || {
        out = scored(&t.output, usize::MAX, Duration::from_secs(2));
        let seen: HashSet<&str> = out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
        ids.iter().all(|i| seen.contains(i))
    });
    assert!(
        complete,
        "not every transaction was scored by the survivor; a:\n{}",
        a.log_text()
    );
    // The survivor took every partition over by itself.
    assert_eq!(
        last_assignment(&a.log_text()).len(),
        4,
        "a:\n{}",
        a.log_text()
    );
    let dups = out.len() - ids.len();
    eprintln!("{dups} duplicates after the kill");
    // Duplicates only from the killed instance's uncommitted work: at most
    // the first half's records on the partitions it held when killed.
    let held = last_assignment(&b.log_text());
    assert!(!held.is_empty() && held.len() < 4, "{held:?}");
    let first: HashSet<&str> = input[..half]
        .iter()
        .map(|t| t.transaction_id.as_str())
        .collect();
    let codec = riskstream::codec::Codec::new().unwrap();
    let on_held = read_topic(&t.input, input.len(), Duration::from_secs(5))
        .iter()
        .filter(|r| held.contains(&r.partition))
        .filter(|r| {
            let tx = codec
                .decode_transaction(r.key.as_deref(), r.payload.as_deref())
                .unwrap();
            first.contains(tx.transaction_id.as_str())
        })
        .count();
    assert!(
        dups <= on_held,
        "{dups} duplicates, {on_held} records on {held:?}"
    );
}

/// `riskstream_records_replayed_total` from a /metrics body.
fn replayed(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("riskstream_records_replayed_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_false_while_state_rebuilds_and_true_after() {
    let t = Topics::new("ready");
    t.create(4).await;
    let n = 80_000;
    let input = txs(100, n);
    produce_transactions(&t.input, &input).await;
    // A scores everything and stops: its offsets are committed at the end.
    // Without the changelog (`--state-enabled=false`) B rebuilds customer state by
    // replaying the partitions' history: long enough to watch /readyz (the
    // changelog restore is in tests/state.rs).
    let mut a = Worker::start(
        &t,
        &["--state-enabled=false", "--max-records", &n.to_string()],
    );
    assert_eq!(
        a.wait(Duration::from_secs(120)),
        Some(0),
        "log:\n{}",
        a.log_text()
    );
    // B owns every partition and must replay them into customer state.
    let b = Worker::start(&t, &["--state-enabled=false"]);
    assert!(wait_for(Duration::from_secs(30), || b
        .log_text()
        .contains("serving /metrics")));
    let (mut rebuilding_seen, mut ready_after) = (false, false);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let log = b.log_text();
        let ready = http_get(&log, "/readyz").0.contains("200");
        let done = replayed(&http_get(&log, "/metrics").1).unwrap_or(0);
        if !ready && done > 0 && done < n as u64 {
            rebuilding_seen = true;
        }
        if ready {
            // Ready only once every committed record was replayed.
            assert_eq!(done, n as u64, "ready before the rebuild finished");
            ready_after = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        rebuilding_seen,
        "never saw /readyz false during the rebuild; log:\n{}",
        b.log_text()
    );
    assert!(ready_after, "never ready; log:\n{}", b.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_secrets_never_reach_logs_or_metrics() {
    let t = Topics::new("sasl");
    let secret = "s3cr3t-Pa55word";
    let log = std::env::temp_dir().join(format!("{}.log", unique("sasl")));
    // A "broker" that accepts connections and never answers: the worker
    // stays up (waiting for the cluster) long enough for /metrics to be
    // read, then gives up. (Against the real broker, which speaks no SASL
    // on this listener, it would exit before the scrape could connect.)
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "run",
            "--brokers",
            &silent_addr,
            "--group",
            &t.group,
            "--input-topic",
            &t.input,
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--device", "cpu"])
        .args([
            "--kafka",
            "security.protocol=SASL_PLAINTEXT",
            "--kafka",
            "sasl.mechanism=SCRAM-SHA-512",
        ])
        .args(["--kafka", "sasl.username=riskstream"])
        .env("RISKSTREAM_KAFKA_SASL_PASSWORD", secret)
        .env("RISKSTREAM_LOG", "debug")
        .current_dir(repo())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(30), || text()
            .contains("serving /metrics")),
        "{}",
        text()
    );
    let (_, metrics) = http_get(&text(), "/metrics");
    assert!(!metrics.contains(secret));
    // Nothing answers: the worker gives up with a clear error.
    let mut code = None;
    assert!(wait_for(Duration::from_secs(90), || {
        code = child.try_wait().unwrap().and_then(|s| s.code());
        code.is_some()
    }));
    let _ = child.kill();
    assert_eq!(code, Some(1), "{}", text());
    assert!(
        text().contains("cannot reach the Kafka cluster"),
        "{}",
        text()
    );
    assert!(!text().contains(secret), "the password leaked into the log");
}

/// A batch does not wait out its linger for records that are not there:
/// once the consumer has nothing more buffered, what was gathered is scored.
/// With a ten-minute linger and a batch maximum far above the input, every
/// record must still come out (the test would otherwise wait ten minutes
/// and fail on `scored`'s one-minute limit).
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_batch_is_scored_when_the_consumer_runs_dry() {
    let t = Topics::new("dry");
    t.create(2).await;
    let mut w = Worker::start(&t, &["--linger-ms", "600000", "--batch-max", "4096"]);
    // The worker is waiting: these records arrive while it idles.
    std::thread::sleep(Duration::from_secs(3));
    let input = txs(100, 37);
    produce_transactions(&t.input, &input).await;
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    assert_eq!(out.len(), input.len(), "log:\n{}", w.log_text());
    // And again after an idle spell: the batching state starts over.
    let more = txs(101, 5);
    produce_transactions(&t.input, &more).await;
    let out = scored(&t.output, input.len() + more.len(), Duration::from_secs(60));
    assert_eq!(
        out.len(),
        input.len() + more.len(),
        "log:\n{}",
        w.log_text()
    );
    w.stop_cleanly(Duration::from_secs(30));
}

/// The README's first command runs `riskstream demo` against the broker:
/// one day replayed, every transaction scored, a clean exit.
#[test]
fn demo_scores_every_replayed_transaction() {
    let day = riskstream::dataset::day_index("2018-07-01").unwrap();
    let mut expected = 0u64;
    riskstream::dataset::for_each_row::<riskstream::dataset::DatasetError>(&handbook_csv(), |r| {
        expected += u64::from(r.time_days == day);
        Ok(r.time_days <= day)
    })
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(repo())
        .args(["demo", "--brokers", &brokers(), "--csv"])
        .arg(handbook_csv())
        .args(["--from", "2018-07-01", "--to", "2018-07-01"])
        .env("RISKSTREAM_LOG", "warn")
        .output()
        .expect("run demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(expected > 5_000, "{expected}");
    assert!(
        err.contains(&format!("replay done: {expected} transactions")),
        "{err}"
    );
    assert!(err.contains(&format!("done: {expected} records")), "{err}");
}

/// A changelog partition is read to its end, also where its last offsets
/// are transaction markers and aborted records (a changelog written by a
/// transactional producer): the newest committed state of every customer
/// is the one restored. Three committed batches, each rewriting the same
/// 100 customers with one transaction more, then a fourth that is aborted.
#[tokio::test(flavor = "multi_thread")]
async fn a_changelog_restore_reads_the_newest_state_of_every_customer() {
    use riskstream::features::CustomerTx;
    use riskstream::state::{record, restore::Restorer};
    let topic = format!("{}.state", unique("restore"));
    riskstream::kafka::ensure_topics(&brokers(), &BTreeMap::new(), &[&topic], 1)
        .await
        .expect("create the changelog");
    let codec = Codec::new().unwrap();
    let known = codec.customer_state_schema();
    for batch in 0..4i64 {
        let records: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..100)
            .map(|c| {
                let customer = format!("c{c}");
                let txs: Vec<CustomerTx> = (0..=batch)
                    .map(|i| CustomerTx {
                        time: 1_000 * i,
                        amount: 10.0,
                        id: (c * 10 + i) as u64,
                        high: false,
                    })
                    .collect();
                let mut out = Vec::new();
                record::encode(
                    &known.header(),
                    &customer,
                    batch * 1_000 + c,
                    txs.iter(),
                    &mut out,
                );
                (Some(customer.into_bytes()), out)
            })
            .collect();
        write_transaction(&transactional_producer(), &topic, &records, batch < 3);
    }
    let restorer = Restorer::new(
        &brokers(),
        &BTreeMap::new(),
        &unique("restore-group"),
        &topic,
        known.fingerprint,
        Duration::from_secs(30),
    )
    .expect("restorer");
    let got = restorer.read(0).expect("read the changelog");
    assert_eq!(got.records, 300, "every record read");
    assert_eq!(got.bad, 0);
    assert_eq!(got.covers, Some(2_099), "the newest covered offset");
    assert_eq!(got.customers.len(), 100);
    for (customer, txs) in &got.customers {
        assert_eq!(txs.len(), 3, "{customer}: its newest state");
    }
}
