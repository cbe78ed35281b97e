//! Test helpers: the real broker's address, unique topics, worker processes,
//! producing records and reading topics back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use riskstream::codec::{Codec, Transaction};
use riskstream::dataset::{for_each_row, HandbookRow};

/// Set by [`use_broker`]: this test binary talks to that broker.
static BROKER_OVERRIDE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

thread_local! {
    /// Set by [`use_broker_on_this_thread`]: the helpers called from this
    /// thread talk to that broker.
    static THREAD_BROKER: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The broker under test: the one set for this thread by
/// [`use_broker_on_this_thread`], else the one set by [`use_broker`], else
/// Apache Kafka started by scripts/test.sh (`RISKSTREAM_TEST_BROKERS`).
/// Without any of them the test fails, saying how to start one.
pub fn brokers() -> String {
    if let Some(b) = THREAD_BROKER.with(|b| b.borrow().clone()) {
        return b;
    }
    if let Some(b) = BROKER_OVERRIDE.get() {
        return b.clone();
    }
    match std::env::var("RISKSTREAM_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => panic!(
            "RISKSTREAM_TEST_BROKERS is not set: this tier-2 test needs Apache Kafka. \
             Run scripts/test.sh, or `scripts/broker.sh start` and \
             `export RISKSTREAM_TEST_BROKERS=127.0.0.1:9092` (docs/testing.md)"
        ),
    }
}

/// Every helper of this test binary uses the broker at `addr`.
pub fn use_broker(addr: &str) {
    let _ = BROKER_OVERRIDE.set(addr.to_string());
}

/// The helpers called from this thread use the broker at `addr` (a mock
/// cluster of one test): tests of one binary, each on a thread of its
/// own, can each have theirs and run side by side. The body of a
/// `#[tokio::test]` runs on the test's thread; tasks it spawns do not.
pub fn use_broker_on_this_thread(addr: &str) {
    THREAD_BROKER.with(|b| *b.borrow_mut() = Some(addr.to_string()));
}

/// Set by [`use_client_options`]: librdkafka options of every client.
static CLIENT_OPTIONS: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();

/// Every client of this test binary's helpers sets these librdkafka
/// options (a broker that wants credentials: SASL, TLS).
pub fn use_client_options(options: BTreeMap<String, String>) {
    let _ = CLIENT_OPTIONS.set(options);
}

/// The librdkafka options set by [`use_client_options`] (none by default).
pub fn client_options() -> BTreeMap<String, String> {
    CLIENT_OPTIONS.get().cloned().unwrap_or_default()
}

/// A client config for the broker under test, with [`client_options`].
pub fn client() -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    for (k, v) in client_options() {
        c.set(k, v);
    }
    c
}

/// The value of a series without labels (or the sum over its labels) in
/// a Prometheus exposition; 0 when absent.
pub fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Transactions of `input` with no output in `out`.
pub fn lost(input: &[Transaction], out: &[(Rec, riskstream::codec::ScoredTransaction)]) -> usize {
    let ids: std::collections::HashSet<&str> =
        out.iter().map(|(_, s)| s.transaction_id.as_str()).collect();
    input
        .iter()
        .filter(|t| !ids.contains(t.transaction_id.as_str()))
        .count()
}

