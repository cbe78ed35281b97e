#!/usr/bin/env bash
# Apache Kafka (KRaft) on loopback, installed from Maven Central.
#
#   scripts/broker.sh start            start every node not running (formats on first use)
#   scripts/broker.sh stop [--wipe]    stop every node (--wipe: delete the data too)
#   scripts/broker.sh status           exit 0 when every node answers
#   scripts/broker.sh kill N           SIGKILL node N (failover tests); `start` brings it back
#   scripts/broker.sh install          only install
#   scripts/broker.sh bootstrap        print the bootstrap servers
#   scripts/broker.sh version          print the pinned Kafka version
#   scripts/broker.sh tool CLASS ARGS  run a Kafka tool class (scripts/kafka.sh wraps it)
#   scripts/broker.sh bootstrap-tls    print the SASL_SSL bootstrap servers (BROKER_AUTH=sasl)
#   scripts/broker.sh ca               print the CA file the SASL_SSL listener's
#                                      certificate is signed by (BROKER_AUTH=sasl)
#   scripts/broker.sh admin-config     print the path of the super user's client
#                                      properties (BROKER_AUTH=sasl; kafka.sh uses them)
#
# Environment:
#   RISKSTREAM_CACHE  cache outside the clone (default ~/.cache/riskstream)
#   KAFKA_VERSION     pinned Apache Kafka version (default below)
#   BROKER_PORT       first node's client port (default 9092); node N listens
#                     on BROKER_PORT+N-1, its controller on BROKER_PORT+100+N-1
#   BROKER_NODES      1 (default: one combined broker and controller) or 3
#                     (three combined nodes: replication factor 3,
#                     min.insync.replicas 2)
#   BROKER_START_TIMEOUT  seconds `start` waits for every node and the cluster
#                     to answer (default 240)
#   BROKER_HEAP       JVM heap per node (default 512m for one node, 384m for three)
#   BROKER_GC         JVM collector flags (default G1 with a 20 ms pause goal;
#                     each node logs its pauses to gc.log in its folder)
#   BROKER_AUTH       none (default: PLAINTEXT, no authorizer) or sasl: node N's
#                     client port takes SASL_PLAINTEXT with SCRAM-SHA-512, port
#                     BROKER_PORT+200+N-1 SASL_SSL (SCRAM-SHA-512 over TLS, a
#                     certificate for 127.0.0.1 from a CA made on first start),
#                     the controller port SASL_PLAINTEXT with PLAIN; the KRaft
#                     StandardAuthorizer with allow.everyone.if.no.acl.found=false
#                     and one super user, admin, whose random password is kept
#                     in the run folder (admin-config). Other users:
#                       scripts/kafka.sh configs --alter --entity-type users \
#                         --entity-name NAME --add-config 'SCRAM-SHA-512=[password=...]'
#                     Use a BROKER_PORT of its own: a run folder keeps its mode.
#   BROKER_SCRAM_USERS with BROKER_AUTH=sasl, more SCRAM-SHA-512 users made when
#                     the node is formatted (first start), "NAME=PASSWORD ..."
#                     (one JVM for all: tests with many principals)
#
# Settings suit a 2-core machine: two network and two I/O threads, four
# partitions for the internal topics, no initial rebalance delay, short
# minimum session timeouts and a 4 s broker session (a dead node's
# partitions get a new leader within about 4 s) so tests fail over quickly.
set -euo pipefail

