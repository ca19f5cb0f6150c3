import { ConfigError } from "./errors";

/** Every secret the rendered files carry. On Hetzner they come from @pulumi/random (and stack config for S3 keys). */
export interface ClusterSecrets {
  postgresSuperuser: string;
  replication: string;
  rewind: string;
  /** The application's PostgreSQL user (`madbase`). */
  app: string;
  /** The application's Redis user (`app`, REDIS_USERS): the password in `redisUrl`. */
  redis: string;
  /** Redis replicas authenticate to their master as `replica` (masteruser/masterauth). */
  redisReplication: string;
  /** Sentinel authenticates to Redis as `sentinel` (auth-user/auth-pass). */
  redisSentinel: string;
  /** redis_exporter's `monitor` user, on Redis and on Sentinel. */
  redisMonitoring: string;
  /** The node's own scripts (config-refresh, membership, backups) as `admin`. */
  redisAdmin: string;
  /** HAProxy's health check as `haproxy`: INFO and PING only. */
  redisCheck: string;
  /** Sentinel's own password (`requirepass`): scripts and the Sentinels among themselves. */
  sentinel: string;
  patroniRest: string;
  haproxyStats: string;
  /** The PostgreSQL role the metrics exporter logs in as (`monitor`, member of pg_monitor). */
  monitoring: string;
  /** The role PgBouncer's auth_query logs in as (`pgbouncer_auth`: it may only look up login verifiers). */
  pgbouncerAuth: string;
  s3AccessKey: string;
  s3SecretKey: string;
}

export const SECRET_NAMES: (keyof ClusterSecrets)[] = [
  "postgresSuperuser",
  "replication",
  "rewind",
  "app",
  "redis",
  "redisReplication",
  "redisSentinel",
  "redisMonitoring",
  "redisAdmin",
  "redisCheck",
  "sentinel",
  "patroniRest",
  "haproxyStats",
  "monitoring",
  "pgbouncerAuth",
  "s3AccessKey",
  "s3SecretKey",
];

/** Generated secrets (not the S3 keys, which the operator brings). */
export const GENERATED_SECRET_NAMES = SECRET_NAMES.filter((n) => !n.startsWith("s3"));

/** User names that go with the secrets; fixed so that scripts and docs can name them. */
export const USERS = {
  postgresSuperuser: "postgres",
  replication: "replicator",
  rewind: "rewinder",
  app: "madbase",
  patroniRest: "patroni",
  haproxyStats: "stats",
  /** Read-only PostgreSQL role of the Prometheus exporter: pg_monitor, nothing more. */
  monitoring: "monitor",
  /** PgBouncer's auth_user: LOGIN and EXECUTE on one lookup function (core/pooler.ts), nothing more. */
  pgbouncerAuth: "pgbouncer_auth",
} as const;

/**
 * Redis's ACL users (templates/redis-users.acl.hbs), one per kind of client, each with its own
 * secret; the `default` user is off. Sentinel has `default` (its requirepass) and `monitor`.
 */
export const REDIS_USERS = {
  app: "app",
  replication: "replica",
  sentinel: "sentinel",
  monitoring: "monitor",
  admin: "admin",
  check: "haproxy",
} as const;

export const APP_DATABASE = "madbase";

/**
 * Secrets go unquoted into redis.conf, haproxy.cfg, URLs and YAML, so they are kept to characters
 * that need no escaping in any of them. @pulumi/random passwords are generated with `special: false`.
 */
const SAFE_SECRET = /^[A-Za-z0-9._~-]{8,128}$/;

export function checkSecrets(secrets: ClusterSecrets): ClusterSecrets {
  for (const name of SECRET_NAMES) {
    const value = secrets[name];
    if (typeof value !== "string" || !SAFE_SECRET.test(value)) {
      // Never echo the value itself: it is a secret.
      throw new ConfigError(`secrets.${name}`, "(hidden)", "use 8-128 characters from A-Z a-z 0-9 . _ ~ -");
    }
  }
  return secrets;
}

/** Clearly marked stand-ins for `npm run render`, which has no Pulumi state to read secrets from. */
export function placeholderSecrets(): ClusterSecrets {
  return Object.fromEntries(SECRET_NAMES.map((n) => [n, `PLACEHOLDER-${n}-not-a-secret`])) as unknown as ClusterSecrets;
}

/** Replaces every secret value in `text` with `<secret:name>`, for snapshots and logs. */
export function maskSecrets(text: string, secrets: ClusterSecrets): string {
  let out = text;
  // Longest first, so a secret that contains another is masked whole.
  const entries = SECRET_NAMES.map((n) => [n, secrets[n]] as const).sort((a, b) => b[1].length - a[1].length);
  for (const [name, value] of entries) {
    if (value) out = out.split(value).join(`<secret:${name}>`);
  }
  return out;
}
