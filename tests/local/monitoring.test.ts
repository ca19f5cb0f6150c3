/**
 * Metrics on a running local cluster (the run's shared one: 3 nodes, prod, fast profile):
 *  - every exporter listens on its node's private address only (not 0.0.0.0, not loopback);
 *  - every endpoint of the rendered prometheus.yml answers, as Prometheus would scrape it, from
 *    inside another node's network namespace (`ip netns exec`: the booted nodes' namespaces); HAProxy's /metrics wants the stats login;
 *  - every metric the dashboard names is among the metrics those endpoints export (and the labels
 *    its selectors match on exist on them);
 *  - a real Prometheus, given the rendered prometheus.yml, scrapes every target and evaluates every
 *    dashboard query to a result;
 *  - `status --json` reports the exporters, connections against max_connections and Redis memory.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  ALERT_RULES_FILE,
  BACKUP_METRICS_FILE,
  ClusterSecrets,
  PORTS,
  USERS,
  buildTopology,
  describeCluster,
  getPlan,
  loadStackSettings,
  renderAlertRules,
  renderPrometheusConfig,
} from "../../core";
import { onNode } from "../../local/backup";
import { EXPORTERS, EXPORTER_PORTS } from "../../local/exporters";
import { Sample, parseMetrics } from "../../local/metrics";
import { LocalClusterState } from "../../local/state";
import { inNamespace } from "../../local/network";
import { certPaths } from "../../local/tls";
import { run, start, stop, waitFor } from "../support/proc";
import { grafanaToPromQL, parsePromQL } from "../support/promql";
import { cli, sharedCluster } from "./harness";
import { SHARED_CLUSTER } from "../support/run-dir";

const loc = SHARED_CLUSTER;
const cluster = sharedCluster({ breaks: false });
const DASHBOARD = JSON.parse(
  fs.readFileSync(path.resolve(__dirname, "..", "..", "dashboards", "state-pillar-performance.json"), "utf8"),
);
/** Labels Prometheus adds to every series from the rendered prometheus.yml (not the exporters). */
const ADDED_LABELS = new Set(["cluster", "node", "job", "instance"]);

let state: LocalClusterState;
let secrets: ClusterSecrets;
const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-obs-"));
const passwordFile = path.join(work, "haproxy-stats.password");

beforeAll(() => {
  ({ state, secrets } = cluster());
  fs.writeFileSync(passwordFile, `${secrets.haproxyStats}\n`, { mode: 0o644 });
}, 240_000);

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
}, 120_000);

/** An HTTP GET from inside a node's namespace (as a Prometheus on the private network would). */
async function get(
  ns: string,
  url: string,
  auth?: string,
  tls?: { ca_file?: string; cert_file?: string; key_file?: string },
): Promise<{ status: number; body: string }> {
  const out = path.join(work, `body-${Math.random().toString(36).slice(2)}`);
  const argv = [
    "curl",
    "-s",
    "-m",
    "5",
    "-o",
    out,
    "-w",
    "%{http_code}",
    ...(auth ? ["-u", auth] : []),
    ...(tls?.ca_file ? ["--cacert", tls.ca_file] : []),
    // The client pair of the job's tls_config, as Prometheus presents it.
    ...(tls?.cert_file && tls.key_file ? ["--cert", tls.cert_file, "--key", tls.key_file] : []),
    url,
  ];
  const r = await run(inNamespace(ns, argv), { timeoutMs: 10_000 });
  const body = fs.existsSync(out) ? fs.readFileSync(out, "utf8") : "";
  fs.rmSync(out, { force: true });
  return { status: Number(r.stdout), body };
}

/** The rendered scrape configuration for this cluster's topology. */
function scrapeConfig(scrapeIntervalSeconds = 15) {
  const topology = buildTopology({ stack: state.stack, nodeCount: state.nodes.length, subnetCidr: state.subnetCidr });
  const text = renderPrometheusConfig(topology, {
    haproxyPasswordFile: passwordFile,
    caFile: certPaths(state.root, "ca").cert,
    // Patroni answers only callers with a certificate of the CA: this machine's operator pair.
    clientCertFile: certPaths(state.root, "operator").cert,
    clientKeyFile: certPaths(state.root, "operator").key,
    scrapeIntervalSeconds,
  });
  return { text, doc: yaml.load(text) as { scrape_configs: any[] } };
}

test("every exporter listens on its node's private address, and only there", async () => {
  for (const node of state.nodes) {
    const r = await run(inNamespace(node.namespace, ["ss", "-ltnH"]), { timeoutMs: 10_000 });
    const listeners = r.stdout
      .split("\n")
      .map((l) => l.trim().split(/\s+/)[3])
      .filter(Boolean);
    for (const e of EXPORTERS) {
      const port = EXPORTER_PORTS[e];
      const on = listeners.filter((a) => a.endsWith(`:${port}`));
      expect({ node: node.name, exporter: e, listens: on }).toEqual({
        node: node.name,
        exporter: e,
        listens: [`${node.address}:${port}`],
      });
    }
    // Not even the node itself reaches them over loopback: they are bound to the private address.
    const loop = await run(
      inNamespace(node.namespace, ["curl", "-s", "-m", "2", `http://127.0.0.1:${PORTS.nodeExporter}/metrics`]),
      { timeoutMs: 10_000 },
    );
    expect(loop.code).toBe(7); // curl: could not connect
  }
}, 60_000);

