/**
 * Backups count only when a restore from them has been seen to work. A 3-node cluster backs up to
 * an S3 store over TLS (s3rver in a namespace of its own on the cluster's subnet) with the rendered
 * `madbase-backup` script, run on the nodes the way their systemd timers run it:
 *   - on a replica the script does nothing and says why; with the store down it fails loudly and
 *     the next run succeeds;
 *   - the cluster is destroyed and recreated from the store: to the latest point (every row back),
 *     then to a noted moment (exactly the rows written before it); each time it forms with
 *     replicas restored from the repository;
 *   - a Redis snapshot shipped to the store and restored brings back the keys it held.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { BackupTarget, PORTS } from "../../core";
import { UpResult, down, up, waitHealthy } from "../../local/cluster";
import { RestoreTarget, restorePostgres, runBackupScript } from "../../local/backup";
import { restoreRedis } from "../../local/backup-ops";
import { localPathsOf, logFile } from "../../local/layout";
import { LocalClusterState } from "../../local/state";
import { runIn } from "../../local/supervisor";
import { S3Store } from "../support/s3";
import { address, redisClient, sql } from "./harness";

const loc = { root: path.join(os.tmpdir(), "madbase-backup-test"), networkId: "bk", subnetCidr: "10.42.61.0/24" };
const STORE_IP = "10.42.61.200";
const BUCKET = "madbase-backup-test";
const keys = { accessKey: `MBTEST${randomBytes(6).toString("hex").toUpperCase()}`, secretKey: randomBytes(24).toString("hex") };
const backup: BackupTarget = { bucket: BUCKET, endpoint: STORE_IP, region: "fsn1", retentionFull: 2, redisRetentionDays: 7, verifyTls: false };
const store = new S3Store({ networkId: loc.networkId, address: STORE_IP, subnetPrefix: 24, dir: path.join(os.tmpdir(), "madbase-backup-test-s3"), bucket: BUCKET, ...keys });

const TABLE = "backup_rows";
let cluster: UpResult;
const timings: Record<string, number> = {};

async function timed<T>(what: string, fn: () => Promise<T> | T): Promise<T> {
  const t = Date.now();
  try {
    return await fn();
  } finally {
    timings[what] = (Date.now() - t) / 1000;
  }
}

/** A fresh cluster on the test's network, its store linked in; optionally recreated from a backup first. */
function startCluster(restore?: RestoreTarget): Promise<UpResult> {
  return up({
    ...loc,
    stack: "prod",
    nodes: 3,
    profile: "fast",
    timeoutMs: 240_000,
    backup,
    s3Keys: keys,
    beforePatroni: (state) => {
      store.attach();
      if (restore) restorePostgres(state, state.nodes[0].name, restore);
    },
  });
}

const leaderOf = (c: UpResult) => c.health.leader!;
const entry = (c: UpResult) => address(c.state, leaderOf(c));

async function writeRows(c: UpResult, from: number, to: number): Promise<void> {
  await sql(c.state, c.secrets.app, entry(c), PORTS.postgresPrimary, `INSERT INTO ${TABLE} (id) SELECT generate_series($1::int, $2::int)`, [from, to]);
}

