/**
 * The alert rules on booted nodes (3 nodes, fast profile, its own network and subnet): a real
 * Prometheus scrapes the rendered prometheus.yml's targets every second and loads the rendered
 * alerts.yml beside it; its /api/v1/alerts says what fires.
 *  - every metric the rules name is exported by the nodes (the backup textfile included);
 *  - the healthy cluster fires nothing;
 *  - Patroni stopped on a replica: PatroniMemberDown and PostgresReplicationBroken fire;
 *  - a power cut of the leader: PostgresNoLeader fires, and resolves once a replica took over;
 *  - the WAL archive unwritable: PostgresArchivingFailing fires;
 *  - and with the leader's archive-push-queue-max made small: WAL past it is dropped (logged,
 *    counted in the backup textfile), the archive queue stays bounded, writes go on, and
 *    PostgresWalDropped fires.
 * Each within the time its rule promises (its `for`, plus scrapes and evaluations).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  ALERT_RULES_FILE,
  BACKUP_METRICS,
  alertRules,
  alertThresholds,
  describeCluster,
  renderAlertRules,
  renderPrometheusConfig,
} from "../../core";
import { UPDATES_METRICS, loadStackSettings } from "../../core";
import { UpResult, killNode, startNode, stopService, waitHealthy } from "../../local/cluster";
import { machineExec } from "../../local/machine";
import { inNamespace } from "../../local/network";
import { findNode } from "../../local/state";
import { certPaths } from "../../local/tls";
import { run, start, stop, waitFor } from "../support/proc";
import { parsePromQL } from "../support/promql";
import { TestCluster, finish, nodeSql, sleep, startCluster, testLocation } from "./harness";

const loc: TestCluster = testLocation(11);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-alerts-e2e-"));
const SCRAPE = 1;
let cluster: UpResult;
let prom: ReturnType<typeof start> | undefined;
let ns = "";
let archiveDir = "";
/** The leader while the archive is unwritable (the last two tests). */
let archivingLeader = "";

interface ActiveAlert {
  labels: Record<string, string>;
  state: "pending" | "firing";
  activeAt: string;
}

async function get(url: string): Promise<string> {
  const r = await run(inNamespace(ns, ["curl", "-s", "-m", "5", url]), { timeoutMs: 10_000 });
  return r.stdout;
}
async function alerts(): Promise<ActiveAlert[]> {
  try {
    return (JSON.parse(await get("http://127.0.0.1:9090/api/v1/alerts")) as { data: { alerts: ActiveAlert[] } }).data
      .alerts;
  } catch {
    return [];
  }
}
const firing = async (name: string, labels: Record<string, string> = {}) =>
  (await alerts()).filter(
    (a) =>
      a.state === "firing" &&
      a.labels.alertname === name &&
      Object.entries(labels).every(([k, v]) => a.labels[k] === v),
  );
/** Waits for `name` to fire; returns the seconds it took from `since`. */
async function waitFiring(
  name: string,
  labels: Record<string, string>,
  since: number,
  timeoutMs: number,
): Promise<number> {
  await waitFor(
    `${name} ${JSON.stringify(labels)} to fire`,
    async () => (await firing(name, labels)).length > 0,
    timeoutMs,
    500,
  );
  return (Date.now() - since) / 1000;
}

beforeAll(async () => {
  cluster = await startCluster(loc);
  const { state, secrets } = cluster;
  ns = state.nodes[state.nodes.length - 1].namespace;
  archiveDir = path.join(state.backupHostDir!, "pgbackrest", "archive");
  const settings = loadStackSettings(state.stack, {
    failoverProfile: state.applied.failoverProfile,
    subnetCidr: state.subnetCidr,
    nodeCount: state.nodes.length,
  });
  const { topology, options } = describeCluster(settings);
  const opts = { scrapeIntervalSeconds: SCRAPE };
  const passwordFile = path.join(work, "haproxy-stats.password");
  fs.writeFileSync(passwordFile, `${secrets.haproxyStats}\n`, { mode: 0o644 });
  fs.writeFileSync(
    path.join(work, "prometheus.yml"),
    renderPrometheusConfig(topology, {
      haproxyPasswordFile: passwordFile,
      caFile: certPaths(state.root, "ca").cert,
      // Patroni answers only callers with a certificate of the CA: this machine's operator pair.
      clientCertFile: certPaths(state.root, "operator").cert,
      clientKeyFile: certPaths(state.root, "operator").key,
      scrapeIntervalSeconds: SCRAPE,
    }),
  );
  fs.writeFileSync(
    path.join(work, ALERT_RULES_FILE),
    renderAlertRules(topology, { ...options, backup: state.backup ?? options.backup }, opts),
  );
  fs.writeFileSync(
    path.join(work, "rules.json"),
    JSON.stringify({ rules: alertRules(topology, options, opts), t: alertThresholds(topology, options, opts) }),
  );
  const check = await run(["promtool", "check", "config", path.join(work, "prometheus.yml")], { timeoutMs: 30_000 });
  expect([check.code, check.stdout + check.stderr]).toEqual([0, expect.stringContaining("SUCCESS")]);
  fs.mkdirSync(path.join(work, "data"));
  prom = start(
    inNamespace(ns, [
      "prometheus",
      `--config.file=${path.join(work, "prometheus.yml")}`,
      `--storage.tsdb.path=${path.join(work, "data")}`,
      "--web.listen-address=127.0.0.1:9090",
      "--log.level=warn",
    ]),
  );
}, 300_000);

