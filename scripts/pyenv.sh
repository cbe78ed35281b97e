#!/usr/bin/env bash
# The Python environment of the interoperability tests (fastavro and a
# current librdkafka client, pinned in tests/interop/requirements.txt):
# a venv in the cache outside the clone, set up once; prints its python.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
REQ=tests/interop/requirements.txt
VENV="$CACHE/venv-interop"
PY="$VENV/bin/python"
mkdir -p "$CACHE"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/venv-interop.lock"
  flock 9
fi
stamp="$VENV/.riskstream-requirements"
if [ ! -x "$PY" ] || ! cmp -s "$REQ" "$stamp" || ! "$PY" -c 'import confluent_kafka, fastavro' 2>/dev/null; then
  echo "pyenv.sh: setting up $VENV" >&2
  if ! python3 -m venv "$VENV" >&2; then
    echo "pyenv.sh: python3 -m venv failed; installing python3-venv" >&2
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
    python3 -m venv "$VENV" >&2
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$REQ" >&2
  cp "$REQ" "$stamp"
fi
echo "$PY"
