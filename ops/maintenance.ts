/**
 * A rolling maintenance (core/maintenance.ts): node by node, replicas first and the leader's node
 * last, asked again before each node (the leadership can move during a roll). Each node runs
 * node-maintain over SSH (a script with no secret in it: the node's own values), and, when it asks
 * for one, is rebooted cleanly (`reboot`: a server's `systemctl reboot`, a local machine's clean
 * power-off and boot) and settled. The roll stops at the first node that fails or does not
 * settle, names it and leaves the rest as they are; run again, it resumes (a node already on its
 * newest versions has nothing to do).
 */
import {
  FailedError,
  MAINTENANCE_REBOOT_MARK,
  MaintenanceOptions,
  RefusedError,
  checkPostgresMajors,
  maintainScript,
  nextMaintenanceNode,
  nodeSettleScript,
  remoteCommand,
  serverPaths,
  UPDATES_SCRIPT,
} from "../core";
import { OpsStatus } from "../core/ops-status";
import { OpsSession, collectStatus, onNode, waitStatus } from "./session";

export interface MaintenanceNodeResult {
  name: string;
  seconds: number;
  rebooted: boolean;
  output: string[];
}

export interface MaintenanceResult {
  nodes: MaintenanceNodeResult[];
  seconds: number;
  status: OpsStatus;
}

/** How a node is rebooted once node-maintain moved its leaderships off (the target's way). */
export type Rebooter = (node: string) => Promise<void>;

/** How long one node's maintenance may take (an upgrade, restarts, settling). */
const NODE_TIMEOUT_MS = 30 * 60_000;

/** Runs a node script as a remote command (its start and end logged on the node), streaming nothing. */
async function runNodeScript(session: OpsSession, node: string, name: string, text: string) {
  return onNode(session, node, remoteCommand([{ name, text }]), { timeoutMs: NODE_TIMEOUT_MS });
}

/** Each node's installed PostgreSQL server version and its candidate, as the node's apt sees them. */
async function postgresVersions(session: OpsSession) {
  const updates = `${serverPaths().scriptDir}/${UPDATES_SCRIPT}`;
  return Promise.all(
    session.target.nodes.map(async (n) => {
      const r = await onNode(session, n.name, `${updates} versions && ${updates} pending`, { timeoutMs: 120_000 });
      if (r.code !== 0)
        throw new RefusedError(
          `${n.name}: ${updates} did not answer (exit ${r.code}): ${r.output.trim().split("\n").slice(-2).join(" / ")}. ` +
            "A node booted before package updates were managed gets it from config-refresh (pulumi up, or npm run local -- apply). Nothing was touched",
        );
      const installed = /^version postgresql-\d+ (\S+)$/m.exec(r.output)?.[1];
      const candidate = /^postgresql-\d+ \S+ (\S+) /m.exec(r.output)?.[1];
      if (!installed)
        throw new RefusedError(`${n.name}: no PostgreSQL server package is installed. Nothing was touched`);
      return { name: n.name, installed, ...(candidate ? { candidate } : {}) };
    }),
  );
}

export async function maintenance(
  session: OpsSession,
  options: MaintenanceOptions,
  opts: { reboot: Rebooter; announce?: () => void; settleTimeoutMs?: number },
): Promise<MaintenanceResult> {
  const started = Date.now();
  const { target } = session;
  const before = await collectStatus(session);
  if (!before.healthy)
    throw new RefusedError(
      `${target.clusterName} is not healthy, and a roll takes one node down at a time only from a whole cluster; nothing was touched:\n  ${before.problems.join("\n  ")}`,
    );
  const versions = await postgresVersions(session);
  checkPostgresMajors(versions);
  for (const v of versions)
    session.log(`${v.name}: PostgreSQL ${v.installed}${v.candidate ? ` (newer: ${v.candidate})` : ""}`);
  opts.announce?.();

  const remaining = target.nodes.map((n) => n.name);
  const done: MaintenanceNodeResult[] = [];
  while (remaining.length > 0) {
    const now = await collectStatus(session);
    const name = nextMaintenanceNode(remaining, now.leader)!;
    const began = Date.now();
    session.log(
      `[${done.length + 1}/${target.nodes.length}] ${name}${name === now.leader ? " (leads: hands over first)" : ""}`,
    );
    const stop = (what: string, output: string) =>
      new FailedError(
        `the maintenance stopped at ${name}: ${what}\n  ${output.trim().split("\n").slice(-12).join("\n  ")}\n` +
          `done: ${done.map((d) => d.name).join(", ") || "none"}; not touched: ${remaining.filter((n) => n !== name).join(", ") || "none"}. ` +
          "Fix the node, then run the same command again: it resumes (done nodes have nothing left to do).",
      );
    const r = await runNodeScript(
      session,
      name,
      "node-maintain",
      maintainScript({ ...options, prefer: done.map((d) => d.name) }),
    );
    const output = r.output.split("\n").filter((l) => l.trim() !== "");
    for (const line of output) session.log(`    ${line}`);
    if (r.code !== 0) throw stop(`node-maintain failed (exit ${r.code})`, r.output);
    const rebooted = output.some((l) => l.startsWith(MAINTENANCE_REBOOT_MARK));
    if (rebooted) {
      session.log(`  ${name}: rebooting cleanly (its leaderships moved off)`);
      try {
        await opts.reboot(name);
      } catch (e) {
        throw stop("the reboot failed", (e as Error).message);
      }
      const s = await runNodeScript(session, name, "node-settle", nodeSettleScript());
      for (const line of s.output.split("\n").filter((l) => l.trim() !== "")) session.log(`    ${line}`);
      if (s.code !== 0) throw stop(`it did not settle after its reboot (exit ${s.code})`, s.output);
    }
    try {
      await waitStatus(
        session,
        `${target.clusterName} to be healthy after ${name}`,
        (s) => s.healthy,
        opts.settleTimeoutMs ?? 300_000,
      );
    } catch (e) {
      throw stop("the cluster is not healthy after it", (e as Error).message);
    }
    done.push({ name, seconds: (Date.now() - began) / 1000, rebooted, output });
    remaining.splice(remaining.indexOf(name), 1);
    session.log(`  ${name}: done in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  }
  const status = await collectStatus(session);
  return { nodes: done, seconds: (Date.now() - started) / 1000, status };
}

/** A Hetzner server's reboot: `systemctl reboot` (systemd stops every unit in order), then SSH on a new boot. */
export function serverRebooter(session: OpsSession, timeoutMs = 600_000): Rebooter {
  return async (node) => {
    const bootId = async () => {
      const r = await onNode(session, node, "cat /proc/sys/kernel/random/boot_id", { timeoutMs: 20_000 });
      return r.code === 0 ? r.output.trim() : undefined;
    };
    const was = await bootId();
    if (!was) throw new FailedError(`${node}: SSH does not answer before the reboot`);
    const r = await onNode(
      session,
      node,
      "systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot",
      {
        timeoutMs: 20_000,
      },
    );
    if (r.code !== 0) throw new FailedError(`${node}: the reboot could not be scheduled: ${r.output.trim()}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await new Promise((res) => setTimeout(res, 2000));
      const now = await bootId();
      if (now && now !== was) return;
      if (Date.now() > deadline)
        throw new FailedError(`${node}: SSH does not answer on a new boot ${timeoutMs / 1000} s after the reboot`);
    }
  };
}
