#!/usr/bin/env bash
# State benchmarks on an Apache Kafka node of their own on BENCH_STATE_PORT
# (default 9096), wiped first:
#   for 41 and then 82 days of history on an 8-partition topic (same last
#   day, so the same live customers): one worker scores and commits it all,
#   the broker compacts the changelog, then a new instance takes every
#   partition over (a restart: each partition moves) and we read, per
#   moved partition, the restore time and the records read (changelog
#   records; input replayed); the changelog's size per live customer; the
#   first worker's peak RSS.
# Restore must not grow by more than 10 % when history doubles.
# RISKSTREAM_BIN: a prebuilt binary. Prints a Markdown table, also written
# to $BENCH_OUT (default bench-state-results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
OUT="${BENCH_OUT:-bench-state-results.md}"
PORT="${BENCH_STATE_PORT:-9096}"
BROKERS="127.0.0.1:$PORT"
CSV="${BENCH_CSV:-../shared/data/handbook/transactions.csv.gz}"
B="$(scripts/bench_bin.sh)"
BROKER_PORT=$PORT scripts/broker.sh stop --wipe >&2 || true
BROKER_PORT=$PORT scripts/broker.sh start >&2
trap 'BROKER_PORT=$PORT scripts/broker.sh stop >&2 || true' EXIT
LOGS=$(mktemp -d)
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
sum_field() { strip < "$1" | grep "partition state restored" | grep -o "$2=[0-9]*" | cut -d= -f2 | awk '{s+=$1} END {print s+0}'; }
max_field() { strip < "$1" | grep "partition state restored" | grep -o "$2=[0-9]*" | cut -d= -f2 | sort -n | tail -1; }

rows=()
for days in 41 82; do
  T="bstate-$days-$$"
  from=$(date -u -d "2018-06-21 - $((days - 1)) days" +%F)
  "$B" replay --brokers "$BROKERS" --csv "$CSV" --topic "$T.in" --labels-topic "" --partitions 8 \
    --from "$from" --to 2018-06-21 --quiet 2> "$LOGS/replay-$days.log"
  N=$(grep -o "sent [0-9]* transactions" "$LOGS/replay-$days.log" | tr -dc 0-9)
  common=(--brokers "$BROKERS" --group "$T.g" --input-topic "$T.in" --output-topic "$T.out" \
    --labels-topic "$T.labels" --dlq-topic "$T.dlq" --device cpu --metrics-addr off)
  /usr/bin/time -f "%M" -o "$LOGS/rss-$days" "$B" run "${common[@]}" --max-records "$N" 2> "$LOGS/first-$days.log"
  # Let the broker compact the changelog (maintenance every 30 s).
  sleep 65
  t0=$(date +%s.%N)
  "$B" run "${common[@]}" 2> "$LOGS/restart-$days.log" &
  pid=$!
  for _ in $(seq 1 600); do
    n=$(strip < "$LOGS/restart-$days.log" | grep -c "partition state restored" || true)
    [ "$n" -ge 8 ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  restored=$(strip < "$LOGS/restart-$days.log" | grep -c "partition state restored" || true)
  outcomes=$(strip < "$LOGS/restart-$days.log" | grep "partition state restored" | grep -o 'outcome="*[a-z_]*' | sed 's/outcome="*//' | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
  records=$(sum_field "$LOGS/restart-$days.log" changelog_records)
  customers=$(sum_field "$LOGS/restart-$days.log" customers)
  worst=$(max_field "$LOGS/restart-$days.log" restore_ms)
  total_ms=$(sum_field "$LOGS/restart-$days.log" restore_ms)
  replayed=$(strip < "$LOGS/restart-$days.log" | grep -c "replaying" || true)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  rss=$(( $(cat "$LOGS/rss-$days") / 1024 ))
  rows+=("| $days | $N | $restored ($outcomes) | $records | $customers | $worst | $total_ms | $wall | $replayed | $rss |")
done
{
  echo "| days on the topic | input records | partitions restored | changelog records read | customers restored | slowest partition restore, ms | all partitions, ms | process start → all restored, s | partitions replaying input | first run peak RSS, MB |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
