#!/bin/sh
# mmdebstrap --customize-hook: runs after every package is installed. $1 is the root being built.
# - The daemons' units are disabled: on a booted node the first-boot script decides what starts,
#   and in which order, as after cloud-init installed them on Hetzner (policy-rc.d keeps them
#   stopped there until then).
# - apt's timers are off: a node must not upgrade itself behind Patroni's back.
# - cloud-init looks only for the NoCloud seed the local runner writes (on Hetzner it finds the
#   metadata service) and leaves the network alone: the runner configures the interface from
#   outside, as Hetzner's DHCP would. ifupdown's networking.service is masked for the same reason.
# - An empty machine-id: each node generates its own at its first boot.
set -eu
root=$1
for unit in etcd patroni postgresql redis-server redis-sentinel haproxy \
  prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter \
  pgbouncer prometheus-pgbouncer-exporter \
  apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer; do
  chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
done
chroot "$root" systemctl mask networking.service >/dev/null 2>&1
mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat > "$root/etc/cloud/cloud.cfg.d/90-madbase-local.cfg" <<'CFG'
datasource_list: [NoCloud, None]
network: {config: disabled}
CFG
rm -f "$root/usr/sbin/policy-rc.d"
: > "$root/etc/machine-id"
