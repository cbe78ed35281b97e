#!/usr/bin/env bash
# Build prerequisites beyond the Rust toolchain: librdkafka is built with
# OpenSSL (SSL and SASL SCRAM), so its headers and pkg-config must be there.
# Installs them with apt when missing (Debian/Ubuntu).
set -euo pipefail
if pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
echo "deps.sh: installing libssl-dev and pkg-config (librdkafka's SSL support)" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq libssl-dev pkg-config) >&2; then
  echo "deps.sh: cannot install libssl-dev; install it yourself (Debian: apt-get install libssl-dev pkg-config)" >&2
  exit 1
fi
