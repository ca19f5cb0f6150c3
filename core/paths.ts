import * as path from "node:path";
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
}

/** The Debian 12 layout on a Hetzner server: the packages' own paths, data on the volume. */
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
    pgDataDir: "/var/lib/postgresql/15/madbase",
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
  };
}