/// Offline scores (transaction id → score) of `txs` in order: the one
/// feature engine without labels, the shipped champion model.
pub fn offline_scores_of(txs: &[Transaction]) -> std::collections::HashMap<String, f32> {
    use riskstream::model::{choose_device, Scorer};
    let feats = offline_features(txs);
    let loc = riskstream::registry::resolve(&repo().join("models"), "fraud-mlp@champion").unwrap();
    let mut scorer = Scorer::load(
        &loc,
        choose_device(riskstream::config::DeviceChoice::Cpu).unwrap(),
    )
    .unwrap();
    let mut out = std::collections::HashMap::new();
    for (t, f) in txs.chunks(512).zip(feats.chunks(512)) {
        for (t, s) in t.iter().zip(scorer.score(f).unwrap()) {
            out.insert(t.transaction_id.clone(), s);
        }
    }
    out
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn handbook_csv() -> PathBuf {
    repo().join("../shared/data/handbook/transactions.csv.gz")
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Topics of one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    pub output: String,
    pub labels: String,
    pub dlq: String,
    pub drift: String,
    pub group: String,
}

impl Topics {
    pub fn new(name: &str) -> Self {
        let base = unique(name);
        Self {
            input: format!("{base}.in"),
            output: format!("{base}.out"),
            labels: format!("{base}.labels"),
            dlq: format!("{base}.dlq"),
            drift: format!("{base}.drift"),
            group: format!("{base}.group"),
        }
    }

    /// The group's state changelog (the worker's default name).
    pub fn changelog(&self) -> String {
        riskstream::state::StateConfig::default_topic(&self.input, &self.group)
    }

    /// Every topic a worker of this test uses, the changelog included (for
    /// librdkafka's mock cluster, which has no CreateTopics).
    pub fn for_mock(&self) -> Vec<String> {
        let mut all: Vec<String> = [
            &self.input,
            &self.output,
            &self.labels,
            &self.dlq,
            &self.drift,
        ]
        .into_iter()
        .cloned()
        .collect();
        all.push(self.changelog());
        all.push(riskstream::drift::sidecar::slices_topic(&self.drift));
        all
    }

    /// Records the group has committed on the input's `partitions` (an
    /// unset offset counts 0).
    pub fn total_committed(&self, partitions: i32) -> i64 {
        committed(&self.group, &self.input, partitions)
            .iter()
            .map(|o| (*o).max(0))
            .sum()
    }

    pub async fn create(&self, partitions: i32) {
        riskstream::kafka::ensure_topics(
            &brokers(),
            &client_options(),
            &[
                &self.input,
                &self.output,
                &self.labels,
                &self.dlq,
                &self.drift,
            ],
            partitions,
        )
        .await
        .expect("create topics");
    }
}

/// First `n` handbook rows from `from_day` on.
pub fn rows(from_day: i64, n: usize) -> Vec<HandbookRow> {
    let mut out = Vec::new();
    for_each_row::<riskstream::dataset::DatasetError>(&handbook_csv(), |r| {
        if r.time_days >= from_day {
            out.push(r);
        }
        Ok(out.len() < n)
    })
    .expect("read handbook");
    out
}

pub fn producer() -> FutureProducer {
    client().set("linger.ms", "5").create().expect("producer")
}

/// Produces raw records and waits for every delivery.
pub async fn produce_raw(topic: &str, records: &[(Option<Vec<u8>>, Vec<u8>)]) {
    let stamped: Vec<_> = records
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), None))
        .collect();
    produce_stamped(topic, &stamped).await;
}

/// A raw record: key, payload, Kafka timestamp (None: now).
pub type Stamped = (Option<Vec<u8>>, Vec<u8>, Option<i64>);

