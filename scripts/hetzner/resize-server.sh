#!/usr/bin/env bash
# Changes one Hetzner server's type without ever cutting its power while it still serves:
#   drain (over SSH) → ACPI shutdown → change type → power on → SSH answers → settle (over SSH).
# The hcloud provider would instead power the server off, and Pulumi would do it to every node at
# once; the stack runs this instead, one node at a time (components/serverResize.ts), where Pulumi
# runs.
#
# Everything comes from the environment (never argv, which `ps` shows):
#   HCLOUD_TOKEN     Hetzner API token (secret)
#   SERVER_ID        the server's id
#   SERVER_TYPE      the type it must have
#   NODE_HOST        its public IPv4 (SSH as root)
#   NODE_NAME        its name, for messages (optional)
#   MADBASE_SSH_KEY  the private key Pulumi logs in with (secret; written to a 0600 temp file)
#   DRAIN_SCRIPT     shell run on the node first: hands its leaderships to other nodes
#   SETTLE_SCRIPT    shell run on the node last: waits until it serves and replicates again
# Optional: HCLOUD_ENDPOINT (default https://api.hetzner.cloud/v1), MADBASE_SSH (the ssh command,
# default ssh), RESIZE_POLL_SECONDS (2), RESIZE_SHUTDOWN_TIMEOUT (300, then a hard power-off),
# RESIZE_ACTION_TIMEOUT (900), RESIZE_BOOT_TIMEOUT (600).
#
# A server that already has SERVER_TYPE is left alone (exit 0): the first run on a new stack, a
# rerun after success. A server found off (an earlier run stopped after the shutdown) is not
# drained again. If anything fails once the server is off, it is powered on again with whatever
# type it has, so a failed resize costs a restart, not a node.
set -euo pipefail

: "${HCLOUD_TOKEN:?HCLOUD_TOKEN is not set (pulumi config set --secret hcloud:token, or export it)}"
: "${SERVER_ID:?SERVER_ID is not set}"
: "${SERVER_TYPE:?SERVER_TYPE is not set}"
: "${NODE_HOST:?NODE_HOST is not set}"
: "${MADBASE_SSH_KEY:?MADBASE_SSH_KEY is not set}"
: "${DRAIN_SCRIPT:?DRAIN_SCRIPT is not set}"
: "${SETTLE_SCRIPT:?SETTLE_SCRIPT is not set}"

# Hetzner type names; the value goes into a JSON body below.
[[ $SERVER_TYPE =~ ^[a-z0-9-]+$ ]] || { echo "SERVER_TYPE: \"$SERVER_TYPE\" is not a Hetzner server type name" >&2; exit 2; }

endpoint="${HCLOUD_ENDPOINT:-https://api.hetzner.cloud/v1}"
poll="${RESIZE_POLL_SECONDS:-2}"
shutdown_timeout="${RESIZE_SHUTDOWN_TIMEOUT:-300}"
action_timeout="${RESIZE_ACTION_TIMEOUT:-900}"
boot_timeout="${RESIZE_BOOT_TIMEOUT:-600}"
read -r -a ssh_cmd <<<"${MADBASE_SSH:-ssh}"
label="resize ${NODE_NAME:-server} (id $SERVER_ID)"

say() { printf '%s: %s\n' "$label" "$*"; }
fail() {
  printf '%s: %s\n' "$label" "$*" >&2
  exit 1
}

