#!/usr/bin/env bash
# The main job end to end: builds the worker, starts an in-process broker
# (or uses --brokers B), replays July–mid-August 2018 of the handbook data,
# scores it, and prints a live summary. Extra arguments go to `riskstream demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}/target}"
scripts/deps.sh >&2
cargo build --release --locked --bin riskstream
exec "$CARGO_TARGET_DIR/release/riskstream" demo "$@"
