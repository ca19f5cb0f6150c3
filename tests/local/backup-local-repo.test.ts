/**
 * The local runner's default backup repository (a directory under the cluster's root, no S3
 * store): `npm run local -- up` still forms with the pgBackRest replica method first in line
 * (it falls back to pg_basebackup while the repository has no backup), and the same
 * madbase-backup script backs up PostgreSQL and ships Redis snapshots there.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { UpResult, backupRepo, down, up } from "../../local/cluster";
import { runBackupScript } from "../../local/backup";
import { logFile } from "../../local/layout";
import { localRedisSnapshotDir } from "../../core";

const loc = { root: path.join(os.tmpdir(), "madbase-backup-local-test"), networkId: "bkl", subnetCidr: "10.42.62.0/24" };
let cluster: UpResult;

beforeAll(async () => {
  await down(loc);
  cluster = await up({ ...loc, stack: "prod", nodes: 3, profile: "fast", timeoutMs: 240_000 });
}, 300_000);

afterAll(async () => {
  await down(loc);
}, 120_000);

test("replicas fall back to pg_basebackup while the repository holds no backup", () => {
  for (const n of cluster.state.nodes.filter((x) => x.name !== cluster.health.leader)) {
    const log = fs.readFileSync(logFile(cluster.state, n, "patroni"), "utf8");
    expect(log).toMatch(/Error creating replica using method pgbackrest/);
    expect(log).toMatch(/replica has been created using basebackup/);
  }
});

test("the leader backs up into the local repository and the Redis master ships its snapshot beside it", () => {
  const { state, health } = cluster;
  const pg = runBackupScript(state, health.leader!, ["pg", "diff"]);
  // No full backup yet: pgBackRest takes a full one instead of the diff.
  expect([pg.code, pg.output]).toEqual([0, expect.stringMatching(/diff backup of madbase-prod done: "label":"\d{8}-\d{6}F"/)]);
  const redis = runBackupScript(state, health.redisMaster!, ["redis"]);
  expect([redis.code, redis.output]).toEqual([0, expect.stringMatching(/shipped \d{8}T\d{6}Z-madbase-prod-\d\.rdb to /)]);
  expect(fs.readdirSync(localRedisSnapshotDir(backupRepo(loc.root))).filter((f) => f.endsWith(".rdb"))).toHaveLength(1);
}, 120_000);