tmp=$(mktemp -d)
powered_off=0
finish() {
  local rc=$?
  if [[ $rc -ne 0 && $powered_off -eq 1 ]]; then
    printf '%s: failed while the server was off; powering it on again with its current type\n' "$label" >&2
    (api POST "/servers/$SERVER_ID/actions/poweron") >/dev/null 2>&1 || printf '%s: power-on failed too: start it from the Hetzner Console\n' "$label" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap finish EXIT

# The token and the key go to files only this user can read: curl reads the header from its file,
# ssh the key from its own.
umask 077
printf 'Authorization: Bearer %s\n' "$HCLOUD_TOKEN" >"$tmp/auth"
keyfile="$tmp/key"
printf '%s\n' "$MADBASE_SSH_KEY" >"$keyfile"
chmod 600 "$keyfile"

# api METHOD PATH [JSON]: the response body on stdout; a failed request stops the script.
api() {
  local method=$1 path=$2 body=${3:-} out
  local args=(-sS --max-time 30 --retry 3 --retry-connrefused -X "$method" -H "@$tmp/auth" -w '\n%{http_code}')
  if [[ -n $body ]]; then args+=(-H "Content-Type: application/json" --data "$body"); fi
  out=$(curl "${args[@]}" "$endpoint$path") || fail "$method $path: curl failed"
  local code=${out##*$'\n'}
  out=${out%$'\n'*}
  if [[ $code != 2?? ]]; then fail "$method $path: HTTP $code: $out"; fi
  printf '%s\n' "$out"
}

# json PATH: the value at a dotted PATH of the JSON document on stdin (objects and lists as JSON).
json() {
  python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(json.dumps(value) if isinstance(value, (dict, list)) else value)
' "$1"
}

server_field() { api GET "/servers/$SERVER_ID" | json "server.$1"; }

# act ACTION [JSON]: starts a server action and waits (RESIZE_ACTION_TIMEOUT) until it succeeded.
act() {
  local response id status deadline=$((SECONDS + action_timeout))
  response=$(api POST "/servers/$SERVER_ID/actions/$1" "${2:-}")
  id=$(json action.id <<<"$response")
  while :; do
    response=$(api GET "/servers/$SERVER_ID/actions/$id")
    status=$(json action.status <<<"$response")
    case $status in
      success) return 0 ;;
      error) fail "$1 (action $id) failed: $(json action.error <<<"$response")" ;;
    esac
    ((SECONDS < deadline)) || fail "$1 (action $id) still $status after $action_timeout s"
    sleep "$poll"
  done
}

# wait_status STATUS TIMEOUT: returns 1 when the server is not STATUS within TIMEOUT seconds.
wait_status() {
  local deadline=$((SECONDS + $2))
  until [[ $(server_field status) == "$1" ]]; do
    ((SECONDS < deadline)) || return 1
    sleep "$poll"
  done
}

# on_node < SCRIPT: runs the script on the node, as root, with bash.
on_node() {
  "${ssh_cmd[@]}" -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$tmp/known_hosts" \
    -o ConnectTimeout=10 -i "$keyfile" "root@$NODE_HOST" bash -s
}

current=$(server_field server_type.name)
status=$(server_field status)
if [[ $current == "$SERVER_TYPE" ]]; then
  say "already $SERVER_TYPE; nothing to do"
  exit 0
fi
say "$current → $SERVER_TYPE (status $status)"

if [[ $status == off ]]; then
  say "already off: not drained again"
  powered_off=1
else
  say "draining: the node's leaderships move to other nodes"
  on_node <<<"$DRAIN_SCRIPT" || fail "drain failed; the server was not touched"
  say "shutting down (ACPI)"
  act shutdown
  powered_off=1
  if ! wait_status off "$shutdown_timeout"; then
    say "still not off ${shutdown_timeout} s after the ACPI shutdown: powering off (hard)"
    act poweroff
    wait_status off "$action_timeout" || fail "the server did not power off"
  fi
  say "off"
fi

say "changing type to $SERVER_TYPE (disk kept)"
act change_type "{\"server_type\": \"$SERVER_TYPE\", \"upgrade_disk\": false}"

say "powering on"
act poweron
wait_status running "$boot_timeout" || fail "the server is not running $boot_timeout s after power-on"
powered_off=0

say "waiting for SSH"
deadline=$((SECONDS + boot_timeout))
until on_node <<<"true" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "SSH to $NODE_HOST does not answer $boot_timeout s after power-on"
  sleep "$poll"
done

say "settling: waiting until the node serves and replicates again"
on_node <<<"$SETTLE_SCRIPT" || fail "settle failed: the node runs $SERVER_TYPE but is not back in the cluster"
say "done: $SERVER_TYPE"
