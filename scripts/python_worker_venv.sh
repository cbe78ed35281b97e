#!/usr/bin/env bash
# The Python environment of the Python peer (benches/peers/python: confluent-
# kafka, fastavro, numpy, pinned in its requirements.txt), which
# scripts/bench_python.sh, scripts/bench_peers.sh, scripts/parity.py and
# scripts/e2e_probe.py run in: a venv in the cache outside the clone
# (${RISKSTREAM_CACHE:-~/.cache/riskstream}/venv-python-worker), set up
# once; pip runs only when requirements.txt changed; prints its python.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
REQ=benches/peers/python/requirements.txt
VENV="$CACHE/venv-python-worker"
PY="$VENV/bin/python"
mkdir -p "$CACHE"
# One installer at a time.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/venv-python-worker.lock"
  flock 9
fi
stamp="$VENV/.riskstream-requirements"
if [ ! -x "$PY" ] || ! cmp -s "$REQ" "$stamp" \
  || ! "$PY" -c 'import confluent_kafka, fastavro, numpy' 2>/dev/null; then
  echo "python_worker_venv.sh: setting up $VENV" >&2
  if ! python3 -m venv "$VENV" >&2; then
    echo "python_worker_venv.sh: python3 -m venv failed; installing python3-venv" >&2
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
    python3 -m venv "$VENV" >&2
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$REQ" >&2
  cp "$REQ" "$stamp"
fi
echo "$PY"
