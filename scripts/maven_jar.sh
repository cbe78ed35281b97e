#!/usr/bin/env bash
# Builds a Maven project of this repository into a runnable jar in the cache
# outside the clone, once per version of its pom and sources (a hash of their
# names and contents), with the Maven repository in the cache too (after the
# first build a rebuild needs no network); prints the jar's path. Installs
# Maven and a JDK with apt when missing. Used by scripts/javapeer.sh and
# scripts/kstreams_peer.sh.
#
#   scripts/maven_jar.sh SRC_DIR CACHE_SUBDIR ARTIFACT
#   (the pom builds target/ARTIFACT.jar; the jar lands in
#    $RISKSTREAM_CACHE/CACHE_SUBDIR/ARTIFACT-<hash>.jar)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$1" SUB="$2" ARTIFACT="$3"
CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
M2="$CACHE/m2"
mkdir -p "$CACHE/$SUB"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/$SUB.lock"
  flock 9
fi
hash="$(cd "$SRC" && find pom.xml src -type f -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -c1-16)"
JAR="$CACHE/$SUB/$ARTIFACT-$hash.jar"
if [ ! -s "$JAR" ]; then
  for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "maven_jar.sh: $tool not found; installing maven and a JDK" >&2
      apt-get update -qq >&2 && apt-get install -y -qq maven openjdk-17-jdk-headless >&2
    fi
  done
  echo "maven_jar.sh: building $SRC into $JAR" >&2
  build="$(mktemp -d "$CACHE/$SUB/build.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
  cp -r "$SRC/pom.xml" "$SRC/src" "$build/"
  mvn=(mvn -q -B -Dstyle.color=never -f "$build/pom.xml" -Dmaven.repo.local="$M2" package)
  # Offline first once the repository holds what the build needs.
  if [ ! -d "$M2" ] || ! "${mvn[@]}" -o >&2; then
    "${mvn[@]}" >&2
  fi
  cp "$build/target/$ARTIFACT.jar" "$JAR.tmp"
  mv "$JAR.tmp" "$JAR"
fi
echo "$JAR"
