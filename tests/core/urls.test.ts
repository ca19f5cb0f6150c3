/** The application's URLs: one per entry port, the passwords encoded, parsed back by a URL parser. */
import { APP_DATABASE, PORTS, REDIS_USERS, USERS, clientUrls } from "../../core";

test("each URL names its user, database and entry port, and a password that needs encoding survives", () => {
  const passwords = { app: "a b/c@d:e%", redis: "r#?s" };
  const urls = clientUrls(passwords, "10.0.1.5");
  const parsed = Object.fromEntries(Object.entries(urls).map(([k, u]) => [k, new URL(u)]));
  expect(
    Object.fromEntries(
      Object.entries(parsed).map(([k, u]) => [k, [u.protocol, u.username, u.hostname, Number(u.port)]]),
    ),
  ).toEqual({
    databaseUrl: ["postgresql:", USERS.app, "10.0.1.5", PORTS.postgresPrimary],
    databaseDirectUrl: ["postgresql:", USERS.app, "10.0.1.5", PORTS.postgresDirect],
    databaseReadUrl: ["postgresql:", USERS.app, "10.0.1.5", PORTS.postgresReplicas],
    redisUrl: ["redis:", REDIS_USERS.app, "10.0.1.5", 6379],
    redisTlsUrl: ["rediss:", REDIS_USERS.app, "10.0.1.5", 6381],
  });
  expect(decodeURIComponent(parsed.databaseUrl.password)).toBe(passwords.app);
  expect(decodeURIComponent(parsed.redisUrl.password)).toBe(passwords.redis);
  expect(decodeURIComponent(parsed.redisTlsUrl.password)).toBe(passwords.redis);
  expect(parsed.databaseReadUrl.pathname).toBe(`/${APP_DATABASE}`);
  expect(parsed.redisUrl.pathname).toBe("/0");
  // Remote logins are TLS only (hostssl on PostgreSQL, client_tls_sslmode on PgBouncer).
  for (const k of ["databaseUrl", "databaseDirectUrl", "databaseReadUrl"]) {
    expect([k, parsed[k].searchParams.get("sslmode")]).toEqual([k, "require"]);
  }
  expect(parsed.redisUrl.search).toBe("");
});
