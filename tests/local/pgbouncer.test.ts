/**
 * PgBouncer behind the entry point, on one booted 3-node cx21 cluster (max_connections 100):
 * thousands of clients through 5433 while PostgreSQL stays under max_connections, named prepared
 * statements in transaction mode, LISTEN/NOTIFY through 5435, sessions cut when HAProxy marks the
 * leader down (on both write ports), a wrong password refused as
 * PostgreSQL refuses it, and a leader killed under pooled load: writes resume through a survivor's
 * 5433, no acknowledged write is lost, and the demoted node's PgBouncer acknowledges none.
 */
import { Client, ClientConfig } from "pg";
import {
  APP_DATABASE,
  PORTS,
  USERS,
  alertThresholds,
  describeCluster,
  getProfile,
  loadStackSettings,
  poolSize,
} from "../../core";
import { UpResult, down, killNode, startNode, waitHealthy } from "../../local/cluster";
import { machineExec } from "../../local/machine";
import { AckWriter, PROBE_SSL, missingIds } from "../../local/writer";
import { address, bootCluster, finish, health, sleep, testLocation, waitFor } from "./harness";

const loc = testLocation(14);
const PLAN = "cx21";
const MAX_CONNECTIONS = 100;
const CLIENTS = 2000;
let cluster: UpResult;
const open: Client[] = [];

beforeAll(async () => {
  await down(loc);
  cluster = await bootCluster({ ...loc, stack: "prod", plan: PLAN, profile: "fast", timeoutMs: 180_000 });
}, 300_000);

afterAll(async () => {
  await Promise.all(open.map((c) => c.end().catch(() => undefined)));
  await finish(loc);
}, 120_000);

/**
 * A client of the application user at `host:port`, its errors swallowed (a cut session is expected
 * here). Over TLS: PgBouncer (5433, 5434, 6432) and PostgreSQL (5435) take no plain-text login from
 * the network.
 */
function client(host: string, port: number, extra: Partial<ClientConfig> = {}): Client {
  const c = new Client({
    host,
    port,
    user: USERS.app,
    password: cluster.secrets.app,
    database: APP_DATABASE,
    connectionTimeoutMillis: 60_000,
    ssl: PROBE_SSL,
    ...extra,
  });
  c.on("error", () => undefined);
  return c;
}

/**
 * Samples the leader's client backends through 5435 (direct) until stopped; the peak is what the
 * test reads. PgBouncer's are the application user's from the leader's own address (the sampler's
 * own session, through the leader's HAProxy, comes from there too: left out).
 */
function sampleBackends(host: string) {
  const c = client(host, PORTS.postgresDirect);
  let stopped = false;
  const peak = { clients: 0, pooled: 0, samples: 0 };
  const loop = (async () => {
    await c.connect();
    while (!stopped) {
      const { rows } = await c.query<{ clients: number; pooled: number }>(
        `SELECT count(*) FILTER (WHERE backend_type = 'client backend')::int AS clients,
                count(*) FILTER (WHERE backend_type = 'client backend' AND usename = $1 AND client_addr = inet_server_addr()
                                 AND pid <> pg_backend_pid())::int AS pooled
           FROM pg_stat_activity`,
        [USERS.app],
      );
      peak.clients = Math.max(peak.clients, rows[0].clients);
      peak.pooled = Math.max(peak.pooled, rows[0].pooled);
      peak.samples++;
      await sleep(50);
    }
    await c.end();
  })();
  return {
    peak,
    async stop() {
      stopped = true;
      await loop;
      return peak;
    },
  };
}

