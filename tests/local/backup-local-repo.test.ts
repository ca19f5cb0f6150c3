/**
 * The local runner's own repository (a host directory bind-mounted into every node at
 * /srv/madbase-backup, no S3 store), as `npm run local --` uses it: first boot creates the stanza
 * and takes a full backup there; every node's script runs over SSH as the timers run it
 * (only the leader and the Redis master act); with `--backup-dir` outside the cluster's directory
 * the backups outlive `down`, and `up --restore latest` (ops' restorePostgres once the fresh
 * cluster is healthy, as the CLI runs it) and ops' restore-redis bring the data back; `pg first`
 * (the first-backup timer's job) backs up only a repository that holds no backup. (The CLIs only
 * parse arguments around these calls.)
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { PORTS } from "../../core";
import { UpResult, backupHostDir, down, waitHealthy } from "../../local/cluster";
import { onNode, replicaMethod, waitBackupJobs } from "../../local/backup";
import { backupOnEveryNode } from "../../ops/backup";
import { restoreRedis } from "../../ops/redis";
import { restorePostgres } from "../../ops/restore";
import { localSession } from "../../ops/target";
import { address, bootCluster, redisClient, sql, testLocation } from "./harness";

const loc = testLocation(6);
const backupDir = `${loc.root}-backups`;
let cluster: UpResult;
const timings: Record<string, number> = {};
const log = (line: string) => (process.env.MADBASE_TEST_VERBOSE ? console.log(line) : undefined);

const start = (restore = false) =>
  bootCluster({
    ...loc,
    stack: "prod",
    nodes: 3,
    profile: "fast",
    timeoutMs: 300_000,
    backupDir,
    onProgress: log,
    afterHealthy: restore
      ? async (state, secrets) => {
          await restorePostgres(localSession(state, log), { type: "latest" });
          return waitHealthy(state, secrets, { timeoutMs: 180_000 });
        }
      : undefined,
  });
/** The running cluster as `npm run ops -- … --local` reaches it. */
const session = () => localSession(cluster.state, log);

beforeAll(async () => {
  await down(loc);
  fs.rmSync(backupDir, { recursive: true, force: true });
  const t = Date.now();
  cluster = await start();
  timings.up = (Date.now() - t) / 1000;
}, 360_000);

afterAll(async () => {
  await down(loc);
  fs.rmSync(backupDir, { recursive: true, force: true });
  console.log(`backup-local-repo timings (s): ${JSON.stringify(timings)}`);
}, 120_000);

test("first boot's full backup lands in the backup directory; replicas come from the repository or pg_basebackup", async () => {
  const t = Date.now();
  await waitBackupJobs(cluster.state, 300_000);
  timings["first boot's full backup"] = (Date.now() - t) / 1000;
  const sets = path.join(backupHostDir(loc.root, backupDir), "pgbackrest", "backup", cluster.state.clusterName);
  expect(fs.readdirSync(sets).filter((f) => /^\d{8}-\d{6}F$/.test(f))).toHaveLength(1);
  for (const n of cluster.state.nodes.filter((x) => x.name !== cluster.health.leader)) {
    expect(["pgbackrest", "basebackup"]).toContain(await replicaMethod(cluster.state, n.name));
  }
  // What the first-backup timer runs on every node: with a backup in the repository, nothing.
  const first = await backupOnEveryNode(session(), ["pg", "first"]);
  expect(first.map((r) => [r.node, r.code])).toEqual(cluster.state.nodes.map((n) => [n.name, 0]));
  expect(
    first.filter((r) => /already has a backup in .*"label":"\d{8}-\d{6}F"/.test(r.output)).map((r) => r.node),
  ).toEqual([cluster.health.leader]);
  expect(fs.readdirSync(sets).filter((f) => /^\d{8}-\d{6}F$/.test(f))).toHaveLength(1);
}, 360_000);

