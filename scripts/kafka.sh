#!/usr/bin/env bash
# Apache Kafka's own command-line tools, from the version scripts/broker.sh
# installs, under the names of the release's bin/kafka-*.sh scripts:
#
#   scripts/kafka.sh topics --list
#   scripts/kafka.sh consumer-groups --describe --group riskstream
#   scripts/kafka.sh console-consumer --topic transactions.scored --from-beginning
#
# --bootstrap-server defaults to the project's broker (BROKER_PORT,
# BROKER_NODES as for broker.sh) unless given. With BROKER_AUTH=sasl the
# tools connect as the broker's super user (its client properties, unless
# a --command-config, --consumer.config or --producer.config is given):
#
#   BROKER_AUTH=sasl BROKER_PORT=9300 scripts/kafka.sh acls --list
set -euo pipefail
cd "$(dirname "$0")/.."
tool="${1:-}"
shift || true
case "$tool" in
  topics) class=org.apache.kafka.tools.TopicCommand ;;
  consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
  transactions) class=org.apache.kafka.tools.TransactionsCommand ;;
  get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
  configs) class=kafka.admin.ConfigCommand ;;
  acls) class=org.apache.kafka.tools.AclCommand ;;
  delete-records) class=org.apache.kafka.tools.DeleteRecordsCommand ;;
  metadata-quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
  storage) class=kafka.tools.StorageTool ;;
  *) echo "usage: $0 topics|consumer-groups|console-consumer|console-producer|transactions|get-offsets|configs|acls|delete-records|metadata-quorum|storage [ARGS...]" >&2
     exit 2 ;;
esac
args=("$@")
if [ "$tool" != storage ] && [[ " $* " != *" --bootstrap-server "* ]] && [[ " $* " != *" --bootstrap-controller "* ]]; then
  args=(--bootstrap-server "$(scripts/broker.sh bootstrap)" "${args[@]}")
fi
if [ "${BROKER_AUTH:-none}" = sasl ] && [ "$tool" != storage ] && [ "$tool" != metadata-quorum ] \
    && [[ " $* " != *" --command-config "* ]] && [[ " $* " != *" --consumer.config "* ]] \
    && [[ " $* " != *" --producer.config "* ]]; then
  admin="$(scripts/broker.sh admin-config)"
  case "$tool" in
    console-consumer) args+=(--consumer.config "$admin") ;;
    console-producer) args+=(--producer.config "$admin") ;;
    *) args+=(--command-config "$admin") ;;
  esac
fi
exec scripts/broker.sh tool "$class" "${args[@]}"
