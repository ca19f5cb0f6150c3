# shellcheck shell=bash
# A part of a node script: scale-lib (templates/scripts/scale-lib.sh.hbs) comes before it, with the
# values and functions it uses.

# ================================================================ node-leave
# Takes this node out of the cluster before its server (or namespace) goes: leadership first,
# then Patroni, etcd, Sentinel and Redis. It learns who the other members are from etcd at run
# time, so it stays right however the cluster changed since it was rendered.
# Never `patronictl remove` here: that deletes the whole cluster from the DCS, not one member.

members=$(etcd_members) || die "no etcd member answers at ${CANDIDATE_IPS[*]}"
mapfile -t others < <(member_ips "$members" | grep -vxF "$NODE_IP" || true)
((${#others[@]} > 0)) || die "$NODE is the last member; a cluster cannot shrink to zero nodes"
say "leaving; the other members are ${others[*]}"

# ---- 1. Patroni: hand off leadership first (normally leadership-handoff already moved it to a node
# that stays). Without a list of who stays, the running replica with the lowest address is the
# likeliest to: nodes leave from the highest index down.
leader=$(patroni_leader "$NODE_IP" "${others[@]}" || true)
if [ "$leader" = "$NODE" ]; then
  wait_until 120 "Patroni to switch over to another member" switchover_from "$NODE"
  say "patroni: $(patroni_leader "${others[@]}") leads"
fi

# ---- 2. Redis: this node is never chosen again, and hands off mastership when it has it.
if redis_at "$NODE_IP" PING >/dev/null 2>&1; then
  redis_at "$NODE_IP" CONFIG SET replica-priority 0 >/dev/null
fi
master=$(master_by_majority "${others[@]}")
if [ "$master" = "$NODE_IP" ] || [ "$(redis_role "$NODE_IP")" = "master" ]; then
  say "redis: this node is the master; asking the Sentinels to fail over"
  is_another_node() { master=$(master_by_majority "${others[@]}") && [ -n "$master" ] && [ "$master" != "$NODE_IP" ]; }
  redis_failover_until "another node" is_another_node "${others[0]}" "${others[@]}"
  say "redis: $master is the master"
fi
# The resets below would undo a failover that some Sentinel has not finished.
wait_until 120 "every Sentinel to name one master, with no failover in progress" sentinels_settled "${others[@]}"

# ---- 3. Patroni stops here (PostgreSQL with it); this member's key expires with its lease.
svc stop patroni
say "patroni: stopped"

# ---- 4. etcd: removed through the other members while it still runs (a two-member cluster needs
# both to agree), then stopped, and its data wiped so it can never come back as a member.
mine=$(my_member "$(etcd_members)")
if [ -n "$mine" ]; then
  others_endpoints=$(printf "http://%s:${ETCD_CLIENT_PORT}," "${others[@]}")
  etcdctl_at "${others_endpoints%,}" member remove "$(awk '{ print $1 }' <<<"$mine")" >/dev/null
  say "etcd: member removed"
fi
svc stop etcd
find "$ETCD_DATA_DIR" -mindepth 1 -delete
say "etcd: stopped, data wiped"

# ---- 5. Sentinel and Redis stop; then each remaining Sentinel forgets this node, one at a time:
# SENTINEL RESET makes it rediscover the live Sentinels (hello messages, every 2 s) and replicas
# (the master's INFO, every 10 s). The next reset waits until this one knows the other Sentinels
# again, so a majority that can authorize a failover always exists.
svc stop sentinel
svc stop redis
remaining=${#others[@]}
knows_sentinels() { [ "$(sentinel_field "$1" num-other-sentinels)" = "$((remaining - 1))" ]; }
knows_replicas() { [ "$(sentinel_field "$1" num-slaves)" = "$((remaining - 1))" ]; }
for ip in "${others[@]}"; do
  sentinel_at "$ip" SENTINEL RESET "$CLUSTER" >/dev/null
  wait_until 60 "the Sentinel on $ip to rediscover $((remaining - 1)) other Sentinel(s)" knows_sentinels "$ip"
done
explain_wait() {
  local ip
  for ip in "${others[@]}"; do
    echo "sentinel on $ip: master $(sentinel_at "$ip" SENTINEL get-master-addr-by-name "$CLUSTER" | paste -sd:), replicas:"
    sentinel_at "$ip" SENTINEL REPLICAS "$CLUSTER" | paste -sd' ' | sed 's/^/  /'
    echo "redis on $ip:"
    redis_at "$ip" INFO replication 2>&1 | tr -d '\r' | grep -E '^(role|master_host|master_link_status|slave[0-9]+|connected_slaves):' | sed 's/^/  /'
  done
}
for ip in "${others[@]}"; do
  wait_until 60 "the Sentinel on $ip to rediscover $((remaining - 1)) replica(s)" knows_replicas "$ip"
done
unset -f explain_wait
say "sentinel: the remaining $remaining Sentinel(s) forgot $NODE"

# ---- 6. HAProxy last: the other nodes no longer list this one (config-refresh ran first).
svc stop haproxy
say "left"
