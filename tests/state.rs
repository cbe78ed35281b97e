//! Durable, bounded customer state, against Tansu's SQLite engine (it
//! fetches by record offset, keeps records and committed offsets across a
//! restart, and answers timestamp lookups from the records):
//! - a restart after the whole history was committed restores every
//!   partition from the changelog, replays nothing and scores the new
//!   records exactly as the offline engine does;
//! - kill -9 at five random points: nothing lost, every score (duplicates
//!   included) equal to offline;
//! - a label topic holding six months is read only from inside the
//!   terminal window.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use riskstream::codec::{Codec, FraudLabel, Transaction};

const PARTS: i32 = 4;
/// Consumer-group session timeout of the kill test's instances.
const SESSION: Duration = Duration::from_secs(2);

fn txs(from_day: i64, n: usize) -> Vec<Transaction> {
    rows(from_day, n).iter().map(|r| r.transaction()).collect()
}

/// Every online score equals the offline one (features equal).
fn assert_offline_scores(out: &[(Rec, riskstream::codec::ScoredTransaction)], all: &[Transaction]) {
    let offline = offline_scores_of(all);
    let mut differ = 0;
    for (_, s) in out {
        let want = offline[&s.transaction_id];
        if (want - s.score).abs() > 1e-5 {
            differ += 1;
        }
    }
    assert_eq!(
        differ,
        0,
        "{differ} of {} scores differ from offline",
        out.len()
    );
}

