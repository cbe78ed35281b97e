#!/usr/bin/env bash
# The main job end to end: builds the worker, starts the project's broker
# (Apache Kafka on loopback, installed on first use by scripts/broker.sh) unless
# --brokers B or RISKSTREAM_BROKERS names one, replays July–mid-August 2018
# of the handbook data, scores it, and prints a live summary. Extra arguments
# go to `riskstream demo` (which, run by hand without --brokers, uses
# librdkafka's in-process mock cluster instead).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}/target}"
scripts/deps.sh >&2
cargo build --release --locked --bin riskstream
if [[ " $* " != *" --brokers"* && -z "${RISKSTREAM_BROKERS:-}" ]]; then
  scripts/broker.sh start >&2
  set -- --brokers "127.0.0.1:${BROKER_PORT:-9092}" "$@"
fi
exec "$CARGO_TARGET_DIR/release/riskstream" demo "$@"
