/**
 * The local runner's own repository (a directory, no S3 store), as `npm run local --` uses it:
 * the cluster forms with the pgBackRest replica method first in line (it falls back to
 * pg_basebackup while the repository has no backup); `backup-pg` / `backup-redis` run every node's
 * script (only the leader and the Redis master act); with `--backup-dir` outside the cluster's
 * directory the backups outlive `down`, and `up --restore latest` and `restore-redis` bring the
 * data back. (The CLI only parses arguments around these calls.)
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PORTS, localRedisSnapshotDir } from "../../core";
import { UpResult, backupRepo, down, up } from "../../local/cluster";
import { restorePostgres } from "../../local/backup";
import { backupOnEveryNode, restoreRedis } from "../../local/backup-ops";
import { logFile } from "../../local/layout";
import { address, redisClient, sql } from "./harness";

const loc = { root: path.join(os.tmpdir(), "madbase-backup-local-test"), networkId: "bkl", subnetCidr: "10.42.62.0/24" };
const backupDir = path.join(os.tmpdir(), "madbase-backup-local-test-backups");
let cluster: UpResult;

const start = (restore = false) =>
  up({
    ...loc,
    stack: "prod",
    nodes: 3,
    profile: "fast",
    timeoutMs: 240_000,
    backupDir,
    beforePatroni: restore ? (state) => void restorePostgres(state, state.nodes[0].name, { type: "latest" }) : undefined,
  });

beforeAll(async () => {
  await down(loc);
  fs.rmSync(backupDir, { recursive: true, force: true });
  cluster = await start();
}, 300_000);

afterAll(async () => {
  await down(loc);
  fs.rmSync(backupDir, { recursive: true, force: true });
}, 120_000);

test("replicas fall back to pg_basebackup while the repository holds no backup", () => {
  for (const n of cluster.state.nodes.filter((x) => x.name !== cluster.health.leader)) {
    const log = fs.readFileSync(logFile(cluster.state, n, "patroni"), "utf8");
    expect(log).toMatch(/Error creating replica using method pgbackrest/);
    expect(log).toMatch(/replica has been created using basebackup/);
  }
});

test("every node runs the backups; the leader backs up and the Redis master ships its snapshot, into the backup directory", async () => {
  const { state, secrets, health } = cluster;
  await sql(state, secrets.app, address(state, health.leader!), PORTS.postgresPrimary, "CREATE TABLE kept AS SELECT generate_series(1, 100) AS id");
  const redis = redisClient(state, secrets.redis, address(state, health.redisMaster!));
  await redis.connect();
  await redis.set("kept", "yes");
  await redis.quit();

  const pg = backupOnEveryNode(loc, ["pg", "diff"]);
  expect(pg.map((r) => r.code)).toEqual([0, 0, 0]);
  // No full backup yet: pgBackRest takes a full one instead of the diff, on the leader only.
  expect(pg.filter((r) => /diff backup of madbase-prod done: "label":"\d{8}-\d{6}F"/.test(r.output)).map((r) => r.node)).toEqual([health.leader]);
  expect(pg.filter((r) => /is not the leader/.test(r.output))).toHaveLength(2);
  const snap = backupOnEveryNode(loc, ["redis"]);
  expect(snap.map((r) => r.code)).toEqual([0, 0, 0]);
  expect(snap.filter((r) => /shipped \d{8}T\d{6}Z-madbase-prod-\d\.rdb to /.test(r.output)).map((r) => r.node)).toEqual([health.redisMaster]);
  expect(backupRepo(loc.root, backupDir)).toBe(path.join(backupDir, "pgbackrest"));
  expect(fs.readdirSync(localRedisSnapshotDir(backupRepo(loc.root, backupDir))).filter((f) => f.endsWith(".rdb"))).toHaveLength(1);
}, 120_000);

test("after down, up --restore latest and restore-redis bring the data back from the backup directory", async () => {
  await down(loc);
  expect(fs.existsSync(loc.root)).toBe(false);
  cluster = await start(true);
  const { state, secrets, health } = cluster;
  const [row] = await sql<{ n: string }>(state, secrets.app, address(state, health.leader!), PORTS.postgresPrimary, "SELECT count(*) AS n FROM kept");
  expect(Number(row.n)).toBe(100);
  await restoreRedis(loc);
  const redis = redisClient(state, secrets.redis, address(state, health.redisMaster!));
  await redis.connect();
  expect(await redis.get("kept")).toBe("yes");
  await redis.quit();
}, 300_000);
