#!/usr/bin/env bash
# Prints the path of promtool (Prometheus' exposition-format checker), the
# outside reference the metrics tests check /metrics against. Uses one on
# PATH, else extracts it from Debian's `prometheus` package into the cache
# (the package itself, with its server and service, is not installed).
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
DIR="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}/promtool"
if [ ! -x "$DIR/usr/bin/promtool" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || {
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download prometheus >/dev/null)
  }
  mkdir -p "$DIR"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$DIR"
fi
echo "$DIR/usr/bin/promtool"
