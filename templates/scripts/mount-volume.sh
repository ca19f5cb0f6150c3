#!/bin/sh
# Formats the node's data volume on first use (never when it already holds a file system) and
# mounts it at $1, by UUID, so a reboot or a re-attached volume comes back at the same place.
set -eu
target="$1"
dev=""
for _ in $(seq 1 60); do
  dev=$(ls /dev/disk/by-id/scsi-0HC_Volume_* 2>/dev/null | head -n 1 || true)
  [ -n "$dev" ] && break
  sleep 2
done
if [ -z "$dev" ]; then
  echo "madbase: no Hetzner volume attached; refusing to put PostgreSQL on the root disk" >&2
  exit 1
fi
if ! blkid "$dev" >/dev/null 2>&1; then
  mkfs.ext4 -L madbase-data "$dev"
fi
uuid=$(blkid -s UUID -o value "$dev")
mkdir -p "$target"
grep -q "UUID=$uuid" /etc/fstab || echo "UUID=$uuid $target ext4 defaults,noatime,nofail 0 2" >> /etc/fstab
# The device itself, not fstab's UUID: inside a container (a local node) there is no udev to resolve it.
mountpoint -q "$target" || mount -o noatime "$dev" "$target"
chown postgres:postgres "$target"