test(`${CLIENTS} concurrent clients through 5433 each run a transaction and get their answer; PostgreSQL stays under max_connections`, async () => {
  const { state } = cluster;
  const leader = cluster.health.leader!;
  // Through a replica's HAProxy: the entry point forwards to the leader's PgBouncer.
  const entry = state.nodes.find((n) => n.name !== leader)!.address;
  const sampler = sampleBackends(address(state, leader));
  const clients = Array.from({ length: CLIENTS }, () => client(entry, PORTS.postgresPrimary));
  open.push(...clients);
  // Every client connects first (all of them at once hold a PgBouncer connection), then each runs
  // a transaction that holds its server connection for a moment: 2000 transactions on a 67-pool.
  const connected = await Promise.allSettled(clients.map((c) => c.connect()));
  const refused = connected
    .filter((r) => r.status === "rejected")
    .map((r) => String((r as PromiseRejectedResult).reason));
  expect({ refused: refused.length, first: refused[0] }).toEqual({ refused: 0, first: undefined });
  const answers = await Promise.all(
    clients.map(async (c, i) => {
      await c.query("BEGIN");
      const { rows } = await c.query<{ i: number }>("SELECT $1::int AS i, pg_sleep(0.02)", [i]);
      await c.query("COMMIT");
      return rows[0].i;
    }),
  );
  expect(answers).toEqual(clients.map((_, i) => i));
  const peak = await sampler.stop();
  await Promise.all(clients.map((c) => c.end()));
  open.length = 0;
  expect(peak.samples).toBeGreaterThan(5);
  // PgBouncer's server connections never pass the pool the plan leaves it, and all of PostgreSQL's
  // client backends together never reach max_connections.
  expect(peak.pooled).toBeGreaterThan(10);
  expect(peak.pooled).toBeLessThanOrEqual(poolSize(MAX_CONNECTIONS));
  expect(peak.clients).toBeLessThan(MAX_CONNECTIONS);
  console.log(
    `${CLIENTS} clients: peak ${peak.pooled} pooled server connections, ${peak.clients} client backends in all (${peak.samples} samples)`,
  );
}, 240_000);

test("named prepared statements (the pg driver's) work through 5433 in transaction mode", async () => {
  const { state } = cluster;
  const entry = state.nodes[0].address;
  // Twenty clients, each preparing the same statement name: they share server connections, each
  // of which must know the statement under the name its client used.
  const results = await Promise.all(
    Array.from({ length: 20 }, async (_, k) => {
      const c = client(entry, PORTS.postgresPrimary);
      await c.connect();
      try {
        const out: number[] = [];
        for (let j = 0; j < 20; j++) {
          const { rows } = await c.query<{ n: number }>({
            name: "plus_one",
            text: "SELECT $1::int + 1 AS n",
            values: [k * 100 + j],
          });
          out.push(rows[0].n);
        }
        return out;
      } finally {
        await c.end();
      }
    }),
  );
  results.forEach((out, k) => expect(out).toEqual(Array.from({ length: 20 }, (_, j) => k * 100 + j + 1)));
  // The pool they went through is a transaction pool (PgBouncer's admin console, as the exporter reads it).
  const admin = new Client({
    host: address(state, cluster.health.leader!),
    port: PORTS.pgbouncer,
    user: USERS.monitoring,
    password: cluster.secrets.monitoring,
    database: "pgbouncer",
    ssl: PROBE_SSL,
  });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ key: string; value: string }>("SHOW CONFIG");
    expect(rows.find((r) => r.key === "pool_mode")?.value).toBe("transaction");
  } finally {
    await admin.end();
  }
}, 60_000);

test("LISTEN/NOTIFY works through 5435, the leader's PostgreSQL without the pool", async () => {
  const { state } = cluster;
  const listener = client(state.nodes[1].address, PORTS.postgresDirect);
  open.push(listener);
  await listener.connect();
  const got = new Promise<string | undefined>((resolve) => listener.on("notification", (n) => resolve(n.payload)));
  await listener.query("LISTEN madbase_test");
  await queryOnce(
    state.nodes[2].address,
    PORTS.postgresDirect,
    "SELECT pg_notify('madbase_test', 'hello through 5435')",
  );
  expect(await Promise.race([got, sleep(10_000).then(() => "no notification in 10 s")])).toBe("hello through 5435");
  await listener.end();
}, 60_000);

