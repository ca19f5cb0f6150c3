/**
 * A one-node dev stack converges too: there is no other node to hand anything to, so a change
 * that needs a restart restarts its PostgreSQL in place (a short outage, which the output says),
 * and the node comes back with the new settings. And a node first booted before some of its units
 * existed (the first-backup timer, the certificate metrics) gets them from the next apply, enabled
 * and started, as its first boot would have.
 */
import * as path from "node:path";
import {
  PLANS,
  PROFILES,
  TLS_METRICS,
  TLS_METRICS_FILE,
  TLS_METRICS_SCRIPT,
  TLS_METRICS_UNITS,
  serverPaths,
} from "../../core";
import { apply } from "../../local/apply";
import { onNode } from "../../local/backup";
import { UpResult, down, localMemoryMb } from "../../local/cluster";
import { waitFor } from "../support/proc";
import { bootCluster, finish, nodeSql, patroniGet, testLocation } from "./harness";

const loc = testLocation(13);
let cluster: UpResult;

beforeAll(async () => {
  await down(loc);
  cluster = await bootCluster({ ...loc, stack: "dev", nodes: 1, timeoutMs: 180_000 });
}, 300_000);

afterAll(async () => {
  await finish(loc);
}, 120_000);

test("apply --plan cx31 --profile fast on one node: the machine is resized, then PostgreSQL restarts in place with the new memory, Patroni takes the new timings", async () => {
  const node = cluster.state.nodes[0];
  expect(nodeSql(cluster.state, node.name, "SHOW shared_buffers")).toBe(`${localMemoryMb(PLANS.cx21) / 4}MB`);

  const result = await apply({ ...loc, plan: "cx31", profile: "fast" });
  // The resize powered the machine off and on: the state now names its new process.
  cluster = { ...cluster, state: result.state };
  const { state } = cluster;
  expect(state.nodes[0].serverType).toBe(PLANS.cx31.serverType);
  const drain = result.steps.find((s) => s.step.kind === "resize")!.output;
  expect(drain.some((l) => /\[node-drain madbase-dev-1\] patroni: a single node; PostgreSQL is down/.test(l))).toBe(
    true,
  );

  const lines = result.changes.flatMap((c) => c.lines);
  expect(lines).toContain("patroni: a single node; PostgreSQL is down until this node is back");
  expect(lines).toContain("postgres: restarted with the new parameters");
  expect(nodeSql(state, node.name, "SHOW shared_buffers")).toBe(`${localMemoryMb(PLANS.cx31) / 4}MB`);
  expect(nodeSql(state, node.name, "SHOW max_connections")).toBe(String(PLANS.cx31.maxConnections));
  const config = (await patroniGet(state, node.address, "config")) as { loop_wait: number };
  expect(config.loop_wait).toBe(PROFILES.fast.patroni.loopWait);
  expect(result.health.healthy).toBe(true);
}, 300_000);

test("a node booted before the first-backup timer and the certificate metrics gets them from the next apply, enabled and running", async () => {
  const { state } = cluster;
  const node = state.nodes[0];
  const units = ["madbase-pg-backup-first.timer", ...TLS_METRICS_UNITS];
  const timers = units.filter((u) => u.endsWith(".timer"));
  const unitFiles = units.map((u) => `/etc/systemd/system/${u}`);
  const script = path.posix.join(serverPaths().scriptDir, TLS_METRICS_SCRIPT);
  // The node as an older release left it: none of these units, scripts or metrics.
  const older = await onNode(
    state,
    node.name,
    [
      `systemctl disable --now ${timers.join(" ")}`,
      `rm -f ${[...unitFiles, script, TLS_METRICS_FILE].join(" ")}`,
      "systemctl daemon-reload",
      `systemctl is-enabled ${timers.join(" ")}; echo "listed=$(systemctl list-timers --all --plain --no-legend ${timers.join(" ")} | wc -l)"`,
    ].join("\n"),
  );
  expect(older.output).toMatch(/listed=0/);

  const result = await apply({ ...loc });

  const lines = result.changes.flatMap((c) => c.lines);
  for (const file of [...unitFiles, script]) expect(lines).toContain(`file: ${file} replaced`);
  const now = await onNode(
    state,
    node.name,
    timers.map((t) => `echo "${t} $(systemctl is-enabled ${t}) $(systemctl is-active ${t})"`).join("\n"),
  );
  expect(now.output.trim().split("\n").sort()).toEqual(timers.map((t) => `${t} enabled active`).sort());
  // A timer whose boot delay has long passed fires at once: the certificate metrics are back.
  const metrics = await waitFor(
    "the certificate metrics file",
    async () => {
      const r = await onNode(state, node.name, `cat ${TLS_METRICS_FILE} 2>/dev/null`);
      return r.output.includes(TLS_METRICS.notAfter) && r.output;
    },
    30_000,
  );
  expect(metrics).toMatch(new RegExp(`^${TLS_METRICS.notAfter}\\{[^}]*\\} \\d+$`, "m"));
}, 300_000);
