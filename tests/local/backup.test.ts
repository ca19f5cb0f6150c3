/**
 * Backups count only when a restore from them has been seen to work. A 3-node cluster of booted
 * nodes backs up to an S3 store over TLS (s3rver in a namespace of its own on the cluster's subnet,
 * pgBackRest with TLS verification off) with each node's own `madbase-backup`, run over SSH as its
 * systemd units run it:
 *   - WAL archiving works from the first minute: right after `up` the stanza exists and first
 *     boot's full backup lands in the store, and a point-in-time restore to a moment a minute after
 *     `up` (before any other backup) brings back exactly the rows written before it;
 *   - on a replica the script does nothing and says why; with the store down it fails loudly and
 *     the next run succeeds;
 *   - PostgreSQL is recreated from the store with the operator's procedure (restoreCluster): to the
 *     latest point (every row back), later to the noted moment; each time the cluster forms with
 *     replicas;
 *   - a Redis snapshot shipped to the store and restored brings back the keys it held.
 */
import { BACKUP_TIMERS, BackupTarget, PORTS } from "../../core";
import { UpResult, down, up, waitHealthy } from "../../local/cluster";
import { pgbackrest, replicaMethod, restoreCluster, runBackupScript, waitBackupJobs } from "../../local/backup";
import { restoreRedis } from "../../local/backup-ops";
import { machineExec } from "../../local/machine";
import { findNode } from "../../local/state";
import { testStore } from "../support/s3";
import { address, redisClient, sql, testLocation } from "./harness";

const loc = testLocation(5);
const store = testStore(loc, "madbase-backup-test");
const STORE_IP = store.opts.address;
const keys = { accessKey: store.opts.accessKey, secretKey: store.opts.secretKey };
const backup: BackupTarget = {
  bucket: store.opts.bucket,
  endpoint: STORE_IP,
  region: "fsn1",
  retentionFull: 2,
  redisRetentionDays: 7,
  verifyTls: false,
};

const TABLE = "backup_rows";
let cluster: UpResult;
let upDoneAt = 0;
const timings: Record<string, number> = {};
const log = (line: string) => (process.env.MADBASE_TEST_VERBOSE ? console.log(line) : undefined);

async function timed<T>(what: string, fn: () => Promise<T> | T): Promise<T> {
  const t = Date.now();
  try {
    return await fn();
  } finally {
    timings[what] = (Date.now() - t) / 1000;
  }
}

const leaderOf = (c: UpResult) => c.health.leader!;
const entry = (c: UpResult) => address(c.state, leaderOf(c));

async function writeRows(c: UpResult, from: number, to: number): Promise<void> {
  await sql(
    c.state,
    c.secrets.app,
    entry(c),
    PORTS.postgresPrimary,
    `INSERT INTO ${TABLE} (id) SELECT generate_series($1::int, $2::int)`,
    [from, to],
  );
}

