#!/usr/bin/env bash
# Issue 6: CPU per scored record of the Rust worker against the same job
# written the way many teams would in Python (confluent-kafka, fastavro,
# numpy: benches/peers/python/worker.py), on one pre-loaded topic.
#
#   - BENCH_RECORDS (default 100000) transactions and their labels are
#     pre-loaded once (handbook, from 2018-07-01);
#   - `riskstream run` (group G1) and the Python worker (group G2) each score
#     them all under /usr/bin/time: records/s, CPU µs per record
#     ((user + sys) / N, start-up included), peak RSS;
#   - the CPU ratio Python / Rust (the issue's goal: at least 10);
#   - parity: both output topics joined by transaction_id: max |score
#     difference| and the share of flags that agree (exit status 1 when
#     they differ beyond float rounding).
# BENCH_RUNS (default 1): runs of each worker, the least CPU counts (for a
# busy machine). BENCH_PARTITIONS (default 4): partitions of the input topic;
# over 100000 records on several partitions the Python worker's features
# depend on the order the partitions are consumed in (it sweeps state against
# the newest event of any partition; riskstream sweeps against the slowest
# assigned partition), so check parity there with BENCH_PARTITIONS=1.
# Prints one Markdown table and writes it to bench-python.md (or $BENCH_OUT).
# The binary: $RISKSTREAM_BIN, else $CARGO_TARGET_DIR/release/riskstream
# (built here when missing). The Python venv: scripts/python_worker_venv.sh
# (${RISKSTREAM_CACHE:-~/.cache/riskstream}/venv-python-worker; pip runs only
# when requirements.txt changed).
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
N="${BENCH_RECORDS:-100000}"
OUT="${BENCH_OUT:-bench-python.md}"
PARTITIONS="${BENCH_PARTITIONS:-4}"
RUNS="${BENCH_RUNS:-1}"
BROKERS="${RISKSTREAM_BROKERS:-127.0.0.1:9092}"
CSV=../shared/data/handbook/transactions.csv.gz
command -v /usr/bin/time >/dev/null || { apt-get install -y time >/dev/null 2>&1 || true; }
command -v /usr/bin/time >/dev/null || { echo "bench_python: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

# The Rust binary.
if [ -n "${RISKSTREAM_BIN:-}" ]; then
  B="$RISKSTREAM_BIN"
else
  B="$CARGO_TARGET_DIR/release/riskstream"
  scripts/deps.sh >&2
  cargo build --release --locked --bin riskstream >&2
fi
[ -x "$B" ] || { echo "bench_python: no riskstream binary at $B" >&2; exit 1; }

# The Python venv (scripts/python_worker_venv.sh sets it up once).
PY="$(scripts/python_worker_venv.sh)"

BROKER_HOST="${BROKERS%%,*}"
if [ "$BROKER_HOST" = "127.0.0.1:9092" ]; then scripts/broker.sh start >&2; fi
T="pybench-$$"
LOGS=$(mktemp -d)
# The broker keeps topics in memory: drop this run's (BENCH_KEEP_TOPICS=1 keeps them).
cleanup() {
  if [ "${BENCH_KEEP_TOPICS:-0}" != 1 ]; then
    "$PY" - "$BROKERS" "$T." <<'PYTHON' >&2 || true
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(sys.argv[2])]
for f in (admin.delete_topics(topics, operation_timeout=30) if topics else {}).values():
    try:
        f.result()
    except Exception as e:  # noqa: BLE001 - best effort
        print(f"bench_python: cannot delete a topic: {e}")
PYTHON
  fi
  rm -rf "$LOGS"
}
trap cleanup EXIT

echo "bench_python: pre-loading $N transactions into $T.in" >&2
"$B" replay --brokers "$BROKERS" --csv "$CSV" --topic "$T.in" --labels-topic "$T.labels" \
  --from 2018-07-01 --limit "$N" --partitions "$PARTITIONS" --quiet >&2
"$B" models export fraud-mlp@champion --out "$LOGS/model.json" >&2

# Each worker runs BENCH_RUNS times (alternating, each in a new group and to
# a new output topic); the run with the least CPU counts, as the least
# disturbed by whatever else the machine runs. Parity uses the first runs.
run_rust() {
  /usr/bin/time -f "%U %S %M" -o "$LOGS/rust.$1.time" \
    "$B" run --brokers "$BROKERS" --group "$T.g1.$1" --input-topic "$T.in" --output-topic "$T.out.$1" \
    --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu \
    --max-records "$N" --drift-topic off 2> "$LOGS/rust.$1.log" || { tail -20 "$LOGS/rust.$1.log" >&2; exit 1; }
  rate=$(sed 's/\x1b\[[0-9;]*m//g' "$LOGS/rust.$1.log" | grep -o "records_per_second=[0-9.e+-]*" | tail -1 | cut -d= -f2)
  echo "$(cat "$LOGS/rust.$1.time") ${rate:-0}" >> "$LOGS/rust.runs"
}
run_python() {
  /usr/bin/time -f "%U %S %M" -o "$LOGS/py.$1.time" \
    "$PY" benches/peers/python/worker.py --brokers "$BROKERS" --group "$T.g2.$1" --input-topic "$T.in" \
    --output-topic "$T.pyout.$1" --labels-topic "$T.labels" --model-json "$LOGS/model.json" \
    --max-records "$N" > "$LOGS/py.$1.out" 2> "$LOGS/py.$1.log" || { tail -20 "$LOGS/py.$1.log" >&2; exit 1; }
  rate=$(grep -o "records_per_second=[0-9.e+-]*" "$LOGS/py.$1.out" | tail -1 | cut -d= -f2)
  echo "$(cat "$LOGS/py.$1.time") ${rate:-0}" >> "$LOGS/py.runs"
}
# The run with the least user + sys: "user sys rss rate".
least() { awk '{ c = $1 + $2; if (NR == 1 || c < best) { best = c; line = $0 } } END { print line }' "$1"; }
for i in $(seq 1 "$RUNS"); do
  echo "bench_python: Rust worker, run $i/$RUNS" >&2
  run_rust "$i"
  echo "bench_python: Python worker, run $i/$RUNS" >&2
  run_python "$i"