fn total_committed(t: &Topics) -> i64 {
    committed(&t.group, &t.input, PARTS)
        .iter()
        .map(|o| (*o).max(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_after_the_whole_history_was_committed_reads_only_new_input_and_scores_as_offline(
) {
    use_sqlite_broker();
    let t = Topics::new("restart");
    t.create(PARTS).await;
    let all = txs(10, 14_000);
    let (history, new) = all.split_at(12_000);
    produce_transactions(&t.input, history).await;
    let mut a = Worker::start(&t, &[]);
    assert!(
        wait_for(Duration::from_secs(180), || total_committed(&t)
            == history.len() as i64),
        "history committed; log:\n{}",
        a.log_text()
    );
    a.stop_cleanly(Duration::from_secs(30));
    produce_transactions(&t.input, new).await;
    let mut b = Worker::start(&t, &[]);
    let out = scored(&t.output, all.len(), Duration::from_secs(60));
    assert_eq!(out.len(), all.len(), "log:\n{}", b.log_text());
    let (_, m) = http_get(&b.log_text(), "/metrics");
    assert_eq!(metric(&m, "riskstream_records_replayed_total"), 0.0, "{m}");
    assert_eq!(
        metric(&m, "riskstream_records_consumed_total"),
        new.len() as f64,
        "only the new records are read"
    );
    assert_eq!(
        metric(&m, "riskstream_state_restores_total{reason=\"changelog\"}"),
        f64::from(PARTS),
        "{m}"
    );
    let customers: HashSet<&str> = history.iter().map(|t| t.customer_id.as_str()).collect();
    assert_eq!(
        metric(&m, "riskstream_state_restored_customers_total"),
        customers.len() as f64,
        "one changelog state per live customer"
    );
    let new_ids: HashSet<&str> = new.iter().map(|t| t.transaction_id.as_str()).collect();
    let restarted: Vec<_> = out
        .into_iter()
        .filter(|(_, s)| new_ids.contains(s.transaction_id.as_str()))
        .collect();
    assert_eq!(restarted.len(), new.len());
    assert_offline_scores(&restarted, &all);
    b.stop_cleanly(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_five_random_points_loses_nothing_and_recovers_offline_features() {
    use_sqlite_broker();
    let t = Topics::new("kill9");
    t.create(PARTS).await;
    let all = txs(20, 50_000);
    // Input keeps arriving while instances are killed (about 1,500/s).
    let input = t.input.clone();
    let feed = all.clone();
    let producer = tokio::spawn(async move {
        for chunk in feed.chunks(500) {
            produce_transactions(&input, chunk).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // A cheap, seeded source of "random" kill points (after 1–4 s).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ms = SESSION.as_millis().to_string();
    let session = ["--session-timeout-ms", ms.as_str()];
    for round in 0..5 {
        let w = Worker::start(&t, &session);
        // Wait until this instance has delivered something, then a little more.
        assert!(
            wait_for(Duration::from_secs(120), || {
                let log = w.log_text();
                log.contains("serving /metrics")
                    && metric(
                        &http_get(&log, "/metrics").1,
                        "riskstream_records_delivered_total",
                    ) > 0.0
            }),
            "round {round}: no progress; log:\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(next() % 3000));
        w.signal("KILL");
        drop(w);
        // Tansu hands a dead member's partitions to nobody if the
        // replacement joins before the member's session expired (README,
        // "The broker"): let it expire first.
        std::thread::sleep(SESSION + Duration::from_secs(1));
    }
    producer.await.expect("producer");
    let mut last = Worker::start(&t, &session);
    assert!(
        wait_for(Duration::from_secs(240), || total_committed(&t)
            == all.len() as i64),
        "everything committed in the end; log:\n{}",
        last.log_text()
    );
    last.stop_cleanly(Duration::from_secs(30));
    let out = scored(&t.output, usize::MAX, Duration::from_secs(5));
    let ids: HashSet<&str> = out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
    let lost = all
        .iter()
        .filter(|t| !ids.contains(t.transaction_id.as_str()))
        .count();
    assert_eq!(lost, 0, "nothing lost ({} outputs)", out.len());
    eprintln!(
        "{} inputs, {} outputs ({} duplicates after 5 kills)",
        all.len(),
        out.len(),
        out.len() - all.len()
    );
    assert_offline_scores(&out, &all);
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_of_six_months_are_read_only_from_inside_the_terminal_window() {
    use_sqlite_broker();
    let t = Topics::new("labels6m");
    t.create(2).await;
    let codec = Codec::new().unwrap();
    let day = riskstream::features::DAY_MS;
    let t0 = 1_530_403_200_000; // 2018-07-01
    let per_day = 200;
    let days = 183;
    let labels: Vec<(Option<Vec<u8>>, Vec<u8>, i64)> = (0..days * per_day)
        .map(|i| {
            let event_time = t0 + (i / per_day) * day + (i % per_day) * 1000;
            let l = FraudLabel {
                transaction_id: format!("l{i}"),
                customer_id: format!("c{}", i % 97),
                terminal_id: format!("m{}", i % 31),
                event_time,
                is_fraud: i % 50 == 0,
                reported_at: event_time + 7 * day,
            };
            (
                Some(l.terminal_id.clone().into_bytes()),
                codec.encode_label(&l).unwrap(),
                l.reported_at,
            )
        })
        .collect();
    produce_timestamped(&t.labels, &labels).await;
    let t_start = Instant::now();
    let mut w = Worker::start(&t, &[]);
    let ready = wait_for(Duration::from_secs(120), || {
        let log = w.log_text();
        log.contains("serving /metrics") && http_get(&log, "/readyz").0.contains("200")
    });
    assert!(ready, "ready; log:\n{}", w.log_text());
    let ready_s = t_start.elapsed().as_secs_f64();
    let (_, m) = http_get(&w.log_text(), "/metrics");
    let read = metric(&m, "riskstream_labels_consumed_total");
    // 37 days of window + a day of margin (+ the batch the lookup lands in).
    let window = (37 + 1 + 1) * per_day;
    eprintln!(
        "{read} of {} labels read; ready after {ready_s:.1} s",
        labels.len()
    );
    assert!(read > 0.0, "{m}");
    assert!(
        read <= window as f64,
        "{read} labels read, the window holds at most {window}"
    );
    w.stop_cleanly(Duration::from_secs(30));
}

/// Produces records with the given Kafka timestamps.
async fn produce_timestamped(topic: &str, records: &[(Option<Vec<u8>>, Vec<u8>, i64)]) {
    use rdkafka::producer::FutureRecord;
    let p = producer();
    let mut futs = Vec::new();
    for (k, v, ts) in records {
        let mut r: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(v.as_slice()).timestamp(*ts);
        if let Some(k) = k {
            r = r.key(k.as_slice());
        }
        loop {
            match p.send_result(r) {
                Ok(f) => {
                    futs.push(f);
                    break;
                }
                Err((_, back)) => {
                    r = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for f in futs {
        f.await.expect("delivery").expect("delivered");
    }
}
