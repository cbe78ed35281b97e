//! Exactly-once delivery (`--delivery exactly-once`) on the three-node
//! Apache Kafka cluster of tests/failover.rs, under load: a consumer that
//! reads the output and dead-letter topics with
//! `isolation.level=read_committed` sees every input record exactly once,
//! either scored or dead-lettered, never both, never twice, never not at
//! all, and every score equals the offline engine's (restored state
//! included), across
//! - SIGKILLs of an instance at random moments (a seeded rng; the seed is
//!   printed, `RISKSTREAM_TEST_SEED` repeats it), each followed by a
//!   restart with the same `--group-instance-id`, whose transactional id
//!   fences the killed one's open transaction;
//! - a third instance joining and one leaving with SIGTERM (rebalances);
//! - SIGKILL of the broker leading an output partition and of the
//!   transaction coordinator of an instance's transactional id;
//! - a flood of undecodable records with one output too large for the
//!   producer (client-side limit) or for the output topic (the broker
//!   refuses it, which makes the transaction abortable): each is
//!   dead-lettered once with its reason, and the group's committed offsets
//!   reach the end of the input (no transaction aborted forever).
//!
//! At-least-once stays the default (`riskstream run --help`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use riskstream::codec::{Codec, ScoredTransaction, Transaction};

const PARTS: i32 = 6;
/// The mode under test.
const EOS: [&str; 2] = ["--delivery", "exactly-once"];
/// The session timeout of tests/failover.rs, for the tests that kill
/// brokers (it must outlast a group coordinator's failover).
const SESSION: [&str; 2] = ["--session-timeout-ms", "15000"];
/// The worker's default drain time.
const DRAIN: Duration = Duration::from_secs(30);
/// Longest the group may take to commit every input after the feed ended.
const CATCH_UP: Duration = Duration::from_secs(150);

/// The tests of this file share the cluster (and the 2-core machine's
/// time): one at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One `riskstream run --delivery exactly-once` instance with a
/// `--group-instance-id` of its own, restarted under the same id; its past
/// processes are kept for their logs.
struct Instance {
    id: String,
    args: Vec<String>,
    now: Worker,
    past: Vec<Worker>,
}

