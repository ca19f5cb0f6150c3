/**
 * PgBouncer's sizing and settings: the pools of every node stay below the plan's max_connections
 * with room for what does not go through them, and the stack's poolMode reaches pgbouncer.ini.
 */
import {
  DIRECT_SESSION_SHARE,
  MAX_CLIENT_CONNECTIONS,
  PLANS,
  RESERVED_CONNECTIONS,
  describeCluster,
  parseSettings,
  poolSize,
  poolerAuthSql,
} from "../../core";
import { renderStack } from "../support/fixtures";

const reserved = Object.values(RESERVED_CONNECTIONS).reduce((a, b) => a + b, 0);

describe("poolSize", () => {
  it.each(Object.values(PLANS).map((p) => [p.name, p.maxConnections] as const))(
    "%s (max_connections %i): the pool leaves the reserved connections and the direct sessions' share",
    (_name, max) => {
      const size = poolSize(max);
      expect(size + reserved + Math.ceil(max * DIRECT_SESSION_SHARE)).toBe(max);
      expect(size).toBeLessThan(max);
      expect(size).toBeGreaterThanOrEqual(10);
    },
  );

  it("is 67 on cx21 and 387 on cx41, as its comment says", () => {
    expect(poolSize(PLANS.cx21.maxConnections)).toBe(67);
    expect(poolSize(PLANS.cx41.maxConnections)).toBe(387);
  });

  it("refuses a max_connections too small to leave a pool, naming it", () => {
    expect(() => poolSize(20)).toThrow(
      /^max_connections: 20 is not allowed; use at least \d+ so PgBouncer keeps a pool of 10$/,
    );
  });
});

describe("pgbouncer.ini", () => {
  const ini = (overrides: { poolMode?: string } = {}) =>
    renderStack({ nodeCount: 3, ...overrides }).files["madbase-prod-2"]["pgbouncer.ini"];
  const value = (text: string, key: string) => new RegExp(`^${key} = (.*)$`, "m").exec(text)?.[1];

  it("pools transactions by default, session mode when the stack says so", () => {
    expect(value(ini(), "pool_mode")).toBe("transaction");
    expect(parseSettings("prod", {}).poolMode).toBe("transaction");
    const session = describeCluster(parseSettings("prod", { poolMode: "session" })).options;
    expect(session.poolMode).toBe("session");
    expect(value(ini({ poolMode: "session" }), "pool_mode")).toBe("session");
  });

  it("bounds every pool of the node together by the plan's pool size, takes thousands of clients, tracks prepared statements", () => {
    const text = ini();
    // renderStack renders cx31 (max_connections 200).
    expect(Number(value(text, "default_pool_size"))).toBe(poolSize(PLANS.cx31.maxConnections));
    expect(Number(value(text, "max_db_connections"))).toBe(poolSize(PLANS.cx31.maxConnections));
    expect(Number(value(text, "max_client_conn"))).toBe(MAX_CLIENT_CONNECTIONS);
    expect(MAX_CLIENT_CONNECTIONS).toBeGreaterThanOrEqual(2000);
    expect(Number(value(text, "max_prepared_statements"))).toBeGreaterThan(0);
    // Only the application database, on the node's own PostgreSQL at its private address.
    expect(text).toMatch(/^\[databases\]\nmadbase = host=10\.42\.1\.11 port=5432 dbname=madbase$/m);
    expect(value(text, "listen_addr")).toBe("10.42.1.11,127.0.0.1");
  });

  it("authenticates with SCRAM through auth_query, never a copy of the application's password", () => {
    const { files, secrets } = renderStack({ nodeCount: 3 });
    const text = files["madbase-prod-2"]["pgbouncer.ini"];
    expect(value(text, "auth_type")).toBe("scram-sha-256");
    expect(value(text, "auth_user")).toBe("pgbouncer_auth");
    expect(value(text, "auth_query")).toBe("SELECT usename, passwd FROM pgbouncer.get_auth($1)");
    const userlist = files["madbase-prod-2"]["pgbouncer-userlist.txt"];
    expect(userlist).not.toContain(secrets.app);
    expect(userlist).toContain(`"pgbouncer_auth" "${secrets.pgbouncerAuth}"`);
  });

  it("the lookup function serves no superuser or replication role, and only the auth role may call it", () => {
    const sql = poolerAuthSql();
    expect(sql).toContain("SECURITY DEFINER SET search_path = pg_catalog");
    expect(sql).toMatch(/AND NOT rolsuper AND NOT rolreplication/);
    expect(sql).toContain("REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;");
    expect(sql).toContain("GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO pgbouncer_auth;");
  });
});
