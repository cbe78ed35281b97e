#!/usr/bin/env bash
# Issue 26: riskstream beside its peers, one after another on the same Kafka
# broker (scripts/broker.sh, 127.0.0.1:9092, loopback) and the same data:
#   passthrough (`riskstream passthrough`: consume→produce, no decoding) — the
#   broker's and librdkafka's floor; riskstream (`riskstream run`, drift
#   sidecar on, as deployed); riskstream with `--drift-topic off`; the Kafka
#   Streams peer (benches/peers/kafka-streams, `java -Xmx512m`, at least once);
#   the Python peer (benches/peers/python/worker.py).
# Measures, per system:
#   - CPU per record: (user + sys of the whole process, /usr/bin/time) / N,
#     start-up and label history included; maximum records/s as each prints it
#     (riskstream and passthrough: over the second half of the records; the
#     peers: first → last output); peak RSS; cold start (process start → first
#     scored record acknowledged, the label history read first). BENCH_ROUNDS
#     rounds, the systems interleaved in each (each run in a new group or
#     application id, to a new output topic); the round with the least CPU
#     counts (the least disturbed on a busy machine), every round's CPU listed.
#   - end to end p50 / p99 at 50 % of its own maximum (that round's rate): the
#     system on a fresh topic pre-loaded with one record, then
#     `riskstream replay --rate R --timestamp-now` for ~BENCH_LATENCY_SECONDS;
#     scripts/e2e_probe.py, outside every system, matches outputs to inputs by
#     transaction_id: output received (wall clock) − input Kafka timestamp.
#   - restart with history committed: BENCH_HISTORY_DAYS days from 2018-04-01
#     (default 41: to 2018-05-11, ~400k transactions, labels too) in a topic of
#     their own; each system consumes all of it in its own group / application
#     id and stops (offsets committed), BENCH_RESTART_RECORDS more are
#     appended, and the system starts again: process start → first new record
#     scored (riskstream restores customer state from its changelog topic; the
#     Kafka Streams peer from its store's changelog, its local state directory
#     deleted first as on a new pod; the Python peer replays the input before
#     its committed offsets). Passthrough keeps no state: n/a.
#   - parity: the week 2018-07-01…07 (8 partitions) scored by riskstream and
#     by the Kafka Streams peer, compared by scripts/parity.py (strict: every
#     record joined, |score difference| ≤ 1e-5, flags and other fields equal);
#     exit status 1 when it fails (or when a run failed).
# Data: BENCH_RECORDS (default 1000000) transactions from 2018-07-01 on 8
# partitions and their labels, pre-loaded once. Prints one Markdown table and
# writes it to bench-peers.md (or $BENCH_OUT). Topics and consumer groups made
# here are deleted at exit (BENCH_KEEP_TOPICS=1 keeps them).
# RISKSTREAM_BIN: a prebuilt binary (nothing is built then, scripts/bench_bin.sh);
# BENCH_CSV: the transactions CSV (default: the handbook's);
# BENCH_ROUNDS (default 2); BENCH_LATENCY_SECONDS (default 8);
# BENCH_HISTORY_DAYS (default 41); BENCH_RESTART_RECORDS (default 100);
# BENCH_RUN_TIMEOUT (default 1800): seconds one run may take before it is
#   stopped and counted as failed.
# The Python venv: scripts/python_worker_venv.sh; the Kafka Streams jar:
# scripts/kstreams_peer.sh (Maven and a JDK installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
N="${BENCH_RECORDS:-1000000}"
ROUNDS="${BENCH_ROUNDS:-2}"
LAT_S="${BENCH_LATENCY_SECONDS:-8}"
HDAYS="${BENCH_HISTORY_DAYS:-41}"
RESTART_N="${BENCH_RESTART_RECORDS:-100}"
RUN_TIMEOUT="${BENCH_RUN_TIMEOUT:-1800}"
OUT="${BENCH_OUT:-bench-peers.md}"
CSV="${BENCH_CSV:-../shared/data/handbook/transactions.csv.gz}"
BROKERS=127.0.0.1:9092
PARTS=8
SYSTEMS="pt rs rsnd ks py"

