#!/usr/bin/env bash
# The whole test suite, in the two tiers of docs/testing.md, from one build:
#   tier 1: the hermetic tests, the ones plain `cargo test` runs: no broker,
#           no outside tool, none of the RISKSTREAM_TEST_* / peer variables;
#           run before anything is installed or started;
#   tier 2: the tests of the `external-tests` feature: against Apache Kafka
#           and Apicurio Registry (started here, wiped per run), the Python
#           and Java peers, promtool and the deploy validators (installed
#           into the cache outside the clone).
# Every test runs once. Exit status 0 only when both tiers passed.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTREAM_CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RISKSTREAM_CACHE/target}"
export BROKER_PORT="${BROKER_PORT:-9092}"
THREADS="${TEST_THREADS:-2}"
# One build for both tiers: the feature only adds tier-2 tests, and building
# tier 1 without it would compile the crate and every test binary twice.
CARGO=(cargo test --release --locked --features external-tests --no-fail-fast)

# libssl and pkg-config for the build; a JDK and Maven for tier 2.
scripts/deps.sh

# The tiers' targets. Tier 2: the [[test]] entries of Cargo.toml that require
# the feature (name = ... before required-features = ...). Tier 1: every
# other tests/*.rs. Tier-1 files (and worker/src) keep their tier-2 tests in
# `mod external` behind the feature (tests/structure.rs checks it): tier 1
# skips those, tier 2 runs only those.
mapfile -t tier2 < <(awk '
  /^\[\[test\]\]/ { entry = 1; name = ""; next }
  /^\[/ { entry = 0 }
  entry && /^name *=/ { name = $0; sub(/^name *= *"/, "", name); sub(/".*/, "", name) }
  entry && /^required-features *=.*"external-tests"/ { print name }
' Cargo.toml)
tier1=()
mixed=()
for f in tests/*.rs; do
  name="$(basename "$f" .rs)"
  [[ " ${tier2[*]} " == *" $name "* ]] && continue
  tier1+=("$name")
  if grep -q '^mod external {' "$f"; then mixed+=("$name"); fi
done
echo "test.sh: tier 1: unit tests, doc tests, ${tier1[*]}"
if [ ${#tier2[@]} -eq 0 ]; then
  echo "test.sh: no tier-2 [[test]] entries read from Cargo.toml" >&2
  exit 1
fi
echo "test.sh: tier 2: ${tier2[*]}; the external:: tests of the unit tests and of ${mixed[*]}"
tests_of() { for name in "$@"; do printf -- '--test\n%s\n' "$name"; done; }
mapfile -t tier1_args < <(tests_of "${tier1[@]}")
mapfile -t tier2_args < <(tests_of "${tier2[@]}")
mapfile -t mixed_args < <(tests_of "${mixed[@]}")

cargo build --release --locked --all-targets --features external-tests
# The GPU path (burn wgpu) type-checks and lints here; building and running
# it needs a GPU machine (see docs/serving.md, "Device"). Checking takes ~4 minutes
# cold, a full wgpu build about an hour, so CI checks.
CARGO_TARGET_DIR="$RISKSTREAM_CACHE/wgpu-check" cargo clippy --release --locked --features wgpu --lib -- -D warnings

status=0
# ---- tier 1: hermetic, nothing started yet, no outside variables.
start=$SECONDS
hermetic=(env -u RISKSTREAM_TEST_BROKERS -u RISKSTREAM_TEST_REGISTRY_URL -u RISKSTREAM_PYTHON
  -u RISKSTREAM_JAVA_PEER -u RISKSTREAM_PROMTOOL)
"${hermetic[@]}" "${CARGO[@]}" --lib --bins "${tier1_args[@]}" -- --test-threads="$THREADS" --skip external:: || status=1
"${hermetic[@]}" "${CARGO[@]}" --doc || status=1
echo "test.sh: tier 1 took $((SECONDS - start)) s (status $status)"

# ---- tier 2: the outside systems.
start=$SECONDS
export RISKSTREAM_TEST_BROKERS="127.0.0.1:$BROKER_PORT"
# fastavro and a current librdkafka client, the outside implementations the
# interoperability tests check against (a venv in the cache).
RISKSTREAM_PYTHON="$(scripts/pyenv.sh)"
export RISKSTREAM_PYTHON
# The Avro reference implementation and the Kafka Java client
# (tests/interop/java, built with Maven into the cache).
RISKSTREAM_JAVA_PEER="$(scripts/javapeer.sh)"
export RISKSTREAM_JAVA_PEER
# promtool, the reference for the Prometheus exposition format.
RISKSTREAM_PROMTOOL="$(scripts/promtool.sh)"
export RISKSTREAM_PROMTOOL
# (tests/deploy.rs runs scripts/validate_deploy.sh, which installs its own.)

# Apache Kafka (KRaft, one node) from Maven Central, wiped per run so every
# run starts from an empty cluster; tests that need their own broker (the
# broker restart, the three-node failover) start it through broker.sh too.
# The brokers tests start themselves: tests/broker_restart.rs (one node on
# 9095), tests/failover.rs (three nodes on 19092-19094) and tests/auth.rs
# (SASL/SCRAM with the StandardAuthorizer on 9300, SASL_SSL on 9500).
own_brokers() {
  BROKER_PORT=9095 scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
  BROKER_PORT=19092 BROKER_NODES=3 scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
  BROKER_AUTH=sasl BROKER_PORT=9300 scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
}
own_brokers
scripts/broker.sh stop --wipe >/dev/null 2>&1 || true
scripts/broker.sh start
# Apicurio Registry 2.6 (in memory, from Maven Central): the real
# Confluent-compatible registry tests/schema_registry.rs also runs against.
scripts/registry.sh stop >/dev/null 2>&1 || true
scripts/registry.sh start
RISKSTREAM_TEST_REGISTRY_URL="$(scripts/registry.sh url)"
export RISKSTREAM_TEST_REGISTRY_URL
cleanup() { scripts/broker.sh stop --wipe || true; scripts/registry.sh stop || true; own_brokers; }
trap cleanup EXIT

"${CARGO[@]}" "${tier2_args[@]}" -- --test-threads="$THREADS" || status=1
"${CARGO[@]}" --lib "${mixed_args[@]}" -- --test-threads="$THREADS" external:: || status=1
echo "test.sh: tier 2 took $((SECONDS - start)) s (status $status)"
exit "$status"
