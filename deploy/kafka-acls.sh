#!/usr/bin/env bash
# Grants a principal the ACLs `riskstream run` needs (README, "Access
# control": the same list; tests/auth.rs checks that they agree) with
# Apache Kafka's kafka-acls.sh.
#
#   deploy/kafka-acls.sh [--dry-run] PRINCIPAL [NAME=VALUE ...] [-- KAFKA-ACLS-ARGS ...]
#
#   PRINCIPAL   e.g. User:riskstream
#   NAME=VALUE  the worker's settings: input=transactions scored=transactions.scored
#               dlq=transactions.dlq labels=transactions.labels drift=riskstream.drift
#               group=riskstream state=<input>.state.<group> (the defaults)
#   --dry-run   print one line per ACL (resource type, name, pattern, operation)
#   after --    passed to kafka-acls.sh, e.g. --bootstrap-server host:9093
#               --command-config admin.properties
#
# KAFKA_ACLS: the command to run (default kafka-acls.sh; in this repository
# `scripts/kafka.sh acls` runs Kafka's own from scripts/broker.sh's install).
# Drift off (--drift-topic off): drop the drift rows; --state-enabled=false: drop the
# state and .restore rows; --shadow-topic: add Write on it.
set -euo pipefail
dry=false
if [ "${1:-}" = --dry-run ]; then dry=true; shift; fi
principal="${1:?usage: $0 [--dry-run] PRINCIPAL [NAME=VALUE ...] [-- KAFKA-ACLS-ARGS ...]}"
shift
input=transactions scored=transactions.scored dlq=transactions.dlq labels=transactions.labels
drift=riskstream.drift group=riskstream state=
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  case "$1" in
    input=*|scored=*|dlq=*|labels=*|drift=*|group=*|state=*) declare "${1%%=*}=${1#*=}" ;;
    *) echo "$0: unknown setting $1" >&2; exit 2 ;;
  esac
  shift
done
[ "${1:-}" = -- ] && shift
state="${state:-$input.state.$group}"

# resource type, name, pattern, operation: one line per ACL.
acls() {
  cat <<ROWS
Topic $input literal Read
Topic $scored literal Write
Topic $dlq literal Write
Topic $labels literal Read
Topic $state literal Read
Topic $state literal Write
Topic $drift literal Write
Topic $drift.slices literal Read
Topic $drift.slices literal Write
Group $group literal Read
Group $group.labels literal Describe
Group $group.restore literal Describe
Group riskstream-drift- prefixed Describe
ROWS
}

if $dry; then acls; exit 0; fi
read -r -a tool <<<"${KAFKA_ACLS:-kafka-acls.sh}"
# One kafka-acls.sh call per (resource type, pattern, operation).
acls | awk '{ k = $1 " " $3 " " $4; names[k] = names[k] " " $2 } END { for (k in names) print k names[k] }' |
while read -r type pattern op names; do
  flag=--topic; [ "$type" = Group ] && flag=--group
  args=()
  for n in $names; do args+=("$flag" "$n"); done
  "${tool[@]}" "$@" --add --allow-principal "$principal" --operation "$op" \
    --resource-pattern-type "$pattern" "${args[@]}" >/dev/null
  echo "granted $principal $op on $type ($pattern):$names"
done
