#!/usr/bin/env bash
# The Python environment of the Python peer (benches/peers/python: confluent-
# kafka, fastavro, numpy, pinned in its requirements.txt), which
# scripts/bench_python.sh, scripts/bench_peers.sh, scripts/parity.py and
# scripts/e2e_probe.py run in: scripts/pyenv.sh's venv-python-worker; prints
# its python.
exec "$(dirname "$0")/pyenv.sh" benches/peers/python/requirements.txt venv-python-worker