afterAll(async () => {
  if (prom) await stop(prom);
  if (archiveDir) await run(["chmod", "-R", "u+w", archiveDir]);
  await finish(loc);
  fs.rmSync(work, { recursive: true, force: true });
}, 120_000);

const rulesData = () =>
  JSON.parse(fs.readFileSync(path.join(work, "rules.json"), "utf8")) as {
    rules: { alert: string; expr: string; forSeconds: number }[];
    t: ReturnType<typeof alertThresholds>;
  };

test("every metric the rules name is exported by the nodes, and the healthy cluster fires nothing", async () => {
  const { rules } = rulesData();
  // Series that exist only while what they time is true: an update waiting, a reboot required. A
  // healthy, up-to-date node has neither; their rules fire on a rendered textfile in
  // tests/daemons/alerts.test.ts.
  const whileTrue = new Set<string>([UPDATES_METRICS.pendingSince, UPDATES_METRICS.rebootRequiredSince]);
  const wanted = new Set(
    rules.flatMap((r) => parsePromQL(r.expr).selectors.map((s) => s.metric)).filter((m) => m && !whileTrue.has(m)),
  );
  expect([...whileTrue].every((m) => rules.some((r) => r.expr.includes(m)))).toBe(true);
  let missing: string[] = [];
  // The backup textfile comes with the metrics timer's first run (20 s after boot).
  await waitFor(
    "every metric the rules name",
    async () => {
      const names = new Set(
        (
          JSON.parse((await get("http://127.0.0.1:9090/api/v1/label/__name__/values")) || '{"data":[]}') as {
            data: string[];
          }
        ).data,
      );
      missing = [...wanted].filter((m) => !names.has(m));
      return missing.length === 0;
    },
    90_000,
    1000,
  ).catch(() => undefined);
  expect(missing).toEqual([]);
  // The backup textfile tells the first boot's full backup, read from the repository by every node.
  const q = async (query: string) =>
    (
      JSON.parse(await get(`http://127.0.0.1:9090/api/v1/query?${new URLSearchParams({ query })}`)) as {
        data: { result: { metric: Record<string, string> }[] };
      }
    ).data.result;
  await waitFor(
    "every node to report the full backup and a readable repository",
    async () =>
      (await q(`${BACKUP_METRICS.lastBackup}{type="full"} > 0 and on (node) ${BACKUP_METRICS.success} == 1`)).length ===
      cluster.state.nodes.length,
    90_000,
    1000,
  );
  // Long enough for every rule of the fast profile that watches a member (for: ttl = 20 s).
  await sleep(25_000);
  expect(
    (await alerts()).filter((a) => a.state === "firing").map((a) => `${a.labels.alertname} ${a.labels.node ?? ""}`),
  ).toEqual([]);
}, 240_000);

test("Patroni stopped on a replica: member down and replication broken fire within their promise", async () => {
  const { t } = rulesData();
  const replica = cluster.state.nodes.find((n) => n.name !== cluster.health.leader)!.name;
  const since = Date.now();
  await stopService(replica, "patroni", loc);
  // for (ttl) + a few scrapes and evaluations.
  const promise = t.memberGone + 15;
  const down = await waitFiring("PatroniMemberDown", { node: replica }, since, promise * 1000);
  const broken = await waitFiring("PostgresReplicationBroken", {}, since, promise * 1000);
  console.log(
    `PatroniMemberDown after ${down.toFixed(1)} s, PostgresReplicationBroken after ${broken.toFixed(1)} s (promise ${promise} s)`,
  );
  await startNode(replica, loc);
  await waitHealthy(cluster.state, cluster.secrets, { timeoutMs: 90_000 });
}, 180_000);