done
read -r R_U R_S R_RSS R_RATE <<< "$(least "$LOGS/rust.runs")"
read -r P_U P_S P_RSS P_RATE <<< "$(least "$LOGS/py.runs")"
cpu_all() { awk -v n="$N" '{ printf "%s%.1f", (NR > 1 ? ", " : ""), ($1 + $2) * 1e6 / n }' "$1"; }

echo "bench_python: parity" >&2
# scripts/parity.py joins both output topics by transaction_id; its exit
# status is not ours (the verdict below allows order-dependent runs).
"$PY" scripts/parity.py "$BROKERS" "$T.out.1" "$T.pyout.1" "$N" --names rust,python \
  --tolerance 1e-4 --allow-threshold-flips > "$LOGS/parity.json" || true
cat "$LOGS/parity.json" >&2
pj() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$LOGS/parity.json" "$1"; }

cpu_us() { awk -v u="$1" -v s="$2" -v n="$N" 'BEGIN { printf "%.1f", (u + s) * 1e6 / n }'; }
R_CPU=$(cpu_us "$R_U" "$R_S")
P_CPU=$(cpu_us "$P_U" "$P_S")
RATIO=$(awk -v p="$P_CPU" -v r="$R_CPU" 'BEGIN { printf "%.1f", p / r }')
GOAL=$(awk -v x="$RATIO" 'BEGIN { print (x >= 10 ? "met" : "not met") }')
ORDER_DEPENDENT=0
if [ "$N" -gt 100000 ] && [ "$PARTITIONS" -gt 1 ]; then ORDER_DEPENDENT=1; fi
if [ "$(pj ok)" = True ]; then PARITY=ok
elif [ "$ORDER_DEPENDENT" = 1 ]; then PARITY="not expected (see note)"
else PARITY=FAILED; fi
{
  echo "| measure | Rust (\`riskstream run\`) | Python (confluent-kafka, fastavro, numpy) |"
  echo "|---|---|---|"
  echo "| machine | $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); broker on $BROKERS | same; Python $("$PY" -c 'import platform; print(platform.python_version())') |"
  echo "| records | $N (handbook, from 2018-07-01), same pre-loaded topic | same |"
  echo "| records/s (first record consumed → stop) | $(printf "%.0f" "${R_RATE:-0}") | $(printf "%.0f" "${P_RATE:-0}") |"
  echo "| CPU per record ((user + sys) / N, start-up included) | ${R_CPU} µs (user ${R_U} s, sys ${R_S} s) | ${P_CPU} µs (user ${P_U} s, sys ${P_S} s) |"
  if [ "$RUNS" -gt 1 ]; then
    echo "| CPU per record, every run (µs; the least counts) | $(cpu_all "$LOGS/rust.runs") | $(cpu_all "$LOGS/py.runs") |"
  fi
  echo "| peak RSS | $((R_RSS / 1024)) MiB | $((P_RSS / 1024)) MiB |"
  echo "| CPU ratio Python / Rust (goal ≥ 10) | ${RATIO}× ($GOAL) | |"
  echo "| parity: records joined by transaction_id | $(pj rust) Rust, $(pj python) Python, $(pj joined) joined | |"
  echo "| parity: scores | max \|Δ\| $(printf "%.2g" "$(pj max_abs_diff)"), mean \|Δ\| $(printf "%.2g" "$(pj mean_abs_diff)"), $(pj identical) bit-identical | |"
  echo "| parity: flags | $(awk -v a="$(pj flags_agree)" 'BEGIN { printf "%.4f", 100 * a }') % agree ($(pj flagged_rust) flagged by Rust, $(pj flagged_python) by Python) | parity $PARITY |"
  if [ "$ORDER_DEPENDENT" = 1 ]; then
    echo "| note | over 100000 records on several partitions the Python worker's features depend on the order the partitions are consumed in (it sweeps state every 100000 records against the newest event of any partition; riskstream against the slowest assigned partition), so the outputs need not agree: parity is checked with BENCH_PARTITIONS=1 or BENCH_RECORDS ≤ 100000 | |"
  fi
} | tee "$OUT"
[ "$PARITY" != FAILED ] || { echo "bench_python: parity check failed (see above)" >&2; exit 1; }