/// Produces raw records, each with its Kafka timestamp, and waits for
/// every delivery.
pub async fn produce_stamped(topic: &str, records: &[Stamped]) {
    let p = producer();
    let mut futs = Vec::new();
    for (k, v, ts) in records {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(v.as_slice());
        if let Some(k) = k {
            r = r.key(k.as_slice());
        }
        if let Some(ts) = ts {
            r = r.timestamp(*ts);
        }
        // Enqueue at once (`send` would wait for each delivery in turn).
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

/// Produces transactions (key = customer id).
pub async fn produce_transactions(topic: &str, txs: &[Transaction]) {
    let codec = Codec::new().unwrap();
    let recs: Vec<_> = txs
        .iter()
        .map(|t| {
            (
                Some(t.customer_id.as_bytes().to_vec()),
                codec.encode_transaction(t).unwrap(),
            )
        })
        .collect();
    produce_raw(topic, &recs).await;
}

/// A transactional producer of its own (a fresh `transactional.id`), its
/// transactions initialised.
pub fn transactional_producer() -> rdkafka::producer::BaseProducer {
    use rdkafka::producer::Producer;
    let producer: rdkafka::producer::BaseProducer = client()
        .set("transactional.id", unique("upstream"))
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    producer
}

/// Writes raw records in one transaction of `producer`, then commits it or
/// (having written them) aborts it.
pub fn write_transaction(
    producer: &rdkafka::producer::BaseProducer,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    commit: bool,
) {
    use rdkafka::producer::{BaseRecord, Producer};
    let t = Duration::from_secs(30);
    producer.begin_transaction().expect("begin");
    for (key, payload) in records {
        let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        producer.send(rec).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(t).expect("written");
    if commit {
        producer.commit_transaction(t).expect("commit");
    } else {
        producer.abort_transaction(t).expect("abort");
    }
}

/// Produces `committed` as an upstream service with a transactional
/// producer would: in transactions of `chunk` records, each followed by a
/// transaction of the next `chunk` of `aborted` that is written and then
/// aborted (while any are left). The topic's offsets then have gaps: a
/// commit or abort marker after every transaction, and aborted records
/// that `read_committed` consumers never see. The last transaction commits.
pub fn produce_in_transactions(
    topic: &str,
    committed: &[Transaction],
    aborted: &[Transaction],
    chunk: usize,
) {
    let codec = Codec::new().unwrap();
    let raw = |txs: &[Transaction]| -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        txs.iter()
            .map(|t| {
                let payload = codec.encode_transaction(t).unwrap();
                (Some(t.customer_id.as_bytes().to_vec()), payload)
            })
            .collect()
    };
    let producer = transactional_producer();
    let mut aborts = aborted.chunks(chunk);
    for c in committed.chunks(chunk) {
        write_transaction(&producer, topic, &raw(c), true);
        if let Some(a) = aborts.next() {
            write_transaction(&producer, topic, &raw(a), false);
        }
    }
}

/// The (low, high) watermarks of each of `topic`'s `partitions`.
pub fn watermarks(topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = client().create().expect("consumer");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
        })
        .collect()
}

/// Transactions of `n` handbook rows from `from_day` on.
pub fn txs(from_day: i64, n: usize) -> Vec<Transaction> {
    rows(from_day, n).iter().map(|r| r.transaction()).collect()
}

/// Produces `txs` to `topic` in the background, `per_tick` records every
/// 100 ms.
pub fn feed(topic: &str, txs: Vec<Transaction>, per_tick: usize) -> tokio::task::JoinHandle<()> {
    let topic = topic.to_string();
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now();
        for chunk in txs.chunks(per_tick) {
            produce_transactions(&topic, chunk).await;
            next += Duration::from_millis(100);
            tokio::time::sleep_until(next).await;
        }
    })
}

/// Input (partition, offset) of the records whose transaction id is not
/// in `scored`, first 50.
pub fn lost_at(input: &str, scored: &std::collections::HashSet<&str>) -> Vec<(i32, i64)> {
    let codec = Codec::new().unwrap();
    let mut lost: Vec<(i32, i64)> = read_topic(input, usize::MAX, Duration::from_secs(5))
        .into_iter()
        .filter(|r| {
            codec
                .decode_transaction(r.key.as_deref(), r.payload.as_deref())
                .is_ok_and(|tx| !scored.contains(tx.transaction_id.as_str()))
        })
        .map(|r| (r.partition, r.offset))
        .collect();
    lost.sort_unstable();
    lost.truncate(50);
    lost
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    /// The record's Kafka timestamp (ms).
    pub timestamp: Option<i64>,
}

/// Reads a topic from the beginning until `want` records arrived or
/// `idle` passed without a new one.
pub fn read_topic(topic: &str, want: usize, idle: Duration) -> Vec<Rec> {
    let (consumer, _) = reader_from_start(topic, &[]);
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < want && last.elapsed() < idle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(rec_of(&m));
            last = Instant::now();
        }
    }
    out
}

/// A consumer of its own group assigned every partition of `topic` from
/// the beginning, with `options`; and the partition count.
fn reader_from_start(topic: &str, options: &[(&str, &str)]) -> (BaseConsumer, usize) {
    let mut c = client();
    c.set("group.id", unique("reader"))
        .set("enable.auto.commit", "false");
    for (k, v) in options {
        c.set(*k, *v);
    }
    let consumer: BaseConsumer = c.create().expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let n = md.topics().first().map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    (consumer, n)
}

