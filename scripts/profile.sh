#!/usr/bin/env bash
# Where riskstream's CPU goes, per record and per stage, from instruction
# counts (valgrind --tool=callgrind: repeatable on a noisy machine, unlike
# timers and sampling profilers).
#
#   scripts/profile.sh                 profile and write the breakdown
#   PROFILE_ANALYZE=DIR scripts/profile.sh
#                                      only the breakdown, from the callgrind
#                                      files an earlier run left in DIR
#
# On the broker at 127.0.0.1:9092 (scripts/broker.sh; topics prof-<pid>.*,
# deleted at exit): a week of labels (2018-06-24…30) and PROFILE_RECORDS
# (default 20000) transactions from 2018-07-01 are pre-loaded, then each of
# these runs under `valgrind --tool=callgrind --separate-threads=no` (every
# thread, librdkafka's included, summed into one profile):
#   full      riskstream run, drift on (as deployed), --max-records N
#   nodrift   the same with --drift-topic off
#   pt        riskstream passthrough --max N (librdkafka consume + produce:
#             the floor)
# each twice: with N = PROFILE_RECORDS and N = PROFILE_SMALL (default 1000).
# Figures are marginal: (instructions of the big run - of the small run) /
# (records handled by the big run - by the small run), so start-up (model
# load, label history, group join, topic creation) drops out; start-up is
# reported on its own from the small run. The worker handles more than
# --max-records when it prefetched more while the label history loaded:
# "handled=" of its log is the count used.
#
# Instructions are attributed to stages by scripts/callgrind_stages.py (the
# rules and how shared code is split are described there and in the output).
# Writes PROFILE_OUT (default benches/results/2026-12-07-issue26/breakdown.md)
# and prints it.
#
# Environment: RISKSTREAM_BIN (a prebuilt binary with debuginfo: the release
# profile keeps it; else scripts/bench_bin.sh builds one), PROFILE_RECORDS,
# PROFILE_SMALL, PROFILE_OUT, PROFILE_WORK (where the callgrind files and
# logs go; default a new folder under $RISKSTREAM_CACHE/profile),
# PROFILE_FLUSH_MS (default 60000: --state-flush-interval-ms, see below),
# PROFILE_TIMEOUT (default 1800 s per valgrind run), BENCH_CSV.
#
# Under valgrind the worker runs ~50-100x slower, so whatever runs per unit of
# wall time (librdkafka's timers and statistics, the 100 ms health watch, the
# label reader's idle polls, the changelog flush every second) happens ~50-100x
# more often per record than at full speed. The changelog flush is the one
# such cost that grows with the data, so it is stretched to
# PROFILE_FLUSH_MS (60 s, the most the worker accepts; at full speed 1 s is
# ~36,000 records, under callgrind 60 s is ~20,000); the rest are reported in
# their own row ("periodic") and left out of the per-record total. The
# session timeout is 30 s (valgrind runs one thread at a time: a heartbeat
# can be late).
#
# At assignment librdkafka fetches the input while the changelog restore
# runs; the seek after the restore throws that away and fetches it again
# (callgrind's call counts show 2 message parses per record). That re-read
# is start-up work bounded by the prefetch limits, shown in its own row and
# left out of the per-record total.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
N="${PROFILE_RECORDS:-20000}"
SMALL="${PROFILE_SMALL:-1000}"
OUT="${PROFILE_OUT:-benches/results/2026-12-07-issue26/breakdown.md}"
FLUSH_MS="${PROFILE_FLUSH_MS:-60000}"
TMO="${PROFILE_TIMEOUT:-1800}"
CSV="${BENCH_CSV:-../shared/data/handbook/transactions.csv.gz}"
COMMAND="${RISKSTREAM_BIN:+RISKSTREAM_BIN=$RISKSTREAM_BIN }PROFILE_RECORDS=$N PROFILE_SMALL=$SMALL PROFILE_FLUSH_MS=$FLUSH_MS scripts/profile.sh"

analyze() { # DIR
  python3 scripts/callgrind_stages.py --dir "$1" --command "$COMMAND" --out "$OUT"
}

if [ -n "${PROFILE_ANALYZE:-}" ]; then
  analyze "$PROFILE_ANALYZE"
  exit 0
fi

if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
  echo "profile: installing valgrind" >&2
  apt-get update >/dev/null && apt-get install -y valgrind >/dev/null
fi
B="$(scripts/bench_bin.sh)"
[ -x "$B" ] || { echo "profile: no riskstream binary at $B" >&2; exit 1; }
scripts/broker.sh start >&2

