#!/usr/bin/env bash
# The model quality bar (issue 3): the handbook's prequential protocol, 4 test
# folds, hyper-parameters chosen on the validation folds (the defaults), and
# the logistic-regression check of the protocol code. Prints the tables and
# writes reports under reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}/target}"
scripts/deps.sh >&2
cargo build --release --locked --bin riskstream >&2
B="$CARGO_TARGET_DIR/release/riskstream"
CSV=../shared/data/handbook/transactions.csv.gz
echo "## MLP (defaults), prequential test folds"
"$B" evaluate --csv "$CSV" --train-start 2018-08-15 --folds 4 --report reports/quality-mlp
echo "## Logistic regression on the 15 published inputs (protocol check)"
"$B" evaluate --csv "$CSV" --train-start 2018-08-15 --folds 4 --inputs published --hidden "" \
  --lr 0.003 --epochs 100 --batch-size 512 --report reports/quality-lr
echo "published best: AUC 0.876, AP 0.687, CP@100 0.303"
