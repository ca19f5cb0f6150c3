/**
 * The "State Pillar Performance" dashboard file is what core/dashboard.ts builds, and is a
 * dashboard Grafana can import: the fields its JSON model needs, one Prometheus data source
 * variable used everywhere, unique panel ids, a 24-column grid without overlaps, and queries that
 * Prometheus' own grammar parses. Which metrics they name is checked against a running cluster in
 * tests/local/monitoring.test.ts.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DASHBOARD_TITLE, dashboardJson } from "../../core/dashboard";
import { grafanaToPromQL, metricsOf, parsePromQL } from "../support/promql";

const FILE = path.resolve(__dirname, "..", "..", "dashboards", "state-pillar-performance.json");
const dashboard = JSON.parse(fs.readFileSync(FILE, "utf8"));
const panels: any[] = dashboard.panels;
const graphs = panels.filter((p) => p.type !== "row");
const targets: { panel: string; expr: string; refId: string }[] = graphs.flatMap((p) =>
  p.targets.map((t: any) => ({ panel: p.title, ...t })),
);

test("the committed file is exactly what `npm run dashboard` writes", () => {
  expect(fs.readFileSync(FILE, "utf8")).toBe(dashboardJson());
});

test("is titled, versioned and identified as Grafana's dashboard model wants", () => {
  expect(dashboard.title).toBe(DASHBOARD_TITLE);
  expect(dashboard.title).toBe("State Pillar Performance");
  expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
  expect(Number.isInteger(dashboard.schemaVersion)).toBe(true);
  expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
  expect(dashboard.time).toEqual({ from: expect.any(String), to: "now" });
  expect(Array.isArray(dashboard.templating.list)).toBe(true);
  expect(dashboard.id ?? null).toBeNull(); // an id would tie the file to one Grafana instance
});

test("panel ids are unique positive integers", () => {
  const ids = panels.map((p) => p.id);
  for (const id of ids) expect(Number.isInteger(id) && id > 0).toBe(true);
  expect(new Set(ids).size).toBe(ids.length);
});

test("every panel sits on the 24-column grid, and none overlaps another", () => {
  for (const p of panels) {
    const { x, y, w, h } = p.gridPos;
    for (const v of [x, y, w, h]) expect(Number.isInteger(v)).toBe(true);
    expect(x).toBeGreaterThanOrEqual(0);
    expect(w).toBeGreaterThan(0);
    expect(h).toBeGreaterThan(0);
    expect(x + w).toBeLessThanOrEqual(24);
  }
  for (let i = 0; i < panels.length; i++) {
    for (let j = i + 1; j < panels.length; j++) {
      const a = panels[i].gridPos;
      const b = panels[j].gridPos;
      const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
      expect(overlap ? `${panels[i].title} overlaps ${panels[j].title}` : "").toBe("");
    }
  }
});

test("every panel and query uses the Prometheus data source variable", () => {
  const ds = dashboard.templating.list.find((v: any) => v.type === "datasource");
  expect(ds).toMatchObject({ name: "datasource", query: "prometheus" });
  for (const p of graphs) {
    expect(["timeseries", "stat"]).toContain(p.type);
    expect(p.datasource).toEqual({ type: "prometheus", uid: "${datasource}" });
    expect(p.targets.length).toBeGreaterThan(0);
    for (const t of p.targets) expect(t.datasource).toEqual(p.datasource);
    const refIds = p.targets.map((t: any) => t.refId);
    expect(new Set(refIds).size).toBe(refIds.length);
    expect(typeof p.fieldConfig.defaults.unit).toBe("string");
  }
});

test("every query parses with Prometheus' grammar, and uses only defined variables", () => {
  const defined = new Set([
    ...dashboard.templating.list.map((v: any) => v.name),
    "__rate_interval",
    "__interval",
    "__range",
  ]);
  for (const t of targets) {
    for (const [, name] of t.expr.matchAll(/\$\{?(\w+)\}?/g))
      expect([t.panel, name, defined.has(name)]).toEqual([t.panel, name, true]);
    const parsed = parsePromQL(grafanaToPromQL(t.expr, { cluster: "madbase-prod" }));
    expect([t.panel, t.expr, parsed.errors]).toEqual([t.panel, t.expr, []]);
    expect(parsed.selectors.length).toBeGreaterThan(0);
    // Every selector names its metric and keeps to the chosen cluster.
    for (const s of parsed.selectors) {
      expect(s.metric).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/);
      expect(s.matchers).toContainEqual({ label: "cluster", op: "=", value: "madbase-prod" });
    }
  }
});

test("the metric extraction reads PromQL, not text: functions, labels and strings are not metrics", () => {
  const q =
    'sum by (node) (rate(a_total{cluster="x", mode="idle"}[1m])) / on(node) group_left max(b) or vector(0) + count_over_time({__name__="c"}[5m])';
  expect(metricsOf(q).sort()).toEqual(["a_total", "b", "c"]);
  expect(parsePromQL("sum(rate(a[1m])").errors.length).toBeGreaterThan(0);
});

test("shows what the issue asks for", () => {
  const titles = graphs.map((p) => p.title).join("\n");
  for (const topic of [
    /PostgreSQL TPS/,
    /Connections vs max_connections/,
    /Replication lag per replica/,
    /Patroni leader changes/,
    /Redis ops\/s/,
    /Redis memory/,
    /Redis hit ratio/,
    /Sentinel master changes/,
    /HAProxy sessions/,
    /HAProxy backend/,
    /CPU/,
    /Memory used/,
    /Disk used/,
    /PgBouncer clients waiting/,
    /PgBouncer pool use/,
  ]) {
    expect(titles).toMatch(topic);
  }
  // Connections are drawn against the plan's max_connections (what Patroni sets from the plan).
  const conns = graphs.find((p) => p.title === "Connections vs max_connections");
  expect(conns.targets.map((t: any) => metricsOf(t.expr)).flat()).toEqual([
    "pg_stat_database_numbackends",
    "pg_settings_max_connections",
  ]);
  // Client waits and pool use, from the PgBouncer exporter's pool metrics.
  const waits = graphs.find((p) => p.title === "PgBouncer clients waiting");
  expect(waits.targets.map((t: any) => metricsOf(t.expr)).flat()).toEqual([
    "pgbouncer_pools_client_waiting_connections",
    "pgbouncer_pools_client_maxwait_seconds",
  ]);
});
