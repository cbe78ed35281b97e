#!/usr/bin/env bash
# Scale-out under load on the project's broker (Apache Kafka): 1 → 2 → 4
# instances on 8 partitions while transactions arrive at BENCH_SCALE_RATE
# records/s (default 4000) for BENCH_SCALE_SECONDS (60); prints per step the
# partitions moved, the longest pause and p99 wait of the partitions that
# kept their owner, then lost and duplicated records (the ignored test
# `state::scale_out_one_two_four_under_load`). Writes $BENCH_OUT (default
# bench-scale-results.md). BENCH_SCALE_PROTOCOL: classic (default) or
# consumer (KIP-848); with classic, BENCH_SCALE_ASSIGNMENT:
# cooperative-sticky (default) or range.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
export BROKER_PORT="${BROKER_PORT:-9092}"
export RISKSTREAM_TEST_BROKERS="127.0.0.1:$BROKER_PORT"
OUT="${BENCH_OUT:-bench-scale-results.md}"
scripts/broker.sh start >&2
cargo test --release --locked --features external-tests --test state scale_out_one_two_four_under_load -- --ignored --nocapture \
  --test-threads 1 2>/dev/null | grep -E '^\||^[0-9]+ transactions|assignment$' | tee "$OUT"