T="prof-$$"
WORK="${PROFILE_WORK:-$RISKSTREAM_CACHE/profile/$T}"
mkdir -p "$WORK"
GROUPS_MADE=()
cleanup() {
  if [ "${PROFILE_KEEP_TOPICS:-0}" != 1 ]; then
    scripts/kafka.sh topics --delete --topic "$T\\..*" >/dev/null 2>&1 || true
    # passthrough's own group is passthrough-<its pid> (valgrind's pid)
    for f in "$WORK"/pt*.callgrind; do
      [ -f "$f" ] && GROUPS_MADE+=("passthrough-$(grep -m1 '^pid:' "$f" | awk '{print $2}')")
    done
    for g in "${GROUPS_MADE[@]}"; do
      scripts/kafka.sh consumer-groups --delete --group "$g" >/dev/null 2>&1 || true
    done
  fi
}
trap cleanup EXIT

echo "profile: pre-loading a week of labels and $N transactions into $T.* (work folder $WORK)" >&2
"$B" replay --csv "$CSV" --topic "$T.warm" --labels-topic "$T.labels" --from 2018-06-24 --to 2018-06-30 --quiet >&2
"$B" replay --csv "$CSV" --topic "$T.in" --labels-topic "" --from 2018-07-01 --limit "$N" --quiet >&2
# The small runs read a topic of their own holding only the first SMALL
# records: the worker prefetches while the label history loads and would
# handle far more than --max-records from the big topic.
"$B" replay --csv "$CSV" --topic "$T.in-small" --labels-topic "" --from 2018-07-01 --limit "$SMALL" --quiet >&2

{
  echo "commit=$(git rev-parse HEAD)"
  echo "binary=$B"
  echo "binary_mtime=$(date -u -r "$B" +%Y-%m-%dT%H:%M:%SZ)"
  echo "valgrind=$(valgrind --version)"
  echo "machine=$(nproc) cores, $(uname -m)"
  echo "records=$N"
  echo "small=$SMALL"
  echo "flush_ms=$FLUSH_MS"
  echo "worker_flags=--metrics-addr off --device cpu --session-timeout-ms 30000 --state-flush-interval-ms $FLUSH_MS (drift: --drift-topic <own topic>; drift off: --drift-topic off)"
} > "$WORK/meta.txt"

cg() { # NAME ARGS...: one callgrind run; its log in NAME.log, the wall time in NAME.wall
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  echo "profile: callgrind $name ($(date -u +%H:%M:%S))" >&2
  timeout "$TMO" valgrind --tool=callgrind --separate-threads=no \
    --callgrind-out-file="$WORK/$name.callgrind" "$B" "$@" > "$WORK/$name.log" 2>&1
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }' > "$WORK/$name.wall"
}

worker() { # NAME N INPUT EXTRA...
  local name=$1 n=$2 input=$3; shift 3
  GROUPS_MADE+=("$T.$name")
  # A longer session: valgrind serialises the threads, a heartbeat can be late.
  cg "$name" run --group "$T.$name" --input-topic "$input" --output-topic "$T.$name.out" \
    --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu \
    --max-records "$n" --session-timeout-ms 30000 --state-flush-interval-ms "$FLUSH_MS" "$@"
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.log" | grep -o "worker stopped cleanly handled=[0-9]*" | tail -1 \
    | grep -o "[0-9]*$" > "$WORK/$name.handled" \
    || { echo "profile: run $name did not stop cleanly (see $WORK/$name.log)" >&2; exit 1; }
}

# The worker's rate at full speed (no valgrind), for the periodic row.
GROUPS_MADE+=("$T.native")
"$B" run --group "$T.native" --input-topic "$T.in" --output-topic "$T.native.out" \
  --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu \
  --max-records "$N" --drift-topic "$T.native.drift" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' \
  | grep -o "steady_records_per_second=[0-9.]*" | tail -1 | cut -d= -f2 > "$WORK/native.rate" || true

# Each drift run has a drift topic of its own: with the global verdict (the
# default) an instance merges every instance's slices from <topic>.slices,
# an earlier run's included.
worker full "$N" "$T.in" --drift-topic "$T.full.drift"
worker full-small "$SMALL" "$T.in-small" --drift-topic "$T.full-small.drift"
worker nodrift "$N" "$T.in" --drift-topic off
worker nodrift-small "$SMALL" "$T.in-small" --drift-topic off
cg pt passthrough --input-topic "$T.in" --output-topic "$T.pt.out" --max "$N"
echo "$N" > "$WORK/pt.handled"
cg pt-small passthrough --input-topic "$T.in-small" --output-topic "$T.pt.out2" --max "$SMALL"
echo "$SMALL" > "$WORK/pt-small.handled"

analyze "$WORK"
