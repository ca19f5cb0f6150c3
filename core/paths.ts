import * as path from "node:path";
import { POSTGRES_MAJOR } from "./packages";
import type { NodeSpec } from "./topology";

/** The files rendered for every node, by the name they have in a render directory. */
export const NODE_FILES = [
  "patroni.yml",
  "etcd.conf",
  "redis.conf",
  "sentinel.conf",
  "haproxy.cfg",
  "pgbackrest.conf",
  "node-exporter.env",
  "postgres-exporter.env",
  "redis-exporter.env",
  "redis-exporter-passwords.json",
  "user-data.yaml",
] as const;
export type NodeFile = (typeof NODE_FILES)[number];

/** Where a node keeps its configuration, data, sockets and logs. */
export interface NodePaths {
  /** Where each rendered file is installed on the node (user-data.yaml is consumed by cloud-init). */
  config: Record<Exclude<NodeFile, "user-data.yaml">, string>;
  pgDataDir: string;
  /** PostgreSQL's programs (Patroni's bin_dir): the Debian package of the PostgreSQL major in use. */
  pgBinDir: string;
  pgSocketDir: string;
  pgpassFile: string;
  etcdDataDir: string;
  redisDir: string;
  sentinelDir: string;
  haproxySocket: string;
  pgbackrestLogDir: string;
  pgbackrestSpoolDir: string;
  pgbackrestLockDir: string;
  /** Where PostgreSQL's data volume is mounted on a server. */
  volumeMount: string;
  /** Where the backup and restore scripts are installed (madbase-pg-backup, ...). */
  scriptDir: string;
  /** The backup jobs' secrets (Redis password, S3 keys for the Redis snapshots), as KEY=value lines. */
  backupEnvFile: string;
  /**
   * The first-boot script's values (node, addresses, units to start) as KEY=value lines; also read
   * by the Redis start guard. No secret.
   */
  nodeEnvFile: string;
  /**
   * The SQL Patroni's post_bootstrap runs (the application's roles, with their passwords), read
   * from this postgres-only file rather than passed on a command line that `ps` shows.
   */
  postBootstrapSql: string;
  /** Written last by the first-boot script, with a timestamp: this node finished its first boot. */
  readyMarker: string;
  /** Written instead of the ready marker when the first-boot script fails: what failed. */
  failedMarker: string;
  /** The first-boot script's own log (cloud-init's output log gets the same lines). */
  firstBootLog: string;
}

/** The Debian 13 (trixie) layout on a Hetzner server: the packages' own paths, data on the volume. */
export function serverPaths(): NodePaths {
  return {
    config: {
      "patroni.yml": "/etc/patroni/config.yml",
      "etcd.conf": "/etc/default/etcd",
      "redis.conf": "/etc/redis/redis.conf",
      "sentinel.conf": "/etc/redis/sentinel.conf",
      "haproxy.cfg": "/etc/haproxy/haproxy.cfg",
      "pgbackrest.conf": "/etc/pgbackrest.conf",
      // Debian's exporter units read these environment files (EnvironmentFile=).
      "node-exporter.env": "/etc/default/prometheus-node-exporter",
      "postgres-exporter.env": "/etc/default/prometheus-postgres-exporter",
      "redis-exporter.env": "/etc/default/prometheus-redis-exporter",
      "redis-exporter-passwords.json": "/etc/prometheus/redis-exporter-passwords.json",
    },
    pgDataDir: `/var/lib/postgresql/${POSTGRES_MAJOR}/madbase`,
    pgBinDir: `/usr/lib/postgresql/${POSTGRES_MAJOR}/bin`,
    pgSocketDir: "/var/run/postgresql",
    pgpassFile: "/var/lib/postgresql/.pgpass.patroni",
    etcdDataDir: "/var/lib/etcd/madbase",
    redisDir: "/var/lib/redis",
    sentinelDir: "/var/lib/redis",
    haproxySocket: "/run/haproxy/admin.sock",
    pgbackrestLogDir: "/var/log/pgbackrest",
    pgbackrestSpoolDir: "/var/spool/pgbackrest",
    pgbackrestLockDir: "/tmp/pgbackrest",
    volumeMount: "/var/lib/postgresql",
    scriptDir: "/usr/local/sbin",
    backupEnvFile: "/etc/madbase/backup.env",
    nodeEnvFile: "/etc/madbase/node.env",
    postBootstrapSql: "/etc/patroni/post-bootstrap.sql",
    readyMarker: "/var/lib/madbase/ready",
    failedMarker: "/var/lib/madbase/first-boot.failed",
    firstBootLog: "/var/log/madbase-first-boot.log",
  };
}

/** A local node: everything under `<root>/<node name>/`, so several nodes share one machine. */
export function localPaths(root: string, node: Pick<NodeSpec, "name">): NodePaths {
  const base = path.resolve(root, node.name);
  const etc = path.join(base, "etc");
  return {
    config: {
      "patroni.yml": path.join(etc, "patroni.yml"),
      "etcd.conf": path.join(etc, "etcd.conf"),
      "redis.conf": path.join(etc, "redis.conf"),
      "sentinel.conf": path.join(etc, "sentinel.conf"),
      "haproxy.cfg": path.join(etc, "haproxy.cfg"),
      "pgbackrest.conf": path.join(etc, "pgbackrest.conf"),
      "node-exporter.env": path.join(etc, "node-exporter.env"),
      "postgres-exporter.env": path.join(etc, "postgres-exporter.env"),
      "redis-exporter.env": path.join(etc, "redis-exporter.env"),
      "redis-exporter-passwords.json": path.join(etc, "redis-exporter-passwords.json"),
    },
    pgDataDir: path.join(base, "pgdata"),
    pgBinDir: `/usr/lib/postgresql/${POSTGRES_MAJOR}/bin`,
    pgSocketDir: path.join(base, "run", "postgresql"),
    pgpassFile: path.join(base, "run", "pgpass"),
    etcdDataDir: path.join(base, "etcd"),
    redisDir: path.join(base, "redis"),
    sentinelDir: path.join(base, "sentinel"),
    haproxySocket: path.join(base, "run", "haproxy.sock"),
    pgbackrestLogDir: path.join(base, "log", "pgbackrest"),
    pgbackrestSpoolDir: path.join(base, "spool", "pgbackrest"),
    pgbackrestLockDir: path.join(base, "run", "pgbackrest"),
    volumeMount: base,
    scriptDir: path.join(base, "bin"),
    backupEnvFile: path.join(etc, "backup.env"),
    nodeEnvFile: path.join(etc, "node.env"),
    postBootstrapSql: path.join(etc, "post-bootstrap.sql"),
    readyMarker: path.join(base, "ready"),
    failedMarker: path.join(base, "first-boot.failed"),
    firstBootLog: path.join(base, "log", "first-boot.log"),
  };
}
