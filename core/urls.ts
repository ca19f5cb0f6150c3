/**
 * The application's connection URLs through an entry point (a node's HAProxy, or the load
 * balancer in front of them): one builder for the stack's outputs and the local runner's `up`.
 * Passwords are URL-encoded, so a URL stays valid whatever the secret holds.
 */
import { PORTS } from "./topology";
import { APP_DATABASE, REDIS_USERS, USERS } from "./secrets";
import { DATABASE_URL_SSLMODE } from "./tls";

export interface ClientUrls {
  /** The leader's PgBouncer (HAProxy 5433): what the application uses. */
  databaseUrl: string;
  /** The leader's PostgreSQL itself (5435): sessions that need one, such as migrations or LISTEN. */
  databaseDirectUrl: string;
  /** The replicas' PgBouncers (5434): reads that may lag. */
  databaseReadUrl: string;
  /** The Redis master (6379) as the `app` user. */
  redisUrl: string;
  /**
   * The same master and user over TLS (6381, `rediss://`), verified with the CA output: the port
   * for clients outside the private network (`clientCidrs`), which never reach 6379.
   */
  redisTlsUrl: string;
}

/**
 * The application's Redis URL. It names its user: a URL with an empty one (`redis://:pw@…`)
 * makes Debian's `redis-cli -u` send `AUTH "" pw`, which Redis refuses.
 */
export function redisUrl(password: string, host: string, opts: { tls?: boolean } = {}): string {
  const [scheme, port] = opts.tls ? ["rediss", PORTS.redisMasterTls] : ["redis", PORTS.redisMaster];
  return `${scheme}://${REDIS_USERS.app}:${encodeURIComponent(password)}@${host}:${port}/0`;
}

/** Every database URL asks for TLS (DATABASE_URL_SSLMODE): PostgreSQL and PgBouncer refuse plain-text remote logins. */
function databaseUrl(password: string, host: string, port: number): string {
  const url = `postgresql://${USERS.app}:${encodeURIComponent(password)}@${host}:${port}/${APP_DATABASE}`;
  return `${url}?sslmode=${DATABASE_URL_SSLMODE}`;
}

/** Every URL the application is given, from its two passwords and the entry point's host. */
export function clientUrls(passwords: { app: string; redis: string }, host: string): ClientUrls {
  return {
    databaseUrl: databaseUrl(passwords.app, host, PORTS.postgresPrimary),
    databaseDirectUrl: databaseUrl(passwords.app, host, PORTS.postgresDirect),
    databaseReadUrl: databaseUrl(passwords.app, host, PORTS.postgresReplicas),
    redisUrl: redisUrl(passwords.redis, host),
    redisTlsUrl: redisUrl(passwords.redis, host, { tls: true }),
  };
}
