# shellcheck shell=bash
# A part of a node script: scale-lib (templates/scripts/scale-lib.sh.hbs) comes before it, with the
# values and functions it uses.

# ================================================================ node-join
# The order matters: etcd first (Patroni's DCS), then Patroni clones this node as a replica, then
# Redis follows the master the Sentinels name and this node's Sentinel joins them, HAProxy last.
# The other nodes' HAProxy and Patroni learn about this node afterwards (config-refresh).

node_ready

# ---- 1. etcd: one member at a time, added as a learner (a learner does not count toward the
# quorum while it catches up, so writes never stall, even when the cluster had one member), started
# with initial-cluster-state existing, then promoted to a voting member.
other_learner() { etcd_members | awk -v mine="http://${NODE_IP}:${ETCD_PEER_PORT}" '$5 == "true" && $4 != mine' | grep -q .; }
no_other_learner() { ! other_learner; }
etcd_serving_here() { curl -sf --max-time 2 "http://${NODE_IP}:${ETCD_CLIENT_PORT}/version" >/dev/null; }
promote() { etcdctl_at "$(other_endpoints)" member promote "$1" >/dev/null 2>&1; }
# set_env KEY VALUE: sets one variable of etcd's environment file, in place.
set_env() { sed -i -e "/^$1=/d" "$ETCD_ENV_FILE" && echo "$1=$2" >>"$ETCD_ENV_FILE"; }

members=$(etcd_members) || die "no etcd member answers at ${CANDIDATE_IPS[*]}; is the cluster running?"
mine=$(my_member "$members")
if [ -z "$mine" ]; then
  wait_until 300 "another joining member to be promoted (etcd admits one learner at a time)" no_other_learner
  if [ -n "$(ls -A "$ETCD_DATA_DIR" 2>/dev/null)" ]; then
    # Data of an earlier membership: a removed member must never come back with it.
    say "etcd: wiping data left from an earlier membership"
    svc stop etcd
    find "$ETCD_DATA_DIR" -mindepth 1 -delete
  fi
  say "etcd: adding $NODE as a learner"
  etcdctl_at "$(other_endpoints)" member add "$NODE" --learner --peer-urls="http://${NODE_IP}:${ETCD_PEER_PORT}" >/dev/null
  members=$(etcd_members)
  mine=$(my_member "$members")
  [ -n "$mine" ] || die "etcd: $NODE is not listed after member add"
fi
if [ "$(awk '{ print $2 }' <<<"$mine")" = "unstarted" ] && ! etcd_serving_here; then
  # The cluster's membership as it is now (this node included), never the rendered list, which
  # names nodes that have not joined yet.
  initial=$(awk -v me="$NODE" '{ printf "%s%s=%s", sep, ($3 == "-" ? me : $3), $4; sep = "," }' <<<"$members")
  set_env ETCD_INITIAL_CLUSTER "$initial"
  set_env ETCD_INITIAL_CLUSTER_STATE existing
  say "etcd: starting with initial-cluster-state existing ($initial)"
fi
svc start etcd
wait_until 120 "etcd to serve on $NODE_IP" etcd_serving_here
mine=$(my_member "$(etcd_members)")
if [ "$(awk '{ print $5 }' <<<"$mine")" = "true" ]; then
  say "etcd: promoting the learner once it has caught up with the leader"
  wait_until 300 "the learner to catch up and be promoted" promote "$(awk '{ print $1 }' <<<"$mine")"
fi
wait_until 120 "etcd on this node to be healthy" etcd_healthy_here
members=$(etcd_members)
say "etcd: a voting member; the cluster has $(grep -c . <<<"$members") member(s)"

# ---- 2. Patroni: it finds the cluster in etcd and creates this replica (from the backup
# repository, or with pg_basebackup from the leader), then streams from the leader.
streaming_from_leader() {
  local leader_ip
  leader_ip=$(patroni_get "$NODE_IP" cluster | json '[m["host"] for m in d["members"] if m["role"] == "leader"]') || return 1
  [ "$leader_ip" = "$NODE_IP" ] && return 0
  patroni_get "$leader_ip" patroni |
    json "any(r['application_name'] == '$NODE' and r['state'] == 'streaming' for r in d.get('replication', []))"
}
first_etcd=$(patroni_first_etcd)
wait_until 120 "etcd at $first_etcd (first in patroni.yml) to answer" etcd_answers "$first_etcd"
svc start patroni
say "patroni: waiting for $NODE to be created and to stream from the leader"
wait_until 900 "Patroni to create this replica and stream from the leader" streaming_from_leader
say "patroni: streaming"

# ---- 3. Redis: a new Redis starts as a replica of the master a majority of Sentinels name, never
# as an empty second master.
mapfile -t others < <(member_ips "$members" | grep -vxF "$NODE_IP" || true)
current_master() {
  if ((${#others[@]} == 0)); then echo "$NODE_IP"; else master_by_majority "${others[@]}"; fi
}
master=$(current_master)
[ -n "$master" ] || die "the Sentinels of ${others[*]} do not agree on a Redis master"
if ! redis_at "$NODE_IP" PING >/dev/null 2>&1; then
  if [ "$master" != "$NODE_IP" ]; then
    sed -i -e '/^replicaof /d' -e '/^slaveof /d' "$REDIS_CONF"
    echo "replicaof $master $REDIS_PORT" >>"$REDIS_CONF"
  fi
  say "redis: starting as a replica of $master"
  svc start redis
fi
wait_until 300 "Redis to sync from the master ($master)" redis_synced_to "$master"
say "redis: in sync with $master"

# ---- 4. Sentinel: added one at a time; the others discover it on the master's hello channel.
sentinel_count=$((${#others[@]} + 1))
quorum=$((sentinel_count / 2 + 1))
# Every Sentinel knows the other ones.
sentinels_agree() {
  local ip
  for ip in "$NODE_IP" "${others[@]}"; do
    [ "$(sentinel_field "$ip" num-other-sentinels)" = "$((sentinel_count - 1))" ] || return 1
  done
}
if ! sentinel_at "$NODE_IP" PING >/dev/null 2>&1; then
  if ! grep -q '^sentinel myid ' "$SENTINEL_CONF"; then
    # A Sentinel that never ran: it monitors the current master with the grown cluster's quorum.
    sed -i "s/^sentinel monitor .*/sentinel monitor $CLUSTER $master $REDIS_PORT $quorum/" "$SENTINEL_CONF"
  fi
  say "sentinel: starting"
  svc start sentinel
fi
wait_until 120 "all $sentinel_count Sentinels to know each other" sentinels_agree
for ip in "$NODE_IP" "${others[@]}"; do
  sentinel_at "$ip" SENTINEL SET "$CLUSTER" quorum "$quorum" >/dev/null
done
say "sentinel: $sentinel_count Sentinels, quorum $quorum"

# ---- 5. HAProxy: this node's file already lists the grown cluster.
svc start haproxy
say "joined"
