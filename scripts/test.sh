#!/usr/bin/env bash
# The whole test suite: installs and starts the broker, builds, runs every
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
# promtool, the reference for the Prometheus exposition format.
RISKSTREAM_PROMTOOL="$(scripts/promtool.sh)"
export RISKSTREAM_PROMTOOL

# Two brokers from one Tansu install: the in-memory engine (throughput,
# most tests) and the SQLite engine (fetches by record offset, survives a
# restart, compacts: the state, restart and fault tests), wiped per run.
export SQLITE_BROKER_PORT="${SQLITE_BROKER_PORT:-9094}"
export RISKSTREAM_TEST_BROKERS_SQLITE="127.0.0.1:$SQLITE_BROKER_PORT"
started=0
if ! scripts/broker.sh status >/dev/null 2>&1; then
  scripts/broker.sh start
  started=1
fi
BROKER_PORT="$SQLITE_BROKER_PORT" scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
BROKER_PORT="$SQLITE_BROKER_PORT" BROKER_STORAGE=sqlite scripts/broker.sh start
cleanup() {
  BROKER_PORT="$SQLITE_BROKER_PORT" scripts/broker.sh stop || true
  if [ "$started" = 1 ]; then scripts/broker.sh stop || true; fi
}
trap cleanup EXIT

cargo build --release --locked --all-targets
# The GPU path (burn wgpu) type-checks and lints here; building and running
# it needs a GPU machine (see README, "Device"). Checking takes ~4 minutes
# cold, a full wgpu build about an hour, so CI checks.
CARGO_TARGET_DIR="$RISKSTREAM_CACHE/wgpu-check" cargo clippy --release --locked --features wgpu --lib -- -D warnings
cargo test --release --locked -- --test-threads="${TEST_THREADS:-2}"
