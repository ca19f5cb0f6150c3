/**
 * PgBouncer, the connection pooler in front of every node's PostgreSQL: how big its pools may be
 * for a plan, how clients authenticate through it, and the pool modes a stack may choose.
 */
import { ConfigError } from "./errors";
import { APP_DATABASE, USERS } from "./secrets";

/**
 * `transaction` (the default): a server connection serves a client for one transaction, so
 * thousands of clients share a few dozen PostgreSQL backends. `session`: a client keeps its server
 * connection until it disconnects (session state such as SET, temporary tables and advisory locks
 * survive, but the pool caps concurrent clients at its size).
 */
export const POOL_MODES = ["transaction", "session"] as const;
export type PoolMode = (typeof POOL_MODES)[number];
export const DEFAULT_POOL_MODE: PoolMode = "transaction";

export function checkPoolMode(value: unknown, field = "poolMode"): PoolMode {
  if (typeof value !== "string" || !(POOL_MODES as readonly string[]).includes(value)) {
    throw new ConfigError(field, value, `use one of ${POOL_MODES.join(", ")}`);
  }
  return value as PoolMode;
}

/**
 * Clients one node's PgBouncer accepts: thousands, each a few kB of PgBouncer's memory and one
 * file descriptor (LIMIT_NOFILE below leaves room for them and the server side). HAProxy's
 * pooled backends take as many per server.
 */
export const MAX_CLIENT_CONNECTIONS = 5000;
/** The descriptor limit of PgBouncer's unit: every client, every server connection, and spare. */
export const PGBOUNCER_LIMIT_NOFILE = 16384;
/** Prepared statements PgBouncer tracks per server connection (protocol-level, named ones). */
export const MAX_PREPARED_STATEMENTS = 200;

/**
 * Connections PostgreSQL keeps for what does not go through the pool, on every node:
 * superuser_reserved_connections (3, PostgreSQL's default: an operator gets in when the rest is
 * full); Patroni's own connection plus a pg_rewind or basebackup in flight (3); the metrics
 * exporter's role, whose CONNECTION LIMIT is 5; pgBackRest's backup connections (2). Replication
 * (WAL senders) does not count: since PostgreSQL 12 max_wal_senders has slots of its own.
 */
export const RESERVED_CONNECTIONS = { superuser: 3, patroni: 3, monitoring: 5, backups: 2 } as const;
/** Share of max_connections left to direct sessions through 5435 (migrations, LISTEN/NOTIFY, advisory locks). */
export const DIRECT_SESSION_SHARE = 0.2;

/**
 * The server connections one node's PgBouncer may open to its PostgreSQL, all pools together:
 * max_connections less the reserved connections and the direct sessions' share. PgBouncer pools
 * only the application database, and this is both its `max_db_connections` (every user's pool
 * of that database, the auth_query's connection included) and its `default_pool_size` (so one
 * user may use all of it), so the pools together can never take the connections Patroni,
 * monitoring, backups, a superuser or a direct session need. cx21 (100): 67; cx41 (500): 387.
 */
export function poolSize(maxConnections: number): number {
  const reserved = Object.values(RESERVED_CONNECTIONS).reduce((a, b) => a + b, 0);
  const size = maxConnections - reserved - Math.ceil(maxConnections * DIRECT_SESSION_SHARE);
  if (!Number.isInteger(maxConnections) || size < 10) {
    throw new ConfigError(
      "max_connections",
      maxConnections,
      `use at least ${Math.ceil((reserved + 10) / (1 - DIRECT_SESSION_SHARE))} so PgBouncer keeps a pool of 10`,
    );
  }
  return size;
}

/**
 * Server connections PgBouncer may hold as the auth user (its logins' lookups queue on them): a
 * burst of thousands of logins must not open more than the role's CONNECTION LIMIT
 * (AUTH_ROLE_CONNECTION_LIMIT), or PostgreSQL refuses the lookup and PgBouncer then fails every
 * login for server_login_retry. Each lookup takes well under a millisecond.
 */
export const AUTH_POOL_SIZE = 2;
export const AUTH_ROLE_CONNECTION_LIMIT = 5;

/** Where PgBouncer's auth_query runs, and the function it calls there. */
export const AUTH_DATABASE = APP_DATABASE;
export const AUTH_FUNCTION = "pgbouncer.get_auth";
export const AUTH_QUERY = `SELECT usename, passwd FROM ${AUTH_FUNCTION}($1)`;

/**
 * SQL that gives PgBouncer its lookup, run in the application database after the cluster is
 * created (post_bootstrap) and again by config-refresh on the leader (a cluster created before
 * PgBouncer): idempotent. The auth role may only log in and call one SECURITY DEFINER function,
 * which returns a login role's SCRAM verifier from pg_authid; superusers and replication roles are
 * never served (they log in directly, on 5432), nor expired or login-less roles.
 */
export function poolerAuthSql(): string {
  const role = USERS.pgbouncerAuth;
  return [
    `CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION ${USERS.postgresSuperuser};`,
    "REVOKE ALL ON SCHEMA pgbouncer FROM PUBLIC;",
    `CREATE OR REPLACE FUNCTION ${AUTH_FUNCTION}(p_usename text) RETURNS TABLE (usename name, passwd text)`,
    "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$",
    "  SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = p_usename AND rolcanlogin",
    "    AND NOT rolsuper AND NOT rolreplication AND (rolvaliduntil IS NULL OR rolvaliduntil > now())",
    "$$;",
    `REVOKE ALL ON FUNCTION ${AUTH_FUNCTION}(text) FROM PUBLIC;`,
    `GRANT USAGE ON SCHEMA pgbouncer TO ${role};`,
    `GRANT EXECUTE ON FUNCTION ${AUTH_FUNCTION}(text) TO ${role};`,
  ].join("\n");
}
