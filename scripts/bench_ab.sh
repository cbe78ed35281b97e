#!/usr/bin/env bash
# CPU per record of several worker builds or settings in one run, on one
# pre-loaded topic (the same data and worker flags as scripts/bench.sh's
# "full worker" row), interleaved ROUNDS times so drift of the machine hits
# every variant alike.
#   scripts/bench_ab.sh NAME=BINARY[:EXTRA_FLAGS] ...
# e.g. scripts/bench_ab.sh before=/tmp/rs-before after=/tmp/rs-head \
#        no-state=/tmp/rs-head:--state-enabled=false
# EXTRA_FLAGS: `riskstream run` flags, comma-separated. BENCH_RECORDS
# (default 200000), ROUNDS (default 2). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${BENCH_RECORDS:-200000}"
ROUNDS="${ROUNDS:-2}"
CSV="${BENCH_CSV:-../shared/data/handbook/transactions.csv.gz}"
[ $# -ge 1 ] || { echo "usage: $0 NAME=BINARY[:FLAGS] ..." >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { apt-get install -y time >/dev/null 2>&1 || true; }
scripts/broker.sh start >&2
T="ab-$$"
LOGS=$(mktemp -d)
first="${1#*=}"; first="${first%%:*}"
echo "pre-loading a week of labels and $N transactions into $T.*" >&2
"$first" replay --csv "$CSV" --topic "$T.warm" --labels-topic "$T.labels" --from 2018-06-24 --to 2018-06-30 --quiet >&2
"$first" replay --csv "$CSV" --topic "$T.in" --labels-topic "" --from 2018-07-01 --limit "$N" --quiet >&2
declare -A cpu rate
for r in $(seq 1 "$ROUNDS"); do
  for v in "$@"; do
    name="${v%%=*}"; spec="${v#*=}"; bin="${spec%%:*}"; flags=""
    [[ "$spec" == *:* ]] && flags="${spec#*:}"
    IFS=',' read -r -a extra <<< "$flags"
    g="$T.$name.$r"
    /usr/bin/time -f "%U %S %M" -o "$LOGS/$g.time" "$bin" run "${extra[@]}" --group "$g" --input-topic "$T.in" \
      --output-topic "$g.out" --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off --device cpu \
      --max-records "$N" 2> "$LOGS/$g.log"
    read -r u s rss < "$LOGS/$g.time"
    us=$(awk -v u="$u" -v s="$s" -v n="$N" 'BEGIN { printf "%.2f", (u + s) * 1e6 / n }')
    rs=$(sed 's/\x1b\[[0-9;]*m//g' < "$LOGS/$g.log" | grep -o "steady_records_per_second=[0-9.]*" | tail -1 | cut -d= -f2 | cut -d. -f1)
    cpu[$name]="${cpu[$name]:-}${cpu[$name]:+ / }$us"
    rate[$name]="${rate[$name]:-}${rate[$name]:+ / }${rs:-?}"
    echo "round $r $name: $us µs CPU/record, ${rs:-?} records/s, peak RSS $((rss / 1024)) MB" >&2
  done
done
echo "| variant | CPU per record, µs (each round) | records/s (each round) |"
echo "|---|---|---|"
for v in "$@"; do
  name="${v%%=*}"
  echo "| $name | ${cpu[$name]} | ${rate[$name]} |"
done
