#!/usr/bin/env bash
# The whole test suite: installs and starts Apache Kafka, builds, runs every
# test (unit, integration against the real broker), stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
export BROKER_PORT="${BROKER_PORT:-9092}"
export RISKSTREAM_TEST_BROKERS="127.0.0.1:$BROKER_PORT"

scripts/deps.sh
# fastavro and a current librdkafka client, the outside implementations the
# interoperability tests check against (a venv in the cache).
RISKSTREAM_PYTHON="$(scripts/pyenv.sh)"
export RISKSTREAM_PYTHON
# The Avro reference implementation and the Kafka Java client
# (tests/interop/java, built with Maven into the cache).
RISKSTREAM_JAVA_PEER="$(scripts/javapeer.sh)"
export RISKSTREAM_JAVA_PEER
# promtool, the reference for the Prometheus exposition format.
RISKSTREAM_PROMTOOL="$(scripts/promtool.sh)"
export RISKSTREAM_PROMTOOL

# Apache Kafka (KRaft, one node) from Maven Central, wiped per run so every
# run starts from an empty cluster; tests that need their own broker (the
# broker restart, the three-node failover) start it through broker.sh too.
# The brokers tests start themselves: tests/broker_restart.rs (one node on
# 9095), tests/failover.rs (three nodes on 19092-19094) and tests/auth.rs
# (SASL/SCRAM with the StandardAuthorizer on 9300, SASL_SSL on 9500).
own_brokers() {
  BROKER_PORT=9095 scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
  BROKER_PORT=19092 BROKER_NODES=3 scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
  BROKER_AUTH=sasl BROKER_PORT=9300 scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
}
own_brokers
scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
scripts/broker.sh start
# Apicurio Registry 2.6 (in memory, from Maven Central): the real
# Confluent-compatible registry tests/schema_registry.rs also runs against.
scripts/registry.sh stop >/dev/null 2>&1 || true
scripts/registry.sh start
RISKSTREAM_TEST_REGISTRY_URL="$(scripts/registry.sh url)"
export RISKSTREAM_TEST_REGISTRY_URL
cleanup() { scripts/broker.sh stop --wipe || true; scripts/registry.sh stop || true; own_brokers; }
trap cleanup EXIT

cargo build --release --locked --all-targets
# The GPU path (burn wgpu) type-checks and lints here; building and running
# it needs a GPU machine (see README, "Device"). Checking takes ~4 minutes
# cold, a full wgpu build about an hour, so CI checks.
CARGO_TARGET_DIR="$RISKSTREAM_CACHE/wgpu-check" cargo clippy --release --locked --features wgpu --lib -- -D warnings
cargo test --release --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
