#!/usr/bin/env bash
# End-to-end benchmark on the real broker (Tansu on loopback), one worker:
#   passthrough (consume→produce, no decoding) — the limit;
#   the full worker: records/s, ratio to passthrough, CPU per record, peak RSS,
#   and again with the drift sidecar off (its overhead),
#   cold start (process start → first scored record delivered);
#   processing latency (consume → output delivered) p50/p99/p99.9 at 25/50/75 %
#   of the measured maximum rate, default batching.
# Prints one Markdown table and writes it to bench-results.md (or $BENCH_OUT).
# BENCH_RECORDS (default 200000) records are pre-loaded once per run.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
N="${BENCH_RECORDS:-200000}"
OUT="${BENCH_OUT:-bench-results.md}"
command -v /usr/bin/time >/dev/null || { apt-get install -y time >/dev/null 2>&1 || true; }
scripts/deps.sh >&2
cargo build --release --locked --bin riskstream >&2
scripts/broker.sh start >&2
B="$CARGO_TARGET_DIR/release/riskstream"
CSV=../shared/data/handbook/transactions.csv.gz
T="bench-$$"
LOGS=$(mktemp -d)
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
field() { strip < "$1" | grep -o "$2=[0-9.e+-]*" | tail -1 | cut -d= -f2 | xargs printf "%.1f" 2>/dev/null || echo "?"; }

echo "pre-loading $N transactions into $T.in" >&2
"$B" replay --csv "$CSV" --topic "$T.in" --labels-topic "$T.labels" --from 2018-07-01 --limit "$N" --quiet >&2

# 1. passthrough
/usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/pt.time" \
  "$B" passthrough --input-topic "$T.in" --output-topic "$T.pt" --max "$N" > "$LOGS/pt.out"
PT_RATE=$(grep -o "= [0-9]*" "$LOGS/pt.out" | tr -dc 0-9)
read -r _ PT_U PT_S _ _ < "$LOGS/pt.time"

# 2. the full worker
/usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/w.time" \
  "$B" run --group "$T.g1" --input-topic "$T.in" --output-topic "$T.out" --labels-topic "$T.labels" \
  --dlq-topic "$T.dlq" --metrics-addr off --device cpu --max-records "$N" 2> "$LOGS/w.log"
W_RATE=$(field "$LOGS/w.log" records_per_second | cut -d. -f1)
# Latency runs need an integer rate.
[ "$W_RATE" = "?" ] && W_RATE=1000
COLD=$(field "$LOGS/w.log" first_output_seconds)
read -r _ W_U W_S _ W_RSS < "$LOGS/w.time"
cpu_us() { awk -v u="$1" -v s="$2" -v n="$N" 'BEGIN { printf "%.1f", (u + s) * 1e6 / n }'; }

# 2b. the same without the drift sidecar: its overhead
/usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/nd.time" \
  "$B" run --group "$T.g2" --input-topic "$T.in" --output-topic "$T.out2" --labels-topic "$T.labels" \
  --dlq-topic "$T.dlq" --metrics-addr off --device cpu --max-records "$N" --drift-topic off 2> "$LOGS/nd.log"
ND_RATE=$(field "$LOGS/nd.log" records_per_second | cut -d. -f1)
read -r _ ND_U ND_S _ _ < "$LOGS/nd.time"

# 3. latency at fractions of the maximum rate
lat_rows=""
for pct in 25 50 75; do
  rate=$(( W_RATE * pct / 100 ))
  [ "$rate" -gt "$PT_RATE" ] && rate=$(( PT_RATE * pct / 100 ))
  n=$(( rate * 10 )); [ "$n" -gt "$N" ] && n=$N
  topic="$T.lat$pct"
  "$B" replay --csv "$CSV" --topic "$topic" --labels-topic "" --from 2018-07-01 --limit 1 --quiet >&2
  "$B" run --group "$T.lat$pct" --input-topic "$topic" --output-topic "$topic.out" --labels-topic "$T.labels" \
    --dlq-topic "$T.dlq" --metrics-addr off --device cpu --max-records $(( n + 1 )) 2> "$LOGS/lat$pct.log" &
  wpid=$!
  sleep 6
  "$B" replay --csv "$CSV" --topic "$topic" --labels-topic "" --from 2018-07-02 --limit "$n" --rate "$rate" --quiet >&2
  wait "$wpid" || true
  lat_rows+="| latency at ${pct} % (${rate} ev/s) | p50 $(field "$LOGS/lat$pct.log" processing_ms_p50) ms, p99 $(field "$LOGS/lat$pct.log" processing_ms_p99) ms, p99.9 $(field "$LOGS/lat$pct.log" processing_ms_p999) ms |"$'\n'
done

{
  echo "| measure | value |"
  echo "|---|---|"
  echo "| machine | $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); broker Tansu 0.6 (memory) on loopback |"
  echo "| records | $N (handbook, from 2018-07-01) |"
  echo "| passthrough (consume→produce, no decoding) | ${PT_RATE} records/s, $(cpu_us "$PT_U" "$PT_S") µs CPU/record |"
  echo "| full worker (decode, features, MLP, encode, produce) | ${W_RATE} records/s = $(awk -v a="$W_RATE" -v b="$PT_RATE" 'BEGIN{printf "%.0f", 100*a/b}') % of passthrough, $(cpu_us "$W_U" "$W_S") µs CPU/record |"
  echo "| drift sidecar | off: ${ND_RATE} records/s, $(cpu_us "$ND_U" "$ND_S") µs CPU/record; on (above): $(awk -v a="$W_RATE" -v b="$ND_RATE" 'BEGIN{printf "%+.1f", 100*(a-b)/b}') % records/s, $(awk -v u="$W_U" -v s="$W_S" -v a="$ND_U" -v b="$ND_S" -v n="$N" 'BEGIN{printf "%+.2f", ((u+s)-(a+b))*1e6/n}') µs CPU/record |"
  echo "| cold start (process start → first scored record) | ${COLD} s |"
  echo "| peak RSS, full worker | $(( W_RSS / 1024 )) MiB |"
  printf "%s" "$lat_rows"
} | tee "$OUT"
