#!/usr/bin/env bash
# The JVM peer of the interoperability tests (tests/interop/java: Avro's
# reference implementation and Apache Kafka's Java client, pinned in its
# pom.xml), built into the cache by scripts/maven_jar.sh; prints the path of
# its runnable jar.
#
#   RISKSTREAM_JAVA_PEER="$(scripts/javapeer.sh)"
#   java -jar "$RISKSTREAM_JAVA_PEER" consume --brokers ... (see Peer.java)
exec "$(dirname "$0")/maven_jar.sh" tests/interop/java javapeer riskstream-java-peer
