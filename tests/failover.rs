//! Broker failover on a three-node Apache Kafka cluster of the test files'
//! own (`BROKER_NODES=3 scripts/broker.sh` on ports 19092-19094: every
//! topic replicated three times, `min.insync.replicas=2`; tests/exactly_once.rs
//! uses it too, test binaries run one at a time), under load:
//! - the leaders of the input, output, changelog and `__consumer_offsets`
//!   partitions killed with SIGKILL in turn and restarted: nothing lost,
//!   duplicates at most one batch per partition, scoring resumes within
//!   the election time;
//! - two of three brokers down (below `min.insync.replicas`): nothing lost
//!   or dead-lettered, the worker holds, SIGTERM still ends it within the
//!   drain time, and scoring resumes when a broker returns.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use riskstream::codec::Transaction;

const PARTS: i32 = 4;
/// The worker's default drain time.
const DRAIN: Duration = Duration::from_secs(30);
/// The instances' session timeout: it must outlast a group coordinator's
/// failover (the dead node's broker session, 4 s here, the election, and
/// loading the group on the new coordinator), or librdkafka takes the
/// session for lost, drops its partitions and rejoins, and the records
/// delivered since the last commit are scored again (4,863 duplicates in
/// one run with the worker's default 6 s).
const SESSION: [&str; 2] = ["--session-timeout-ms", "15000"];

/// The tests of this file share the cluster: one at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the feed and for the group to commit every input, stops `w`,
/// and checks the output: every input scored, nothing dead-lettered.
/// Returns the scoring times of the output (wall ms) and its duplicates.
async fn finish(
    t: &Topics,
    all: &[Transaction],
    producer: tokio::task::JoinHandle<()>,
    w: &mut Worker,
) -> (Vec<i64>, usize) {
    producer.await.expect("feed");
    assert!(
        wait_for(Duration::from_secs(240), || t.total_committed(PARTS)
            == all.len() as i64),
        "everything committed; log:\n{}",
        w.log_text()
    );
    w.stop_cleanly(DRAIN);
    let log = w.log_text();
    let out = scored(&t.output, usize::MAX, Duration::from_secs(5));
    let ids: HashSet<&str> = out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert_eq!(
        lost(all, &out),
        0,
        "nothing lost ({} outputs); lost (input partition, offset): {:?}; warnings:\n{}",
        out.len(),
        lost_at(&t.input, &ids),
        warnings.join("\n")
    );
    let dead = read_topic(&t.dlq, usize::MAX, Duration::from_secs(2));
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    let times = out.iter().map(|(_, s)| s.scored_at).collect();
    (times, out.len() - all.len())
}

/// The longest time without a scored record (`scored_at`, wall ms) between
/// `from` and `to`, and when it began.
fn longest_pause(scored_at: &[i64], from: i64, to: i64) -> (i64, i64) {
    let mut at: Vec<i64> = scored_at
        .iter()
        .copied()
        .filter(|s| (from..to).contains(s))
        .collect();
    // From `from` itself: a pause that began with a kill counts whole.
    at.push(from);
    at.sort_unstable();
    at.windows(2)
        .map(|w| (w[1] - w[0], w[0] - from))
        .max()
        .unwrap_or((to - from, 0))
}

#[tokio::test(flavor = "multi_thread")]
async fn leaders_killed_in_turn_under_load_lose_nothing_and_scoring_resumes_within_the_election_time(
) {
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t = Topics::new("failover");
    t.create(PARTS).await;
    // 1,000 records/s for 60 s.
    let all = txs(20, 60_000);
    let mut w = Worker::start(&t, &SESSION);
    assert!(
        wait_for(Duration::from_secs(60), || w
            .log_text()
            .contains("serving /metrics")),
        "{}",
        w.log_text()
    );
    let producer = feed_idempotently(t.input.clone(), all.clone(), 1_000);
    std::thread::sleep(Duration::from_secs(6));
    let t0 = riskstream::message::now_ms();
    let targets = [
        ("input", t.input.clone(), 0),
        ("output", t.output.clone(), 0),
        ("changelog", t.changelog(), 0),
        (
            "__consumer_offsets",
            "__consumer_offsets".to_string(),
            offsets_partition(&t.group),
        ),
    ];
    let mut killed = Vec::new();
    for (what, topic, partition) in &targets {
        let node = leader(topic, *partition);
        let at = riskstream::message::now_ms();
        cluster(&["kill", &node.to_string()]);
        std::thread::sleep(Duration::from_secs(6));
        cluster(&["start"]);
        killed.push((*what, node, at));
        std::thread::sleep(Duration::from_secs(4));
    }
    let t1 = riskstream::message::now_ms();
    let (times, duplicates) = finish(&t, &all, producer, &mut w).await;
    // Per kill, the longest time without a scored record in the 12 s after it.
    let pauses: Vec<(&str, i32, i64)> = killed
        .iter()
        .map(|(what, node, at)| (*what, *node, longest_pause(&times, *at, at + 12_000).0))
        .collect();
    let (pause, after) = longest_pause(&times, t0, t1);
    eprintln!(
        "{} inputs, {duplicates} duplicates; longest pause after each kill (leader of, node, ms): {pauses:?}; overall {pause} ms ({after} ms after the first kill)",
        all.len()
    );
    assert!(
        duplicates <= 512 * PARTS as usize,
        "{duplicates} duplicates: more than a batch per partition"
    );
    // A new leader is elected once the dead node's broker session (4 s)
    // expires; the clients find it at their next metadata refresh.
    assert!(
        pause < 15_000,
        "scoring paused {pause} ms after a leader was killed: {pauses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_three_brokers_down_loses_nothing_holds_stops_within_the_drain_time_and_resumes() {
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t = Topics::new("quorum");
    t.create(PARTS).await;
    let all = txs(25, 30_000);
    let mut a = Worker::start(&t, &SESSION);
    let producer = feed_idempotently(t.input.clone(), all.clone(), 1_000);
    assert!(
        wait_for(Duration::from_secs(60), || a.delivered() > 2_000.0),
        "{}",
        a.log_text()
    );
    // Below min.insync.replicas, and the controller quorum lost too.
    cluster(&["kill", "2"]);
    cluster(&["kill", "3"]);
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        matches!(a.child.try_wait(), Ok(None)),
        "the worker holds while two brokers are down; log:\n{}",
        a.log_text()
    );
    // SIGTERM: it drains what it can and ends within the drain time.
    let t0 = Instant::now();
    a.signal("TERM");
    let code = a.wait(DRAIN + Duration::from_secs(10));
    assert!(
        code.is_some() && t0.elapsed() < DRAIN + Duration::from_secs(5),
        "stopped after {:?} with {code:?}; log:\n{}",
        t0.elapsed(),
        a.log_text()
    );
    // A new instance waits with the cluster; one broker back and it scores.
    let mut b = Worker::start(&t, &SESSION);
    std::thread::sleep(Duration::from_secs(5));
    cluster(&["start"]);
    let (_, duplicates) = finish(&t, &all, producer, &mut b).await;
    eprintln!("{} inputs, {duplicates} duplicates", all.len());
    let ids: HashSet<&str> = all.iter().map(|t| t.transaction_id.as_str()).collect();
    assert_eq!(ids.len(), all.len());
}
