//! Kafka's own tools agree with riskstream: after a run,
//! `kafka-consumer-groups --describe` shows lag 0 on every input partition
//! of the group, and `kafka-console-consumer` reads every scored record
//! (through `scripts/kafka.sh`, the wrapper users run them with).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;

const PARTS: i32 = 4;

/// Runs `scripts/kafka.sh TOOL ARGS` against the broker under test; its
/// stdout and stderr.
fn kafka_tool(tool: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(repo().join("scripts/kafka.sh"))
        .arg(tool)
        .args(["--bootstrap-server", &brokers()])
        .args(args)
        .output()
        .expect("run scripts/kafka.sh");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "kafka.sh {tool} {args:?}: {stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// Partition → LAG of `topic` in `kafka-consumer-groups --describe`.
fn lags(describe: &str, topic: &str) -> BTreeMap<i32, String> {
    let mut lines = describe.lines().skip_while(|l| !l.starts_with("GROUP"));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (t, p, lag) = (col("TOPIC"), col("PARTITION"), col("LAG"));
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.get(t) == Some(&topic))
        .map(|c| (c[p].parse().expect("partition"), c[lag].to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_tools_show_lag_zero_and_read_every_scored_record() {
    let t = Topics::new("tools");
    t.create(PARTS).await;
    let input = txs(12, 4_000);
    produce_transactions(&t.input, &input).await;
    let mut w = Worker::start(&t, &[]);
    let done = wait_for(Duration::from_secs(120), || {
        t.total_committed(PARTS) == input.len() as i64
    });
    assert!(done, "everything committed; log:\n{}", w.log_text());
    w.stop_cleanly(Duration::from_secs(30));

    let (describe, _) = kafka_tool("consumer-groups", &["--describe", "--group", &t.group]);
    let lag = lags(&describe, &t.input);
    assert_eq!(lag.len(), PARTS as usize, "{describe}");
    assert!(lag.values().all(|l| l == "0"), "{describe}");

    let n = input.len().to_string();
    let (out, err) = kafka_tool(
        "console-consumer",
        &[
            "--topic",
            &t.output,
            "--from-beginning",
            "--max-messages",
            &n,
            "--timeout-ms",
            "30000",
            "--property",
            "print.key=true",
            "--property",
            "print.value=false",
        ],
    );
    assert!(
        err.contains(&format!("Processed a total of {n} messages")),
        "{err}"
    );
    // Keys are the customer ids, as riskstream wrote them.
    let mut keys: Vec<&str> = out.lines().collect();
    let mut want: Vec<&str> = input.iter().map(|t| t.customer_id.as_str()).collect();
    keys.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys, want);
}