CACHE="${RISKSTREAM_CACHE:-$HOME/.cache/riskstream}"
VERSION="${KAFKA_VERSION:-4.1.1}"
# The SLF4J binding that Kafka's release tarball adds and the POM leaves out
# (at the version of log4j-core that Maven resolves for this Kafka).
LOG4J_VERSION=2.24.3
HOME_DIR="$CACHE/kafka-$VERSION"
LIBS="$HOME_DIR/libs"
PORT="${BROKER_PORT:-9092}"
NODES="${BROKER_NODES:-1}"
RUN="$CACHE/kafka-run-$PORT"
CLUSTER_ID_FILE="$RUN/cluster-id"
AUTH="${BROKER_AUTH:-none}"
case "$AUTH" in none|sasl) ;; *) echo "broker.sh: BROKER_AUTH must be none or sasl" >&2; exit 2 ;; esac
TLS_DIR="$RUN/tls"
ADMIN_PASSWORD_FILE="$RUN/admin.password"
ADMIN_CONFIG="$RUN/admin.properties"

log() { echo "broker.sh: $*" >&2; }

install() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v java >/dev/null || { log "java (17 or later) is required (scripts/deps.sh installs it)"; exit 1; }
  command -v mvn >/dev/null || { log "maven (mvn) is required to fetch Kafka from Maven Central"; exit 1; }
  log "installing Apache Kafka $VERSION from Maven Central into $HOME_DIR"
  local t0=$SECONDS
  rm -rf "$LIBS" && mkdir -p "$HOME_DIR"
  cat >"$HOME_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>riskstream</groupId><artifactId>kafka-dist</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  (cd "$HOME_DIR" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=libs -DincludeScope=runtime \
    >"$HOME_DIR/install.log" 2>&1) || { tail -30 "$HOME_DIR/install.log" >&2; log "install failed"; exit 1; }
  touch "$LIBS/.complete"
  log "installed in $((SECONDS - t0)) s"
}

node_port() { echo $((PORT + $1 - 1)); }
controller_port() { echo $((PORT + 100 + $1 - 1)); }
tls_port() { echo $((PORT + 200 + $1 - 1)); }
node_dir() { echo "$RUN/node-$1"; }
pid_of() { cat "$(node_dir "$1")/kafka.pid" 2>/dev/null || true; }
running() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

bootstrap() {
  local out="" n
  for n in $(seq 1 "$NODES"); do out="${out:+$out,}127.0.0.1:$(node_port "$n")"; done
  echo "$out"
}

bootstrap_tls() {
  local out="" n
  for n in $(seq 1 "$NODES"); do out="${out:+$out,}127.0.0.1:$(tls_port "$n")"; done
  echo "$out"
}

# BROKER_AUTH=sasl: the super user's password (random, made once per run
# folder), its client properties for Kafka's tools, and a CA with a broker
# certificate for 127.0.0.1 (PKCS12 keystore, its password the admin's).
auth_material() {
  mkdir -p "$RUN"
  if [ ! -s "$ADMIN_PASSWORD_FILE" ]; then
    (umask 077; openssl rand -hex 24 >"$ADMIN_PASSWORD_FILE")
  fi
  local pw
  pw="$(cat "$ADMIN_PASSWORD_FILE")"
  (umask 077; printf '%s\n' security.protocol=SASL_PLAINTEXT sasl.mechanism=SCRAM-SHA-512 \
    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$pw\";" \
    >"$ADMIN_CONFIG")
  [ -f "$TLS_DIR/broker.p12" ] && return 0
  command -v openssl >/dev/null || { log "openssl is required for BROKER_AUTH=sasl"; exit 1; }
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=riskstream test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout "pass:$pw" -out broker.p12
    chmod 644 ca.pem
  ) >"$RUN/tls.log" 2>&1 || { cat "$RUN/tls.log" >&2; log "making the TLS material failed"; exit 1; }
}

# Settings of a node with BROKER_AUTH=sasl (they follow, and so override,
# the plain ones).
auth_config() {
  local n=$1 pw
  pw="$(cat "$ADMIN_PASSWORD_FILE")"
  cat <<EOF
# BROKER_AUTH=sasl
listeners=CLIENT://127.0.0.1:$(node_port "$n"),TLS://127.0.0.1:$(tls_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=CLIENT://127.0.0.1:$(node_port "$n"),TLS://127.0.0.1:$(tls_port "$n")
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,TLS:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=CLIENT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
listener.name.tls.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$pw" user_admin="$pw";
listener.name.tls.ssl.keystore.type=PKCS12
listener.name.tls.ssl.keystore.location=$TLS_DIR/broker.p12
listener.name.tls.ssl.keystore.password=$pw
listener.name.tls.ssl.key.password=$pw
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
EOF
}

