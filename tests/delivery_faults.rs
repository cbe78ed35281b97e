//! Protocol faults with decided outcomes, injected with librdkafka's mock
//! cluster (the real broker cannot be told to fail requests):
//! - produce requests that fail long enough for deliveries to time out:
//!   the sink re-sends them, loses nothing, and commits input offsets only
//!   once every output is delivered;
//! - a topic that refuses writes (authorisation) stops the worker with a
//!   message that says what to fix, instead of re-sending forever;
//! - SIGTERM while no delivery can succeed finishes within the drain time
//!   and says what it abandoned; nothing abandoned is committed;
//! - a stuck pipeline (input waiting, nothing delivered) fails /healthz;
//! - a label topic without a leader does not block scoring forever.
//!
//! Each scenario has a mock cluster of its own, which the helpers called
//! from its thread use ([`use_broker_on_this_thread`]). The scenarios
//! mostly wait (on timeouts of seconds), so they run side by side, each on
//! a thread of its own: the test takes as long as the longest of them
//! rather than their sum (the harness runs only as many tests at once as
//! the machine has cores). No real broker is needed (test tier 1).

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

async fn mock_with_topics(
    brokers: i32,
    t: &Topics,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(brokers).expect("mock cluster");
    use_broker_on_this_thread(&mock.bootstrap_servers());
    for topic in t.for_mock() {
        mock.create_topic(&topic, 1, 1).expect("create topic");
    }
    mock
}

/// A mock cluster holding `n` input records whose produce requests all
/// fail with `err` (longer than any scenario here runs).
async fn mock_failing_produce(
    t: &Topics,
    n: usize,
    err: RDKafkaRespErr,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = mock_with_topics(1, t).await;
    let input: Vec<_> = rows(100, n).iter().map(|r| r.transaction()).collect();
    produce_transactions(&t.input, &input).await;
    mock.request_errors(RDKafkaApiKey::Produce, &vec![err; 100_000]);
    mock
}

/// Runs `scenario` on a thread of its own (named `name`), on a runtime of
/// its own.
fn side_by_side<F: Future<Output = ()> + 'static>(
    name: &'static str,
    scenario: fn() -> F,
) -> (&'static str, std::thread::JoinHandle<()>) {
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(scenario());
        })
        .expect("spawn scenario thread");
    (name, thread)
}

#[test]
fn protocol_faults_have_decided_outcomes() {
    let scenarios = [
        side_by_side(
            "timed-out deliveries",
            timed_out_deliveries_are_re_sent_and_a_clean_stop_commits_everything,
        ),
        side_by_side(
            "topic authorization",
            topic_authorization_failure_stops_the_worker_saying_what_to_fix,
        ),
        side_by_side(
            "sigterm drain",
            sigterm_finishes_within_the_drain_time_when_nothing_can_be_delivered,
        ),
        side_by_side("stuck pipeline", a_stuck_pipeline_fails_healthz),
        side_by_side(
            "leaderless labels",
            a_label_topic_without_a_leader_does_not_block_scoring,
        ),
    ];
    // A scenario's panic message is printed by its thread.
    let failed: Vec<&str> = scenarios
        .into_iter()
        .filter_map(|(name, thread)| thread.join().is_err().then_some(name))
        .collect();
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

async fn timed_out_deliveries_are_re_sent_and_a_clean_stop_commits_everything() {
    let mock = MockCluster::new(1).expect("mock cluster");
    // The helpers called from this scenario's thread talk to the mock.
    use_broker_on_this_thread(&mock.bootstrap_servers());
    let t = Topics::new("dr");
    for topic in t.for_mock() {
        mock.create_topic(&topic, 2, 1).expect("create topic");
    }
    let input: Vec<_> = rows(100, 400).iter().map(|r| r.transaction()).collect();
    produce_transactions(&t.input, &input).await;

    // Every produce request fails with a retriable error for a while:
    // librdkafka retries until `message.timeout.ms` (1 s here), then
    // reports the deliveries failed, and the sink re-sends them.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 40],
    );
    let mut w = Worker::start(&t, &["--kafka", "message.timeout.ms=1000"]);
    let out = scored(&t.output, input.len(), Duration::from_secs(90));
    let log = w.log_text();
    assert!(
        log.contains("deliveries failed"),
        "no delivery failed, the fault was not injected; log:\n{log}"
    );
    // At least once: every transaction has an output (a timed-out request
    // may still have been written, so duplicates are allowed).
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, s) in &out {
        *seen.entry(s.transaction_id.clone()).or_default() += 1;
    }
    for tx in &input {
        assert!(
            seen.contains_key(&tx.transaction_id),
            "{} lost; log:\n{log}",
            tx.transaction_id
        );
    }
    // A clean stop commits the whole input, and only now that all is out.
    w.stop_cleanly(Duration::from_secs(60));
    let end = end_offsets(&t.input, input.len(), 2);
    assert_eq!(committed(&t.group, &t.input, 2), end);
}

