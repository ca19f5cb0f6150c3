#!/usr/bin/env bash
# One node's part of a rolling maintenance, where Pulumi runs (components/nodeMaintenance.ts):
#   node-maintain (over SSH) → when it asks for a reboot: a clean reboot (systemctl reboot: systemd
#   stops every unit in order, as the ACPI shutdown of a resize does) → SSH answers on the new
#   boot → node-settle (over SSH).
# node-maintain has moved the node's leaderships off before it asks for a reboot.
#
# Everything comes from the environment (never argv, which `ps` shows):
#   NODE_HOST        the server's public IPv4 (SSH as root)
#   NODE_NAME        its name, for messages (optional)
#   MADBASE_SSH_KEY  the private key Pulumi logs in with (secret; written to a 0600 temp file)
#   MAINTAIN_SCRIPT  node-maintain, as one remote command
#   SETTLE_SCRIPT    node-settle, as one remote command
#   MAINTENANCE_REVISION  the stack's maintenanceRevision this run carries out
# Optional: MADBASE_SSH (the ssh command, default ssh), MAINTAIN_BOOT_TIMEOUT (600), MAINTAIN_POLL_SECONDS (2).
#
# Its one line of stdout, "maintenance revision N done", is what Pulumi keeps of the run; Pulumi
# hands it back as PULUMI_COMMAND_STDOUT when the command's inputs change. Only a new revision
# maintains the node again: a changed key, address or script text (an update of this project, a
# rotated secret) is taken for the next revision, and this run says so and touches nothing.
# Progress goes to stderr.
set -euo pipefail

: "${NODE_HOST:?NODE_HOST is not set}"
: "${MADBASE_SSH_KEY:?MADBASE_SSH_KEY is not set}"
: "${MAINTAIN_SCRIPT:?MAINTAIN_SCRIPT is not set}"
: "${SETTLE_SCRIPT:?SETTLE_SCRIPT is not set}"
: "${MAINTENANCE_REVISION:?MAINTENANCE_REVISION is not set}"

done_line="maintenance revision $MAINTENANCE_REVISION done"
if [[ ${PULUMI_COMMAND_STDOUT:-} == "$done_line" ]]; then
  printf '%s: revision %s was carried out already; nothing to do\n' "${NODE_NAME:-$NODE_HOST}" "$MAINTENANCE_REVISION" >&2
  printf '%s\n' "$done_line"
  exit 0
fi

boot_timeout="${MAINTAIN_BOOT_TIMEOUT:-600}"
poll="${MAINTAIN_POLL_SECONDS:-2}"
read -r -a ssh_cmd <<<"${MADBASE_SSH:-ssh}"
label="maintenance of ${NODE_NAME:-$NODE_HOST}"
readonly REBOOT_MARK="madbase-maintain: reboot"

say() { printf '%s: %s\n' "$label" "$*" >&2; }
fail() {
  printf '%s: %s\n' "$label" "$*" >&2
  exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077
keyfile="$tmp/key"
printf '%s\n' "$MADBASE_SSH_KEY" >"$keyfile"
chmod 600 "$keyfile"

# on_node < SCRIPT: runs the script on the node, as root, with bash.
on_node() {
  "${ssh_cmd[@]}" -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$tmp/known_hosts" \
    -o ConnectTimeout=10 -i "$keyfile" "root@$NODE_HOST" bash -s
}

say "node-maintain"
on_node <<<"$MAINTAIN_SCRIPT" | tee "$tmp/out" >&2 || fail "node-maintain failed; the roll stops at ${NODE_NAME:-$NODE_HOST}"
if ! grep -q "^$REBOOT_MARK" "$tmp/out"; then
  say "done, no reboot"
  printf '%s\n' "$done_line"
  exit 0
fi

boot_id=$(on_node <<<"cat /proc/sys/kernel/random/boot_id")
say "rebooting cleanly (boot $boot_id)"
on_node <<<"systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot" >/dev/null ||
  fail "the reboot could not be scheduled"
deadline=$((SECONDS + boot_timeout))
until now=$(on_node <<<"cat /proc/sys/kernel/random/boot_id" 2>/dev/null) && [[ -n $now && $now != "$boot_id" ]]; do
  ((SECONDS < deadline)) || fail "SSH to $NODE_HOST does not answer on a new boot $boot_timeout s after the reboot"
  sleep "$poll"
done
say "booted again (boot $now); settling"
on_node <<<"$SETTLE_SCRIPT" >&2 || fail "settle failed: the node rebooted but is not back in the cluster"
say "done, rebooted"
printf '%s\n' "$done_line"
