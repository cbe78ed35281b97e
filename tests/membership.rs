//! Consumer-group membership on Apache Kafka:
//! - KIP-848 (`--group-protocol consumer`, the broker assigns) is a
//!   supported choice: a second instance joins under load, nothing is
//!   lost, duplicates stay within a batch per moved partition, every score
//!   equals offline;
//! - static membership: an instance restarted with the same
//!   `--group-instance-id` within its session timeout gets its partitions
//!   back without a rebalance, and the other instance's partitions never
//!   pause.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const PARTS: i32 = 4;

/// The tests of this file measure pauses: one at a time.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Partitions held now by the instance that wrote `log`.
fn holds(log: &str) -> Vec<i32> {
    let mut h = held_after(log.lines());
    h.sort_unstable();
    h
}

/// The longest gap between two scored records of `partitions` whose
/// scoring time falls in `from..to` (wall ms).
fn longest_gap(
    out: &[(Rec, riskstream::codec::ScoredTransaction)],
    partitions: &[i32],
    from: i64,
    to: i64,
) -> i64 {
    partitions
        .iter()
        .map(|p| {
            let mut at: Vec<i64> = out
                .iter()
                .filter(|(r, s)| r.partition == *p && (from..to).contains(&s.scored_at))
                .map(|(_, s)| s.scored_at)
                .collect();
            at.sort_unstable();
            at.windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(to - from)
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn kip_848_consumer_protocol_scales_out_under_load_without_loss() {
    let _one = ONE.lock().await;
    let t = Topics::new("kip848");
    t.create(PARTS).await;
    let all = txs(30, 30_000);
    let opts = ["--group-protocol", "consumer"];
    let mut a = Worker::start(&t, &opts);
    assert!(
        wait_for(Duration::from_secs(60), || holds(&a.log_text()).len()
            == PARTS as usize),
        "A owns every partition; log:\n{}",
        a.log_text()
    );
    let producer = feed(&t.input, all.clone(), 200);
    std::thread::sleep(Duration::from_secs(5));
    let mut b = Worker::start(&t, &opts);
    producer.await.expect("producer");
    assert!(
        wait_for(Duration::from_secs(120), || t.total_committed(PARTS)
            == all.len() as i64),
        "everything committed; logs:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    let (la, lb) = (a.log_text(), b.log_text());
    let (ha, hb) = (holds(&la), holds(&lb));
    a.stop_cleanly(Duration::from_secs(30));
    b.stop_cleanly(Duration::from_secs(30));
    assert!(
        !ha.is_empty() && !hb.is_empty() && ha.len() + hb.len() == PARTS as usize,
        "the broker shared the partitions: A {ha:?}, B {hb:?}; logs:\n{la}\n{lb}"
    );
    let out = scored(&t.output, usize::MAX, Duration::from_secs(5));
    let ids: HashSet<&str> = out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "nothing lost");
    let duplicates = out.len() - all.len();
    eprintln!("KIP-848: A {ha:?}, B {hb:?}; {duplicates} duplicates");
    assert!(
        duplicates <= 512 * hb.len(),
        "{duplicates} duplicates for {} moved partitions",
        hb.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_restarted_within_its_session_gets_its_partitions_back_without_a_rebalance()
{
    let _one = ONE.lock().await;
    let t = Topics::new("static");
    t.create(PARTS).await;
    let all = txs(30, 30_000);
    let member = |id: &'static str| ["--group-instance-id", id, "--session-timeout-ms", "20000"];
    let mut a = Worker::start(&t, &member("static-a"));
    let mut b = Worker::start(&t, &member("static-b"));
    let shared = || {
        let (ha, hb) = (holds(&a.log_text()), holds(&b.log_text()));
        !ha.is_empty() && !hb.is_empty() && ha.len() + hb.len() == PARTS as usize
    };
    assert!(
        wait_for(Duration::from_secs(60), shared),
        "A and B share the partitions; logs:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    let held_a = holds(&a.log_text());
    let held_b = holds(&b.log_text());
    let b_lines = b.log_text().lines().count();
    let producer = feed(&t.input, all.clone(), 200);
    std::thread::sleep(Duration::from_secs(4));
    // A restart, as a rolling update does it: SIGTERM, then the same
    // instance id again, well within the session timeout.
    let restart_at = riskstream::message::now_ms();
    a.stop_cleanly(Duration::from_secs(30));
    let mut a2 = Worker::start(&t, &member("static-a"));
    producer.await.expect("producer");
    assert!(
        wait_for(Duration::from_secs(120), || t.total_committed(PARTS)
            == all.len() as i64),
        "everything committed; logs:\n{}\n{}",
        a2.log_text(),
        b.log_text()
    );
    let end = riskstream::message::now_ms();
    let (la2, lb) = (a2.log_text(), b.log_text());
    a2.stop_cleanly(Duration::from_secs(30));
    b.stop_cleanly(Duration::from_secs(30));
    assert_eq!(
        holds(&la2),
        held_a,
        "A's partitions came back to A; log:\n{la2}"
    );
    // B saw no rebalance: nothing revoked or assigned since the restart.
    let since: Vec<&str> = lb
        .lines()
        .skip(b_lines)
        .filter(|l| l.contains("partitions revoked") || l.contains("partitions assigned"))
        .collect();
    assert!(since.is_empty(), "B was rebalanced: {since:?}");
    let out = scored(&t.output, usize::MAX, Duration::from_secs(5));
    let ids: HashSet<&str> = out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "nothing lost");
    let gap = longest_gap(
        &out,
        &held_b,
        restart_at - 1_000,
        end.min(restart_at + 10_000),
    );
    eprintln!(
        "A {held_a:?} restarted, B {held_b:?}: B's longest gap {gap} ms; {} duplicates",
        out.len() - all.len()
    );
    assert!(
        gap < 1_000,
        "B's partitions paused {gap} ms while A restarted"
    );
}

/// Two processes with one `--group-instance-id` (a misconfiguration, or a
/// successor started before its predecessor died): the broker fences one;
/// it notices while idle, starts its pipeline again with a new consumer
/// (which fences the other in turn), and after 3 restarts within 10
/// minutes exits with the reason instead of fencing back for ever.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_with_one_instance_id_fence_each_other_then_one_stops_with_the_reason() {
    let _one = ONE.lock().await;
    let t = Topics::new("twins");
    t.create(PARTS).await;
    let member = [
        "--group-instance-id",
        "twin",
        "--session-timeout-ms",
        "10000",
    ];
    let mut a = Worker::start(&t, &member);
    assert!(
        wait_for(Duration::from_secs(60), || !holds(&a.log_text()).is_empty()),
        "A joins; log:\n{}",
        a.log_text()
    );
    let mut b = Worker::start(&t, &member);
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let (code, log, other) = loop {
        if let Some(code) = a.wait(Duration::from_millis(500)) {
            break (code, a.log_text(), &mut b);
        }
        if let Some(code) = b.wait(Duration::from_millis(500)) {
            break (code, b.log_text(), &mut a);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither twin stopped within 240 s; logs:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
    };
    let restarts = log.matches("starting the pipeline again").count();
    assert_eq!(restarts, 3, "three restarts before giving up; log:\n{log}");
    assert_ne!(code, 0, "exit status; log:\n{log}");
    assert!(
        log.contains("fenced this consumer's group.instance.id"),
        "the reason is said; log:\n{log}"
    );
    // The twin left standing restarted too (it was fenced at least once)
    // and still serves.
    let (_, body) = http_get(&other.log_text(), "/metrics");
    assert!(
        metric(&body, "riskstream_pipeline_restarts_total") >= 1.0,
        "the other twin counts its restarts:\n{body}"
    );
    other.stop_cleanly(Duration::from_secs(30));
}
