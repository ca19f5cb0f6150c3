import { POSTGRES_MAJOR } from "./packages";

/**
 * Where Debian's prometheus-node-exporter reads `*.prom` files by default (its textfile collector):
 * the node's own jobs (backup metrics, certificate ends) write there and are served on 9100.
 */
export const NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter";

/** The files rendered for every node, by the name they have in a render directory. */
export const NODE_FILES = [
  "patroni.yml",
  "etcd.conf",
  "redis.conf",
  "sentinel.conf",
  "redis-users.acl",
  "haproxy.cfg",
  "pgbackrest.conf",
  "node-exporter.env",
  "postgres-exporter.env",
  "redis-exporter.env",
  "redis-exporter-passwords.json",
  "pgbouncer.ini",
  "pgbouncer-userlist.txt",
  "pgbouncer-exporter.env",
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
  /**
   * The node's files as one compressed tar in the user data (root-only), unpacked with their owners
   * and modes just before the first-boot script runs, then removed: one archive compresses the
   * files together, where one gz+b64 entry each would pass Hetzner's 32 KiB on a 7-node stack.
   */
  fileBundle: string;
  /** Written last by the first-boot script, with a timestamp: this node finished its first boot. */
  readyMarker: string;
  /** Written instead of the ready marker when the first-boot script fails: what failed. */
  failedMarker: string;
  /** The first-boot script's own log (cloud-init's output log gets the same lines). */
  firstBootLog: string;
  /**
   * The cluster CA's certificate and this node's certificate and key (core/tls.ts). The key is
   * root:ssl-cert 0640: PostgreSQL accepts a root-owned key with group read, and Patroni
   * (postgres) and etcd read it as members of Debian's ssl-cert group.
   */
  tls: { caCert: string; cert: string; key: string };
}

/** The Debian 13 (trixie) layout on a Hetzner server: the packages' own paths, data on the volume. */
export function serverPaths(): NodePaths {
  return {
    config: {
      "patroni.yml": "/etc/patroni/config.yml",
      "etcd.conf": "/etc/default/etcd",
      "redis.conf": "/etc/redis/redis.conf",
      "sentinel.conf": "/etc/redis/sentinel.conf",
      "redis-users.acl": "/etc/redis/users.acl",
      "haproxy.cfg": "/etc/haproxy/haproxy.cfg",
      "pgbackrest.conf": "/etc/pgbackrest.conf",
      // Debian's exporter units read these environment files (EnvironmentFile=).
      "node-exporter.env": "/etc/default/prometheus-node-exporter",
      "postgres-exporter.env": "/etc/default/prometheus-postgres-exporter",
      "redis-exporter.env": "/etc/default/prometheus-redis-exporter",
      "redis-exporter-passwords.json": "/etc/prometheus/redis-exporter-passwords.json",
      // Debian's pgbouncer unit reads /etc/pgbouncer/pgbouncer.ini; the userlist holds the auth_user's password.
      "pgbouncer.ini": "/etc/pgbouncer/pgbouncer.ini",
      "pgbouncer-userlist.txt": "/etc/pgbouncer/userlist.txt",
      "pgbouncer-exporter.env": "/etc/default/prometheus-pgbouncer-exporter",
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
    fileBundle: "/var/lib/madbase/first-boot-files.tar.br",
    readyMarker: "/var/lib/madbase/ready",
    failedMarker: "/var/lib/madbase/first-boot.failed",
    firstBootLog: "/var/log/madbase-first-boot.log",
    tls: { caCert: "/etc/madbase/tls/ca.crt", cert: "/etc/madbase/tls/node.crt", key: "/etc/madbase/tls/node.key" },
  };
}
