#!/usr/bin/env bash
# The Kafka Streams peer of riskstream (benches/peers/kafka-streams, issue 26):
# built once per version of its pom and sources into the cache outside the
# clone, with the Maven repository there too (after the first build, a
# rebuild needs no network); prints the path of its runnable jar.
#
#   JAR="$(scripts/kstreams_peer.sh)"
#   java -Xmx512m -jar "$JAR" --model model.json --input-topic ... (see its README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
SRC=benches/peers/kafka-streams
M2="$CACHE/m2"
mkdir -p "$CACHE/kstreams-peer"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/kstreams-peer.lock"
  flock 9
fi
# The version: a hash of the pom and every source file (names and contents).
hash="$(cd "$SRC" && find pom.xml src -type f -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -c1-16)"
JAR="$CACHE/kstreams-peer/riskstream-kstreams-peer-$hash.jar"
if [ ! -s "$JAR" ]; then
  for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "kstreams_peer.sh: $tool not found; installing maven and a JDK" >&2
      apt-get update -qq >&2 && apt-get install -y -qq maven openjdk-17-jdk-headless >&2
    fi
  done
  echo "kstreams_peer.sh: building $SRC into $JAR" >&2
  build="$(mktemp -d "$CACHE/kstreams-peer/build.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
  cp -r "$SRC/pom.xml" "$SRC/src" "$build/"
  mvn=(mvn -q -B -Dstyle.color=never -f "$build/pom.xml" -Dmaven.repo.local="$M2" package)
  # Offline first once the repository holds what the build needs.
  if [ ! -d "$M2" ] || ! "${mvn[@]}" -o >&2; then
    "${mvn[@]}" >&2
  fi
  cp "$build/target/riskstream-kstreams-peer.jar" "$JAR.tmp"
  mv "$JAR.tmp" "$JAR"
fi
echo "$JAR"
