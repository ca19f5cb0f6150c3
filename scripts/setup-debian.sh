#!/usr/bin/env bash
# Installs the Debian 12 packages the local runner (`npm run local -- up`) and its tests start:
# the same daemons a Hetzner node runs (Prometheus exporters included), plus the tools the runner,
# the benchmark and the tests use (Prometheus itself and promtool check the rendered scrape config
# and the dashboard's queries; curl scrapes from inside a node's namespace).
# Run as root (or with sudo). Safe to run again. No service is enabled or started: the runner
# starts each daemon itself, inside a network namespace per node.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-debian: run as root (sudo bash $0)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep package scripts from starting services with Debian's default configuration (no systemd
# here, and on a workstation we don't want a stray PostgreSQL on 5432), and from creating the
# default "main" PostgreSQL cluster.
mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; then
  echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
fi
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  added_policy=1
fi
trap '[ "$added_policy" = 1 ] && rm -f "$policy"' EXIT

apt-get update -q
apt-get install -y -q --no-install-recommends \
  postgresql-15 postgresql-client-15 postgresql-contrib \
  patroni python3-psycopg2 \
  etcd-server etcd-client \
  redis-server redis-sentinel redis-tools \
  haproxy pgbackrest \
  s3cmd shellcheck systemd \
  prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter \
  prometheus \
  cloud-init \
  iproute2 procps util-linux curl

echo "setup-debian: packages installed; start a cluster with: npm run local -- up"