impl Instance {
    fn start(t: &Topics, name: &str, extra: &[&str]) -> Self {
        let id = format!("{name}-{}", unique("eos"));
        let mut args: Vec<String> = EOS.iter().map(|s| s.to_string()).collect();
        args.extend(["--group-instance-id".to_string(), id.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let now = Worker::start(t, &args.iter().map(String::as_str).collect::<Vec<_>>());
        Self {
            id,
            args,
            now,
            past: Vec::new(),
        }
    }

    /// SIGKILL, then the same instance again at once.
    fn kill_and_restart(&mut self, t: &Topics) {
        self.now.signal("KILL");
        assert!(self
            .now
            .wait(Duration::from_secs(10))
            .is_none_or(|c| c != 0));
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let next = Worker::start(t, &args);
        self.past.push(std::mem::replace(&mut self.now, next));
    }

    /// Waits until the current process serves /metrics.
    fn wait_serving(&self) {
        assert!(
            wait_for(Duration::from_secs(60), || self
                .now
                .log_text()
                .contains("serving /metrics")),
            "instance {} never served /metrics; log:\n{}",
            self.id,
            self.now.log_text()
        );
    }

    /// Its transactions so far (current process), from /metrics:
    /// (committed, aborted, the exposition's lines of the metric).
    fn transactions(&self) -> (f64, f64, String) {
        let (_, body) = http_get(&self.now.log_text(), "/metrics");
        let name = "riskstream_transactions_total";
        let lines: Vec<&str> = body.lines().filter(|l| l.starts_with(name)).collect();
        (
            labelled(&body, name, "reason=\"committed\""),
            labelled(&body, name, "reason=\"aborted\""),
            lines.join("; "),
        )
    }

    fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.past.iter().chain(std::iter::once(&self.now))
    }
}

/// The sum of a metric's series whose labels include `label` (0 if none).
fn labelled(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter(|rest| rest.split('}').next().is_some_and(|ls| ls.contains(label)))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Input records the group has committed, None when the broker does not
/// answer now (a busy coordinator: asked again).
fn committed_now(t: &Topics) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client().set("group.id", &t.group).create().ok()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTS {
        tpl.add_partition(&t.input, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    let elements = got.elements();
    let offsets = elements.iter().map(|e| match e.offset() {
        rdkafka::Offset::Offset(o) => o,
        _ => 0,
    });
    Some(offsets.sum())
}

/// The transactional id the worker derives for `--group-instance-id id`.
fn transactional_id(t: &Topics, id: &str) -> String {
    format!("riskstream-{}-{id}", t.group)
}

/// The node coordinating `transactional_id`'s transactions, as Kafka's own
/// `kafka-transactions.sh describe` reports it.
fn coordinator(transactional_id: &str) -> i32 {
    let out = Command::new(repo().join("scripts/kafka.sh"))
        .args(["transactions", "describe", "--transactional-id"])
        .arg(transactional_id)
        .env("BROKER_PORT", CLUSTER_PORT)
        .env("BROKER_NODES", "3")
        .output()
        .expect("run scripts/kafka.sh transactions describe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let (Some(head), Some(row)) = (lines.next(), lines.next()) else {
        panic!(
            "kafka-transactions describe {transactional_id}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let column = head
        .split_whitespace()
        .position(|c| c == "CoordinatorId" || c == "Coordinator")
        .unwrap_or_else(|| panic!("no coordinator column in: {head}"));
    row.split_whitespace()
        .nth(column)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no coordinator in: {head}\n{row}"))
}

/// The seed of this run's random kill times: `RISKSTREAM_TEST_SEED` or the
/// clock.
fn seed() -> u64 {
    std::env::var("RISKSTREAM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| riskstream::message::now_ms() as u64)
}

/// The lines of the instances' logs worth reading after a failure
/// (warnings, errors, transactions, fencing, rebalances), at most 40 per
/// process, each process named with its log file.
fn digest(instances: &[&Instance]) -> String {
    let mut out = String::new();
    for i in instances {
        for w in i.workers() {
            let log = w.log_text();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    [
                        "warn",
                        "error",
                        "transaction",
                        "fenc",
                        "abort",
                        "partitions ",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
                })
                .collect();
            out += &format!("--- instance {} ({}):\n", i.id, w.log.display());
            for l in &lines[lines.len().saturating_sub(40)..] {
                out += l;
                out.push('\n');
            }
        }
    }
    out
}

/// What the read_committed reader saw: per input id, its score or its
/// dead letter's reason.
struct Seen {
    scored: HashMap<String, ScoredTransaction>,
    dead: HashMap<String, String>,
}

/// The identity of each input record ((partition, offset) → transaction
/// id, or `undecodable@p:o`), checking that the input holds `inputs`
/// records with distinct ids (the feed produced each once).
fn input_ids(t: &Topics, inputs: usize) -> HashMap<(i32, i64), String> {
    let codec = Codec::new().unwrap();
    let (recs, _) = read_committed(&t.input, Duration::from_secs(60));
    let ids: HashMap<(i32, i64), String> = recs
        .iter()
        .map(|r| {
            let id = codec
                .decode_transaction(r.key.as_deref(), r.payload.as_deref())
                .map_or_else(
                    |_| format!("undecodable@{}:{}", r.partition, r.offset),
                    |tx| tx.transaction_id,
                );
            ((r.partition, r.offset), id)
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.values().collect();
    assert_eq!(
        (recs.len(), distinct.len()),
        (inputs, inputs),
        "the input topic holds each of the {inputs} inputs once"
    );
    ids
}

/// Where each id appears: scored (output partition:offset) or dead-lettered.
#[derive(Default, Debug)]
struct Places {
    scored: Vec<String>,
    dead: Vec<String>,
}

/// Reads the output and dead-letter topics as a read_committed consumer
/// and asserts that each input appears exactly once across them (with
/// counts and examples of what was lost, duplicated or came from no
/// input), that every score equals the offline engine's on `good` (the
/// decodable inputs, in input order) and that each flag follows its score.
fn assert_each_input_once(t: &Topics, inputs: usize, good: &[Transaction], logs: &str) -> Seen {
    let codec = Codec::new().unwrap();
    let ids = input_ids(t, inputs);
    let (out, out_ends) = read_committed(&t.output, Duration::from_secs(60));
    let (dlq, dlq_ends) = read_committed(&t.dlq, Duration::from_secs(60));
    let mut places: HashMap<&str, Places> = ids
        .values()
        .map(|id| (id.as_str(), Places::default()))
        .collect();
    let mut strangers = Vec::new();
    let mut seen = Seen {
        scored: HashMap::new(),
        dead: HashMap::new(),
    };
    for r in &out {
        let s = codec
            .decode_scored(r.payload.as_deref())
            .expect("scored record decodes");
        match places.get_mut(s.transaction_id.as_str()) {
            Some(p) => p.scored.push(format!("out {}:{}", r.partition, r.offset)),
            None => strangers.push(format!(
                "scored {} at {}:{}",
                s.transaction_id, r.partition, r.offset
            )),
        }
        seen.scored.insert(s.transaction_id.clone(), s);
    }
    for r in &dlq {
        let source = |h: &str| r.headers.get(h).and_then(|v| v.parse::<i64>().ok());
        let at = source("riskstream.source.partition").zip(source("riskstream.source.offset"));
        let id = at.and_then(|(p, o)| ids.get(&(p as i32, o)));
        let reason = r
            .headers
            .get("riskstream.reason")
            .cloned()
            .unwrap_or_default();
        match id.and_then(|id| places.get_mut(id.as_str()).map(|p| (id, p))) {
            Some((id, p)) => {
                p.dead
                    .push(format!("dlq {}:{} ({reason})", r.partition, r.offset));
                seen.dead.insert(id.clone(), reason);
            }
            None => strangers.push(format!(
                "dead letter at {}:{} of {at:?} ({reason})",
                r.partition, r.offset
            )),
        }
    }
    let lost: Vec<&str> = places
        .iter()
        .filter(|(_, p)| p.scored.len() + p.dead.len() == 0)
        .map(|(id, _)| *id)
        .collect();
    let twice: Vec<(&str, &Places)> = places
        .iter()
        .filter(|(_, p)| p.scored.len() + p.dead.len() > 1)
        .map(|(id, p)| (*id, p))
        .collect();
    let extra: usize = twice
        .iter()
        .map(|(_, p)| p.scored.len() + p.dead.len() - 1)
        .sum();
    eprintln!(
        "read_committed: {inputs} inputs, {} scored, {} dead-lettered; {} lost, {} duplicated ({extra} extra records), {} of no input",
        out.len(),
        dlq.len(),
        lost.len(),
        twice.len(),
        strangers.len()
    );
    assert!(
        lost.is_empty() && twice.is_empty() && strangers.is_empty(),
        "not exactly once: of {inputs} inputs, {} lost (e.g. {:?}), {} duplicated with {extra} extra records (e.g. {:?}), {} outputs of no input (e.g. {:?}); \
         output (next offset read, high watermark) {out_ends:?}, dead letters {dlq_ends:?}, committed {:?}\n{logs}",
        lost.len(),
        &lost[..lost.len().min(5)],
        twice.len(),
        &twice[..twice.len().min(5)],
        strangers.len(),
        &strangers[..strangers.len().min(5)],
        committed(&t.group, &t.input, PARTS),
    );
    assert_offline_scores(&seen, good);
    seen
}

/// Every scored record's score equals the offline engine's on `good` (in
/// input order) within 1e-5, and its flag is `score >= threshold`.
fn assert_offline_scores(seen: &Seen, good: &[Transaction]) {
    let offline = offline_scores_of(good);
    let mut differ = Vec::new();
    let mut flags = Vec::new();
    for (id, s) in &seen.scored {
        let Some(want) = offline.get(id) else {
            continue;
        };
        if (want - s.score).abs() > 1e-5 {
            differ.push((id.clone(), s.score, *want));
        }
        // A score within 1e-5 of the threshold may fall either side.
        if (want - s.threshold).abs() > 1e-5 && s.is_fraud != (*want >= s.threshold) {
            flags.push((id.clone(), s.is_fraud, *want, s.threshold));
        }
    }
    assert!(
        differ.is_empty() && flags.is_empty(),
        "{} of {} scores differ from offline (id, online, offline; e.g. {:?}); {} flags differ (id, flag, offline score, threshold; e.g. {:?})",
        differ.len(),
        seen.scored.len(),
        &differ[..differ.len().min(5)],
        flags.len(),
        &flags[..flags.len().min(5)]
    );
}

/// Waits for the group to commit all `inputs` (input partitions 0..PARTS),
/// reads the live instances' transactions (their /metrics), stops them
/// with SIGTERM, asserts each input once ([`assert_each_input_once`], the
/// instances in `gone` in the log digest too), then that none of them had
/// exited on its own and that they committed transactions.
fn finish_and_check(
    t: &Topics,
    all: &[Transaction],
    live: &mut [&mut Instance],
    gone: &[&Instance],
) -> Seen {
    let inputs = all.len();
    let all_committed = wait_for(CATCH_UP, || committed_now(t) == Some(inputs as i64));
    let mut views: Vec<&Instance> = live.iter().map(|i| &**i).collect();
    views.extend(gone);
    let logs = digest(&views);
    // Exit codes of the instances that should still run (None: running).
    let exits: Vec<(String, Option<i32>)> = live
        .iter_mut()
        .map(|i| {
            let code = i
                .now
                .child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| s.code().unwrap_or(-1));
            (i.id.clone(), code)
        })
        .collect();
    assert!(
        all_committed,
        "the group committed {:?} of {inputs} inputs within {CATCH_UP:?}; exit codes of the instances that should be running (None: running): {exits:?}\n{logs}",
        committed_now(t)
    );
    let mut done = 0.0;
    let mut exposed = Vec::new();
    for (i, (_, code)) in live.iter_mut().zip(&exits) {
        if code.is_some() {
            continue;
        }
        // SIGTERM once the process holds partitions: one that comes while
        // a worker is still starting (after /metrics is served, before
        // the pipeline starts) is not honoured in either mode (the drain
        // never ends).
        let held = wait_for(Duration::from_secs(60), || {
            !last_assignment(&i.now.log_text()).is_empty()
        });
        assert!(held, "instance {} holds no partition\n{logs}", i.id);
        let (committed, aborted, lines) = i.transactions();
        eprintln!(
            "instance {}: {} restarts; its last process committed {committed} transactions, aborted {aborted}",
            i.id,
            i.past.len()
        );
        done += committed;
        exposed.push(lines);
        i.now.stop_cleanly(DRAIN);
    }
    let seen = assert_each_input_once(t, inputs, all, &logs);
    assert!(
        exits.iter().all(|(_, code)| code.is_none()),
        "every input once, but instances exited on their own (instance, exit code): {exits:?}\n{logs}"
    );
    assert!(
        done > 0.0,
        "no riskstream_transactions_total{{reason=\"committed\"}} counted on /metrics; it exposes: {exposed:?}\n{logs}"
    );
    seen
}

/// An input record: key, payload.
type Raw = (Vec<u8>, Vec<u8>);

/// Inputs as (key, payload) records.
fn encoded(txs: &[Transaction]) -> Vec<Raw> {
    let codec = Codec::new().unwrap();
    txs.iter()
        .map(|t| {
            (
                t.customer_id.as_bytes().to_vec(),
                codec.encode_transaction(t).unwrap(),
            )
        })
        .collect()
}

/// Input produced in the background at a steady rate, idempotently, until
/// the test has done its faults (so each lands under load) and stops it.
struct Feed {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Feed {
    fn start(t: &Topics, txs: &[Transaction], per_s: usize) -> Self {
        let stop = std::sync::Arc::<std::sync::atomic::AtomicBool>::default();
        let task = feed_raw_until(t.input.clone(), encoded(txs), per_s, stop.clone());
        Self { stop, task }
    }

    fn running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Produces `tail` longer, then stops: the first how many of the
    /// transactions were produced (and acknowledged).
    async fn stop_after(self, tail: Duration) -> usize {
        assert!(
            self.running(),
            "the feed ran out before the faults were done: give it more records"
        );
        std::thread::sleep(tail);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("feed")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_points_scores_every_input_once() {
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t0 = Instant::now();
    let t = Topics::new("eos-kill");
    t.create(PARTS).await;
    let all = txs(20, 60_000);
    let seed = seed();
    eprintln!("seed {seed} (RISKSTREAM_TEST_SEED={seed} repeats these kill times)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pair = [
        Instance::start(&t, "a", &SESSION),
        Instance::start(&t, "b", &SESSION),
    ];
    pair.iter().for_each(Instance::wait_serving);
    // 2,000 records a second: about 200 a transaction.
    let feed = Feed::start(&t, &all, 2_000);
    let mut victim = rng.random_range(0..2usize);
    for k in 0..6 {
        // Each kill lands while the victim is scoring: it has delivered
        // since it started, and the feed runs.
        let v = &mut pair[victim];
        assert!(
            wait_for(Duration::from_secs(60), || v.now.delivered() > 0.0),
            "instance {} never delivered; log:\n{}",
            v.id,
            v.now.log_text()
        );
        let after = rng.random_range(300..2_500);
        std::thread::sleep(Duration::from_millis(after));
        eprintln!(
            "kill {k}: instance {} at {:.1} s ({after} ms after it delivered; feed running: {})",
            v.id,
            t0.elapsed().as_secs_f64(),
            feed.running()
        );
        v.kill_and_restart(&t);
        victim = 1 - victim;
    }
    // The restarted processes score new input too.
    let all = &all[..feed.stop_after(Duration::from_secs(4)).await];
    let [a, b] = &mut pair;
    finish_and_check(&t, all, &mut [a, b], &[]);
    delete_topics(&t).await;
    eprintln!("took {:.0} s", t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_instance_joins_and_one_leaves_under_load() {
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t0 = Instant::now();
    let t = Topics::new("eos-scale");
    t.create(PARTS).await;
    // A minute of feed at 2,000 a second: the join and the leave (each a
    // rebalance that commits at its barrier) land under load.
    let all = txs(25, 120_000);
    // The default session timeout: the leaver's partitions move 6 s after
    // it stops (a static member leaves no group on SIGTERM).
    let mut a = Instance::start(&t, "a", &[]);
    let mut b = Instance::start(&t, "b", &[]);
    a.wait_serving();
    b.wait_serving();
    let feed = Feed::start(&t, &all, 2_000);
    std::thread::sleep(Duration::from_secs(4));
    let mut c = Instance::start(&t, "c", &[]);
    assert!(
        wait_for(Duration::from_secs(60), || !last_assignment(
            &c.now.log_text()
        )
        .is_empty()),
        "C was given partitions\n{}",
        digest(&[&a, &b, &c])
    );
    eprintln!(
        "C joined at {:.1} s and holds {:?} (feed running: {})",
        t0.elapsed().as_secs_f64(),
        last_assignment(&c.now.log_text()),
        feed.running()
    );
    std::thread::sleep(Duration::from_secs(3));
    a.now.stop_cleanly(DRAIN);
    eprintln!(
        "A stopped at {:.1} s (feed running: {})",
        t0.elapsed().as_secs_f64(),
        feed.running()
    );
    // Its partitions move under load.
    let all = &all[..feed.stop_after(Duration::from_secs(10)).await];
    eprintln!(
        "B holds {:?}, C {:?}",
        last_assignment(&b.now.log_text()),
        last_assignment(&c.now.log_text())
    );
    finish_and_check(&t, all, &mut [&mut b, &mut c], &[&a]);
    delete_topics(&t).await;
    eprintln!("took {:.0} s", t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn output_leader_and_transaction_coordinator_killed_under_load() {
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t0 = Instant::now();
    let t = Topics::new("eos-brokers");
    t.create(PARTS).await;
    let all = txs(30, 160_000);
    let mut a = Instance::start(&t, "a", &SESSION);
    let mut b = Instance::start(&t, "b", &SESSION);
    a.wait_serving();
    b.wait_serving();
    // 800 records a second until both nodes are back (a node takes
    // 10-40 s to start again on a 2-core machine).
    let feed = Feed::start(&t, &all, 800);
    assert!(
        wait_for(Duration::from_secs(60), || a.now.delivered() > 0.0),
        "A delivers\n{}",
        digest(&[&a, &b])
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut victims = Vec::new();
    let out_leader = leader(&t.output, 0);
    victims.push(("leader of output partition 0", out_leader));
    kill_and_restart_node(out_leader, t0, &feed);
    std::thread::sleep(Duration::from_secs(2));
    let tid = transactional_id(&t, &a.id);
    let coord = coordinator(&tid);
    victims.push(("coordinator of A's transactions", coord));
    eprintln!(
        "{tid} is coordinated by node {coord}; the group by node {}",
        group_coordinator(&t.group)
    );
    kill_and_restart_node(coord, t0, &feed);
    let all = &all[..feed.stop_after(Duration::from_secs(4)).await];
    eprintln!("killed (what, node): {victims:?}");
    finish_and_check(&t, all, &mut [&mut a, &mut b], &[]);
    delete_topics(&t).await;
    eprintln!("took {:.0} s", t0.elapsed().as_secs_f64());
}

/// SIGKILL of `node`, 5 s down (its partitions move once its 4 s broker
/// session expires), then started again.
fn kill_and_restart_node(node: i32, t0: Instant, feed: &Feed) {
    eprintln!(
        "killing node {node} at {:.1} s (feed running: {})",
        t0.elapsed().as_secs_f64(),
        feed.running()
    );
    cluster(&["kill", &node.to_string()]);
    std::thread::sleep(Duration::from_secs(5));
    cluster(&["start"]);
    eprintln!("node {node} back at {:.1} s", t0.elapsed().as_secs_f64());
}

/// A transaction of `base`'s day whose scored output is over `bytes`
/// bytes: its transaction id, terminal id and currency are a third of
/// that each, in random letters (lz4, the worker's output compression,
/// cannot shrink them), its customer one of its own (no good record's
/// features depend on it).
fn oversized(base: &Transaction, bytes: usize, seed: u64) -> Transaction {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut letters = || -> String {
        (0..bytes / 3)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    Transaction {
        transaction_id: format!("big-{}", letters()),
        terminal_id: letters(),
        currency: letters(),
        customer_id: "oversized-customer".into(),
        ..base.clone()
    }
}

/// `good` with an undecodable record after every second one (keys spread
/// over the partitions) and `big` in the middle: the records, the
/// decodable transactions in input order, the number of undecodable ones.
fn flood(good: &[Transaction], big: &Transaction) -> (Vec<Raw>, Vec<Transaction>, usize) {
    let mut txs = good.to_vec();
    txs.insert(good.len() / 2, big.clone());
    let mut records = Vec::new();
    let mut bad = 0;
    for (i, rec) in encoded(&txs).into_iter().enumerate() {
        records.push(rec);
        if i % 2 == 1 {
            records.push((
                format!("bad-{i}").into_bytes(),
                format!("garbage {i}").into_bytes(),
            ));
            bad += 1;
        }
    }
    (records, txs, bad)
}

/// Feeds `good`, a flood of undecodable records and one oversized record
/// to one instance with `extra` options; asserts each input once, the
/// reasons (`not_single_object` for the flood, `output_too_large` for the
/// big one), that the committed offsets reached the end of the input and
/// that it committed transactions (/metrics); returns how many it aborted.
async fn poison_and_oversized(
    t: &Topics,
    good: &[Transaction],
    big: &Transaction,
    extra: &[&str],
) -> f64 {
    let (records, txs, bad) = flood(good, big);
    let n = records.len();
    let mut w = Instance::start(t, "a", extra);
    w.wait_serving();
    feed_raw_idempotently(t.input.clone(), records, 4_000)
        .await
        .expect("feed");
    let all_committed = wait_for(CATCH_UP, || committed_now(t) == Some(n as i64));
    let logs = digest(&[&w]);
    let ends: Vec<i64> = watermarks(&t.input, PARTS)
        .iter()
        .map(|(_, h)| *h)
        .collect();
    let at = committed(&t.group, &t.input, PARTS);
    assert!(
        all_committed && at == ends,
        "committed offsets {at:?}, input ends {ends:?}\n{logs}"
    );
    let transactions = w.transactions();
    w.now.stop_cleanly(DRAIN);
    let seen = assert_each_input_once(t, n, &txs, &logs);
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in seen.dead.values() {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    let (committed, aborted, exposed) = transactions;
    eprintln!("{n} inputs ({bad} undecodable): dead letters by reason {reasons:?}; transactions committed {committed}, aborted {aborted}");
    assert_eq!(
        seen.dead.get(&big.transaction_id).map(String::as_str),
        Some("output_too_large"),
        "the oversized output is dead-lettered\n{logs}"
    );
    let undecodable = seen
        .dead
        .iter()
        .filter(|(id, _)| id.starts_with("undecodable@"));
    assert!(
        undecodable.clone().all(|(_, r)| r == "not_single_object"),
        "{reasons:?}"
    );
    assert_eq!(
        (undecodable.count(), seen.dead.len(), seen.scored.len()),
        (bad, bad + 1, good.len()),
        "(undecodable dead-lettered, all dead-lettered, scored)"
    );
    assert!(
        committed > 0.0,
        "no riskstream_transactions_total{{reason=\"committed\"}} counted on /metrics; it exposes: {exposed}"
    );
    aborted
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_flood_and_an_oversized_record_commit_without_aborting_forever() {
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t0 = Instant::now();
    let t = Topics::new("eos-poison");
    t.create(PARTS).await;
    let good = txs(50, 8_000);
    // Ids within the default 1,024-byte limit; the output above the
    // producer's 3,000-byte message.max.bytes: librdkafka refuses it
    // before it is sent.
    let big = oversized(&good[0], 3_000, 1);
    let aborted =
        poison_and_oversized(&t, &good, &big, &["--kafka", "message.max.bytes=3000"]).await;
    assert!(aborted <= 3.0, "{aborted} transactions aborted");
    delete_topics(&t).await;
    eprintln!("took {:.0} s", t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_the_output_topic_refuses_as_too_large_is_dead_lettered_without_aborting_forever()
{
    let _one = CLUSTER.lock().await;
    cluster_up();
    let t0 = Instant::now();
    let t = Topics::new("eos-refused");
    // The output topic takes record batches of 10,000 bytes at most; the
    // worker's batches stay under 8,000 (batch.size), the big output is
    // 24,000: the broker refuses it (MESSAGE_TOO_LARGE), which makes the
    // transaction abortable.
    create_topic(&t.output, PARTS, &[("max.message.bytes", "10000")]).await;
    t.create(PARTS).await;
    let good = txs(55, 8_000);
    let big = oversized(&good[0], 24_000, 2);
    let extra = ["--max-id-bytes", "20000", "--kafka", "batch.size=8000"];
    let aborted = poison_and_oversized(&t, &good, &big, &extra).await;
    assert!(aborted <= 3.0, "{aborted} transactions aborted");
    delete_topics(&t).await;
    eprintln!("took {:.0} s", t0.elapsed().as_secs_f64());
}

/// Creates `topic` with these topic configs (replicated as the broker's
/// default).
async fn create_topic(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = client().create().expect("admin");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics");
    for r in res {
        r.map_err(|(t, e)| format!("{t}: {e}"))
            .expect("topic created");
    }
}

/// Deletes a passed test's topics, the changelog included: the cluster
/// lives on between runs, and a node restarted after SIGKILL recovers
/// every partition it holds before it serves (tests/failover.rs kills
/// nodes too).
async fn delete_topics(t: &Topics) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<_> = client().create().expect("admin");
    let all = t.for_mock();
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    // A topic never created (labels, drift slices) answers an error: fine.
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

#[test]
fn at_least_once_stays_the_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args(["run", "--help"])
        .output()
        .expect("riskstream run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let delivery = help
        .split("--delivery")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_else(|| panic!("no --delivery in:\n{help}"));
    assert!(
        delivery.contains("[default: at-least-once]"),
        "--delivery:{delivery}"
    );
}
