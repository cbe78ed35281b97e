#!/usr/bin/env bash
# Starts, stops or reports a Kafka-protocol broker (Tansu) on loopback.
#
#   scripts/broker.sh start|stop [--wipe]|status|install
#
# Installs Tansu with cargo on first use (about 30 minutes on 2 cores), with
# both storage engines, into a cache outside the clone so later runs and CI
# reuse it.
# Environment: RISKSTREAM_CACHE (default ~/.cache/riskstream),
#              BROKER_PORT (default 9092),
#              BROKER_STORAGE: memory (default; throughput) or sqlite (fetches
#                by record offset, correct high watermarks, survives a broker
#                restart, compacts; 3-5x slower: state, restart and fault tests),
#              BROKER_MAINTENANCE: how often the SQLite engine compacts (1m).
set -euo pipefail

CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
PORT="${BROKER_PORT:-9092}"
TANSU_VERSION=0.6.0
FEATURES=dynostore,libsql
ROOT="$CACHE/tansu-$TANSU_VERSION-${FEATURES//,/-}"
BIN="$ROOT/bin/tansu"
STORAGE="${BROKER_STORAGE:-memory}"
RUN="$CACHE/broker-$PORT"
PIDFILE="$RUN/tansu.pid"
LOG="$RUN/tansu.log"

log() { echo "broker.sh: $*" >&2; }

install() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v cargo >/dev/null || { log "cargo is required to install Tansu"; exit 1; }
  mkdir -p "$ROOT"
  log "installing tansu $TANSU_VERSION ($FEATURES) into $ROOT; this compiles for a while"
  local t0=$SECONDS
  cargo install tansu --version "$TANSU_VERSION" --no-default-features --features "$FEATURES" \
    --locked --root "$ROOT" >"$CACHE/tansu-install.log" 2>&1 || {
      tail -30 "$CACHE/tansu-install.log" >&2; log "install failed (full log: $CACHE/tansu-install.log)"; exit 1; }
  log "installed in $((SECONDS - t0)) s"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

start() {
  install
  if running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  mkdir -p "$RUN"
  local engine
  case "$STORAGE" in
    memory) engine="memory://tansu/" ;;
    # Relative to the broker's working directory ($RUN); kept across restarts
    # of the broker until `scripts/broker.sh stop --wipe`.
    # Compaction (cleanup.policy=compact) runs at each maintenance, every
    # BROKER_MAINTENANCE (Tansu's default is 10m).
    sqlite) engine="sqlite://tansu.db?maintenance_interval=${BROKER_MAINTENANCE:-1m}" ;;
    *) log "BROKER_STORAGE must be memory or sqlite, not $STORAGE"; exit 2 ;;
  esac
  log "starting tansu ($STORAGE storage) on 127.0.0.1:$PORT (log: $LOG)"
  # setsid: the broker outlives the shell that started it.
  (cd "$RUN" && exec setsid "$BIN" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "$engine" \
    --cluster-id riskstream >"$LOG" 2>&1 < /dev/null) &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if port_open; then log "ready"; return 0; fi
    if ! running; then tail -20 "$LOG" >&2; log "broker exited during start-up"; exit 1; fi
    sleep 0.1
  done
  log "broker did not open port $PORT within 10 s"; exit 1
}

stop() {
  if running; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
    running && kill -9 "$(cat "$PIDFILE")" 2>/dev/null || true
    log "stopped"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
  if [ "${1:-}" = --wipe ]; then rm -f "$RUN"/tansu.db*; log "sqlite data removed"; fi
}

status() {
  if running && port_open; then echo "running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; else echo "stopped"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  install) install ;;
  *) echo "usage: $0 start|stop [--wipe]|status|install" >&2; exit 2 ;;
esac
