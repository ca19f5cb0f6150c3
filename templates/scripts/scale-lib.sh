# shellcheck shell=bash disable=SC2034,SC2119,SC2120,SC2154
# The library of the node scripts (membership, drain/settle, config-refresh). core/scale.ts puts
# it after scale-values.sh.hbs, the rendered values it uses (SCRIPT, NODE, ports, files), and
# before the driver's `svc` and the script itself. Each script uses some of it.

say() { printf '%s [%s %s] %s\n' "$(date +%T)" "$SCRIPT" "$NODE" "$*"; }
die() {
  printf '%s [%s %s] FAILED: %s\n' "$(date +%T)" "$SCRIPT" "$NODE" "$*" >&2
  exit 1
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND once a second until it succeeds. On a timeout,
# a caller's `explain_wait` function (when defined) prints what was seen, for whoever reads the log.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      if declare -F explain_wait >/dev/null; then explain_wait >&2 || true; fi
      die "timed out after ${seconds} s waiting for ${what}"
    fi
    sleep 1
  done
}

# json EXPR: a Python expression over the JSON document on stdin (named d); a list prints one
# item a line; None, False, [] and a missing document fail; True succeeds silently.
json() {
  /usr/bin/python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:  # no answer (a daemon restarting): same as a false condition
    sys.exit(1)
r = eval(sys.argv[1], {"d": d})
if r is None or r is False or r == []: sys.exit(1)
if r is not True: print("\n".join(map(str, r)) if isinstance(r, list) else r)
' "$1"
}

# ---------------------------------------------------------------- etcd
etcdctl_at() {
  local endpoints=$1
  shift
  ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --cacert="$TLS_CA" --cert="$TLS_CERT" --key="$TLS_KEY" \
    --dial-timeout=2s --command-timeout=8s "$@"
}

# Client endpoints of every candidate address except this node's own member, which may be stale.
other_endpoints() {
  local ip out=()
  for ip in "${CANDIDATE_IPS[@]}"; do
    [ "$ip" = "$NODE_IP" ] || out+=("https://${ip}:${ETCD_CLIENT_PORT}")
  done
  local IFS=,
  echo "${out[*]}"
}

# endpoints_of IP...: etcd client endpoints of these addresses, as etcdctl takes them.
endpoints_of() {
  local ip out=()
  for ip in "$@"; do out+=("https://${ip}:${ETCD_CLIENT_PORT}"); done
  local IFS=,
  echo "${out[*]}"
}

# etcd_members [ENDPOINTS]: "ID STATUS NAME PEER_URL IS_LEARNER" a line, as the cluster lists them,
# asked at ENDPOINTS (default: every candidate but this node's own member, which may be stale).
etcd_members() {
  etcdctl_at "${1:-$(other_endpoints)}" member list -w simple | awk -F', ' '{ print $1, $2, ($3 == "" ? "-" : $3), $4, $6 }'
}

# member_ips: the address of every started member (the cluster's nodes), from their peer URLs.
member_ips() {
  awk '$2 == "started" { sub("^https://", "", $4); sub(":[0-9]+$", "", $4); print $4 }' <<<"$1"
}

my_member() { grep -F " https://${NODE_IP}:${ETCD_PEER_PORT} " <<<"$1 " || true; }

etcd_healthy_here() { etcdctl_at "https://${NODE_IP}:${ETCD_CLIENT_PORT}" endpoint health >/dev/null 2>&1; }

