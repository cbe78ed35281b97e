#!/usr/bin/env bash
# End-to-end benchmark on Apache Kafka (scripts/broker.sh, loopback), one worker:
#   passthrough (consume→produce, no decoding) — the limit;
#   the full worker: records/s, ratio to passthrough, CPU per record, peak RSS,
#   and again with the drift sidecar off (its overhead);
#   cold start (process start → first scored record delivered);
#   latency (input produced → scored record acknowledged; consume → ack
#   beside it) p50/p99/p99.9 at 25/50/75 % of
#   the worker's maximum rate, default batching, beside passthrough's at the
#   same rate (the broker's own floor), and at ~1,000 ev/s.
# Data: one week of labels (2018-06-24…30, ~67k: the label history a worker
# reads at start) and BENCH_RECORDS (default 400000) transactions from
# 2018-07-01, pre-loaded once. Prints one Markdown table and writes it to
# bench-results.md (or $BENCH_OUT).
# RISKSTREAM_BIN: a prebuilt binary (nothing is built or installed then);
# BENCH_CSV: the transactions CSV (default: the handbook's);
# BENCH_RUN_ARGS: extra `riskstream run` flags for every worker run (e.g.
#   --state-enabled=false, to measure the state changelog's cost).
# BENCH_EOS (default 1): also the cost of --delivery exactly-once at commit
#   intervals of 100 (the default), 20 and 1000 ms: records/s, CPU/record and
#   end to end (produced → visible to read_committed readers, i.e. committed)
#   at 50 % of at-least-once's maximum rate, beside at-least-once's.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
N="${BENCH_RECORDS:-400000}"
OUT="${BENCH_OUT:-bench-results.md}"
B="$(scripts/bench_bin.sh)"
scripts/broker.sh start >&2
CSV="${BENCH_CSV:-../shared/data/handbook/transactions.csv.gz}"
T="bench-$$"
LOGS=$(mktemp -d)
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
field() { strip < "$1" | grep -o "$2=[0-9.e+-]*" | tail -1 | cut -d= -f2 | xargs printf "%.1f" 2>/dev/null || echo "?"; }
pt_field() { grep -o "$2 [0-9.]* ms" "$1" | head -1 | awk '{print $2}'; }
# passthrough's end-to-end figures: pt_e2e FILE p50|p99|p999
pt_e2e() { grep -o "end to end p50 [0-9.]* ms p99 [0-9.]* ms p999 [0-9.]* ms" "$1" | grep -o "$2 [0-9.]* ms" | awk '{print $2}'; }
cpu_us() { awk -v u="$1" -v s="$2" -v n="$3" 'BEGIN { printf "%.1f", (u + s) * 1e6 / n }'; }

echo "pre-loading a week of labels and $N transactions into $T.*" >&2
"$B" replay --csv "$CSV" --topic "$T.warm" --labels-topic "$T.labels" --from 2018-06-24 --to 2018-06-30 --quiet >&2
"$B" replay --csv "$CSV" --topic "$T.in" --labels-topic "" --from 2018-07-01 --limit "$N" --quiet >&2

# 1. passthrough
/usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/pt.time" \
  "$B" passthrough --input-topic "$T.in" --output-topic "$T.pt" --max "$N" > "$LOGS/pt.out"
# Rates are over the second half of the records: by then start-up (group
# join, label history) and the backlog librdkafka prefetched meanwhile are
# behind, and both run at the broker's pace.
PT_RATE=$(grep -o "second half [0-9]* records/s" "$LOGS/pt.out" | tr -dc 0-9)
read -r _ PT_U PT_S _ _ < "$LOGS/pt.time"

# 2. the full worker (drift on, as deployed), then without the drift sidecar
/usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/w.time" "$B" run ${BENCH_RUN_ARGS:-} --group "$T.g1" --input-topic "$T.in" --output-topic "$T.out" \
  --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu --max-records "$N" 2> "$LOGS/w.log"
W_RATE=$(field "$LOGS/w.log" steady_records_per_second | cut -d. -f1)
[ "$W_RATE" = "?" ] && W_RATE=1000
COLD=$(field "$LOGS/w.log" first_output_seconds)
LABEL_MS=$(strip < "$LOGS/w.log" | grep -o "label history loaded labels=[0-9]* ms=[0-9]*" | tail -1)
read -r _ W_U W_S _ W_RSS < "$LOGS/w.time"
/usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/nd.time" "$B" run ${BENCH_RUN_ARGS:-} --group "$T.g2" --input-topic "$T.in" --output-topic "$T.out2" \
  --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu --max-records "$N" --drift-topic off 2> "$LOGS/nd.log"
ND_RATE=$(field "$LOGS/nd.log" steady_records_per_second | cut -d. -f1)
read -r _ ND_U ND_S _ _ < "$LOGS/nd.time"