async fn topic_authorization_failure_stops_the_worker_saying_what_to_fix() {
    let t = Topics::new("acl");
    let _mock = mock_failing_produce(
        &t,
        50,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    )
    .await;
    let mut w = Worker::start(&t, &[]);
    let code = w.wait(Duration::from_secs(60));
    let log = w.log_text();
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}; log:\n{log}"
    );
    assert!(
        log.contains("grant this principal WRITE on the topic"),
        "{log}"
    );
    // Nothing was delivered, so nothing was committed.
    assert!(committed(&t.group, &t.input, 1).iter().all(|o| *o <= 0));
}

async fn sigterm_finishes_within_the_drain_time_when_nothing_can_be_delivered() {
    let t = Topics::new("drain");
    // Retriable errors, for ever: deliveries time out and are re-sent.
    let _mock = mock_failing_produce(
        &t,
        200,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    )
    .await;
    let mut w = Worker::start(
        &t,
        &[
            "--kafka",
            "message.timeout.ms=1000",
            "--drain-timeout-ms",
            "4000",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(30), || w
            .log_text()
            .contains("deliveries failed")),
        "the fault was not injected; log:\n{}",
        w.log_text()
    );
    let t0 = Instant::now();
    w.signal("TERM");
    let code = w.wait(Duration::from_secs(10));
    let took = t0.elapsed();
    let log = w.log_text();
    assert!(
        code.is_some(),
        "still running 10 s after SIGTERM; log:\n{log}"
    );
    assert!(
        took < Duration::from_millis(4500),
        "took {took:?}; log:\n{log}"
    );
    assert!(log.contains("abandoned"), "{log}");
    // Abandoned records were not delivered: their offsets are not committed.
    assert!(committed(&t.group, &t.input, 1).iter().all(|o| *o <= 0));
}

async fn a_stuck_pipeline_fails_healthz() {
    let t = Topics::new("stall");
    let n = 100;
    let mock =
        mock_failing_produce(&t, n, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS).await;
    let mut w = Worker::start(
        &t,
        &[
            "--kafka",
            "message.timeout.ms=1000",
            "--stall-timeout-ms",
            "3000",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(30), || w
            .log_text()
            .contains("serving /metrics")),
        "{}",
        w.log_text()
    );
    let healthy = http_get(&w.log_text(), "/healthz").0;
    assert!(healthy.contains("200"), "{healthy}");
    let mut last = (String::new(), String::new());
    let stuck = wait_for(Duration::from_secs(30), || {
        last = http_get(&w.log_text(), "/healthz");
        last.0.contains("503")
    });
    assert!(
        stuck,
        "healthz never failed: {last:?}; log:\n{}",
        w.log_text()
    );
    assert!(last.1.contains("no record delivered"), "{last:?}");
    // Once the broker accepts writes again, the pipeline recovers.
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let out = scored(&t.output, n, Duration::from_secs(60));
    assert!(out.len() >= n);
    assert!(
        wait_for(Duration::from_secs(20), || http_get(
            &w.log_text(),
            "/healthz"
        )
        .0
        .contains("200")),
        "healthz did not recover"
    );
    w.stop_cleanly(Duration::from_secs(30));
}

async fn a_label_topic_without_a_leader_does_not_block_scoring() {
    let t = Topics::new("leaderless");
    let mock = mock_with_topics(2, &t).await;
    let input: Vec<_> = rows(100, 100).iter().map(|r| r.transaction()).collect();
    produce_transactions(&t.input, &input).await;
    mock.partition_leader(&t.labels, 0, None)
        .expect("leaderless labels");
    let mut w = Worker::start(&t, &["--labels-load-timeout-ms", "3000"]);
    let out = scored(&t.output, input.len(), Duration::from_secs(60));
    let log = w.log_text();
    assert_eq!(out.len(), input.len(), "log:\n{log}");
    assert!(
        log.contains("label history not loaded within labels_load_timeout"),
        "{log}"
    );
    let (status, body) = http_get(&log, "/readyz");
    assert!(status.contains("200"), "{status} {body}");
    assert!(
        body.contains("labels"),
        "readiness says the labels are behind: {body}"
    );
    w.stop_cleanly(Duration::from_secs(30));
}
