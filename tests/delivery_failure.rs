//! Fault injection on the output path, with librdkafka's mock cluster (the
//! real broker cannot be told to fail produce requests): the broker answers
//! produce requests with errors long enough that deliveries time out. The
//! sink must re-send them, lose nothing, and commit input offsets only
//! once every output is delivered.
//!
//! This binary runs one test and points the shared helpers at the mock
//! cluster through `RISKSTREAM_TEST_BROKERS`; the rest of the suite uses
//! the real broker.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[tokio::test(flavor = "multi_thread")]
async fn timed_out_deliveries_are_re_sent_and_a_clean_stop_commits_everything() {
    let mock = MockCluster::new(1).expect("mock cluster");
    // Only this test runs in this binary: the helpers now talk to the mock.
    std::env::set_var("RISKSTREAM_TEST_BROKERS", mock.bootstrap_servers());
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
