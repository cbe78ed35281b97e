#!/usr/bin/env bash
# Apicurio Registry on loopback, a real Confluent-compatible schema registry
# for tests/schema_registry.rs, installed from Maven Central.
#
#   scripts/registry.sh start     install on first use, start (no-op when running)
#   scripts/registry.sh stop      stop it (storage is in memory: nothing is kept)
#   scripts/registry.sh status    exit 0 when it answers
#   scripts/registry.sh url       print its Confluent API base URL (ccompat v7),
#                                 the value of RISKSTREAM_TEST_REGISTRY_URL
#   scripts/registry.sh install   only install
#   scripts/registry.sh version   print the pinned Apicurio version
#
# Environment:
#   RISKSTREAM_CACHE   cache outside the clone (default ~/.cache/riskstream)
#   APICURIO_VERSION   pinned Apicurio Registry version (default below; 3.x
#                      needs Java 21)
#   REGISTRY_PORT      HTTP port on 127.0.0.1 (default 8085)
#   REGISTRY_HEAP      JVM heap (default 384m)
#
# The distribution (io.apicurio:apicurio-registry-app, classifier `all`,
# tar.gz: a Quarkus runner jar and lib/) is fetched with Maven into the
# default local repository (~/.m2) and unpacked into the cache. It runs
# with in-memory storage and no authentication. JVM settings suit a 2-core
# machine shared with Kafka and the workers under test: small heap, serial
# GC, C1 only (starts in about 5 s).
set -euo pipefail

CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
VERSION="${APICURIO_VERSION:-2.6.13.Final}"
HOME_DIR="$CACHE/apicurio-$VERSION"
JAR="$HOME_DIR/apicurio-registry-app-$VERSION-runner.jar"
PORT="${REGISTRY_PORT:-8085}"
RUN="$CACHE/apicurio-run-$PORT"
PID_FILE="$RUN/registry.pid"
LOG="$RUN/registry.log"
BASE="http://127.0.0.1:$PORT/apis/ccompat/v7"

log() { echo "registry.sh: $*" >&2; }

install() {
  if [ -f "$HOME_DIR/.complete" ]; then return 0; fi
  command -v java >/dev/null || { log "java (17 or later) is required (scripts/deps.sh installs it)"; exit 1; }
  command -v mvn >/dev/null || { log "maven (mvn) is required to fetch Apicurio Registry from Maven Central"; exit 1; }
  log "installing Apicurio Registry $VERSION from Maven Central into $HOME_DIR"
  local t0=$SECONDS tarball="$HOME_DIR/apicurio-registry-app-$VERSION-all.tar.gz"
  rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR"
  # Through the default local repository (~/.m2), copied into the cache.
  mvn -q -B dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all" \
    -DoutputDirectory="$HOME_DIR" >"$HOME_DIR/install.log" 2>&1 \
    || { tail -30 "$HOME_DIR/install.log" >&2; log "install failed"; exit 1; }
  [ -f "$tarball" ] || { log "$tarball missing after the download"; exit 1; }
  # The tarball's entries may sit under a top folder: unpack, then move
  # the folder holding the runner jar into place.
  local tmp; tmp="$(mktemp -d "$CACHE/apicurio-unpack.XXXXXX")"
  tar -xzf "$tarball" -C "$tmp"
  local found; found="$(find "$tmp" -name "apicurio-registry-app-$VERSION-runner.jar" -print -quit)"
  [ -n "$found" ] || { rm -rf "$tmp"; log "no runner jar in $tarball"; exit 1; }
  cp -a "$(dirname "$found")/." "$HOME_DIR/"
  rm -rf "$tmp" "$tarball"
  touch "$HOME_DIR/.complete"
  log "installed in $((SECONDS - t0)) s"
}

pid_of() { cat "$PID_FILE" 2>/dev/null || true; }
running() { local p; p="$(pid_of)"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
answers() { curl -fsS -m 2 -o /dev/null "$BASE/subjects" 2>/dev/null; }

start() {
  install
  local t0=$SECONDS deadline=$((SECONDS + 90))
  if running && answers; then log "Apicurio Registry already running on $BASE"; return 0; fi
  if ! running; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      log "port $PORT is taken by another process"; exit 1
    fi
    mkdir -p "$RUN"
    # setsid: the registry outlives the shell that started it. Quarkus
    # reads its settings from system properties.
    (cd "$RUN" && exec setsid java -Xms64m -Xmx"${REGISTRY_HEAP:-384m}" -XX:+UseSerialGC \
      -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -Xss512k -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
      -Dquarkus.log.console.color=false \
      -jar "$JAR" >"$LOG" 2>&1 </dev/null) &
    echo $! >"$PID_FILE"
  fi
  until answers; do
    if ! running; then tail -40 "$LOG" >&2 || true; log "Apicurio Registry exited during start-up"; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then
      tail -40 "$LOG" >&2 || true; log "Apicurio Registry did not answer $BASE/subjects within 90 s"; exit 1
    fi
    sleep 0.3
  done
  log "Apicurio Registry $VERSION ready on $BASE ($((SECONDS - t0)) s; log in $LOG)"
}

stop() {
  if running; then
    kill "$(pid_of)" 2>/dev/null || true
    for _ in $(seq 1 150); do running || break; sleep 0.1; done
    if running; then kill -9 "$(pid_of)" 2>/dev/null || true; fi
  fi
  rm -f "$PID_FILE"
  log "stopped the registry on port $PORT"
}

status() {
  if running && answers; then echo "Apicurio Registry running (pid $(pid_of)) on $BASE"
  else echo "Apicurio Registry stopped"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) echo "$BASE" ;;
  install) install ;;
  version) echo "$VERSION" ;;
  *) echo "usage: $0 start|stop|status|url|install|version" >&2; exit 2 ;;
esac