test("a power cut of the leader: no-leader fires, and resolves after the failover", async () => {
  const { t } = rulesData();
  const { state, secrets } = cluster;
  const health = await waitHealthy(state, secrets, { timeoutMs: 60_000 });
  const leader = health.leader!;
  const since = Date.now();
  await killNode(leader, loc);
  const fired = await waitFiring("PostgresNoLeader", {}, since, (t.failover + 15) * 1000);
  await waitFor(
    "PostgresNoLeader to resolve",
    async () => (await alerts()).every((a) => a.labels.alertname !== "PostgresNoLeader"),
    90_000,
    500,
  );
  const resolved = (Date.now() - since) / 1000;
  console.log(
    `PostgresNoLeader fired after ${fired.toFixed(1)} s, resolved after ${resolved.toFixed(1)} s (failover promise ${t.failover} s)`,
  );
  expect(fired).toBeLessThan(t.failover + 15);
}, 180_000);

test("WAL archiving that fails (the repository unwritable): the archiving alert fires", async () => {
  const { t } = rulesData();
  const { state } = cluster;
  const leader = await waitFor(
    "a leader",
    async () => {
      for (const n of state.nodes) if (nodeSql(state, n.name, "SELECT NOT pg_is_in_recovery()") === "t") return n.name;
      return undefined;
    },
    60_000,
    1000,
  );
  archivingLeader = leader;
  await run(["chmod", "-R", "a-w", archiveDir]);
  const since = Date.now();
  const writer = (async () => {
    while (Date.now() - since < (t.archiveFailWindow + 60) * 1000) {
      nodeSql(
        state,
        leader,
        "CREATE TABLE IF NOT EXISTS alert_wal (x int); INSERT INTO alert_wal VALUES (1); SELECT pg_switch_wal()",
      );
      if ((await firing("PostgresArchivingFailing", { node: leader })).length > 0) return;
      await sleep(3000);
    }
  })();
  const took = await waitFiring("PostgresArchivingFailing", { node: leader }, since, (t.archiveFailWindow + 60) * 1000);
  await writer;
  console.log(`PostgresArchivingFailing after ${took.toFixed(1)} s (window ${t.archiveFailWindow} s)`);
}, 240_000);

test("past archive-push-queue-max WAL is dropped instead of kept: the queue stays bounded, writes go on, PostgresWalDropped fires", async () => {
  const { state } = cluster;
  expect(archivingLeader).not.toBe("");
  const node = findNode(state, archivingLeader);
  // The rendered limit is a fifth of the stack's volume (GiBs); 64 MiB shows the same behaviour in seconds.
  const queueMb = 64;
  const sed = machineExec(node.machine, [
    "sed",
    "-i",
    `s/^archive-push-queue-max=.*/archive-push-queue-max=${queueMb}MiB/`,
    "/etc/pgbackrest.conf",
  ]);
  expect(sed.code).toBe(0);
  const since = Date.now();
  const asyncLog = `/var/log/pgbackrest/${state.clusterName}-archive-push-async.log`;
  const dropped = () =>
    Number(
      machineExec(node.machine, ["sh", "-c", `grep -c 'dropped WAL file' ${asyncLog} || true`]).stdout.trim() || 0,
    );
  const ready = () =>
    Number(
      nodeSql(state, archivingLeader, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'") ?? -1,
    );
  // The backlog the last test left under the rendered limit (GiBs): all of it waits.
  const backlog = ready();
  await waitFor(
    "pgBackRest to drop WAL past the queue limit",
    async () => {
      // A write and a segment switch: 16 MiB more WAL waiting for the (unwritable) archive.
      const ok = nodeSql(state, archivingLeader, "INSERT INTO alert_wal VALUES (2); SELECT pg_switch_wal()");
      expect(ok).toBeDefined();
      return dropped() > 0;
    },
    120_000,
    1000,
  );
  // PostgreSQL hands pgBackRest the dropped segments one by one (each is "archived" now), then
  // the queue stays within the limit however much is written while the store is down.
  const limit = queueMb / 16 + 2;
  await waitFor("the backlog to drain", async () => ready() <= limit, 90_000, 1000);
  let most = 0;
  for (let i = 0; i < 10; i++) {
    expect(nodeSql(state, archivingLeader, "INSERT INTO alert_wal VALUES (3); SELECT pg_switch_wal()")).toBeDefined();
    most = Math.max(most, ready());
    await sleep(500);
  }
  // Never more segments waiting than the limit holds, plus the one being judged and one switching.
  expect(most).toBeLessThanOrEqual(limit);
  const took = await waitFiring("PostgresWalDropped", { node: archivingLeader }, since, 90_000);
  console.log(
    `${backlog} segment(s) waiting before; ${dropped()} dropped; then at most ${most} waiting; PostgresWalDropped after ${took.toFixed(1)} s`,
  );
}, 240_000);
