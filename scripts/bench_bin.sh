#!/usr/bin/env bash
# The worker binary the benchmarks run, on stdout: RISKSTREAM_BIN when set
# (nothing is built then), else a release build into the cache. Also makes
# sure GNU time is there (the benchmarks read CPU and RSS from it).
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
command -v /usr/bin/time >/dev/null || { apt-get install -y time >/dev/null 2>&1 || true; }
if [ -n "${RISKSTREAM_BIN:-}" ]; then
  echo "$RISKSTREAM_BIN"
  exit 0
fi
scripts/deps.sh >&2
cargo build --release --locked --bin riskstream >&2
echo "$CARGO_TARGET_DIR/release/riskstream"
