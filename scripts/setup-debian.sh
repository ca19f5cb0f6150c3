#!/usr/bin/env bash
# Prepares a Debian 12 or 13 machine (as root) to run the State Pillar locally and its tests:
# - systemd-nspawn (systemd-container) boots each local node; mmdebstrap builds the node image,
#   Debian 13 with every package a Hetzner node runs, from Debian's mirror;
# - the host's own tools: ssh (the runner reaches nodes as Pulumi does), ip/losetup/nsenter,
#   Prometheus and promtool (the rendered scrape config and the dashboard's queries are checked
#   against a real one), shellcheck (the node scripts), and the clients the benchmark uses.
# The daemons themselves (PostgreSQL, Patroni, etcd, Redis, HAProxy, pgBackRest) are NOT installed
# on this machine: they live in the node image, which the first `npm run local -- up` or `npm test`
# builds (about a minute, with progress) and caches under /var/cache/madbase-state/images.
# Safe to run again.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-debian: run as root (sudo bash $0)" >&2
  exit 1
fi
# shellcheck source=/dev/null
. /etc/os-release
case "${VERSION_ID:-}" in
  12 | 13) ;;
  *) echo "setup-debian: Debian 12 or 13 expected, this is ${PRETTY_NAME:-unknown}; trying anyway" >&2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  systemd-container mmdebstrap debian-archive-keyring \
  openssh-client iproute2 util-linux procps curl ca-certificates \
  prometheus shellcheck \
  postgresql-client redis-tools \
  dpkg-dev python3

echo "setup-debian: host packages installed; the node image is built on first use"
