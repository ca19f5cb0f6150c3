/**
 * The Debian 13 (trixie) packages a node runs. One list for both worlds: cloud-init installs it on
 * a Hetzner server (user-data.yaml `packages:`), and the local node image is built from exactly
 * this list plus the base packages a Hetzner `debian-13` image already holds — so a package added
 * here reaches both, and the image is rebuilt when this list changes.
 */

/** Debian's Prometheus exporters; each package's systemd unit has the same name. */
export const EXPORTER_PACKAGES = [
  "prometheus-node-exporter",
  "prometheus-postgres-exporter",
  "prometheus-redis-exporter",
  "prometheus-pgbouncer-exporter",
] as const;

/** The PostgreSQL major version trixie ships (no 18 in trixie or its backports). */
export const POSTGRES_MAJOR = 17;

/** Debian packages every node installs (versions as in trixie). */
export const NODE_PACKAGES = [
  `postgresql-${POSTGRES_MAJOR}`, // 17.x
  `postgresql-client-${POSTGRES_MAJOR}`,
  "patroni", // 4.0.7
  "python3-psycopg2",
  // Patroni's etcd3 client imports python-etcd; Debian's patroni only suggests it, and without it
  // Patroni 4 finds no DCS ("Available implementations: consul, kubernetes").
  "python3-etcd",
  "etcd-server", // 3.5
  "etcd-client",
  "redis-server", // 8.0
  "redis-sentinel",
  "redis-tools",
  "haproxy", // 3.0
  // The connection pooler in front of each node's PostgreSQL (HAProxy's 5433/5434 lead to it).
  "pgbouncer", // 1.24
  "pgbackrest", // 2.55
  // The backup scripts: s3cmd ships Redis snapshots, curl asks Patroni who leads.
  "s3cmd",
  "curl",
  // Unpacks the user data's file bundle (core/userdata.ts) before the first boot runs.
  "brotli",
  // Debian's security updates, daily, for everything but the held data packages (core/maintenance.ts);
  // brings python3-apt, which madbase-updates reads the apt cache with.
  "unattended-upgrades",
  ...EXPORTER_PACKAGES,
] as const;
