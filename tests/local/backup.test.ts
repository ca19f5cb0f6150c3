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
 *   - PostgreSQL is recreated from the store with the operator's procedure (ops' restorePostgres,
 *     what `npm run ops -- restore` runs): to the latest point (every row back), later, through the
 *     CLI itself (`ops restore --time T --confirm … --local`), to the noted moment; each time the
 *     cluster forms with replicas; a wrong --confirm touches nothing;
 *   - a Redis snapshot shipped to the store and restored (ops' restoreRedis) brings back the keys
 *     it held;
 *   - afterwards a replica rebuilt from the repository (`madbase-backup pg-restore replica`)
 *     streams again; `ops switchover --to <the synchronous standby>` under a writer loses no
 *     acknowledged write and the named node leads; `ops status` shows it.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { BACKUP_TIMERS, BackupTarget, PORTS } from "../../core";
import { UpResult, down, waitHealthy } from "../../local/cluster";
import { onNode, pgbackrest, replicaMethod, runBackupScript, waitBackupJobs } from "../../local/backup";
import { machineExec } from "../../local/machine";
import { findNode } from "../../local/state";
import { AckWriter } from "../../local/writer";
import { restoreRedis } from "../../ops/redis";
import { restorePostgres } from "../../ops/restore";
import { collectStatus, waitStatus } from "../../ops/session";
import { localSession } from "../../ops/target";
import { testStore } from "../support/s3";
import { address, bootCluster, redisClient, REPO, sql, testLocation } from "./harness";

const loc = testLocation(5);
const store = testStore(loc, "madbase-backup-test");
const STORE_IP = store.opts.address;
const keys = { accessKey: store.opts.accessKey, secretKey: store.opts.secretKey };
const backup: BackupTarget = {
  bucket: store.opts.bucket,
  endpoint: STORE_IP,
  region: "fsn1",
  // First boot's full backup is the only one before the noted moment, and the point-in-time restore
  // needs it: the store-down test's backup and the restore to latest's own (step 7) are two more.
  retentionFull: 3,
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
const FIRST_BACKUP_UNIT = "madbase-pg-backup-first.timer";

/**
 * Until the store holds a full backup: first boot's, or the first-backup timer's when first boot's
 * was skipped. On a timeout, says what each node's first-backup job logged.
 */
async function waitFirstBackup(c: UpResult, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await pgbackrest(c.state, leaderOf(c), ["--output=json", "info"]);
    const [info] = r.code === 0 ? (JSON.parse(r.output) as { backup: { type: string }[] }[]) : [];
    if (info?.backup?.some((b) => b.type === "full")) return;
    if (Date.now() > deadline) {
      const logs = c.state.nodes.map(
        (n) =>
          `${n.name}:\n${machineExec(n.machine, ["journalctl", "-b", "--no-pager", "-o", "cat", "-u", "madbase-pg-backup@first.service"], { timeoutMs: 30_000 }).stdout}`,
      );
      throw new Error(`no full backup in the store ${timeoutMs / 1000} s after up:\n${logs.join("\n")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}
/** The running cluster as `npm run ops -- … --local` reaches it. */
const session = () => localSession(cluster.state, log);

/** `npm run ops -- ARGS` against this file's cluster, as an operator runs it (a child process). */
function ops(args: string[], timeoutMs = 900_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO, "cli", "ops.ts"), ...args], {
      cwd: REPO,
      env: { ...process.env, MADBASE_LOCAL_ROOT: loc.root, MADBASE_LOCAL_NET: loc.networkId },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
      log(c.toString().trimEnd());
    });
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
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
    bootCluster({
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
  // The first-backup timer stays until the first full backup is in the store (the first test
  // stops it then): first boot's backup is skipped when leadership moves during the boot, and the
  // timer is how the product makes up for it.
  const schedules = BACKUP_TIMERS.filter((t) => t !== "madbase-pg-metrics.timer" && t !== FIRST_BACKUP_UNIT);
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
  await timed("first boot's full backup (after up)", () => waitFirstBackup(cluster, 240_000));
  for (const n of state.nodes) {
    expect(machineExec(n.machine, ["systemctl", "stop", FIRST_BACKUP_UNIT], { timeoutMs: 30_000 }).code).toBe(0);
  }
  await waitBackupJobs(state, 300_000);
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

  await timed("restore to latest", () => restorePostgres(session(), { type: "latest" }));
  const made = await expectFormedWithReplicas(cluster);
  expect(made).toEqual(["pgbackrest", "pgbackrest"]);
  expect(await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).toEqual(range(1, 600));
  await expectRowsEverywhere(cluster, range(1, 600));
}, 900_000);

test("a Redis snapshot shipped to the store and restored brings back the keys it held", async () => {
  const { state, secrets } = cluster;
  // All Redis servers stop, the snapshot goes on the master, the master starts, then the replicas.
  const restored = await timed("redis restore", async () => (await restoreRedis(session(), "latest")).run);
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
  const { state } = cluster;
  // Another cluster's name is refused before anything is touched: the leader and its timeline stay.
  const before = await collectStatus(session());
  const wrong = await ops(["restore", "--time", noted, "--confirm", "madbase-dev", "--local", "--stack", "prod"]);
  expect([wrong.code, wrong.stderr]).toEqual([
    2,
    expect.stringContaining(
      `--confirm: "madbase-dev" is not allowed; name the cluster this restore replaces: --confirm madbase-prod`,
    ),
  ]);
  const unchanged = await collectStatus(session());
  expect([unchanged.leader, unchanged.nodes.map((n) => n.timeline)]).toEqual([
    before.leader,
    before.nodes.map((n) => n.timeline),
  ]);

  const r = await timed("restore to a point in time (ops CLI)", () =>
    ops(["restore", "--time", noted, "--confirm", state.clusterName, "--local", "--stack", "prod"]),
  );
  expect([r.code, r.stderr]).toEqual([0, expect.any(String)]);
  expect(r.stdout).toContain(`What it risks: everything written to madbase-prod after ${noted} is gone`);
  expect(r.stdout).toMatch(/step 5\/7 madbase-prod-\d: madbase-backup pg full/);
  const made = await expectFormedWithReplicas(cluster);
  for (const m of made) expect(["pgbackrest", "basebackup"]).toContain(m);
  expect(await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).toEqual(range(1, 200));
  await expectRowsEverywhere(cluster, range(1, 200));
  // The restored cluster takes writes again.
  await writeRows(cluster, 1001, 1010);
  expect((await rowIds(cluster, entry(cluster), PORTS.postgresPrimary)).length).toBe(210);
}, 900_000);

test("afterwards a replica rebuilt from the repository (madbase-backup pg-restore replica) streams again", async () => {
  const { state } = cluster;
  const status = await collectStatus(session());
  const replica = status.nodes.find((n) => n.name !== status.leader)!.name;
  for (const [what, run] of [
    ["stop patroni", () => onNode(state, replica, "systemctl stop patroni.service </dev/null", { timeoutMs: 180_000 })],
    ["pg-restore replica", () => runBackupScript(state, replica, ["pg-restore", "replica"], { timeoutMs: 120_000 })],
    [
      "start patroni",
      () => onNode(state, replica, "systemctl start patroni.service </dev/null", { timeoutMs: 120_000 }),
    ],
  ] as const) {
    const r = await run();
    expect([what, r.code, r.output]).toEqual([what, 0, expect.any(String)]);
  }
  await timed("replica rebuilt", () => expectFormedWithReplicas(cluster));
  expect(await replicaMethod(state, replica)).toBe("pgbackrest");
  await expectRowsEverywhere(cluster, [...range(1, 200), ...range(1001, 1010)]);
}, 300_000);

test("ops switchover --to the synchronous standby under a writer: no acknowledged write lost, the named node leads; ops status shows it", async () => {
  const { state, secrets } = cluster;
  // A replica restarted a moment ago: Patroni names a synchronous standby again within a loop or two.
  const before = await waitStatus(session(), "a healthy cluster with a synchronous standby", (x) => x.healthy, 60_000);
  expect(before.synchronousMode).toBe(true);
  const to = before.nodes.find((n) => n.role === "sync_standby")!.name;
  const from = before.leader!;
  // Writes go through a third node's HAProxy (5433), which follows the leader across the switchover.
  const via = state.nodes.find((n) => n.name !== to && n.name !== from)!.address;
  const writer = new AckWriter({
    host: via,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 1,
    intervalMs: 20,
  });
  writer.start();
  try {
    await writer.waitForAcks(20, 30_000);
    const r = await timed("switchover (ops CLI)", () =>
      ops(["switchover", "--to", to, "--local", "--stack", "prod"], 300_000),
    );
    expect([r.code, r.stderr]).toEqual([0, expect.any(String)]);
    expect(r.stdout).toContain("What it risks: open connections to the leader are cut");
    expect(r.stdout).toContain("synchronous_mode is on: no acknowledged commit is lost.");
    expect(r.stdout).toContain(`${to} leads madbase-prod (was ${from}), every replica streams`);
    await writer.waitForAcks(20, 60_000);
  } finally {
    await writer.stop();
  }
  const acked = writer.ackedIds;
  const rows = await sql<{ id: string }>(
    state,
    secrets.app,
    address(state, to),
    PORTS.postgres,
    `SELECT id FROM ${writer.table} WHERE id = ANY($1::bigint[])`,
    [acked],
  );
  timings["acknowledged writes across the switchover"] = acked.length;
  expect(rows.map((x) => Number(x.id)).sort((a, b) => a - b)).toEqual([...acked].sort((a, b) => a - b));

  const status = await ops(["status", "--local", "--stack", "prod"], 60_000);
  expect([status.code, status.stderr]).toEqual([0, expect.any(String)]);
  expect(status.stdout).toContain(`PostgreSQL leader: ${to} (synchronous_mode on)`);
  expect(status.stdout).toMatch(new RegExp(`${to}\\s+\\S+\\s+leader\\s+running`));
  expect(status.stdout).toMatch(/\nhealthy$/m);
}, 400_000);

test("ops backup pg diff and ops backup redis run on the leader and on the Redis master, and say so", async () => {
  const status = await collectStatus(session());
  const pg = await timed("pg diff backup (ops CLI)", () => ops(["backup", "pg", "diff", "--local", "--stack", "prod"]));
  expect([pg.code, pg.stderr]).toEqual([0, expect.any(String)]);
  expect(pg.stdout).toContain(
    "What it risks: no data: the leader reads the whole database (full) or what changed (diff)",
  );
  expect(pg.stdout).toMatch(/diff backup of madbase-prod done: "label":"\d{8}-\d{6}F_\d{8}-\d{6}D"/);
  expect(pg.stdout).toContain(`backup done on ${status.leader}.`);
  const redis = await timed("redis snapshot (ops CLI)", () => ops(["backup", "redis", "--local", "--stack", "prod"]));
  expect([redis.code, redis.stderr]).toEqual([0, expect.any(String)]);
  expect(redis.stdout).toMatch(/shipped \d{8}T\d{6}Z-madbase-prod-\d\.rdb to /);
  expect(redis.stdout).toContain(`backup done on ${status.redisMaster}.`);
}, 300_000);