/** Every scrape of every target of the rendered prometheus.yml, by job. */
let scrapes: Record<string, Sample[][]> = {};

test("every target of the rendered prometheus.yml answers as Prometheus scrapes it, from another node", async () => {
  const { doc } = scrapeConfig();
  const from = state.nodes[state.nodes.length - 1].namespace;
  scrapes = {};
  for (const job of doc.scrape_configs) {
    const name = job.job_name.replace(`${state.clusterName}-`, "");
    const params: [string, string][] = Object.entries((job.params ?? {}) as Record<string, string[]>).map(([k, v]) => [
      k,
      v[0],
    ]);
    const query = params.length > 0 ? `?${new URLSearchParams(params).toString()}` : "";
    const auth = job.basic_auth
      ? `${job.basic_auth.username}:${fs.readFileSync(job.basic_auth.password_file, "utf8").trim()}`
      : undefined;
    scrapes[name] = [];
    for (const sc of job.static_configs) {
      const url = `${job.scheme ?? "http"}://${sc.targets[0]}${job.metrics_path}${query}`;
      const r = await get(from, url, auth, job.tls_config);
      expect({ url, status: r.status }).toEqual({ url, status: 200 });
      const samples = parseMetrics(r.body);
      expect(samples.length).toBeGreaterThan(10);
      scrapes[name].push(samples);
    }
  }
  const value = (job: string, metric: string) => scrapes[job].map((s) => s.find((x) => x.name === metric)?.value);
  // Each exporter reached its daemon on every node: the monitor role logs in on the leader and the
  // replicas alike, the Redis password file works, and each Sentinel watches one master.
  expect(value("postgres", "pg_up")).toEqual([1, 1, 1]);
  expect(value("redis", "redis_up")).toEqual([1, 1, 1]);
  expect(value("sentinel", "redis_sentinel_masters")).toEqual([1, 1, 1]);
  expect(value("patroni", "patroni_primary").sort()).toEqual([0, 0, 1]);
  expect(value("pgbouncer", "pgbouncer_up")).toEqual([1, 1, 1]);
}, 90_000);

test("HAProxy's /metrics and stats page refuse a request without the stats login", async () => {
  const node = state.nodes[0];
  for (const p of ["/metrics", "/"]) {
    const r = await get(state.nodes[1].namespace, `http://${node.address}:${PORTS.haproxyStats}${p}`);
    expect({ path: p, status: r.status }).toEqual({ path: p, status: 401 });
  }
  const wrong = await get(
    state.nodes[1].namespace,
    `http://${node.address}:${PORTS.haproxyStats}/metrics`,
    `${USERS.haproxyStats}:not-the-password`,
  );
  expect(wrong.status).toBe(401);
});

test("every metric the dashboard's queries name is exported, with the labels they match on", () => {
  expect(Object.keys(scrapes).length).toBeGreaterThan(0);
  const labelsOf = new Map<string, Set<string>>();
  for (const samples of Object.values(scrapes).flat()) {
    for (const s of samples) {
      if (!labelsOf.has(s.name)) labelsOf.set(s.name, new Set());
      for (const l of Object.keys(s.labels)) labelsOf.get(s.name)!.add(l);
    }
  }
  const exprs: string[] = DASHBOARD.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));
  const variableQueries: string[] = DASHBOARD.templating.list
    .filter((v: any) => v.type === "query")
    .map((v: any) => v.definition);
  const named = new Set<string>();
  const missing: string[] = [];
  for (const expr of exprs) {
    for (const sel of parsePromQL(grafanaToPromQL(expr, { cluster: state.clusterName })).selectors) {
      named.add(sel.metric);
      if (!labelsOf.has(sel.metric)) {
        missing.push(sel.metric);
        continue;
      }
      for (const m of sel.matchers) {
        if (!ADDED_LABELS.has(m.label) && !labelsOf.get(sel.metric)!.has(m.label))
          missing.push(`${sel.metric}{${m.label}}`);
      }
    }
  }
  for (const q of variableQueries) {
    const [, metric] = /label_values\((\w+),/.exec(q) ?? [];
    named.add(metric);
    if (!labelsOf.has(metric)) missing.push(metric);
  }
  expect(named.size).toBeGreaterThan(20);
  expect([...new Set(missing)]).toEqual([]);
});

/** Each node's last lines from its pgBackRest jobs and its backup metrics file. */
async function backupJournals(): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const n of state.nodes) {
    const r = await onNode(
      state,
      n.name,
      `journalctl -q --no-pager -o short-precise -u 'madbase-pg-backup@*' | tail -n 20; cat ${BACKUP_METRICS_FILE}`,
      { timeoutMs: 30_000 },
    );
    out[n.name] = r.output.trim().split("\n");
  }
  return out;
}