test("every node runs the backups; the leader backs up and the Redis master ships its snapshot, into the backup directory", async () => {
  const { state, secrets, health } = cluster;
  await sql(
    state,
    secrets.app,
    address(state, health.leader!),
    PORTS.postgresPrimary,
    "CREATE TABLE kept AS SELECT generate_series(1, 100) AS id",
  );
  const redis = redisClient(state, secrets.redis, address(state, health.redisMaster!));
  await redis.connect();
  await redis.set("kept", "yes");
  await redis.quit();

  const pg = await backupOnEveryNode(session(), ["pg", "diff"]);
  expect(pg.map((r) => [r.node, r.code])).toEqual(state.nodes.map((n) => [n.name, 0]));
  // First boot's full backup is there: the diff builds on it, on the leader only.
  expect(
    pg
      .filter((r) => /diff backup of madbase-prod done: "label":"\d{8}-\d{6}F_\d{8}-\d{6}D"/.test(r.output))
      .map((r) => r.node),
  ).toEqual([health.leader]);
  expect(pg.filter((r) => /is not the leader/.test(r.output))).toHaveLength(2);
  const snap = await backupOnEveryNode(session(), ["redis"]);
  expect(snap.map((r) => r.code)).toEqual([0, 0, 0]);
  expect(snap.filter((r) => /shipped \d{8}T\d{6}Z-madbase-prod-\d\.rdb to /.test(r.output)).map((r) => r.node)).toEqual(
    [health.redisMaster],
  );
  expect(fs.readdirSync(path.join(backupDir, "redis")).filter((f) => f.endsWith(".rdb"))).toHaveLength(1);
}, 180_000);

test("after down, up --restore latest and restore-redis bring the data back from the backup directory", async () => {
  await down(loc);
  expect(fs.existsSync(loc.root)).toBe(false);
  expect(fs.existsSync(path.join(backupDir, "pgbackrest"))).toBe(true);
  const t = Date.now();
  cluster = await start(true);
  timings["up --restore latest"] = (Date.now() - t) / 1000;
  const { state, secrets, health } = cluster;
  expect(health.healthy).toBe(true);
  const [row] = await sql<{ n: string }>(
    state,
    secrets.app,
    address(state, health.leader!),
    PORTS.postgresPrimary,
    "SELECT count(*) AS n FROM kept",
  );
  expect(Number(row.n)).toBe(100);
  await restoreRedis(session());
  const redis = redisClient(state, secrets.redis, address(state, health.redisMaster!));
  await redis.connect();
  expect(await redis.get("kept")).toBe("yes");
  await redis.quit();
}, 900_000);

test("a leader that finds no backup in the repository (an emptied store) takes the first one when the timer's job runs", async () => {
  const { state } = cluster;
  // The test runs the timer's job itself: the timer must not start a second one beside it.
  for (const n of state.nodes) {
    const r = await onNode(state, n.name, "systemctl stop madbase-pg-backup-first.timer", { timeoutMs: 30_000 });
    expect([n.name, r.code]).toEqual([n.name, 0]);
  }
  await waitBackupJobs(state, 300_000);
  const repo = path.join(backupHostDir(loc.root, backupDir), "pgbackrest");
  for (const d of fs.readdirSync(repo)) fs.rmSync(path.join(repo, d), { recursive: true, force: true });
  const first = await backupOnEveryNode(session(), ["pg", "first"]);
  expect(first.map((r) => [r.node, r.code])).toEqual(state.nodes.map((n) => [n.name, 0]));
  const leader = first.filter((r) => /has no backup in .* yet: taking the first, a full one/.test(r.output));
  expect(leader).toHaveLength(1);
  expect(first.filter((r) => /is not the leader/.test(r.output))).toHaveLength(state.nodes.length - 1);
  expect(leader[0].output).toMatch(/full backup of madbase-prod done: "label":"\d{8}-\d{6}F"/);
  const sets = path.join(repo, "backup", state.clusterName);
  expect(fs.readdirSync(sets).filter((f) => /^\d{8}-\d{6}F$/.test(f))).toHaveLength(1);
}, 360_000);