B="$(scripts/bench_bin.sh)"
[ -x "$B" ] || { echo "bench_peers: no riskstream binary at $B" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench_peers: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
PY="$(scripts/python_worker_venv.sh)"
JAR="$(scripts/kstreams_peer.sh)"
BROKER_PORT=9092 BROKER_NODES=1 scripts/broker.sh start >&2

T="peers-$$"
LOGS=$(mktemp -d)
MODEL="$LOGS/model.json"
BG=()  # background processes started here, stopped at exit
FAILED=()

# Topics (and consumer groups) whose names start with one of the prefixes.
drop() {
  "$PY" - "$BROKERS" "$@" <<'PYTHON' >&2 || true
import os
import sys
import time
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
prefixes = tuple(sys.argv[2:])
topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
for f in (admin.delete_topics(topics, operation_timeout=30) if topics else {}).values():
    try:
        f.result()
    except Exception as e:  # noqa: BLE001 - best effort
        print(f"bench_peers: cannot delete a topic: {e}")
# Groups too; a Kafka Streams member stays in its group after close until its
# session times out, so the last cleanup (DROP_WAIT_S) retries for a while.
wait = float(os.environ.get("DROP_WAIT_S", "0"))
deadline = time.monotonic() + wait
while True:
    left = []
    try:
        groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid
                  if g.group_id.startswith(prefixes)]
        for g, f in (admin.delete_consumer_groups(groups, request_timeout=30) if groups else {}).items():
            try:
                f.result()
            except Exception:  # noqa: BLE001 - a group with a member still in it
                left.append(g)
    except Exception as e:  # noqa: BLE001
        print(f"bench_peers: cannot list consumer groups: {e}")
    if not left or time.monotonic() > deadline:
        break
    time.sleep(3)
if left and wait > 0:
    print(f"bench_peers: consumer groups not deleted (members still in them): {left}")
PYTHON
}
cleanup() {
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${BENCH_KEEP_TOPICS:-0}" != 1 ]; then DROP_WAIT_S=90 drop "$T."; fi
  rm -rf "$LOGS"
}
trap cleanup EXIT

# Records in a topic (every partition: high − low watermark).
count() {
  "$PY" - "$BROKERS" "$1" <<'PYTHON'
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "bench-peers-count"})
md = c.list_topics(sys.argv[2], timeout=10).topics[sys.argv[2]]
n = 0
for p in md.partitions:
    lo, hi = c.get_watermark_offsets(TopicPartition(sys.argv[2], p), timeout=10)
    n += hi - lo
c.close()
print(n)
PYTHON
}
# replay [--feed] FLAGS...: from the handbook CSV, or with --feed from $FEED.
replay() {
  local csv=$CSV
  if [ "$1" = --feed ]; then csv=$FEED; shift; fi
  "$B" replay --brokers "$BROKERS" --csv "$csv" --partitions "$PARTS" --quiet "$@" >&2
}
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
# The last NAME=value in the files, or nothing.
metric() { local n=$1; shift; cat "$@" 2>/dev/null | strip | grep -o "$n=[0-9.e+-]*" | tail -1 | cut -d= -f2 || true; }
# The rate a run printed: riskstream's steady rate, else passthrough's second
# half, else records_per_second (the peers, riskstream without a steady rate).
rate_of() {
  local r
  r=$(metric steady_records_per_second "$@")
  if [ -z "$r" ] || awk -v x="$r" 'BEGIN { exit !(x <= 0) }'; then
    r=$(cat "$@" 2>/dev/null | grep -o "second half [0-9]* records/s" | tail -1 | tr -dc 0-9 || true)
  fi
  [ -n "$r" ] || r=$(metric records_per_second "$@")
  printf "%.0f" "${r:-0}"
}

# The command of system $1 on input $2 → output $3, group / application id
# $4, stopping after $5 records; labels from $LABELS; into the array CMD.
cmd_for() {
  local common_rs=(run --brokers "$BROKERS" --group "$4" --input-topic "$2" --output-topic "$3"
    --labels-topic "$LABELS" --dlq-topic "$T.dlq" --topic-partitions "$PARTS" --metrics-addr off
    --device cpu --max-records "$5")
  case $1 in
    pt) CMD=("$B" passthrough --brokers "$BROKERS" --input-topic "$2" --output-topic "$3" --max "$5") ;;
    rs) CMD=("$B" "${common_rs[@]}" --drift-topic "$T.drift") ;;
    rsnd) CMD=("$B" "${common_rs[@]}" --drift-topic off) ;;
    ks) CMD=(java -Xmx512m -jar "$JAR" --brokers "$BROKERS" --application-id "$4" --input-topic "$2"
      --labels-topic "$LABELS" --output-topic "$3" --dlq-topic "$T.dlq" --model "$MODEL"
      --max-records "$5" --topic-partitions "$PARTS") ;;
    py) CMD=("$PY" benches/peers/python/worker.py --brokers "$BROKERS" --group "$4" --input-topic "$2"
      --output-topic "$3" --labels-topic "$LABELS" --model-json "$MODEL" --max-records "$5"
      --partitions "$PARTS") ;;
  esac
}
declare -A NAME=([pt]="passthrough (\`riskstream passthrough\`, no decoding)" [rs]="riskstream (drift on)"
  [rsnd]="riskstream (\`--drift-topic off\`)" [ks]="Kafka Streams peer (4.1, RocksDB, at least once)"
  [py]="Python peer (confluent-kafka, fastavro, numpy)")

