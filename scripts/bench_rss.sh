#!/usr/bin/env bash
# Memory over a long stream: DAYS (default 60) of the handbook from
# 2018-04-01, transactions and their labels replayed at RATE transactions/s
# (default 15000) into a fresh topic on the memory engine while one worker
# scores them. Every second: the worker's RSS and its state gauges
# (riskstream_state_*). The customer windows are full after 30 days and the
# terminal windows after 37 + 7 (the labels' delay): from then on RSS and
# state must stay flat. Prints a Markdown table (one row per DAY_STEP days,
# default 5), also written to $BENCH_OUT (default bench-rss-results.md), and
# the bytes per key: state gauges against RSS growth, and the changelog
# record size per customer.
# RISKSTREAM_BIN: a prebuilt binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
OUT="${BENCH_OUT:-bench-rss-results.md}"
DAYS="${DAYS:-60}"
RATE="${RATE:-15000}"
STEP="${DAY_STEP:-5}"
PORT="${BENCH_METRICS_PORT:-9469}"
CSV="${BENCH_CSV:-../shared/data/handbook/transactions.csv.gz}"
B="$(scripts/bench_bin.sh)"
command -v curl >/dev/null || apt-get install -y -qq curl >&2
scripts/broker.sh start >&2
T="rss-$$"
LOGS=$(mktemp -d)
to=$(date -u -d "2018-04-01 + $((DAYS - 1)) days" +%F)
"$B" replay --csv "$CSV" --topic "$T.count" --labels-topic "" --from 2018-04-01 --to "$to" --quiet \
  2> "$LOGS/count.log"
N=$(grep -o "sent [0-9]* transactions" "$LOGS/count.log" | tr -dc 0-9)
echo "$N transactions over $DAYS days; replaying at $RATE/s" >&2
"$B" replay --csv "$CSV" --topic "$T.in" --labels-topic "$T.labels" --from 2018-04-01 --to "$to" \
  --rate "$RATE" --quiet 2> "$LOGS/replay.log" &
rpid=$!
"$B" run --group "$T.g" --input-topic "$T.in" --output-topic "$T.out" --labels-topic "$T.labels" \
  --dlq-topic "$T.dlq" --drift-topic "$T.drift" --device cpu --metrics-addr "127.0.0.1:$PORT" \
  --max-records "$N" 2> "$LOGS/worker.log" &
wpid=$!
samples="$LOGS/samples"
: > "$samples"
while kill -0 "$wpid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$wpid/status" 2>/dev/null || echo 0)
  m=$(curl -s "http://127.0.0.1:$PORT/metrics" || true)
  val() { echo "$m" | awk -v n="$1" '$1 == n {print $2}' | head -1; }
  echo "$rss $(val riskstream_records_consumed_total) $(val riskstream_state_customers) \
$(val riskstream_state_customer_transactions) $(val riskstream_state_terminals) \
$(val riskstream_state_terminal_labels)" >> "$samples"
  sleep 1
done
wait "$rpid" || true
wait "$wpid" || true
{
  echo "| day (≈) | consumed | RSS, MB | customers | customer transactions | terminals | terminal labels |"
  echo "|---|---|---|---|---|---|---|"
  awk -v n="$N" -v days="$DAYS" -v step="$STEP" '
    NF == 6 && $2 != "" {
      day = int(days * $2 / n)
      if (day >= next_day) {
        printf "| %d | %d | %.0f | %d | %d | %d | %d |\n", day, $2, $1 / 1024, $3, $4, $5, $6
        next_day = day - day % step + step
      }
      last = $0
    }
    END {
      split(last, f, " ")
      printf "| %d (end) | %d | %.0f | %d | %d | %d | %d |\n", days, f[2], f[1] / 1024, f[3], f[4], f[5], f[6]
    }' "$samples"
  # The changelog record of a customer: 10-byte header, id, covered offset,
  # then 8 + 8 + 8 + 1 bytes per transaction (time as a varint: 6).
  tail -1 "$samples" | awk '{ if ($3 > 0) printf "\nPer live customer: %.1f transactions; changelog record ≈ %.0f bytes. Per terminal: %.1f labels.\n", $4 / $3, 20 + 23 * $4 / $3, ($5 > 0 ? $6 / $5 : 0) }'
} | tee "$OUT"