async function rowIds(c: UpResult, host: string, port: number): Promise<number[]> {
  const rows = await sql<{ id: number }>(c.state, c.secrets.app, host, port, `SELECT id FROM ${TABLE} ORDER BY id`);
  return rows.map((r) => r.id);
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** pgBackRest's check on the leader: forces a WAL switch and waits until the archive has it. */
function archiveNow(state: LocalClusterState, leader: string): void {
  const node = state.nodes.find((n) => n.name === leader)!;
  runIn(node.namespace, ["pgbackrest", `--config=${localPathsOf(state, node).config["pgbackrest.conf"]}`, `--stanza=${state.clusterName}`, "--log-level-console=warn", "check"], {
    user: "postgres",
    setpriv: state.programs.setpriv,
    timeoutMs: 120_000,
  });
}

/** The cluster is healthy (a leader, every replica streaming) and says how each replica was made. */
async function expectFormedWithReplicas(c: UpResult): Promise<string[]> {
  const h = await waitHealthy(c.state, c.secrets, { timeoutMs: 120_000 });
  expect(h.nodes.filter((n) => n.role === "leader")).toHaveLength(1);
  const replicas = h.nodes.filter((n) => n.role !== "leader");
  expect(replicas).toHaveLength(2);
  for (const r of replicas) expect([r.name, r.streaming]).toEqual([r.name, true]);
  return replicas.map((r) => {
    const log = fs.readFileSync(logFile(c.state, r, "patroni"), "utf8");
    return /replica has been created using (\w+)/.exec(log)?.[1] ?? "unknown";
  });
}

beforeAll(async () => {
  await down(loc);
  store.create();
  await store.start();
  cluster = await timed("up (fresh cluster)", () => startCluster());
  await sql(cluster.state, cluster.secrets.app, entry(cluster), PORTS.postgresPrimary, `CREATE TABLE ${TABLE} (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`);
}, 360_000);

afterAll(async () => {
  await down(loc);
  await store.destroyAll();
  console.log(`backup test timings (s): ${JSON.stringify(timings)}`);
}, 120_000);

test("on a replica the backup does nothing and says why; the leader's node backs up", () => {
  const { state } = cluster;
  const replica = state.nodes.find((n) => n.name !== leaderOf(cluster))!.name;
  const pg = runBackupScript(state, replica, ["pg", "full"]);
  expect(pg.code).toBe(0);
  expect(pg.output).toMatch(new RegExp(`${replica} is not the leader \\(Patroni: (replica|sync_standby)\\); the leader takes the full backup\\. Nothing to do here\\.`));
  const redisReplica = cluster.health.nodes.find((n) => n.redisRole === "replica")!.name;
  const redis = runBackupScript(state, redisReplica, ["redis"]);
  expect(redis.code).toBe(0);
  expect(redis.output).toMatch(/is a Redis slave; the master ships the snapshot\. Nothing to do here\./);
  // Nothing reached the store: no backup set, no snapshot.
  expect(store.keys(`${state.clusterName}/pgbackrest/backup`).filter((k) => /F\/backup\.manifest$/.test(k))).toEqual([]);
  expect(store.keys(`${state.clusterName}/redis`)).toEqual([]);
});

test("with the store down a backup fails with a clear line and a non-zero exit; the next run succeeds", async () => {
  const { state, secrets } = cluster;
  const leader = leaderOf(cluster);
  const redisMaster = cluster.health.redisMaster!;
  await writeRows(cluster, 1, 200);
  const redis = redisClient(state, secrets.redis, address(state, redisMaster));
  await redis.connect();
  for (let i = 1; i <= 50; i++) await redis.set(`k:${i}`, `v${i}`);
  await redis.quit();
  // A snapshot from long ago, which retention must delete once a new one is shipped.
  const old = path.join(store.opts.dir, "old.rdb");
  fs.writeFileSync(old, "REDIS0009");
  store.put(old, `${state.clusterName}/redis/20000101T000000Z-${redisMaster}.rdb`);

  await store.stop();
  const failedPg = await timed("pg full backup, store down", () => runBackupScript(state, leader, ["pg", "full"]));
  expect(failedPg.code).toBe(1);
  expect(failedPg.output).toMatch(new RegExp(`FAILED: the backup store: https://${STORE_IP.replace(/\./g, "\\.")} does not answer \\(curl exit 7\\)\\. No backup taken; the next run tries again\\.`));
  const failedRedis = runBackupScript(state, redisMaster, ["redis"]);
  expect(failedRedis.code).toBe(1);
  expect(failedRedis.output).toMatch(/FAILED: upload of \d{8}T\d{6}Z-madbase-prod-\d\.rdb to s3:\/\/madbase-backup-test\/madbase-prod\/redis\/ .*does not answer.*The next run tries again\./);
  // No secret in what the scripts print.
  for (const out of [failedPg.output, failedRedis.output]) {
    for (const s of [secrets.s3SecretKey, secrets.s3AccessKey, secrets.redis]) expect(out).not.toContain(s);
  }

  await store.start();
  const pg = await timed("pg full backup", () => runBackupScript(state, leader, ["pg", "full"]));
  expect([pg.code, pg.output]).toEqual([0, expect.stringMatching(/full backup of madbase-prod done: "label":"\d{8}-\d{6}F"/)]);
  const snap = await timed("redis snapshot", () => runBackupScript(state, redisMaster, ["redis"]));
  expect([snap.code, snap.output]).toEqual([0, expect.stringMatching(/shipped \d{8}T\d{6}Z-madbase-prod-\d\.rdb/)]);
  expect(snap.output).toContain(`deleted 20000101T000000Z-${redisMaster}.rdb (older than 7 day(s))`);
  expect(store.keys(`${state.clusterName}/redis`)).toEqual([expect.stringMatching(new RegExp(`^madbase-prod/redis/\\d{8}T\\d{6}Z-${redisMaster}\\.rdb$`))]);
  for (const s of [secrets.s3SecretKey, secrets.redis]) expect(pg.output + snap.output).not.toContain(s);
}, 300_000);

let noted = "";

test("the cluster destroyed and restored to the latest point has every row, and forms with replicas from the repository", async () => {
  const { state, secrets } = cluster;
  await writeRows(cluster, 201, 400);
  // The noted moment, by the leader's clock (the same clock every node and the archive use here).
  const [t] = await sql<{ at: string }>(state, secrets.app, entry(cluster), PORTS.postgresPrimary,
    `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS at`);
  noted = t.at;
  await new Promise((r) => setTimeout(r, 1500));
  await writeRows(cluster, 401, 600);
  // Keys written after the Redis snapshot must not come back from it.
  const redis = redisClient(state, secrets.redis, address(state, cluster.health.redisMaster!));
  await redis.connect();
  await redis.set("k:after", "late");
  await redis.quit();
  archiveNow(state, leaderOf(cluster));

  await timed("down", () => down(loc));
  cluster = await timed("up, restored to latest", () => startCluster({ type: "latest" }));
  const made = await expectFormedWithReplicas(cluster);
  expect(made).toEqual(["pgbackrest", "pgbackrest"]);
  expect(await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).toEqual(range(1, 600));
  // And on every replica.
  for (const n of cluster.state.nodes) {
    let ids: number[] = [];
    for (let i = 0; i < 40; i++) {
      ids = await rowIds(cluster, n.address, PORTS.postgres);
      if (ids.length === 600) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect([n.name, ids.length]).toEqual([n.name, 600]);
  }
}, 600_000);

test("a Redis snapshot shipped to the store and restored brings back the keys it held", async () => {
  const { state, secrets } = cluster;
  // The restored cluster's Redis starts empty. All Redis servers stop, the snapshot goes on the
  // master, the master starts, then the replicas (they resync from it).
  const restored = await timed("redis restore", () => restoreRedis(loc, "latest"));
  expect(restored.output).toMatch(/restored \d{8}T\d{6}Z-madbase-prod-\d\.rdb into .*dump\.rdb/);
  await waitHealthy(state, secrets, { timeoutMs: 120_000 });

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

test("the cluster destroyed and restored to the noted moment has exactly the rows written before it, and forms with replicas", async () => {
  expect(noted).not.toBe("");
  await timed("down", () => down(loc));
  cluster = await timed("up, restored to a point in time", () => startCluster({ type: "time", target: noted }));
  const made = await expectFormedWithReplicas(cluster);
  for (const m of made) expect(["pgbackrest", "basebackup"]).toContain(m);
  expect(await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).toEqual(range(1, 400));
  // The restored cluster takes writes again.
  await writeRows(cluster, 1001, 1010);
  expect((await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).length).toBe(410);
}, 600_000);