# One run in the foreground under /usr/bin/time: timed SYS TAG IN OUT GROUP MAX [extra flags...];
# logs in $LOGS/TAG.{out,err,time}; status 1 (logged) when it failed.
timed() {
  local sys=$1 tag=$2; shift 2
  cmd_for "$sys" "$@"
  shift 4
  if ! timeout -k 10 "$RUN_TIMEOUT" /usr/bin/time -f "%U %S %M" -o "$LOGS/$tag.time" "${CMD[@]}" "$@" \
    > "$LOGS/$tag.out" 2> "$LOGS/$tag.err"; then
    echo "bench_peers: $tag failed:" >&2
    tail -20 "$LOGS/$tag.err" "$LOGS/$tag.out" >&2 || true
    FAILED+=("$tag")
    return 1
  fi
}

echo "bench_peers: pre-loading $N transactions and their labels into $T.in, $T.labels ($PARTS partitions)" >&2
replay --topic "$T.in" --labels-topic "$T.labels" --from 2018-07-01 --limit "$N"
N_IN=$(count "$T.in")
"$B" models export fraud-mlp@champion --out "$MODEL" >&2
LABELS="$T.labels"

# 1. CPU, records/s, peak RSS, cold start: BENCH_ROUNDS rounds, interleaved.
# $LOGS/SYS.runs: "user sys rss rate first_output_seconds" per round.
for i in $(seq 1 "$ROUNDS"); do
  for s in $SYSTEMS; do
    echo "bench_peers: round $i/$ROUNDS: $s" >&2
    tag="run-$s-$i"
    if timed "$s" "$tag" "$T.in" "$T.$tag.out" "$T.$tag.g" "$N_IN"; then
      read -r u sy rss < "$LOGS/$tag.time"
      echo "$u $sy $rss $(rate_of "$LOGS/$tag.out" "$LOGS/$tag.err") $(metric first_output_seconds "$LOGS/$tag.out" "$LOGS/$tag.err")" >> "$LOGS/$s.runs"
    fi
    # The outputs are not needed again: keep the broker's disk small.
    drop "$T.$tag." "$T.in.state.$T.$tag."
  done
done
# The run with the least user + sys: "user sys rss rate first_output_seconds".
least() { [ -s "$1" ] && awk '{ c = $1 + $2; if (NR == 1 || c < best) { best = c; line = $0 } } END { print line }' "$1"; }
cpu_all() { awk -v n="$N_IN" '{ printf "%s%.1f", (NR > 1 ? ", " : ""), ($1 + $2) * 1e6 / n }' "$1"; }
declare -A U S RSS RATE COLD CPU CPUS
for s in $SYSTEMS; do
  if line=$(least "$LOGS/$s.runs"); then
    read -r U[$s] S[$s] RSS[$s] RATE[$s] COLD[$s] <<< "$line"
    CPU[$s]=$(awk -v u="${U[$s]}" -v s="${S[$s]}" -v n="$N_IN" 'BEGIN { printf "%.1f", (u + s) * 1e6 / n }')
    CPUS[$s]=$(cpu_all "$LOGS/$s.runs")
  fi
done