test("a real Prometheus with the rendered prometheus.yml scrapes every target and answers every dashboard query", async () => {
  const ns = state.nodes[0].namespace;
  const dir = path.join(work, "prometheus");
  fs.mkdirSync(path.join(dir, "data"), { recursive: true });
  const config = path.join(dir, "prometheus.yml");
  fs.writeFileSync(config, scrapeConfig(1).text);
  // prometheus.yml loads the alert rules from beside it, as on a Prometheus server of the stack.
  const { topology, options } = describeCluster(
    loadStackSettings(state.stack, {
      failoverProfile: state.applied.failoverProfile,
      subnetCidr: state.subnetCidr,
      nodeCount: state.nodes.length,
    }),
  );
  fs.writeFileSync(
    path.join(dir, ALERT_RULES_FILE),
    renderAlertRules(topology, { ...options, backup: state.backup ?? options.backup }, { scrapeIntervalSeconds: 1 }),
  );
  const check = await run(["promtool", "check", "config", config], { timeoutMs: 30_000 });
  expect([check.code, check.stdout + check.stderr]).toEqual([0, expect.stringContaining("SUCCESS")]);
  const prom = start(
    inNamespace(ns, [
      "prometheus",
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      "--web.listen-address=127.0.0.1:9090",
      "--log.level=warn",
    ]),
  );
  try {
    const api = async (q: string) => {
      const r = await get(ns, `http://127.0.0.1:9090/api/v1/query?${new URLSearchParams({ query: q })}`);
      return r.status === 200
        ? (JSON.parse(r.body) as {
            status: string;
            data: { result: { metric: Record<string, string>; value: [number, string] }[] };
          })
        : undefined;
    };
    const jobs = scrapeConfig().doc.scrape_configs.length;
    // Every target up, for a few scrapes, so rate() has two samples in its window.
    await waitFor(
      "every target up",
      async () => {
        const r = await api("up");
        return (
          r && r.data.result.length === jobs * state.nodes.length && r.data.result.every((s) => s.value[1] === "1")
        );
      },
      60_000,
      1000,
    );
    await new Promise((r) => setTimeout(r, 5000));
    // Some series exist only once something happened (the first boot's full backup, then the next
    // pg-metrics run): a query may come up empty for a while, so each one is asked until it
    // answers, within one shared deadline.
    const deadline = Date.now() + 120_000;
    const empty: string[] = [];
    for (const p of DASHBOARD.panels.filter((x: any) => x.targets)) {
      for (const t of p.targets) {
        const q = grafanaToPromQL(t.expr, { cluster: state.clusterName, __rate_interval: "5s", __range: "1m" });
        let r = await api(q);
        while (r?.status === "success" && r.data.result.length === 0 && Date.now() < deadline) {
          await new Promise((w) => setTimeout(w, 2000));
          r = await api(q);
        }
        expect([p.title, r?.status]).toEqual([p.title, "success"]);
        if (r!.data.result.length === 0) empty.push(`${p.title}: ${q}`);
      }
    }
    // An empty query fails with what each node's backup jobs logged: the backup-age panel, say,
    // stays empty until a first backup exists (first boot's, or the first-backup timer's).
    const backupJobs = empty.length > 0 ? await backupJournals() : {};
    expect({ empty, backupJobs }).toEqual({ empty: [], backupJobs: {} });
  } finally {
    await stop(prom);
  }
}, 240_000);

test("status --json reports each node's exporters, the leader's connections against the plan and Redis memory", () => {
  const r = cli(["status", "--json"], { loc });
  const out = JSON.parse(r.stdout);
  expect([r.code, out.problems]).toEqual([0, []]);
  for (const n of out.nodes) {
    expect(n.exporters).toEqual({ node: "up", postgres: "up", redis: "up", pgbouncer: "up" });
    expect(n.timeline).toBeGreaterThanOrEqual(1);
    // The exporters' PIDs are their units' MainPIDs inside the node (systemd's view), as for every daemon.
    const exporters = ["node_exporter", "postgres_exporter", "redis_exporter", "pgbouncer_exporter"];
    for (const p of exporters) expect([n.name, p, n.pids[p]]).toEqual([n.name, p, expect.any(Number)]);
    for (const p of exporters) expect(n.pids[p]).toBeGreaterThan(1);
  }
  expect(out.postgresConnections.max).toBe(getPlan("cx31").maxConnections);
  expect(out.postgresConnections.used).toBeGreaterThan(0);
  expect(out.redisMemory.usedBytes).toBeGreaterThan(0);
  expect(out.redisMemory.maxBytes).toBeGreaterThan(out.redisMemory.usedBytes);
  // No secret of the monitoring role or of the exporters in what status prints.
  expect(r.stdout).not.toContain(secrets.monitoring);
  const text = cli(["status"], { loc });
  expect(text.stdout).toMatch(/^metrics: 3\/3 nodes export node\/postgres\/redis\/pgbouncer metrics/m);
  expect(text.stdout).toMatch(
    /^postgres: leader madbase-prod-\d \(timeline \d+\), sync standby madbase-prod-\d, connections \d+\/200/m,
  );
});

cluster.handBack();