/// A consumed message as a [`Rec`].
pub fn rec_of(m: &impl Message) -> Rec {
    let mut headers = BTreeMap::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            headers.insert(
                x.key.to_string(),
                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
            );
        }
    }
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: m.timestamp().to_millis(),
    }
}

/// What a `read_committed` consumer sees of a topic, from the beginning up
/// to the end of every partition: librdkafka's end-of-partition event comes
/// at the last stable offset, so a transaction left open holds the rest of
/// its partition back. Also returns, per partition, the offset after the
/// last record read and the high watermark (equal but for the control
/// record ending the last transaction, unless a transaction is open).
/// Panics when some partition has not reached its end within `limit`.
pub fn read_committed(topic: &str, limit: Duration) -> (Vec<Rec>, Vec<(i64, i64)>) {
    use rdkafka::error::KafkaError;
    let (consumer, n) = reader_from_start(
        topic,
        &[
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    );
    let mut out = Vec::new();
    let mut at_end = vec![false; n];
    let mut next = vec![0i64; n];
    let t0 = Instant::now();
    while at_end.iter().any(|e| !e) {
        assert!(
            t0.elapsed() < limit,
            "{topic}: partitions {:?} not read to their end in {limit:?} (read up to {next:?}; an open transaction?)",
            (0..n).filter(|p| !at_end[*p]).collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next[m.partition() as usize] = m.offset() + 1;
                out.push(rec_of(&m));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            _ => {}
        }
    }
    let ends = next
        .into_iter()
        .enumerate()
        .map(|(p, o)| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p as i32, Duration::from_secs(10))
                .expect("watermarks");
            (o, high)
        })
        .collect();
    (out, ends)
}

