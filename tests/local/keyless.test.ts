/**
 * A stack without S3 keys (a dev stack before its keys are set): archivingDecision turns WAL
 * archiving off, and the node must come up and stay quiet about it. One dev node is booted with
 * the bucket's target but without its keys, beside a test S3 store that would refuse their
 * stand-ins (so a job that asked it anyway would fail, and this test with it):
 *  - the first boot finishes, says backups are off, and makes no stanza;
 *  - PostgreSQL's archive_command is /bin/true;
 *  - every backup job its timers start (first, full, diff, the Redis snapshot, the metrics)
 *    succeeds, says backups are off, and asks no store: no unit is left failed, the store is empty;
 *  - a restore, which cannot be done, fails at once and names the fix;
 *  - then the keys are set and the settings applied (config-refresh, as `pulumi up` runs it):
 *    the node archives WAL into the store, and its first-backup job makes the stanza and a full backup.
 */
import { BACKUP_METRICS, BACKUP_METRICS_FILE, BackupTarget, PORTS, pgbackrestPrefix, serverPaths } from "../../core";
import { apply } from "../../local/apply";
import { UpResult } from "../../local/cluster";
import { onNode, pgbackrest, runBackupScript } from "../../local/backup";
import { readSecrets, writeSecrets, writeState } from "../../local/state";
import { testStore } from "../support/s3";
import { bootCluster, finish, nodeSql, sql, testLocation } from "./harness";

const loc = testLocation(17);
const store = testStore(loc, "madbase-keyless-test");
const keys = { accessKey: store.opts.accessKey, secretKey: store.opts.secretKey };
// The target the Pulumi program renders from a dev stack's settings, archiving off for want of keys.
const target: BackupTarget = {
  bucket: store.opts.bucket,
  endpoint: store.opts.address,
  region: "fsn1",
  retentionFull: 1,
  verifyTls: false,
  archiving: false,
};
let cluster: UpResult;
let node = "";

beforeAll(async () => {
  await finish(loc);
  store.create();
  await store.start();
  // No s3Keys: the node gets the runner's stand-ins, as a stack without keys gets placeholders.
  cluster = await bootCluster({
    ...loc,
    stack: "dev",
    nodes: 1,
    profile: "fast",
    timeoutMs: 240_000,
    backup: target,
    afterNetwork: () => store.attach(),
  });
  node = cluster.state.nodes[0].name;
}, 300_000);

afterAll(async () => {
  await finish(loc);
  await store.destroyAll();
}, 120_000);

test("first boot finishes without a stanza and says why; PostgreSQL archives nothing", async () => {
  expect(cluster.health.nodes[0]).toMatchObject({ cloudInit: "done", ready: true });
  const log = await onNode(cluster.state, node, `cat ${serverPaths().firstBootLog}`);
  expect(log.output).toMatch(
    /WAL archiving and backups are off on this stack \(no S3 keys\): no stanza, no first backup/,
  );
  expect(log.output).not.toMatch(/creating the pgBackRest stanza|starting the first full backup/);
  expect(nodeSql(cluster.state, node, "SHOW archive_command")).toBe("/bin/true");
  expect(nodeSql(cluster.state, node, "SELECT archived_count + failed_count FROM pg_stat_archiver")).toBe("0");
});

test("every backup job the timers start succeeds, says backups are off, and leaves no unit failed", async () => {
  const units = [
    "madbase-pg-backup@first.service",
    "madbase-pg-backup@full.service",
    "madbase-pg-backup@diff.service",
    "madbase-redis-snapshot.service",
    "madbase-pg-metrics.service",
  ];
  // Oneshot units: `systemctl start` returns once each ran, with its result.
  const started = await onNode(cluster.state, node, `systemctl start ${units.join(" ")}; echo "start=$?"`, {
    timeoutMs: 120_000,
  });
  expect(started.output).toMatch(/start=0/);
  const results = await onNode(
    cluster.state,
    node,
    units.map((u) => `echo "${u} $(systemctl show -P Result ${u})"`).join("\n"),
  );
  expect(results.output.trim().split("\n").sort()).toEqual(units.map((u) => `${u} success`).sort());
  const failed = await onNode(cluster.state, node, "systemctl list-units --failed --plain --no-legend 'madbase-*'");
  expect(failed.output.trim()).toBe("");
  for (const unit of units.slice(0, 4)) {
    const journal = await onNode(cluster.state, node, `journalctl -q -o cat -u ${unit}`);
    expect(journal.output).toMatch(
      /backups are OFF on .*: the stack has no S3 keys\. Set madbase-state:backupAccessKey/,
    );
    expect(journal.output).not.toMatch(/FAILED/);
  }
  // The metrics job asked no store: the file says there is no readable repository, freshly.
  const metrics = await onNode(cluster.state, node, `cat ${BACKUP_METRICS_FILE}`);
  expect(metrics.output).toMatch(new RegExp(`^${BACKUP_METRICS.success} 0$`, "m"));
  const collected = Number(new RegExp(`^${BACKUP_METRICS.collected} (\\d+)$`, "m").exec(metrics.output)?.[1]);
  expect(Date.now() / 1000 - collected).toBeLessThan(120);
  // Nothing under pgBackRest's log directory and nothing in the store: no job asked it.
  const logs = await onNode(cluster.state, node, `ls -A ${serverPaths().pgbackrestLogDir} | wc -l`);
  expect(logs.output.trim()).toBe("0");
  expect(store.keys("")).toEqual([]);
}, 180_000);

