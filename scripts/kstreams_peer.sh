#!/usr/bin/env bash
# The Kafka Streams peer of riskstream (benches/peers/kafka-streams, issue 26),
# built into the cache by scripts/maven_jar.sh; prints the path of its
# runnable jar.
#
#   JAR="$(scripts/kstreams_peer.sh)"
#   java -Xmx512m -jar "$JAR" --model model.json --input-topic ... (see its README.md)
exec "$(dirname "$0")/maven_jar.sh" benches/peers/kafka-streams kstreams-peer riskstream-kstreams-peer
