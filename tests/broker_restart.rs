//! The broker killed (SIGKILL) and restarted mid-stream: an Apache Kafka
//! node of this test's own on port 9095, started through
//! `scripts/broker.sh` (it keeps its log and committed offsets across the
//! restart). Nothing is lost; no transaction comes out more than twice.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const PORT: &str = "9095";
const PARTS: i32 = 2;

fn broker(args: &[&str]) {
    let ok = Command::new(repo().join("scripts/broker.sh"))
        .args(args)
        .env("BROKER_PORT", PORT)
        .status()
        .expect("run scripts/broker.sh")
        .success();
    assert!(ok, "scripts/broker.sh {args:?}");
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
    // Killed after a commit: what at-least-once bounds (one more copy of
    // what was delivered since the last commit) needs a last commit. A
    // kill before the first one replays everything delivered so far, and
    // a rebalance before the next commit can replay it once more.
    assert!(
        wait_for(Duration::from_secs(120), || w.delivered() > 2_000.0
            && t.total_committed(PARTS) > 0),
        "progress and a commit before the kill; log:\n{}",
        w.log_text()
    );
    broker(&["kill", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    broker(&["start"]);
    let done = wait_for(Duration::from_secs(180), || {
        t.total_committed(PARTS) == input.len() as i64
    });
    assert!(
        done,
        "everything committed after the restart; log:\n{}",
        w.log_text()
    );
    w.stop_cleanly(Duration::from_secs(30));
    let out = scored(&t.output, usize::MAX, Duration::from_secs(5));
    let missing = lost(&input, &out);
    let duplicates = out.len() + missing - input.len();
    eprintln!(
        "{} inputs, {} outputs, {duplicates} duplicates",
        input.len(),
        out.len()
    );
    broker(&["stop", "--wipe"]);
    assert_eq!(missing, 0, "nothing lost");
    // Duplicates: outputs acknowledged by the broker but whose input
    // offsets were not yet committed when it died come out again after the
    // restart (at most a flush interval and a commit interval of work).
    // Once more at most, never twice.
    let mut times: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (_, s) in &out {
        *times.entry(s.transaction_id.as_str()).or_default() += 1;
    }
    let worst = times.values().copied().max().unwrap_or(0);
    assert!(worst <= 2, "a transaction came out {worst} times");
}