async function rowIds(c: UpResult, host: string, port: number): Promise<number[]> {
  const rows = await sql<{ id: number }>(c.state, c.secrets.app, host, port, `SELECT id FROM ${TABLE} ORDER BY id`);
  return rows.map((r) => r.id);
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** pgBackRest's check on the leader: forces a WAL switch and waits until the archive has it. */
async function archiveNow(c: UpResult): Promise<void> {
  const r = await pgbackrest(c.state, leaderOf(c), ["--log-level-console=warn", "check"]);
  expect([r.code, r.output]).toEqual([0, ""]);
}

/** The cluster is healthy (a leader, every replica streaming); says how each replica was made. */
async function expectFormedWithReplicas(c: UpResult): Promise<string[]> {
  const h = await waitHealthy(c.state, c.secrets, { timeoutMs: 120_000 });
  c.health = h;
  expect(h.nodes.filter((n) => n.role === "leader")).toHaveLength(1);
  const replicas = h.nodes.filter((n) => n.role !== "leader");
  expect(replicas).toHaveLength(2);
  for (const r of replicas) expect([r.name, r.streaming]).toEqual([r.name, true]);
  return Promise.all(replicas.map((r) => replicaMethod(c.state, r.name)));
}

/** Every node holds exactly `ids` (replicas may need a moment to replay). */
async function expectRowsEverywhere(c: UpResult, ids: number[]): Promise<void> {
  for (const n of c.state.nodes) {
    let got: number[] = [];
    for (let i = 0; i < 40; i++) {
      got = await rowIds(c, n.address, PORTS.postgres);
      if (got.length === ids.length) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect([n.name, got]).toEqual([n.name, ids]);
  }
}

beforeAll(async () => {
  await down(loc);
  store.create();
  await store.start();
  cluster = await timed("up", () =>
    up({
      ...loc,
      stack: "prod",
      nodes: 3,
      profile: "fast",
      timeoutMs: 300_000,
      backup,
      s3Keys: keys,
      // The store joins the cluster's bridge before any node boots, as a bucket exists before servers.
      afterNetwork: () => store.attach(),
      onProgress: log,
    }),
  );
  upDoneAt = Date.now();
  // The test takes every backup and snapshot itself: the nodes' own schedules (the hourly Redis
  // snapshot at :40 above all) must not add one in the middle of it. The metrics timer stays.
  const schedules = BACKUP_TIMERS.filter((t) => t !== "madbase-pg-metrics.timer");
  for (const n of cluster.state.nodes) {
    expect(machineExec(n.machine, ["systemctl", "stop", ...schedules], { timeoutMs: 30_000 }).code).toBe(0);
  }
  await sql(
    cluster.state,
    cluster.secrets.app,
    entry(cluster),
    PORTS.postgresPrimary,
    `CREATE TABLE ${TABLE} (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
}, 420_000);

afterAll(async () => {
  await down(loc);
  await store.destroyAll();
  console.log(`backup test timings (s): ${JSON.stringify(timings)}`);
}, 120_000);

let noted = "";

test("WAL archiving works from the first minute: after up the stanza exists with first boot's full backup in the store", async () => {
  const { state, secrets } = cluster;
  await timed("first boot's full backup (after up)", () => waitBackupJobs(state, 300_000));
  const r = await pgbackrest(state, leaderOf(cluster), ["--output=json", "info"]);
  expect(r.code).toBe(0);
  const [info] = JSON.parse(r.output) as {
    name: string;
    status: { code: number; message: string };
    backup: { type: string; label: string }[];
    archive: { min: string | null }[];
  }[];
  expect([info.name, info.status]).toEqual([state.clusterName, expect.objectContaining({ code: 0, message: "ok" })]);
  expect(info.backup.map((b) => b.type)).toEqual(["full"]);
  expect(info.archive[0].min).toMatch(/^0000000/);
  expect(
    store
      .keys(`${state.clusterName}/pgbackrest/backup/${state.clusterName}`)
      .filter((k) => /F\/backup\.manifest$/.test(k)),
  ).toHaveLength(1);

  // The moment a point-in-time restore returns to later (no other backup exists before it).
  await writeRows(cluster, 1, 200);
  const [t] = await sql<{ at: string }>(
    state,
    secrets.app,
    entry(cluster),
    PORTS.postgresPrimary,
    `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS at`,
  );
  noted = t.at;
  timings["noted moment, after up"] = (Date.now() - upDoneAt) / 1000;
  await new Promise((res) => setTimeout(res, 1500));
  await writeRows(cluster, 201, 300);
}, 360_000);

test("on a replica the backup does nothing and says why", async () => {
  const { state } = cluster;
  const replica = state.nodes.find((n) => n.name !== leaderOf(cluster))!.name;
  const pg = await runBackupScript(state, replica, ["pg", "full"]);
  expect(pg.code).toBe(0);
  expect(pg.output).toMatch(
    new RegExp(
      `${replica} is not the leader \\(Patroni: (replica|sync_standby)\\); the leader takes the full backup\\. Nothing to do here\\.`,
    ),
  );
  const redisReplica = cluster.health.nodes.find((n) => n.redisRole === "replica")!.name;
  const redis = await runBackupScript(state, redisReplica, ["redis"]);
  expect(redis.code).toBe(0);
  expect(redis.output).toMatch(/is a Redis slave; the master ships the snapshot\. Nothing to do here\./);
  expect(store.keys(`${state.clusterName}/redis`)).toEqual([]);
}, 60_000);

test("with the store down a backup fails with a clear FAILED line and a non-zero exit; the next run succeeds", async () => {
  const { state, secrets } = cluster;
  const leader = leaderOf(cluster);
  const redisMaster = cluster.health.redisMaster!;
  const redis = redisClient(state, secrets.redis, address(state, redisMaster));
  await redis.connect();
  for (let i = 1; i <= 50; i++) await redis.set(`k:${i}`, `v${i}`);
  await redis.quit();
  // A snapshot from long ago, which retention must delete once a new one is shipped.
  store.putFrom(
    findNode(state, redisMaster).machine,
    "REDIS0009",
    `${state.clusterName}/redis/20000101T000000Z-${redisMaster}.rdb`,
  );

  await store.stop();
  const failedPg = await timed("pg full backup, store down", () => runBackupScript(state, leader, ["pg", "full"]));
  expect(failedPg.code).toBe(1);
  expect(failedPg.output).toMatch(
    new RegExp(
      `FAILED: the backup store: https://${STORE_IP.replace(/\./g, "\\.")} does not answer \\(curl exit 7\\)\\. No backup taken; the next run tries again\\.`,
    ),
  );
  const failedRedis = await runBackupScript(state, redisMaster, ["redis"]);
  expect(failedRedis.code).toBe(1);
  expect(failedRedis.output).toMatch(
    /FAILED: upload of \d{8}T\d{6}Z-madbase-prod-\d\.rdb to s3:\/\/madbase-backup-test\/madbase-prod\/redis\/ .*does not answer.*The next run tries again\./,
  );
  for (const out of [failedPg.output, failedRedis.output]) {
    for (const s of [secrets.s3SecretKey, secrets.s3AccessKey, secrets.redis]) expect(out).not.toContain(s);
  }

  await store.start();
  const pg = await timed("pg full backup", () => runBackupScript(state, leader, ["pg", "full"]));
  expect([pg.code, pg.output]).toEqual([
    0,
    expect.stringMatching(/full backup of madbase-prod done: "label":"\d{8}-\d{6}F"/),
  ]);
  const snap = await timed("redis snapshot", () => runBackupScript(state, redisMaster, ["redis"]));
  expect([snap.code, snap.output]).toEqual([0, expect.stringMatching(/shipped \d{8}T\d{6}Z-madbase-prod-\d\.rdb/)]);
  expect(snap.output).toContain(`deleted 20000101T000000Z-${redisMaster}.rdb (older than 7 day(s))`);
  expect(store.keys(`${state.clusterName}/redis`)).toEqual([
    expect.stringMatching(new RegExp(`^madbase-prod/redis/\\d{8}T\\d{6}Z-${redisMaster}\\.rdb$`)),
  ]);
  for (const s of [secrets.s3SecretKey, secrets.redis]) expect(pg.output + snap.output).not.toContain(s);
}, 300_000);

test("PostgreSQL recreated from the store to the latest point has every row, and forms with replicas from the repository", async () => {
  const { state, secrets } = cluster;
  await writeRows(cluster, 301, 600);
  // Keys written after the Redis snapshot must not come back from it.
  const redis = redisClient(state, secrets.redis, address(state, cluster.health.redisMaster!));
  await redis.connect();
  await redis.set("k:after", "late");
  await redis.quit();
  await archiveNow(cluster);

  cluster.health = await timed("restore to latest", () => restoreCluster(state, secrets, { type: "latest" }, log));
  const made = await expectFormedWithReplicas(cluster);
  expect(made).toEqual(["pgbackrest", "pgbackrest"]);
  expect(await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).toEqual(range(1, 600));
  await expectRowsEverywhere(cluster, range(1, 600));
}, 900_000);

test("a Redis snapshot shipped to the store and restored brings back the keys it held", async () => {
  const { state, secrets } = cluster;
  // All Redis servers stop, the snapshot goes on the master, the master starts, then the replicas.
  const restored = await timed("redis restore", () => restoreRedis(loc, "latest"));
  expect(restored.output).toMatch(/restored \d{8}T\d{6}Z-madbase-prod-\d\.rdb into .*dump\.rdb/);
  cluster.health = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  for (const n of state.nodes) {
    const redis = redisClient(state, secrets.redis, n.address, PORTS.redis);
    await redis.connect();
    let values: (string | null)[] = [];
    for (let i = 0; i < 40; i++) {
      values = await redis.mget(...range(1, 50).map((k) => `k:${k}`));
      if (values.every((v) => v !== null)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect([n.name, values]).toEqual([n.name, range(1, 50).map((k) => `v${k}`)]);
    expect(await redis.get("k:after")).toBeNull();
    await redis.quit();
  }
}, 300_000);

test("PostgreSQL recreated to the moment noted a minute after up (from first boot's backup) has exactly the rows written before it", async () => {
  expect(noted).not.toBe("");
  const { state, secrets } = cluster;
  cluster.health = await timed("restore to a point in time", () =>
    restoreCluster(state, secrets, { type: "time", target: noted }, log),
  );
  const made = await expectFormedWithReplicas(cluster);
  for (const m of made) expect(["pgbackrest", "basebackup"]).toContain(m);
  expect(await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).toEqual(range(1, 200));
  await expectRowsEverywhere(cluster, range(1, 200));
  // The restored cluster takes writes again.
  await writeRows(cluster, 1001, 1010);
  expect((await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).length).toBe(210);
}, 900_000);
