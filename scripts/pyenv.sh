#!/usr/bin/env bash
# A Python environment of the project: a venv in the cache outside the clone,
# set up once; pip runs again only when its requirements file changed;
# prints its python.
#   scripts/pyenv.sh                  the interoperability tests' (fastavro and
#                                     a current librdkafka client, pinned in
#                                     tests/interop/requirements.txt)
#   scripts/pyenv.sh REQUIREMENTS NAME   another one, in $RISKSTREAM_CACHE/NAME
#                                     (scripts/python_worker_venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
REQ="${1:-tests/interop/requirements.txt}"
NAME="${2:-venv-interop}"
VENV="$CACHE/$NAME"
PY="$VENV/bin/python"
mkdir -p "$CACHE"
# One installer at a time.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/$NAME.lock"
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
