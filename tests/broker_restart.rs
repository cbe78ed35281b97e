//! The broker killed (SIGKILL) and restarted mid-stream: a broker of this
//! test's own (Tansu's SQLite engine, which keeps records and committed
//! offsets across a restart) on port 9095, started through
//! `scripts/broker.sh`. Nothing is lost; duplicates stay within what was in
//! flight at the kill.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::*;

const PORT: &str = "9095";
const PARTS: i32 = 2;

fn broker(args: &[&str]) {
    let ok = Command::new(repo().join("scripts/broker.sh"))
        .args(args)
        .env("BROKER_PORT", PORT)
        .env("BROKER_STORAGE", "sqlite")
        .status()
        .expect("run scripts/broker.sh")
        .success();
    assert!(ok, "scripts/broker.sh {args:?}");
}

fn kill_broker() {
    let cache = std::env::var("RISKSTREAM_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/riskstream",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let pid =
        std::fs::read_to_string(format!("{cache}/broker-{PORT}/tansu.pid")).expect("pid file");
    let ok = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "broker killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_and_restarted_mid_stream_loses_nothing() {
    broker(&["stop", "--wipe"]);
    broker(&["start"]);
    use_broker(&format!("127.0.0.1:{PORT}"));
    let t = Topics::new("brokerkill");
    t.create(PARTS).await;
    let input: Vec<_> = rows(40, 16_000).iter().map(|r| r.transaction()).collect();
    produce_transactions(&t.input, &input).await;
    let mut w = Worker::start(&t, &[]);
    assert!(
        wait_for(Duration::from_secs(120), || {
            let log = w.log_text();
            log.contains("serving /metrics")
                && metric(
                    &http_get(&log, "/metrics").1,
                    "riskstream_records_delivered_total",
                ) > 2_000.0
        }),
        "progress before the kill; log:\n{}",
        w.log_text()
    );
    kill_broker();
    std::thread::sleep(Duration::from_secs(3));
    broker(&["start"]);
    let done = wait_for(Duration::from_secs(180), || {
        committed(&t.group, &t.input, PARTS)
            .iter()
            .map(|o| (*o).max(0))
            .sum::<i64>()
            == input.len() as i64
    });
    assert!(
        done,
        "everything committed after the restart; log:\n{}",
        w.log_text()
    );
    w.stop_cleanly(Duration::from_secs(30));
    let out = scored(&t.output, usize::MAX, Duration::from_secs(5));
    let ids: HashSet<&str> = out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
    let lost = input
        .iter()
        .filter(|t| !ids.contains(t.transaction_id.as_str()))
        .count();
    let duplicates = out.len() - ids.len();
    eprintln!(
        "{} inputs, {} outputs, {duplicates} duplicates",
        input.len(),
        out.len()
    );
    broker(&["stop", "--wipe"]);
    assert_eq!(lost, 0, "nothing lost");
    // The worker itself does not restart, so nothing is re-consumed; what
    // can come twice is output in flight at the kill: Tansu forgets the
    // idempotent producer's sequence numbers across a restart (Kafka keeps
    // them), so requests it wrote but did not acknowledge are written again
    // when librdkafka retries. That is bounded by the records the sink
    // keeps in flight (`queue_records`, 8192) plus a batch per partition.
    assert!(
        duplicates <= 8192 + 512 * PARTS as usize,
        "{duplicates} duplicates: more than the records in flight at the kill"
    );
}