# 3. latency at fractions of the maximum rate: the worker, then passthrough at the same rate
latency_run() { # rate n label extra-worker-args...
  local rate=$1 n=$2 label=$3; shift 3
  # Topic names allow [a-zA-Z0-9._-] only.
  local topic="$T.lat${label//[^a-zA-Z0-9]/}"
  "$B" replay --csv "$CSV" --topic "$topic" --labels-topic "" --from 2018-07-01 --limit 1 --timestamp-now --quiet >&2
  "$B" run ${BENCH_RUN_ARGS:-} --group "$topic.g" --input-topic "$topic" --output-topic "$topic.out" --labels-topic "$T.labels" \
    --dlq-topic "$T.dlq" --metrics-addr off --device cpu --max-records $(( n + 1 )) "$@" 2> "$LOGS/lat$label.log" &
  local wpid=$!
  sleep 6
  "$B" replay --csv "$CSV" --topic "$topic" --labels-topic "" --from 2018-07-02 --limit "$n" --rate "$rate" --timestamp-now --quiet >&2
  wait "$wpid" || true
  # passthrough on a fresh topic at the same rate
  "$B" replay --csv "$CSV" --topic "$topic.p" --labels-topic "" --from 2018-07-01 --limit 1 --timestamp-now --quiet >&2
  "$B" passthrough --input-topic "$topic.p" --output-topic "$topic.pout" --max $(( n + 1 )) > "$LOGS/plat$label.out" &
  local ppid=$!
  sleep 3
  "$B" replay --csv "$CSV" --topic "$topic.p" --labels-topic "" --from 2018-07-02 --limit "$n" --rate "$rate" --timestamp-now --quiet >&2
  wait "$ppid" || true
  local w="$LOGS/lat$label.log" p="$LOGS/plat$label.out"
  echo "| latency at ${label} (${rate} ev/s${EXTRA_NOTE:-}) | worker p50 $(field "$w" end_to_end_ms_p50) ms, p99 $(field "$w" end_to_end_ms_p99) ms, p99.9 $(field "$w" end_to_end_ms_p999) ms · passthrough p50 $(pt_e2e "$p" p50) ms, p99 $(pt_e2e "$p" p99) ms, p99.9 $(pt_e2e "$p" p999) ms · worker consume→ack p50 $(field "$w" processing_ms_p50) ms, p99 $(field "$w" processing_ms_p99) ms |"
}
lat_rows=""
for pct in 25 50 75; do
  rate=$(( W_RATE * pct / 100 ))
  [ "$rate" -gt "$PT_RATE" ] && rate=$(( PT_RATE * pct / 100 ))
  n=$(( rate * 8 )); [ "$n" -gt "$N" ] && n=$N
  lat_rows+="$(latency_run "$rate" "$n" "${pct} %")"$'\n'
done
lat_rows+="$(EXTRA_NOTE=", --linger-ms 1" latency_run 1000 8000 "low load" --linger-ms 1)"$'\n'

# 4. exactly-once: maximum rate and CPU, then latency at 50 % of
# at-least-once's maximum, per commit interval.
eos_rows=""
if [ "${BENCH_EOS:-1}" = 1 ]; then
  half=$(( W_RATE / 2 )); [ "$half" -gt "$PT_RATE" ] && half=$(( PT_RATE / 2 ))
  hn=$(( half * 8 )); [ "$hn" -gt "$N" ] && hn=$N
  for ci in 100 20 1000; do
    /usr/bin/time -f "cpu %U %S rss %M" -o "$LOGS/eos$ci.time" "$B" run ${BENCH_RUN_ARGS:-} --group "$T.eos$ci" --input-topic "$T.in" \
      --output-topic "$T.eos$ci.out" --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu \
      --max-records "$N" --delivery exactly-once --commit-interval-ms "$ci" --group-instance-id "eos$ci" 2> "$LOGS/eos$ci.log"
    e_rate=$(field "$LOGS/eos$ci.log" steady_records_per_second | cut -d. -f1)
    read -r _ E_U E_S _ E_RSS < "$LOGS/eos$ci.time"
    latency_run "$half" "$hn" "eos$ci" --delivery exactly-once --commit-interval-ms "$ci" --group-instance-id "eoslat$ci" > /dev/null
    e="$LOGS/lateos$ci.log"
    eos_rows+="| exactly-once, commit every $ci ms | ${e_rate} records/s = $(awk -v a="$e_rate" -v b="$W_RATE" 'BEGIN{printf "%.0f", 100*a/b}') % of at-least-once, $(cpu_us "$E_U" "$E_S" "$N") µs CPU/record, peak RSS $(( E_RSS / 1024 )) MiB · at ${half} ev/s (50 %): read_committed end to end p50 $(field "$e" end_to_end_ms_p50) ms, p99 $(field "$e" end_to_end_ms_p99) ms |"$'\n'
  done
  latency_run "$half" "$hn" "alo50" > /dev/null
  a="$LOGS/latalo50.log"
  eos_rows+="| at-least-once at the same ${half} ev/s | end to end p50 $(field "$a" end_to_end_ms_p50) ms, p99 $(field "$a" end_to_end_ms_p99) ms |"$'\n'
fi

{
  echo "| measure | value |"
  echo "|---|---|"
  echo "| machine | $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); broker Apache Kafka $(scripts/broker.sh version) (one node) on loopback |"
  echo "| records | $N transactions from 2018-07-01; label history one week (${LABEL_MS:-?}) |"
  echo "| rates | records/s over the second half of the records (steady state) |"
  echo "| passthrough (consume→produce, no decoding) | ${PT_RATE} records/s, $(cpu_us "$PT_U" "$PT_S" "$N") µs CPU/record |"
  echo "| full worker (decode, features, MLP, encode, produce, drift) | ${W_RATE} records/s = $(awk -v a="$W_RATE" -v b="$PT_RATE" 'BEGIN{printf "%.0f", 100*a/b}') % of passthrough, $(cpu_us "$W_U" "$W_S" "$N") µs CPU/record |"
  echo "| drift sidecar | off: ${ND_RATE} records/s, $(cpu_us "$ND_U" "$ND_S" "$N") µs CPU/record; on (above): $(awk -v a="$W_RATE" -v b="$ND_RATE" 'BEGIN{printf "%+.1f", 100*(a-b)/b}') % records/s |"
  echo "| cold start (process start → first scored record, incl. reading the label history) | ${COLD} s |"
  echo "| peak RSS, full worker | $(( W_RSS / 1024 )) MiB |"
  printf "%s" "$lat_rows"
  printf "%s" "$eos_rows"
} | tee "$OUT"
