#!/bin/bash
# madbase-first-boot ENV_FILE: a node's first boot, run once by cloud-init (runcmd) after the
# packages are installed and every file is written. Any failure stops it here, says what failed
# (in this log, cloud-init's output log and the failed marker) and leaves the node not ready;
# cloud-init then reports `error`. Values come from the node's environment file (rendered by
# madbase-state), so this script is the same on every node.
set -euo pipefail
# shellcheck source=/dev/null # rendered per node
. "${1:-/etc/madbase/node.env}"

mkdir -p "$(dirname "$FIRST_BOOT_LOG")" "$(dirname "$READY_MARKER")" "$(dirname "$FAILED_MARKER")"
exec > >(tee -a "$FIRST_BOOT_LOG") 2>&1
say() { echo "madbase-first-boot: $(date -u +%H:%M:%S) $*"; }
step=starting
failed() {
  local code=$?
  say "FAILED while $step (exit $code); $NODE_NAME is not ready"
  printf 'failed_at=%s\nstep=%s\nexit=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$step" "$code" >"$FAILED_MARKER"
}
trap failed ERR
rm -f "$READY_MARKER" "$FAILED_MARKER"

# Enabling a unit only writes its symlinks: systemd reads them at the next boot, and this boot
# starts every unit itself. So no reload per call (--no-reload), and no SysV links: for a unit
# that also ships an init.d script, `systemctl enable` runs update-rc.d, which reloads systemd
# twice more. Two dozen reloads of 0.5-2 s each were most of a first boot; one, below, is enough.
export SYSTEMCTL_SKIP_SYSV=1
enable() { systemctl enable --no-reload --quiet "$@"; }

# The install-time policy-rc.d stays: no package script starts, stops or restarts a service until
# the node's first config-refresh holds the data packages and puts the policy that refuses only
# the data units in its place (core/maintenance.ts); this script starts what it runs itself.

step="applying sysctl settings"
if systemd-detect-virt --quiet --container; then
  # A container (a local node) shares the host's kernel, whose /proc/sys it cannot write: those
  # settings are the host's to make.
  say "in a container: kernel settings (sysctl) are left to the host"
else
  sysctl --system >/dev/null
fi

# Before any daemon runs: only root may reach the metadata service (the user data, with every
# secret). nftables.service loads the rules at every later boot, before the network.
step="loading the metadata guard (nftables)"
enable nftables
systemctl reload-or-restart nftables
nft list table inet madbase_guard >/dev/null

# PostgreSQL's data must live on the volume: without it nothing below runs.
step="mounting the data volume at $VOLUME_MOUNT"
"$SCRIPT_DIR/madbase-mount-volume" "$VOLUME_MOUNT"
mountpoint -q "$VOLUME_MOUNT"

step="creating data directories"
install -d -o postgres -g postgres -m 0700 "$PG_VERSION_DIR"
install -d -o etcd -g etcd -m 0700 "$ETCD_DATA_DIR"
install -d -o postgres -g postgres -m 0750 "$PGBACKREST_LOG_DIR" "$PGBACKREST_SPOOL_DIR"
# The node's TLS key is root:ssl-cert 0640: postgres is in the group already (postgresql-common), etcd joins it.
usermod -a -G ssl-cert etcd

step="reloading systemd units"
systemctl daemon-reload
# From now on the volume is mounted at every boot, before Patroni (which refuses to start without it).
enable madbase-volume.service
# Patroni runs PostgreSQL; Debian's own cluster service must never start one beside it.
systemctl disable --no-reload --now postgresql.service >/dev/null 2>&1 || true

# Debian's packages enable their units at install (and a baked image may have started them with
# Debian's default files): this script decides what runs, restarting what it keeps.
# They bind the private address, which may come a moment later: systemd retries them (drop-ins),
# and this script waits for them below instead of failing on the first try.
step="starting HAProxy, the exporters and the timers"
# shellcheck disable=SC2086 # word lists
enable $EDGE_UNITS
# shellcheck disable=SC2086
systemctl restart --no-block $EDGE_UNITS
# The backup timers act only where this node leads, so a joining node has them too (node-join does
# not start them, and it may lead one day); the certificate-end metrics are every node's.
# shellcheck disable=SC2086
enable --now $NODE_TIMERS
deadline=$((SECONDS + WAIT_SECONDS))

