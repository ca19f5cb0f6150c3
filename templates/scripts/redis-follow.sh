#!/bin/bash
# madbase-redis-follow: runs before every start of redis-server (ExecStartPre). A Redis that
# returns (a reboot, a power cut) while another node is the master must not come back as a second
# master: when a majority of the other nodes' Sentinels name a master, redis.conf follows it
# (replicaof that master, or no replicaof when they name this node). Without a majority the file
# stays as Sentinel last wrote it. It never stops Redis from starting. Argument: the node's
# environment file.
set -uo pipefail
# shellcheck source=/dev/null # rendered per node
. "${1:-/etc/madbase/node.env}"
say() { echo "madbase-redis-follow: $*" >&2; }
# Sentinel's password (SENTINEL_AUTH), for redis-cli through its environment, never argv.
# shellcheck source=/dev/null
SENTINEL_AUTH=$(set -a && . "$BACKUP_ENV_FILE" && echo "$SENTINEL_AUTH") || SENTINEL_AUTH=""

# The quorum as Sentinel keeps it (config-refresh changes it as the cluster grows), else the rendered one.
quorum=$(awk -v c="$CLUSTER" '$1 == "sentinel" && $2 == "monitor" && $3 == c { print $6 }' "$SENTINEL_CONF" 2>/dev/null | head -n 1)
[[ $quorum =~ ^[0-9]+$ ]] || quorum=$SENTINEL_QUORUM

answers=$(mktemp -d) || exit 0
trap 'rm -rf "$answers"' EXIT
# Every address a node may have (nodes added later included), asked at once: at most 2 s.
for ip in $CANDIDATE_IPS; do
  [ "$ip" = "$NODE_IP" ] && continue
  (REDISCLI_AUTH=$SENTINEL_AUTH timeout 2 redis-cli -h "$ip" -p "$SENTINEL_PORT" --raw SENTINEL get-master-addr-by-name "$CLUSTER" 2>/dev/null | head -n 1 >"$answers/$ip") &
done
wait
master=$(cat "$answers"/* 2>/dev/null | grep -E '^[0-9]+(\.[0-9]+){3}$' | sort | uniq -c | sort -rn | awk -v q="$quorum" '$1 >= q { print $2; exit }')
if [ -z "$master" ]; then
  say "no $quorum Sentinels agree on a master of $CLUSTER; redis.conf stays as it is"
  exit 0
fi

new=$(mktemp) || exit 0
grep -vE '^(replicaof|slaveof) ' "$REDIS_CONF" >"$new"
[ "$master" != "$NODE_IP" ] && echo "replicaof $master $REDIS_PORT" >>"$new"
if cmp -s "$new" "$REDIS_CONF"; then
  say "redis.conf already follows $master"
else
  # In place (cat, not mv): the file keeps its owner and mode.
  cat "$new" >"$REDIS_CONF"
  say "the Sentinels name $master as master of $CLUSTER; redis.conf now follows it"
fi
rm -f "$new"
exit 0