# 2. End to end at 50 % of each system's own maximum, measured by scripts/e2e_probe.py.
# `riskstream replay --rate` paces from its start, and skipping the CSV's rows
# before --from (three months to 2018-07-02) takes it a while, so the first
# records would go out in a burst: the feed reads a CSV that begins on its
# first day instead (day 92 = 2018-07-02, at most N rows).
FEED="$LOGS/feed.csv"
{ zcat -f "$CSV" | awk -F, -v max="$N" 'NR == 1 { print; next } $7 >= 92 { print; if (++k >= max) exit }'; } > "$FEED" || true
[ "$(wc -l < "$FEED")" -gt 1 ] || { echo "bench_peers: cannot write the feed CSV from $CSV" >&2; exit 1; }
declare -A LAT
latency_run() { # sys
  local s=$1 L="$T.lat-$1" rate n wpid ppid t=0
  rate=$(( ${RATE[$s]:-0} / 2 ))
  if [ "$rate" -le 0 ]; then LAT[$s]="n/a (no maximum rate measured)"; return; fi
  n=$(( rate * LAT_S ))
  [ "$n" -gt "$N" ] && n=$N
  echo "bench_peers: end to end: $s at $rate records/s, $n records" >&2
  replay --topic "$L.in" --labels-topic "" --from 2018-07-01 --limit 1 --timestamp-now
  cmd_for "$s" "$L.in" "$L.out" "$L.g" $(( n + 1 ))
  "${CMD[@]}" > "$LOGS/lat-$s.out" 2> "$LOGS/lat-$s.err" &
  wpid=$!; BG+=("$wpid")
  "$PY" scripts/e2e_probe.py "$BROKERS" "$L.in" "$L.out" "$n" --ready "$LOGS/lat-$s.ready" \
    > "$LOGS/lat-$s.json" 2> "$LOGS/lat-$s.probe.err" &
  ppid=$!; BG+=("$ppid")
  while [ ! -e "$LOGS/lat-$s.ready" ] && kill -0 "$ppid" 2>/dev/null; do sleep 0.2; done
  if [ -e "$LOGS/lat-$s.ready" ]; then
    replay --feed --topic "$L.in" --labels-topic "" --from 2018-07-02 --limit "$n" --rate "$rate" --timestamp-now
  fi
  wait "$ppid" || true
  # The system stops by itself after n + 1 records; give it a minute.
  while kill -0 "$wpid" 2>/dev/null && [ "$t" -lt 60 ]; do sleep 1; t=$(( t + 1 )); done
  kill "$wpid" 2>/dev/null || true
  wait "$wpid" || true
  local j="$LOGS/lat-$s.json"
  if [ -s "$j" ] && [ "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("count", 0))' "$j")" -gt 0 ]; then
    LAT[$s]=$("$PY" - "$j" "$rate" <<'PYTHON'
import json, sys
r = json.load(open(sys.argv[1]))
part = "" if r["count"] == r["expected"] else f", {r['count']} of {r['expected']} matched"
print(f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms (at {sys.argv[2]}/s, fed at {r.get('input_rate') or 0:.0f}/s{part})")
PYTHON
)
  else
    LAT[$s]="n/a (the probe measured nothing: $(head -c 200 "$j" 2>/dev/null; tail -3 "$LOGS/lat-$s.err" | strip | tr '\n' ' ' | head -c 200))"
    FAILED+=("lat-$s")
  fi
  drop "$L."
}
for s in $SYSTEMS; do latency_run "$s"; done

# 3. Restart with BENCH_HISTORY_DAYS days of history committed.
H="$T.hist"
H_TO=$(date -u -d "2018-04-01 + $(( HDAYS - 1 )) days" +%F)
H_NEXT=$(date -u -d "2018-04-01 + $HDAYS days" +%F)
echo "bench_peers: pre-loading 2018-04-01…$H_TO into $H.in, $H.labels" >&2
replay --topic "$H.in" --labels-topic "$H.labels" --from 2018-04-01 --to "$H_TO"
H_N=$(count "$H.in")
LABELS="$H.labels"
declare -A RESTART
restart_extra() { # the Kafka Streams peer keeps its state directory between its two runs (then deleted)
  [ "$1" = ks ] && echo "--state-dir $LOGS/ks-state" || true
}
for s in rs rsnd ks py; do
  echo "bench_peers: restart: $s consumes the $H_N records of history" >&2
  # shellcheck disable=SC2046  # the extra flags split on purpose (no spaces in $LOGS)
  timed "$s" "hist1-$s" "$H.in" "$H.$s.out" "$H.$s.g" "$H_N" $(restart_extra "$s") || true
done
replay --topic "$H.in" --labels-topic "" --from "$H_NEXT" --limit "$RESTART_N"
rm -rf "$LOGS/ks-state"  # a new pod has no local state: the peer restores from its changelog
for s in rs rsnd ks py; do
  echo "bench_peers: restart: $s after $H_N committed records, $RESTART_N new" >&2
  if timed "$s" "hist2-$s" "$H.in" "$H.$s.out" "$H.$s.g" "$RESTART_N" $(restart_extra "$s"); then
    v=$(metric first_output_seconds "$LOGS/hist2-$s.out" "$LOGS/hist2-$s.err")
    if [ -n "$v" ] && awk -v x="$v" 'BEGIN { exit !(x >= 0) }'; then
      RESTART[$s]="$(printf "%.1f" "$v") s"
    else
      RESTART[$s]="n/a (no first output reported)"
    fi
  else
    RESTART[$s]="n/a (the restarted run failed)"
  fi
done
RESTART[pt]="n/a (keeps no state and commits no offsets)"
rm -rf "$LOGS/ks-state"
drop "$H."

# 4. Parity: riskstream against the Kafka Streams peer on one week, 8 partitions.
P="$T.pw"
echo "bench_peers: parity week 2018-07-01…07 into $P.in" >&2
replay --topic "$P.in" --labels-topic "$P.labels" --from 2018-07-01 --to 2018-07-07
P_N=$(count "$P.in")
LABELS="$P.labels"
PARITY="FAILED (a run failed)"
if timed rsnd parity-rs "$P.in" "$P.rs.out" "$P.rs.g" "$P_N" && timed ks parity-ks "$P.in" "$P.ks.out" "$P.ks.g" "$P_N"; then
  "$PY" scripts/parity.py "$BROKERS" "$P.rs.out" "$P.ks.out" "$P_N" --names riskstream,kstreams \
    > "$LOGS/parity.json" 2> "$LOGS/parity.err" || true
  cat "$LOGS/parity.err" >&2
  PARITY=$("$PY" - "$LOGS/parity.json" <<'PYTHON'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:  # noqa: BLE001
    print("FAILED (parity.py printed no result)")
    sys.exit()
verdict = "ok" if r["ok"] else "FAILED"
print(f"{verdict}: {r['joined']} of {r['riskstream']} / {r['kstreams']} joined, max \\|Δ score\\| "
      f"{r['max_abs_diff']:.2g} (≤ 1e-5), flags agree {100 * r['flags_agree']:.2f} % "
      f"({r['flagged_riskstream']} / {r['flagged_kstreams']} flagged), other fields differ {r['other_fields_differ']}")
PYTHON
)
fi
drop "$P."

# 5. The table.
val() { [ -n "${CPU[$1]:-}" ]; }
{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); Apache Kafka $(scripts/broker.sh version) (one node) on loopback; $(java -version 2>&1 | head -1); Python $("$PY" -c 'import platform; print(platform.python_version())'). Data: $N_IN transactions from 2018-07-01 on $PARTS partitions, their labels pre-loaded; $ROUNDS rounds."
  echo
  echo "| system | CPU / record (least of $ROUNDS; every round) | max records/s | peak RSS | cold start → first scored record | end to end p50 / p99 at 50 % of its max | restart with $HDAYS days committed ($H_N records) → scoring again | parity with riskstream (2018-07-01…07, $PARTS partitions) |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in $SYSTEMS; do
    if val "$s"; then
      cpu="${CPU[$s]} µs (${CPUS[$s]})"; rate="${RATE[$s]}"; rss="$(( ${RSS[$s]} / 1024 )) MiB"
      cold="$(awk -v x="${COLD[$s]:-}" 'BEGIN { if (x == "" || x < 0) print "?"; else printf "%.1f s", x }')"
    else
      cpu="failed"; rate="failed"; rss="?"; cold="?"
    fi
    [ "$s" = pt ] && cold="n/a (scores nothing)"
    case $s in rs) par="(reference)" ;; ks) par="$PARITY" ;; *) par="—" ;; esac
    echo "| ${NAME[$s]} | $cpu | $rate | $rss | $cold | ${LAT[$s]:-?} | ${RESTART[$s]:-?} | $par |"
  done
  echo
  echo "CPU / record: (user + sys of the process) / records, start-up and the label history ($N_IN labels) included. Max records/s: riskstream and passthrough over the second half of the records, the peers from their first to their last output. Cold start: process (JVM) start → first output acknowledged by the broker. End to end: \`scripts/e2e_probe.py\`, output received − input Kafka timestamp (\`riskstream replay --timestamp-now\`), matched by transaction_id, ~$LAT_S s of records at half the rate in the max column. Restart: the first run consumed the $H_N records of 2018-04-01…$H_TO and committed; $RESTART_N records appended; process start → first of them scored (riskstream: state from its changelog topic; Kafka Streams: local state directory deleted first, store restored from its changelog; Python: replays the input up to its committed offsets)."
} | tee "$OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then echo "bench_peers: failed: ${FAILED[*]}" >&2; fi
case $PARITY in ok*) ;; *) echo "bench_peers: parity check failed (see above)" >&2; exit 1 ;; esac
[ "${#FAILED[@]}" -eq 0 ] || exit 1