test("an entry point whose HAProxy marks the leader down cuts the sessions it carried there, on 5433 and on 5435 (which follows 5433's check)", async () => {
  const { state, secrets } = cluster;
  const healthy = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  const leader = state.nodes.find((n) => n.name === healthy.leader)!;
  const entry = state.nodes.find((n) => n.name !== leader.name)!;
  const sessions = await Promise.all(
    [PORTS.postgresPrimary, PORTS.postgresDirect].map(async (port) => {
      const c = client(entry.address, port);
      open.push(c);
      const session = { port, ended: false };
      c.on("end", () => (session.ended = true));
      await c.connect();
      const { rows } = await c.query<{ server: string }>("SELECT host(inet_server_addr()) AS server");
      expect([port, rows[0].server]).toEqual([port, leader.address]);
      return session;
    }),
  );
  // Only this entry's checks fail: the leader's node drops what comes to Patroni's port from the
  // entry node. PostgreSQL, PgBouncer and the leadership stay as they are, so a session that ends
  // was cut by HAProxy (on-marked-down shutdown-sessions).
  const table = "madbase_test_checks";
  const rule = `table inet ${table} { chain input { type filter hook input priority -10; ip saddr ${entry.address} tcp dport ${PORTS.patroni} drop; }; }`;
  expect(machineExec(leader.machine, ["nft", "-f", "-"], { input: rule }).code).toBe(0);
  try {
    for (let i = 0; i < 60 && sessions.some((s) => !s.ended); i++) await sleep(500);
    expect(sessions).toEqual([
      { port: PORTS.postgresPrimary, ended: true },
      { port: PORTS.postgresDirect, ended: true },
    ]);
    expect((await health(loc)).leader).toBe(leader.name);
  } finally {
    machineExec(leader.machine, ["nft", "delete", "table", "inet", table]);
  }
  await waitHealthy(state, secrets, { timeoutMs: 60_000 });
}, 180_000);

test("a wrong password through 5433 is refused as PostgreSQL refuses it: a FATAL error at login, no session", async () => {
  const { state } = cluster;
  const refusal = async (port: number, password: string, user: string = USERS.app) => {
    const c = client(state.nodes[0].address, port, { password, user });
    const e = await c.connect().then(
      () => undefined,
      (err: { code?: string; message: string; severity?: string }) => err,
    );
    await c.end().catch(() => undefined);
    return e && { code: e.code, severity: e.severity, message: e.message };
  };
  const wrong = `${cluster.secrets.app}-wrong`;
  // PostgreSQL itself (5435) and PgBouncer (5433) both end the login with a FATAL authentication
  // error; PgBouncer 1.24 words its SCRAM refusal "SASL authentication failed" (SQLSTATE 08P01)
  // where PostgreSQL says "password authentication failed for user" (28P01).
  expect(await refusal(PORTS.postgresDirect, wrong)).toEqual({
    code: "28P01",
    severity: "FATAL",
    message: `password authentication failed for user "${USERS.app}"`,
  });
  expect(await refusal(PORTS.postgresPrimary, wrong)).toEqual({
    code: "08P01",
    severity: "FATAL",
    message: "SASL authentication failed",
  });
  // So is a role that does not exist, and a superuser (whose verifier the lookup never serves).
  expect(await refusal(PORTS.postgresPrimary, wrong, "nobody")).toMatchObject({ severity: "FATAL" });
  expect(
    await refusal(PORTS.postgresPrimary, cluster.secrets.postgresSuperuser, USERS.postgresSuperuser),
  ).toMatchObject({ severity: "FATAL" });
  // Refusals leave nothing behind: the right password logs in at once.
  expect(await refusal(PORTS.postgresPrimary, cluster.secrets.app)).toBeUndefined();
}, 60_000);

