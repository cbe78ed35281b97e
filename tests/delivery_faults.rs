//! Protocol faults with decided outcomes, injected with librdkafka's mock
//! cluster (the real broker cannot be told to fail requests):
//! - a topic that refuses writes (authorisation) stops the worker with a
//!   message that says what to fix, instead of re-sending forever;
//! - SIGTERM while no delivery can succeed finishes within the drain time
//!   and says what it abandoned; nothing abandoned is committed;
//! - a stuck pipeline (input waiting, nothing delivered) fails /healthz;
//! - a label topic without a leader does not block scoring forever.
//!
//! The helpers read the broker address from `RISKSTREAM_TEST_BROKERS`, so
//! the scenarios run one after another in one test, each on its own mock.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

async fn mock_with_topics(
    brokers: i32,
    t: &Topics,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(brokers).expect("mock cluster");
    std::env::set_var("RISKSTREAM_TEST_BROKERS", mock.bootstrap_servers());
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

#[tokio::test(flavor = "multi_thread")]
async fn protocol_faults_have_decided_outcomes() {
    topic_authorization_failure_stops_the_worker_saying_what_to_fix().await;
    sigterm_finishes_within_the_drain_time_when_nothing_can_be_delivered().await;
    a_stuck_pipeline_fails_healthz().await;
    a_label_topic_without_a_leader_does_not_block_scoring().await;
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