test("a restore cannot be done and says so at once, before any store is asked", async () => {
  const pg = await runBackupScript(cluster.state, node, ["pg-restore", "list"]);
  expect(pg.code).toBe(1);
  expect(pg.output).toMatch(/FAILED: backups are OFF on .*no repository to restore from/);
  const redis = await runBackupScript(cluster.state, node, ["redis-restore", "list"]);
  expect(redis.code).toBe(1);
  expect(redis.output).toMatch(/FAILED: backups are OFF/);
  // Backups off is no excuse for a mistyped type: a usage error, as on a stack with keys.
  const typo = await runBackupScript(cluster.state, node, ["pg", "fulll"]);
  expect([typo.code, typo.output]).toEqual([2, expect.stringMatching(/usage: madbase-backup pg full\|diff\|first/)]);
  // Said by the script itself, not by a store that refused: no pgBackRest log either.
  expect(pg.output).not.toMatch(/ERROR: \[\d+\]/);
  // The entry point still serves writes: backups off changes nothing else.
  const { state, secrets } = cluster;
  const rows = await sql<{ ok: number }>(
    state,
    secrets.app,
    state.nodes[0].address,
    PORTS.postgresPrimary,
    "SELECT 1 AS ok",
  );
  expect(rows).toEqual([{ ok: 1 }]);
});

test("keys set and applied: the node archives WAL into the store, and the first-backup job makes the stanza and a full backup", async () => {
  // What `pulumi config set --secret backupAccessKey/backupSecretKey` and `pulumi up` change: the
  // keys, and archiving on (archivingDecision); config-refresh brings both to the node.
  writeSecrets(loc.root, { ...readSecrets(loc.root), s3AccessKey: keys.accessKey, s3SecretKey: keys.secretKey });
  writeState({ ...cluster.state, backup: { ...target, archiving: true } });
  const applied = await apply({ ...loc, timeoutMs: 240_000 });
  const lines = applied.changes.flatMap((c) => c.lines).join("\n");
  expect(lines).toMatch(/file: \/etc\/madbase\/backup.env replaced/);
  expect(lines).toMatch(/patroni: reloaded with the new patroni.yml/);
  expect(nodeSql(applied.state, node, "SHOW archive_command")).toMatch(/madbase-backup pgbackrest-archive-push/);

  // The timer's job, started as the timer starts it: the stanza and the first full backup.
  const first = await onNode(applied.state, node, `systemctl start madbase-pg-backup@first.service; echo "start=$?"`, {
    timeoutMs: 240_000,
  });
  expect(first.output).toMatch(/start=0/);
  const journal = await onNode(applied.state, node, "journalctl -q -o cat -u madbase-pg-backup@first.service");
  expect(journal.output).toMatch(/creating stanza .* \(first backup of this cluster\)/);
  expect(journal.output).toMatch(/full backup of .* done: "label":"\d{8}-\d{6}F"/);
  const prefix = pgbackrestPrefix(applied.state.clusterName);
  expect(store.keys(prefix).filter((k) => /\/backup\/[^/]+\/\d{8}-\d{6}F\/backup\.manifest$/.test(k))).toHaveLength(1);
  // WAL now reaches the store: pgBackRest's check switches a segment and waits for it there.
  const check = await pgbackrest(applied.state, node, ["--log-level-console=warn", "check"]);
  expect([check.code, check.output]).toEqual([0, ""]);
}, 420_000);