/// GET on the worker's HTTP endpoint (address from its log): (status line, body).
pub fn http_get(log: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr = log
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|a| a.trim().to_string())
        .expect("the log names the HTTP address");
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// A `riskstream run` child process.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(t: &Topics, extra: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique("worker")));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_riskstream"))
            .args([
                "run",
                "--brokers",
                &brokers(),
                "--group",
                &t.group,
                "--input-topic",
                &t.input,
                "--output-topic",
                &t.output,
                "--labels-topic",
                &t.labels,
                "--dlq-topic",
                &t.dlq,
                "--drift-topic",
                &t.drift,
                "--device",
                "cpu",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .args(if extra.contains(&"--models-dir") {
                vec![]
            } else {
                vec![
                    "--models-dir".to_string(),
                    repo().join("models").display().to_string(),
                ]
            })
            .env(
                "RISKSTREAM_LOG",
                std::env::var("RISKSTREAM_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn worker");
        Self { child, log }
    }

    /// Outputs and dead letters this worker has delivered (its /metrics),
    /// 0 before its HTTP endpoint is up.
    pub fn delivered(&self) -> f64 {
        let log = self.log_text();
        if !log.contains("serving /metrics") {
            return 0.0;
        }
        metric(
            &http_get(&log, "/metrics").1,
            "riskstream_records_delivered_total",
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
    }

    /// SIGTERM, then asserts the worker drains and exits 0 within `timeout`.
    /// A worker still starting gets the signal once it serves /metrics
    /// (its handlers are installed by then; one sent before the process
    /// reaches `main` ends it by the default action).
    pub fn stop_cleanly(&mut self, timeout: Duration) {
        wait_for(timeout, || {
            self.log_text().contains("serving /metrics")
                || !matches!(self.child.try_wait(), Ok(None))
        });
        self.signal("TERM");
        assert_eq!(self.wait(timeout), Some(0), "log:\n{}", self.log_text());
    }

    /// Waits for exit; returns the exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Decoded scored records of an output topic.
pub fn scored(
    topic: &str,
    want: usize,
    idle: Duration,
) -> Vec<(Rec, riskstream::codec::ScoredTransaction)> {
    let codec = Codec::new().unwrap();
    read_topic(topic, want, idle)
        .into_iter()
        .map(|r| {
            let s = codec
                .decode_scored(r.payload.as_deref())
                .expect("scored record decodes");
            (r, s)
        })
        .collect()
}

/// Writes rows in the handbook's CSV format (TX_DATETIME from the seconds).
pub fn write_handbook_csv(path: &std::path::Path, rows: &[HandbookRow]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record([
        "TRANSACTION_ID",
        "TX_DATETIME",
        "CUSTOMER_ID",
        "TERMINAL_ID",
        "TX_AMOUNT",
        "TX_TIME_SECONDS",
        "TX_TIME_DAYS",
        "TX_FRAUD",
        "TX_FRAUD_SCENARIO",
    ])
    .unwrap();
    for r in rows {
        let s = r.time_seconds.rem_euclid(86_400);
        let datetime = format!(
            "{} {:02}:{:02}:{:02}",
            riskstream::dataset::date_of_day(r.time_seconds.div_euclid(86_400)),
            s / 3600,
            s % 3600 / 60,
            s % 60
        );
        w.write_record([
            r.transaction_id.to_string(),
            datetime,
            r.customer_id.to_string(),
            r.terminal_id.to_string(),
            format!("{}", r.amount),
            r.time_seconds.to_string(),
            r.time_days.to_string(),
            r.fraud.to_string(),
            r.scenario.to_string(),
        ])
        .unwrap();
    }
    w.flush().unwrap();
}

/// A group's committed offsets of a topic's partitions 0..n (-1: none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = client().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// Per partition 0..n, the offset after the last of a topic's `records`
/// records (read from the beginning).
pub fn end_offsets(topic: &str, records: usize, partitions: usize) -> Vec<i64> {
    let mut end = vec![0i64; partitions];
    for r in read_topic(topic, records, Duration::from_secs(10)) {
        end[r.partition as usize] = end[r.partition as usize].max(r.offset + 1);
    }
    end
}

/// Offline features of `txs` in order (the one feature engine, no labels:
/// terminal features are empty online and offline alike).
pub fn offline_features(txs: &[Transaction]) -> Vec<riskstream::features::FeatureVector> {
    use riskstream::features::{FeatureEngine, TxRef};
    let mut engine = FeatureEngine::new();
    txs.iter()
        .map(|t| {
            engine.observe_transaction(TxRef {
                transaction_id: &t.transaction_id,
                event_time: t.event_time,
                customer_id: &t.customer_id,
                terminal_id: &t.terminal_id,
                amount: t.amount,
            })
        })
        .collect()
}

/// Runs `promtool check metrics` (Prometheus' own checker) on an
/// exposition; returns its complaints (empty when it passes). promtool
/// comes from RISKSTREAM_PROMTOOL (set by scripts/test.sh), else PATH.
pub fn promtool_check(exposition: &str) -> String {
    use std::io::Write;
    let bin = std::env::var("RISKSTREAM_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin} (scripts/promtool.sh installs it): {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        String::new()
    } else if text.trim().is_empty() {
        format!("promtool exited with {}", out.status)
    } else {
        text
    }
}

/// The partitions of the last non-empty assignment in a worker's log.
pub fn last_assignment(log: &str) -> Vec<i32> {
    held_after(log.lines())
}

/// The partitions a log line names (`partitions=[..]`).
pub fn partitions_named(line: &str) -> Vec<i32> {
    line.split("partitions=[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .map(|r| r.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The partitions held after these log lines: assignment lines add what
/// they name, revocation lines take it away (eager lines name the whole
/// set, cooperative ones only the change: both fold the same way).
pub fn held_after<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<i32> {
    let mut held: Vec<i32> = Vec::new();
    for l in lines {
        if l.contains("partitions assigned") {
            held.extend(partitions_named(l));
        } else if l.contains("partitions revoked") {
            let gone = partitions_named(l);
            held.retain(|p| !gone.contains(p));
        }
    }
    held.sort_unstable();
    held.dedup();
    held
}

/// `riskstream drift --model MODEL` on a CSV over `from`..=`to`, writing
/// to `out`: its report.json and what it printed.
pub fn offline_drift(
    model: &str,
    csv: &std::path::Path,
    from: &str,
    to: &str,
    out: &std::path::Path,
) -> (serde_json::Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(repo())
        .args([
            "drift", "--model", model, "--from", from, "--to", to, "--csv",
        ])
        .arg(csv)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run riskstream drift");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
        .expect("report.json");
    (report, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The three-node cluster's first client port (`BROKER_NODES=3
/// scripts/broker.sh`: ports 19092-19094, every topic replicated three
/// times, `min.insync.replicas=2`), shared by the test files that kill
/// its nodes (one file at a time).
pub const CLUSTER_PORT: &str = "19092";

/// `scripts/broker.sh ARGS` on the three-node cluster.
pub fn cluster(args: &[&str]) {
    let ok = Command::new(repo().join("scripts/broker.sh"))
        .args(args)
        .env("BROKER_PORT", CLUSTER_PORT)
        .env("BROKER_NODES", "3")
        .status()
        .expect("run scripts/broker.sh")
        .success();
    assert!(ok, "scripts/broker.sh {args:?}");
}

/// Starts every node of the three-node cluster that is not running and
/// points this binary at them.
pub fn cluster_up() {
    cluster(&["start"]);
    use_broker("127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094");
}

/// The node that leads `topic`'s `partition`.
pub fn leader(topic: &str, partition: i32) -> i32 {
    let c: BaseConsumer = client().create().expect("client");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .map(|p| p.leader())
        .expect("partition")
}

/// The `__consumer_offsets` partition of `group`, as Kafka picks it:
/// Java's `String.hashCode` of the group id, made positive, modulo the
/// topic's partition count (4 on the project's brokers).
pub fn offsets_partition(group: &str) -> i32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (h & 0x7fff_ffff) % 4
}

/// The node coordinating `group` (the leader of its `__consumer_offsets`
/// partition).
pub fn group_coordinator(group: &str) -> i32 {
    leader("__consumer_offsets", offsets_partition(group))
}

/// Produces `txs` (key = customer id) at about `per_s` records a second,
/// idempotently: the test's own producer survives failovers without
/// duplicating input.
pub fn feed_idempotently(
    topic: String,
    txs: Vec<Transaction>,
    per_s: usize,
) -> tokio::task::JoinHandle<()> {
    let codec = Codec::new().unwrap();
    let records = txs
        .iter()
        .map(|t| {
            (
                t.customer_id.as_bytes().to_vec(),
                codec.encode_transaction(t).unwrap(),
            )
        })
        .collect();
    feed_raw_idempotently(topic, records, per_s)
}

/// Produces raw (key, payload) records at about `per_s` records a second
/// with an idempotent producer, in order per key; the task ends when every
/// record is acknowledged.
pub fn feed_raw_idempotently(
    topic: String,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    per_s: usize,
) -> tokio::task::JoinHandle<()> {
    let feed = feed_raw_until(topic, records, per_s, Default::default());
    tokio::spawn(async move {
        feed.await.expect("feed");
    })
}

/// [`feed_raw_idempotently`] until the records run out or `stop` is set
/// (checked every 100 ms): the task returns how many of the first records
/// it produced, each acknowledged.
pub fn feed_raw_until(
    topic: String,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    per_s: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    use rdkafka::producer::Producer;
    tokio::spawn(async move {
        let producer: FutureProducer = client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let tick = (per_s / 10).max(1);
        let mut next = tokio::time::Instant::now();
        let mut acks = Vec::new();
        for chunk in records.chunks(tick) {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            for (key, payload) in chunk {
                let mut r = FutureRecord::to(&topic).key(key).payload(payload);
                // Enqueued, not awaited: a failover holds deliveries, not
                // the feed (a full queue waits).
                loop {
                    match producer.send_result(r) {
                        Ok(ack) => break acks.push(ack),
                        Err((_, back)) => {
                            r = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
            next += Duration::from_millis(100);
            tokio::time::sleep_until(next).await;
        }
        let produced = acks.len();
        for a in acks {
            a.await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("input delivered");
        }
        producer
            .flush(Duration::from_secs(300))
            .expect("input flushed");
        produced
    })
}