# etcd_curl URL: etcd's HTTP endpoints (/version), with this node's certificate.
etcd_curl() { curl -sf --max-time 2 --cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY" "$1"; }

# presents_certificate HOST PORT FILE: the TLS server at HOST:PORT presents the certificate in FILE,
# byte for byte. A daemon that takes a new certificate a while after its reload (Patroni rebuilds
# its REST API server in its next loop) has done so once this holds; until then its old server
# still answers, and may go away under the next request. This node's pair is offered to servers
# that ask for a client certificate.
presents_certificate() {
  /usr/bin/python3 - "$1" "$2" "$3" "$TLS_CA" "$TLS_CERT" "$TLS_KEY" <<'PY'
import socket, ssl, sys
host, port, wanted, ca, cert, key = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # the bytes are compared below; the chain is still verified
context.load_cert_chain(cert, key)
try:
    with socket.create_connection((host, port), timeout=3) as raw:
        with context.wrap_socket(raw) as tls:
            served = tls.getpeercert(binary_form=True)
except OSError:  # refused, reset or timed out: a server being rebuilt
    sys.exit(1)
with open(wanted) as f:
    sys.exit(0 if served == ssl.PEM_cert_to_DER_cert(f.read()) else 1)
PY
}

# ---------------------------------------------------------------- Patroni
# patroni_get IP PATH: a read, with this node's certificate (Patroni asks every caller for one).
patroni_get() { curl -sf --max-time 3 --cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY" "https://$1:${PATRONI_PORT}/$2"; }

# patroni_call_at IP METHOD PATH BODY [MAX_SECONDS]: an authenticated call (switchover, config,
# restart) to the Patroni at IP; prints the answer, then its HTTP status on a line of its own. The
# password reaches curl as a config file on a pipe, never on its command line (/proc/*/cmdline).
patroni_call_at() {
  curl -sS --max-time "${5:-90}" -K <(printf 'user = "%s"\n' "$PATRONI_AUTH") -H 'Content-Type: application/json' \
    --cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY" -X "$2" -d "$4" -w '\n%{http_code}' "https://$1:${PATRONI_PORT}/$3"
}
# patroni_call METHOD PATH BODY: the same, to this node's Patroni.
patroni_call() { patroni_call_at "$NODE_IP" "$@"; }

# The leader as the first answering node in the list sees it.
patroni_leader() {
  local ip
  for ip in "$@"; do
    if patroni_get "$ip" cluster | json '[m["name"] for m in d["members"] if m["role"] == "leader"]'; then return 0; fi
  done
  return 1
}

# True when a member streams from the leader (or is the leader), as the leader reports it.
patroni_streaming() {
  local name=$1 leader_ip
  leader_ip=$(patroni_get "$2" cluster | json '[m["host"] for m in d["members"] if m["role"] == "leader"]') || return 1
  patroni_get "$leader_ip" patroni |
    json "d.get('replication') is not None and any(r['application_name'] == '$name' and r['state'] == 'streaming' for r in d['replication'])" ||
    patroni_get "$leader_ip" patroni | json "d['patroni']['name'] == '$name' and d['role'] in ('master', 'primary')"
}

synchronous_mode() { patroni_get "$NODE_IP" config | json 'd.get("synchronous_mode") is True' >/dev/null; }

# etcd_answers HOST:PORT: Patroni 3.0.2 (use_proxies) exits at start when the first etcd host of
# its file does not answer, so it is started (or restarted) only once that one does.
etcd_answers() { etcd_curl "https://$1/version" >/dev/null; }

# The first etcd host of the installed patroni.yml (etcd3.hosts).
patroni_first_etcd() {
  awk '/^etcd3:/ { inside = 1; next } inside && /^[^ ]/ { exit } inside && $1 == "-" { gsub(/"/, "", $2); print $2; exit }' "$PATRONI_YML"
}

# switchover_candidate [NAME...]: whom to hand leadership to. With synchronous_mode Patroni only
# switches over to the synchronous standby, so nobody is named; otherwise the running replica
# with the lowest address (among NAMEs, when given).
switchover_candidate() {
  synchronous_mode && return 0
  local among=""
  (($# == 0)) || among=$(printf "'%s'," "$@")
  patroni_get "$NODE_IP" cluster | json "[m['name'] for m in sorted(d['members'], key=lambda m: [int(x) for x in m['host'].split('.')])
      if m['role'] == 'replica' and m['state'] in ('running', 'streaming') and (not [${among%,}] or m['name'] in [${among%,}])][:1]" || true
}

# switchover_from LEADER [CANDIDATE...]: one switchover attempt; succeeds once LEADER no longer
# leads. Patroni refuses (412) while there is no target yet: right after a switchover, under
# synchronous_mode, the new leader has no synchronous standby until its next loop. So callers retry:
#   wait_until 120 "..." switchover_from LEADER NAME...
# The candidate is chosen anew on every attempt (switchover_candidate NAME...).
switchover_from() {
  local leader=$1 candidate body answer now
  shift
  now=$(patroni_leader "$NODE_IP" "${CANDIDATE_IPS[@]}" 2>/dev/null) || now=""
  if [ -n "$now" ] && [ "$now" != "$leader" ]; then return 0; fi
  candidate=$(switchover_candidate "$@")
  if [ -n "$candidate" ]; then
    body="{\"leader\": \"$leader\", \"candidate\": \"$candidate\"}"
  else
    body="{\"leader\": \"$leader\"}"
  fi
  answer=$(patroni_call POST switchover "$body") || true
  say "patroni: switchover from $leader${candidate:+ to $candidate}: ${answer//$'\n'/ (HTTP }${answer:+)}"
  [ "${answer##*$'\n'}" = 200 ]
}

# ---------------------------------------------------------------- Redis and Sentinel
# Sentinel's own password, Redis's admin user: both reach redis-cli in its environment (REDISCLI_AUTH).
sentinel_at() { REDISCLI_AUTH=$SENTINEL_AUTH timeout 5 redis-cli --no-auth-warning -h "$1" -p "$SENTINEL_PORT" --raw "${@:2}"; }
redis_at() { timeout 5 redis-cli --user "$REDIS_ADMIN_USER" --no-auth-warning -h "$1" -p "$REDIS_PORT" --raw "${@:2}"; }

# sentinel_field IP FIELD: one field of SENTINEL MASTER (quorum, num-other-sentinels, num-slaves...).
sentinel_field() { sentinel_at "$1" SENTINEL MASTER "$CLUSTER" 2>/dev/null | awk -v key="$2" 'previous == key { print; exit } { previous = $0 }'; }

# master_by_majority IP...: the Redis master a majority of these nodes' Sentinels name; empty otherwise.
master_by_majority() {
  local ip need=$(($# / 2 + 1))
  for ip in "$@"; do
    sentinel_at "$ip" SENTINEL get-master-addr-by-name "$CLUSTER" 2>/dev/null | head -n 1 || true
  done | grep . | sort | uniq -c | awk -v need="$need" '$1 >= need { print $2; exit }'
}

# sentinels_settled IP...: these nodes' Sentinels all name one master, that Redis is a master, and
# none of them is in the middle of a failover. A Sentinel switches its recorded master only when it
# has reconfigured every replica; a SENTINEL RESET before that would bring back the old master.
sentinels_settled() {
  local ip master="" named
  for ip in "$@"; do
    [ "$(sentinel_field "$ip" flags)" = master ] || return 1
    named=$(sentinel_at "$ip" SENTINEL get-master-addr-by-name "$CLUSTER" 2>/dev/null | head -n 1) || return 1
    [ -n "$named" ] || return 1
    [ -z "$master" ] || [ "$named" = "$master" ] || return 1
    master=$named
  done
  [ "$(redis_role "$master")" = master ]
}

# sentinel_reachable IP KIND: the addresses of the replicas (KIND=REPLICAS) or other Sentinels
# (KIND=SENTINELS) the Sentinel at IP knows and does not flag as down or disconnected.
sentinel_reachable() {
  sentinel_at "$1" SENTINEL "$2" "$CLUSTER" 2>/dev/null |
    awk 'previous == "ip" { ip = $0 } previous == "flags" && $0 !~ /(s_down|o_down|disconnected)/ { print ip } { previous = $0 }'
}

# sentinels_armed IP...: every one of these nodes' Sentinels could fail over now: it knows every
# other node's Redis as a replica (it learns them from the master's INFO, every 10 s, and promotes
# or repoints no other) and hears every other node's Sentinel (a quorum counts only those).
sentinels_armed() {
  local ip other master replicas peers
  master=$(master_by_majority "$@")
  [ -n "$master" ] || return 1
  for ip in "$@"; do
    replicas=$(sentinel_reachable "$ip" REPLICAS) || return 1
    peers=$(sentinel_reachable "$ip" SENTINELS) || return 1
    for other in "$@"; do
      [ "$other" = "$master" ] || grep -qxF "$other" <<<"$replicas" || return 1
      [ "$other" = "$ip" ] || grep -qxF "$other" <<<"$peers" || return 1
    done
  done
}

# sentinel_failover IP: asks that Sentinel for a failover; fails, saying why, when it refuses
# (INPROG while an earlier failover still reconfigures replicas, NOGOODSLAVE...).
sentinel_failover() {
  local answer
  answer=$(sentinel_at "$1" SENTINEL FAILOVER "$CLUSTER" 2>&1) || answer="no answer"
  [ "$answer" = OK ] && return 0
  say "redis: the Sentinel on $1 answered: ${answer//$'\n'/ }"
  return 1
}

# redis_failover_until WHAT DONE VIA IP...: asks the Sentinel at VIA for failovers until the command
# DONE (the master is WHAT) succeeds with the Sentinels at IP... settled. A new request goes only when no failover runs, as
# an accepted one can still end without the wanted master: it aborts when Sentinel finds no replica
# it may promote, or promotes one the caller cannot keep (Sentinel reads a replica's priority from
# INFO only every 10 s, so a priority just set may not count yet).
redis_failover_until() {
  local what=$1 done=$2 via=$3
  shift 3
  wait_until 300 "the Sentinels to settle on $what as the Redis master" redis_failover_step "$done" "$via" "$@"
}
redis_failover_step() {
  local done=$1 via=$2
  shift 2
  sentinels_settled "$@" || return 1
  "$done" && return 0
  sentinel_failover "$via" || true
  return 1
}

redis_role() { redis_at "$1" INFO replication 2>/dev/null | tr -d '\r' | awk -F: '$1 == "role" { print $2 }'; }

redis_synced_to() {
  local info
  info=$(redis_at "$NODE_IP" INFO replication 2>/dev/null | tr -d '\r') || return 1
  if [ "$1" = "$NODE_IP" ]; then
    grep -qx 'role:master' <<<"$info"
  else
    grep -qx 'role:slave' <<<"$info" && grep -qx "master_host:$1" <<<"$info" && grep -qx 'master_link_status:up' <<<"$info"
  fi
}

# ---------------------------------------------------------------- rolls: one node down at a time
# live_member_ips: the address of every member this node's Patroni lists, its own included (etcd's
# view would need another member to ask, and a one-node cluster has none).
live_member_ips() { patroni_get "$NODE_IP" cluster | json '[m["host"] for m in d["members"]]'; }

patroni_running_here() { patroni_get "$NODE_IP" patroni | json 'd["state"] == "running"' >/dev/null; }
replica_running_here() { patroni_get "$NODE_IP" patroni | json 'd["state"] == "running" and d["role"] == "replica"' >/dev/null; }
pending_restart_here() { patroni_get "$NODE_IP" patroni | json 'd.get("pending_restart") is True' >/dev/null; }
has_sync_standby() { patroni_get "$NODE_IP" cluster | json 'any(m["role"] == "sync_standby" for m in d["members"])' >/dev/null; }

# drain_postgres [PREFERRED...]: before this node's PostgreSQL goes down (a restart, a resize), the
# leadership moves to another member, to one of the PREFERRED names when one is a running replica.
drain_postgres() {
  local ips leader
  mapfile -t ips < <(live_member_ips)
  ((${#ips[@]} > 0)) || die "patroni: GET /cluster does not answer on $NODE"
  leader=$(patroni_leader "$NODE_IP" "${ips[@]}") || die "no Patroni leader"
  if [ "$leader" != "$NODE" ]; then
    say "patroni: $leader leads; nothing to move"
    return 0
  fi
  if ((${#ips[@]} < 2)); then
    say "patroni: a single node; PostgreSQL is down until this node is back"
    return 0
  fi
  local among=("$@")
  if ((${#among[@]} > 0)) && [ -z "$(switchover_candidate "${among[@]}")" ]; then among=(); fi
  wait_until 120 "Patroni to switch over from $NODE" switchover_from "$NODE" "${among[@]}"
  # Done once the demotion finished (Patroni refuses a restart while it runs).
  wait_until 120 "PostgreSQL on $NODE to run as a replica" replica_running_here
  say "patroni: $(patroni_leader "${ips[@]}") leads now"
}

# redis_master_here IP...: once the Sentinels at IPs agree on one master with no failover under way,
# whether it is this node (when not, says which node is and returns 1: nothing to move).
redis_master_here() {
  wait_until 120 "every Sentinel to name one master, with no failover in progress" sentinels_settled "$@"
  [ "$(master_by_majority "$@")" = "$NODE_IP" ] && return 0
  say "redis: $(master_by_majority "$@") is the master; nothing to move"
  return 1
}

# drain_redis: before this node goes down, the Redis master moves to another node (Sentinel fails over).
drain_redis() {
  local ips
  mapfile -t ips < <(live_member_ips)
  ((${#ips[@]} > 1)) || return 0
  redis_master_here "${ips[@]}" || return 0
  say "redis: this node is the master; asking the Sentinels to fail over"
  redis_moved() {
    local m
    m=$(master_by_majority "${ips[@]}") && [ -n "$m" ] && [ "$m" != "$NODE_IP" ]
  }
  redis_failover_until "another node" redis_moved "$NODE_IP" "${ips[@]}"
  say "redis: $(master_by_majority "${ips[@]}") is the master"
}

# redis_offset IP: the master's replication offset (master_repl_offset).
redis_offset() { redis_at "$1" INFO replication 2>/dev/null | tr -d '\r' | awk -F: '$1 == "master_repl_offset" { print $2 }'; }

# replicas_caught_up IP OFFSET: every online replica of the master at IP has acknowledged OFFSET
# (the master's INFO lists each with the offset it last acknowledged), and there is at least one.
replicas_caught_up() {
  redis_at "$1" INFO replication 2>/dev/null | tr -d '\r' |
    awk -F'[:,=]' -v want="$2" '/^slave[0-9]+:/ { n++; for (i = 2; i < NF; i += 2) if ($i == "offset" && $(i + 1) + 0 < want + 0) behind++ }
      END { exit !(n > 0 && behind == 0) }'
}

# drain_redis_paused: before this node's Redis restarts or goes down, the master moves off it without
# losing an acknowledged write: writes paused on it (CLIENT PAUSE WRITE: a write waits, then meets
# a replica and fails, never acknowledged and lost), every replica caught up to its offset, then
# the Sentinel failover (which on its own would not wait for that). The pause is lifted once
# another node is the master, or when the hand-off fails.
drain_redis_paused() {
  local ips offset
  mapfile -t ips < <(live_member_ips)
  ((${#ips[@]} > 1)) || return 0
  redis_master_here "${ips[@]}" || return 0
  wait_until 120 "every Sentinel to know every replica and hear every other Sentinel" sentinels_armed "${ips[@]}"
  [ "$(redis_at "$NODE_IP" CLIENT PAUSE 60000 WRITE)" = OK ] || die "redis: CLIENT PAUSE WRITE refused"
  trap 'redis_at "$NODE_IP" CLIENT UNPAUSE >/dev/null 2>&1 || true' EXIT
  offset=$(redis_offset "$NODE_IP")
  wait_until 30 "every Redis replica to reach the master's offset $offset" replicas_caught_up "$NODE_IP" "$offset"
  say "redis: writes paused at offset $offset, every replica caught up; asking the Sentinels to fail over"
  redis_moved() {
    local m
    m=$(master_by_majority "${ips[@]}") && [ -n "$m" ] && [ "$m" != "$NODE_IP" ] && [ "$(redis_role "$m")" = master ]
  }
  sentinel_failover "$NODE_IP" || die "redis: the Sentinel refused the failover"
  wait_until 60 "another node to be the Redis master" redis_moved
  redis_at "$NODE_IP" CLIENT UNPAUSE >/dev/null 2>&1 || true
  trap - EXIT
  wait_until 120 "the Sentinels to settle after the failover" sentinels_settled "${ips[@]}"
  say "redis: $(master_by_majority "${ips[@]}") is the master; no acknowledged write was left behind"
}

# settle_node: waits until this node is back in the cluster before the next one may go down: etcd
# healthy, Patroni running and streaming (the leader is always "streaming"), a synchronous standby
# again when synchronous mode is on, every Sentinel ready to fail over with this node, and Redis in
# sync with the master the Sentinels agree on.
settle_node() {
  local ips master
  wait_until 300 "etcd on $NODE to be healthy" etcd_healthy_here
  wait_until 300 "Patroni on $NODE to run PostgreSQL" patroni_running_here
  wait_until 300 "$NODE to stream from the leader" patroni_streaming "$NODE" "$NODE_IP"
  mapfile -t ips < <(live_member_ips)
  if ((${#ips[@]} > 1)) && synchronous_mode; then
    wait_until 300 "a synchronous standby" has_sync_standby
  fi
  wait_until 120 "every Sentinel to name one master" sentinels_settled "${ips[@]}"
  # On a timeout, what each Sentinel does know, for whoever reads the log.
  explain_wait() {
    local ip
    for ip in "${ips[@]}"; do
      echo "sentinel on $ip knows replicas: $(sentinel_reachable "$ip" REPLICAS | paste -sd' '); hears: $(sentinel_reachable "$ip" SENTINELS | paste -sd' ')"
    done
  }
  wait_until 120 "every Sentinel to know every replica and hear every other Sentinel" sentinels_armed "${ips[@]}"
  unset -f explain_wait
  master=$(master_by_majority "${ips[@]}")
  [ -n "$master" ] || die "the Sentinels do not agree on a Redis master"
  wait_until 300 "Redis on $NODE to be in sync with $master" redis_synced_to "$master"
  say "settled: etcd healthy, PostgreSQL streaming, Redis in sync with $master"
}

# ---------------------------------------------------------------- files
# install_if_changed FILE: replaces FILE with stdin when they differ, keeping its owner and mode.
# Returns 1 (and changes nothing) when the content is already there.
install_if_changed() {
  local file=$1 tmp
  tmp=$(mktemp "${file}.new.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  chown --reference="$file" "$tmp" && chmod --reference="$file" "$tmp"
  mv -f "$tmp" "$file"
}

# put_file FILE OWNER MODE: FILE gets the base64 text on stdin as its content, and OWNER and MODE.
# Returns 1 (and changes nothing) when it already is exactly that.
put_file() {
  local file=$1 owner=$2 mode=$3 tmp
  mkdir -p "$(dirname "$file")"
  tmp=$(mktemp "${file}.new.XXXXXX")
  base64 -d >"$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file" && [ "$(stat -c '%U:%G %a' "$file")" = "$owner ${mode#0}" ]; then
    rm -f "$tmp"
    return 1
  fi
  chown "$owner" "$tmp" && chmod "$mode" "$tmp"
  mv -f "$tmp" "$file"
}

# ---------------------------------------------------------------- daemons
# `svc ACTION SERVICE` (start, stop, restart, reload; etcd, patroni, redis, sentinel, haproxy) and
# `node_ready` (wait until the node is provisioned), for this driver.