if [ "$JOINING" = 1 ]; then
  # Decided when rendering: this node joins a running cluster. node-join adds it to etcd and starts
  # etcd, Patroni, Redis and Sentinel in order; until then none of them may start, even on a reboot.
  step="keeping the cluster daemons stopped until node-join"
  # shellcheck disable=SC2086
  systemctl disable --no-reload --now $CLUSTER_UNITS
  say "$NODE_NAME joins a running cluster: node-join starts etcd, Patroni, Redis and Sentinel"
else
  step="starting etcd, Patroni, Redis and Sentinel"
  # shellcheck disable=SC2086
  enable $CLUSTER_UNITS
  # shellcheck disable=SC2086
  systemctl restart --no-block $CLUSTER_UNITS

  http_code() { curl -s -o /dev/null --max-time 3 --cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY" -w '%{http_code}' "https://$NODE_IP:$PATRONI_PORT/$1" || true; }
  # shellcheck source=/dev/null
  redis_pong() { (set -a && . "$BACKUP_ENV_FILE" && redis-cli --user "$REDIS_ADMIN_USER" --no-auth-warning -h 127.0.0.1 -p "$REDIS_PORT" PING 2>/dev/null) | grep -qx PONG; }
  step="waiting up to ${WAIT_SECONDS}s for PostgreSQL (Patroni /health) and Redis (PING)"
  say "$step"
  until [ "$(http_code health)" = 200 ] && redis_pong; do
    if ((SECONDS >= deadline)); then
      say "Patroni /health answered $(http_code health); Redis PING: $(redis_pong && echo PONG || echo no answer)"
      false
    fi
    # Each look is a curl and a redis-cli: cheap enough to ask twice a second, so the ready
    # marker (which `up` and the tests wait for) is not up to 2 s late.
    sleep 0.5
  done
  say "PostgreSQL and Redis answer"

  # /health answers as soon as PostgreSQL runs; which role it has comes once a leader is elected
  # (a replica runs only behind one). Asked until it is known, so the leader never skips its stanza.
  step="waiting for this node's role (Patroni /primary or /replica)"
  role=""
  until [ -n "$role" ]; do
    if [ "$(http_code primary)" = 200 ]; then role=primary; elif [ "$(http_code replica)" = 200 ]; then role=replica; fi
    if [ -z "$role" ]; then
      if ((SECONDS >= deadline)); then
        say "Patroni /primary answered $(http_code primary), /replica $(http_code replica)"
        false
      fi
      sleep 0.5
    fi
  done
  say "PostgreSQL runs here as the $role"

  if [ "$role" = primary ] && [ "$BACKUP_ARCHIVING" = off ]; then
    say "WAL archiving and backups are off on this stack (no S3 keys): no stanza, no first backup"
  elif [ "$role" = primary ]; then
    # WAL archiving works from the first minute: the stanza now, a first full backup right after
    # (in the background: its unit logs to the journal), so point-in-time restore starts today.
    step="creating the pgBackRest stanza $CLUSTER"
    foreign=0
    for ((try = 1; ; try++)); do
      out=$(runuser -u postgres -- pgbackrest --config="$PGBACKREST_CONF" --stanza="$CLUSTER" --log-level-console=warn stanza-create 2>&1) && break
      if grep -q "do not match the database" <<<"$out"; then
        # The repository holds the backups of another database system (a lost stack's bucket, say):
        # they are never touched. This cluster runs, but archives nothing until it is restored from
        # them (README: Restore PostgreSQL) or given another repository.
        say "WARNING: the backup repository holds another cluster's stanza $CLUSTER; not archiving into it, no first backup. Restore from it, or use another bucket."
        foreign=1
        break
      fi
      # The archiver's archive-push can hold the stanza's lock for a moment.
      if ((try >= 60)) || ! grep -q "unable to acquire lock" <<<"$out"; then
        say "stanza-create: $out"
        false
      fi
      sleep 1
    done
    if [ "$foreign" = 0 ]; then
      say "stanza $CLUSTER ready; starting the first full backup"
      step="starting the first full backup"
      systemctl start --no-block madbase-pg-backup@first.service
    fi
  fi
fi

step="waiting for HAProxy and the exporters to run"
inactive() { local u; for u in $EDGE_UNITS; do systemctl is-active --quiet "$u" || echo "$u"; done; }
until [ -z "$(inactive)" ]; do
  if ((SECONDS >= deadline)); then
    say "not active: $(inactive | tr '\n' ' ')"
    false
  fi
  sleep 0.5
done

# Last: everything above succeeded.
step="writing the ready marker"
printf 'ready_at=%s\njoining=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$JOINING" >"$READY_MARKER.tmp"
mv "$READY_MARKER.tmp" "$READY_MARKER"
say "$NODE_NAME is ready ($READY_MARKER)"
