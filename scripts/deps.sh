#!/usr/bin/env bash
# Prerequisites beyond the Rust toolchain, installed with apt when missing
# (Debian/Ubuntu):
# - libssl-dev and pkg-config: librdkafka is built with OpenSSL (SSL and
#   SASL SCRAM);
# - a Java 17 JDK and Maven: Apache Kafka and Apicurio Registry run on the
#   JVM and are fetched from Maven Central (scripts/broker.sh,
#   scripts/registry.sh), and the Java interoperability peer is built with
#   Maven (scripts/maven_jar.sh: the Java peers).
set -euo pipefail
missing=()
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev pkg-config)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# The openssl CLI: the SASL_SSL broker of tests/auth.rs makes its CA with it.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}") >&2; then
  echo "deps.sh: cannot install ${missing[*]}; install them yourself (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