test("a leader killed under pooled load: writes resume through a survivor's 5433, none acknowledged is lost, none by the demoted node", async () => {
  const { state, secrets } = cluster;
  const profile = getProfile(state.applied.failoverProfile);
  const { options, topology } = describeCluster(
    loadStackSettings("prod", { plan: PLAN, failoverProfile: profile.name }),
  );
  // What the HaproxyBackendWithoutServer alert calls too long: twice a failover after a power cut.
  const resumeWithinMs = 2 * alertThresholds(topology, options).failover * 1000;
  const leader = cluster.health.leader!;
  const leaderIp = address(state, leader);
  const entry = state.nodes.find((n) => n.name !== leader)!;
  // Eight writers through the survivor's 5433: many clients, one pool.
  const writers = Array.from({ length: 8 }, (_, i) =>
    new AckWriter({
      host: entry.address,
      port: PORTS.postgresPrimary,
      password: secrets.app,
      firstId: (i + 1) * 1_000_000,
      intervalMs: 5,
      retryMs: 50,
    }).start(),
  );
  try {
    await Promise.all(writers.map((w) => w.waitForAcks(20, 30_000)));
    expect(writers.flatMap((w) => w.acks).every((a) => a.server === leaderIp)).toBe(true);

    const killedAt = Date.now();
    await killNode(leader, loc);
    // From here no process of the old leader runs: a write acknowledged by it now would be a lie.
    const deadAt = Date.now();
    await Promise.all(writers.map((w) => w.waitForAcks(20, resumeWithinMs + 30_000)));
    // The first write acknowledged by another server once the old leader was dead, over all writers.
    const resumed = Math.min(...writers.map((w) => w.firstAckAfter(deadAt, leaderIp)?.at ?? Infinity));
    expect(resumed - killedAt).toBeLessThan(resumeWithinMs);
    console.log(
      `pooled writes resumed ${((resumed - killedAt) / 1000).toFixed(1)} s after the power cut (bound ${resumeWithinMs / 1000} s)`,
    );
    const h = await waitFor(loc, "a new leader", (x) => x.leader !== null && x.leader !== leader);
    const newLeaderIp = address(state, h.leader!);
    // Every write acknowledged after the kill came from the new leader, none from the old one.
    const after = writers.flatMap((w) => w.acks.filter((a) => a.at >= deadAt));
    expect(new Set(after.map((a) => a.server))).toEqual(new Set([newLeaderIp]));

    // The old node returns as a replica: its PgBouncer now fronts a read-only PostgreSQL and
    // refuses a write, while its HAProxy's 5433 sends writes to the new leader.
    await startNode(leader, loc);
    const healed = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
    expect(healed.leader).toBe(h.leader);
    const demoted = await queryOnce(
      leaderIp,
      PORTS.pgbouncer,
      `INSERT INTO ${writers[0].table} (id) VALUES (1) RETURNING id`,
    ).then(
      () => "acknowledged",
      (e: Error) => e.message,
    );
    expect(demoted).toMatch(/read-only transaction/);
    const [row] = await queryOnce<{ server: string }>(
      leaderIp,
      PORTS.postgresPrimary,
      "SELECT host(inet_server_addr()) AS server",
    );
    expect(row.server).toBe(newLeaderIp);
  } finally {
    await Promise.all(writers.map((w) => w.stop()));
  }
  // Synchronous mode: every acknowledged write is on the new leader.
  const acked = writers.flatMap((w) => w.ackedIds);
  expect(acked.length).toBeGreaterThan(8 * 40);
  const now = await health(loc);
  expect(
    await missingIds({ host: address(state, now.leader!), port: PORTS.postgresDirect, password: secrets.app }, acked),
  ).toEqual([]);
}, 360_000);

async function queryOnce<T extends Record<string, unknown>>(host: string, port: number, text: string): Promise<T[]> {
  const c = client(host, port, { connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return (await c.query<T>(text)).rows;
  } finally {
    await c.end().catch(() => undefined);
  }
}
