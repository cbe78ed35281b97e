#!/usr/bin/env bash
# Issue 6 on a machine with a GPU, from prebuilt binaries (no Rust
# toolchain, package registry or network needed there):
#   1. the inference bench (criterion, `benches/stages.rs`): flex (CPU) and
#      wgpu, batch sizes 1…4096, on whatever adapter wgpu finds;
#   2. the end-to-end bench (`scripts/bench.sh`) against Apache Kafka on loopback;
#   3. one worker run scoring on wgpu and one on the CPU, same records.
#
#   scripts/bench_device.sh PACK OUT
#
# PACK holds bin/riskstream and bin/stages (built with `--features wgpu`),
# kafka/ (the libs/ folder scripts/broker.sh installs; the machine needs a
# Java 17 runtime), bin/time (GNU time, used when /usr/bin/time is missing), lib/
# (libssl, libcrypto, libz: used only when the machine lacks them) and a
# transactions CSV (transactions.csv.gz, a slice of the handbook's).
# The bench binary reads the registry from RISKSTREAM_MODELS_DIR (this
# checkout's models/).
# Writes OUT/gpu.txt, OUT/inference.txt, OUT/bench-e2e.md, OUT/worker-devices.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=$(realpath "$1")
OUT=$(realpath "$2")
mkdir -p "$OUT"
B="$PACK/bin/riskstream"
CSV="$PACK/transactions.csv.gz"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
if ldd "$B" | grep -q "not found"; then
  export LD_LIBRARY_PATH="$PACK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -x /usr/bin/time ] || cp "$PACK/bin/time" /usr/bin/time
export RISKSTREAM_MODELS_DIR="$PWD/models"

if [ -z "${SKIP_INFERENCE:-}" ]; then
echo "== inference bench" >&2
timeout 200 "$PACK/bin/stages" --bench inference 2>&1 | tee "$OUT/inference.txt" \
  | grep -E "^inference|time:|thrpt:" >&2
fi

echo "== end-to-end bench" >&2
export RISKSTREAM_CACHE=/tmp/riskstream-cache
mkdir -p "$RISKSTREAM_CACHE/kafka-$(scripts/broker.sh version)"
cp -r "$PACK/kafka" "$RISKSTREAM_CACHE/kafka-$(scripts/broker.sh version)/libs"
touch "$RISKSTREAM_CACHE/kafka-$(scripts/broker.sh version)/libs/.complete"
RISKSTREAM_BIN="$B" BENCH_CSV="$CSV" BENCH_OUT="$OUT/bench-e2e.md" timeout 300 scripts/bench.sh 2> "$OUT/bench-e2e.log"

echo "== worker: wgpu against CPU" >&2
T="devbench-$$"
N="${DEVICE_RECORDS:-400000}"
"$B" replay --csv "$CSV" --topic "$T.warm" --labels-topic "$T.labels" --from 2018-06-24 --to 2018-06-30 --quiet >&2
"$B" replay --csv "$CSV" --topic "$T.in" --labels-topic "" --from 2018-07-01 --limit "$N" --quiet >&2
{
  echo "| device | records/s (second half) | CPU µs/record | scoring on | first output s |"
  echo "|---|---|---|---|---|"
  for dev in wgpu cpu; do
    /usr/bin/time -f "%U %S %M" -o "$OUT/$dev.time" "$B" run --group "$T.$dev" --input-topic "$T.in" \
      --output-topic "$T.out.$dev" --labels-topic "$T.labels" --dlq-topic "$T.dlq" --metrics-addr off \
      --device "$dev" --max-records "$N" --drift-topic off 2> "$OUT/worker-$dev.log"
    read -r u s _ < "$OUT/$dev.time"
    log=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/worker-$dev.log")
    rate=$(grep -o "steady_records_per_second=[0-9]*" <<<"$log" | tail -1 | cut -d= -f2)
    first=$(grep -o "first_output_seconds=[0-9.]*" <<<"$log" | tail -1 | cut -d= -f2)
    on=$(grep -o "model loaded; scoring on [^=]*" <<<"$log" | head -1 | sed -e 's/model loaded; scoring on //' -e 's/ [a-z_]*$//')
    echo "| $dev | $rate | $(awk -v u="$u" -v s="$s" -v n="$N" 'BEGIN{printf "%.1f", (u+s)*1e6/n}') | $on | $first |"
  done
} | tee "$OUT/worker-devices.md"
scripts/broker.sh stop >&2 || true