# JVM options of a node: small heap, G1 with a short pause goal (the broker
# shares 2 cores with the workers under test).
broker_jvm() {
  local heap="${BROKER_HEAP:-$([ "$NODES" = 1 ] && echo 512m || echo 384m)}"
  JVM=(java -Xms"$heap" -Xmx"$heap" ${BROKER_GC:--XX:+UseG1GC -XX:MaxGCPauseMillis=20} -XX:+ExitOnOutOfMemoryError
       "-Xlog:gc:file=$(node_dir "$1")/gc.log:time,uptime:filecount=2,filesize=10m"
       -Djava.awt.headless=true -cp "$LIBS/*")
}

# A short-lived tool: small heap, quick start, only errors on stderr.
java_tool() {
  [ -f "$HOME_DIR/tools-log4j2.properties" ] || printf '%s\n' 'status = error' \
    'appender.err.type = Console' 'appender.err.name = err' 'appender.err.target = SYSTEM_ERR' \
    'appender.err.layout.type = PatternLayout' 'appender.err.layout.pattern = %p %m%n' \
    'rootLogger.level = ERROR' 'rootLogger.appenderRef.err.ref = err' >"$HOME_DIR/tools-log4j2.properties"
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$HOME_DIR/tools-log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

write_config() {
  local n=$1 dir rf isr voters="" i
  dir="$(node_dir "$n")"
  if [ "$NODES" = 1 ]; then rf=1; isr=1; else rf=3; isr=2; fi
  for i in $(seq 1 "$NODES"); do voters="${voters:+$voters,}$i@127.0.0.1:$(controller_port "$i")"; done
  mkdir -p "$dir/data"
  [ "$AUTH" = none ] || auth_material
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(node_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.backoff.ms=1000
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.num.partitions=4
offsets.topic.replication.factor=$rf
transaction.state.log.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.num.partitions=1
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=3000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
auto.create.topics.enable=true
delete.topic.enable=true
unclean.leader.election.enable=false
# No time-based retention by default: riskstream stamps a scored record
# with its transaction's event time (as Kafka Streams stamps outputs), and
# the demo and the tests replay 2018 data, which a 7-day retention would
# delete at the next check. Topics that set retention.ms keep it; they are
# checked every 5 s.
log.retention.ms=-1
log.retention.check.interval.ms=5000
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
EOF
  [ "$AUTH" = none ] || auth_config "$n" >>"$dir/server.properties"
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = INFO
EOF
}

format_node() {
  local n=$1 dir
  dir="$(node_dir "$n")"
  [ -f "$dir/data/meta.properties" ] && return 0
  mkdir -p "$RUN"
  [ -f "$CLUSTER_ID_FILE" ] || java_tool kafka.tools.StorageTool random-uuid >"$CLUSTER_ID_FILE"
  local scram=()
  [ "$AUTH" = none ] || scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$ADMIN_PASSWORD_FILE")]")
  local user
  for user in ${BROKER_SCRAM_USERS:-}; do
    [ "$AUTH" = none ] && break
    scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]")
  done
  java_tool kafka.tools.StorageTool format \
    -t "$(cat "$CLUSTER_ID_FILE")" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; log "formatting node $n failed"; exit 1; }
}

start_node() {
  local n=$1 dir
  dir="$(node_dir "$n")"
  if running "$n"; then return 0; fi
  write_config "$n"
  format_node "$n"
  # setsid: the broker outlives the shell that started it.
  broker_jvm "$n"
  (exec setsid "${JVM[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -Dkafka.logs.dir="$dir" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null) &
  echo $! >"$dir/kafka.pid"
}

wait_ready() {
  # A node restarted after SIGKILL loads every log and catches up the
  # metadata before it opens its port: 80 s measured on a loaded 2-core
  # machine (the exactly-once tests kill nodes while workers run).
  local limit="${BROKER_START_TIMEOUT:-240}"
  local n deadline=$((SECONDS + limit))
  for n in $(seq 1 "$NODES"); do
    until port_open "$(node_port "$n")"; do
      if ! running "$n"; then tail -30 "$(node_dir "$n")/server.log" "$(node_dir "$n")/stdout.log" >&2 || true
        log "node $n exited during start-up"; exit 1; fi
      [ $SECONDS -lt $deadline ] || { log "node $n did not open its port within $limit s"; exit 1; }
      sleep 0.2
    done
  done
  # The port opens before the broker has registered with the controller;
  # a metadata request through the admin tool answers only once it has.
  local auth=()
  [ "$AUTH" = none ] || auth=(--command-config "$ADMIN_CONFIG")
  until java_tool org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$(bootstrap)" "${auth[@]}" --list >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "the cluster did not answer within $limit s"; exit 1; }
    sleep 0.5
  done
}

start() {
  install
  local n t0=$SECONDS
  for n in $(seq 1 "$NODES"); do start_node "$n"; done
  wait_ready
  log "Apache Kafka $VERSION ready on $(bootstrap)$([ "$AUTH" = none ] || echo " (SASL_PLAINTEXT; SASL_SSL on $(bootstrap_tls))") ($NODES node(s), $((SECONDS - t0)) s; logs in $RUN)"
}

stop() {
  local n p
  for n in $(seq 1 "$NODES"); do
    if running "$n"; then
      p="$(pid_of "$n")"; kill "$p" 2>/dev/null || true
    fi
  done
  for n in $(seq 1 "$NODES"); do
    for _ in $(seq 1 150); do running "$n" || break; sleep 0.1; done
    if running "$n"; then kill -9 "$(pid_of "$n")" 2>/dev/null || true; fi
    rm -f "$(node_dir "$n")/kafka.pid"
  done
  log "stopped $NODES node(s) on port $PORT"
  if [ "${1:-}" = --wipe ]; then rm -rf "$RUN"; log "data removed"; fi
}

kill_node() {
  local n=${1:?node number}
  running "$n" || { log "node $n is not running"; return 0; }
  kill -9 "$(pid_of "$n")"
  for _ in $(seq 1 50); do running "$n" || break; sleep 0.1; done
  rm -f "$(node_dir "$n")/kafka.pid"
  log "node $n killed"
}

status() {
  local n
  for n in $(seq 1 "$NODES"); do
    if running "$n" && port_open "$(node_port "$n")"; then echo "node $n running (pid $(pid_of "$n")) on 127.0.0.1:$(node_port "$n")"
    else echo "node $n stopped"; return 1; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  kill) kill_node "${2:-}" ;;
  install) install ;;
  bootstrap) bootstrap ;;
  bootstrap-tls) bootstrap_tls ;;
  ca) [ -f "$TLS_DIR/ca.pem" ] || { log "no CA yet: start with BROKER_AUTH=sasl first"; exit 1; }; echo "$TLS_DIR/ca.pem" ;;
  admin-config) [ -f "$ADMIN_CONFIG" ] || { log "no admin config: start with BROKER_AUTH=sasl first"; exit 1; }; echo "$ADMIN_CONFIG" ;;
  version) echo "$VERSION" ;;
  tool) shift; install; java_tool "$@" ;;
  *) echo "usage: $0 start|stop [--wipe]|status|kill N|install|bootstrap|bootstrap-tls|ca|admin-config|version|tool CLASS ARGS" >&2; exit 2 ;;
esac
