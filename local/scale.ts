/**
 * `npm run local -- scale --nodes N`: grows or shrinks a running local cluster with the membership
 * scripts a Hetzner node runs (core/scale.ts), in the same order, each inside its node's namespace.
 *
 * What differs from Hetzner is only around the scripts: a new node is a new namespace with its
 * rendered files (instead of a server and cloud-init), a removed node's namespace and directory
 * go at the end (instead of its server), and `svc` starts daemons the way the runner does (as their
 * own user, detached, PIDs recorded) instead of through systemd. The state file follows every step,
 * so `status` and `down` know the new nodes even when a step fails half-way.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  ClusterSecrets,
  ConfigError,
  NodeSpec,
  SCALE_SERVICES,
  ScaleStep,
  ScriptContext,
  Topology,
  buildTopology,
  describeCluster,
  describeStep,
  planScale,
  renderNode,
} from "../core";
import { loadStackSettings } from "../cli/render";
import { LOCAL_MEMORY_MB, Location, UnhealthyError, daemonSpec, loadCluster, localBackup, prepareNode, startService, waitHealthy } from "./cluster";
import { installBackupFiles } from "./backup";
import { ClusterHealth, assertHostLink } from "./health";
import { localPathsOf, logFile, runtimeFiles } from "./layout";
import { addNode, nodeNamespace, removeNode } from "./network";
import { LocalClusterState, LocalNode, SERVICES, findNode, writeState } from "./state";
import { daemonEnv, isAlive, killNow, namespacePids, stopGracefully } from "./supervisor";

export interface ScaleOptions extends Location {
  /** The node count to reach: 1, 3, 5 or 7 (the stack's rules apply, such as requireHa). */
  nodes: number | string;
  onProgress?: (line: string) => void;
  /** How long the cluster may take to be healthy once membership has moved. */
  timeoutMs?: number;
}

export interface ScaleResult {
  from: number;
  to: number;
  state: LocalClusterState;
  secrets: ClusterSecrets;
  health: ClusterHealth;
  seconds: number;
  /** Each step and how long it took. */
  steps: { step: string; seconds: number }[];
}

/** A script that failed on a node; its last output lines say why. */
export class ScaleStepError extends Error {
  constructor(
    readonly step: string,
    readonly output: string[],
  ) {
    super(`${step} failed:\n  ${output.slice(-15).join("\n  ")}`);
    this.name = "ScaleStepError";
  }
}

/** How long one script may run; each waits for its own conditions well within this. */
const STEP_TIMEOUT_MS = 20 * 60_000;

/** Another scale of the same cluster is running (its PID holds the lock). */
export class ScaleInProgressError extends Error {
  constructor(pid: number) {
    super(`another scale of this cluster is running (pid ${pid}); wait for it to finish`);
    this.name = "ScaleInProgressError";
  }
}

/** The cluster is not healthy enough to change its membership. */
export class NotHealthyError extends Error {
  constructor(problems: string[]) {
    super(`the cluster is not healthy; scale a healthy cluster (npm run local -- status):\n  ${problems.join("\n  ")}`);
    this.name = "NotHealthyError";
  }
}

/**
 * Grows or shrinks the cluster at `opts.root` to `opts.nodes` nodes, then waits until it is healthy.
 * Refuses a count the stack does not allow, a cluster that is not healthy, and a second scale of the
 * same cluster while one runs.
 */
export async function scale(opts: ScaleOptions): Promise<ScaleResult> {
  const { state } = loadCluster(opts);
  const release = lock(state.root);
  try {
    return await scaleLocked(opts);
  } finally {
    release();
  }
}

/** One scale at a time per cluster: a lock file holding the PID (a dead holder's lock is taken over). */
function lock(root: string): () => void {
  const file = path.join(root, "scale.lock");
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return () => fs.rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw e;
      const holder = Number(fs.readFileSync(file, "utf8").trim());
      if (isAlive(holder)) throw new ScaleInProgressError(holder);
      fs.rmSync(file, { force: true });
    }
  }
}

async function scaleLocked(opts: ScaleOptions): Promise<ScaleResult> {
  const startedAt = Date.now();
  const progress = opts.onProgress ?? (() => undefined);
  const { state, secrets } = loadCluster(opts);
  assertHostLink(state);
  // Membership moves only from a healthy cluster (etcd quorum, a leader, replicas streaming...).
  try {
    await waitHealthy(state, secrets, { timeoutMs: 60_000 });
  } catch (e) {
    if (e instanceof UnhealthyError) throw new NotHealthyError(e.health.problems);
    throw e;
  }
  // The stack's own rules (allowed counts, requireHa) with the settings the cluster was started with.
  const settings = loadStackSettings(state.stack, { nodeCount: opts.nodes, failoverProfile: state.profile, subnetCidr: state.subnetCidr });
  const { topology: to, options } = describeCluster(settings);
  const from = buildTopology({ stack: state.stack, nodeCount: state.nodes.length, subnetCidr: state.subnetCidr });
  const names = state.nodes.map((n) => n.name).join(",");
  if (names !== from.nodes.map((n) => n.name).join(",")) {
    throw new ConfigError("nodes", names, `a running cluster's nodes are ${from.nodes.map((n) => n.name).join(", ")}; this one is not in a state scale can move from`);
  }

  const ctx: ScriptContext = {
    // The nodes' files as `up` rendered them: the same memory and backup repository.
    options: { ...options, memoryMb: LOCAL_MEMORY_MB, backup: state.backup ?? localBackup(state.root) },
    secrets,
    paths: (node) => localPathsOf(state, node),
    runtimeFiles: (node) => runtimeFiles(state, node),
    control: (node) => localControl(state, node),
  };
  const plan = planScale(from, to, ctx, { requireHa: settings.requireHa });
  progress(`Scaling ${state.clusterName} from ${from.nodeCount} to ${to.nodeCount} node(s): ${plan.steps.length} step(s)`);

  const steps: ScaleResult["steps"] = [];
  for (const [i, step] of plan.steps.entries()) {
    const label = describeStep(step);
    const began = Date.now();
    progress(`[${i + 1}/${plan.steps.length}] ${label}`);
    switch (step.kind) {
      case "provision":
        provision(state, ctx, to, step.node);
        break;
      case "run":
        await runScript(state, step, i, progress);
        if (step.script === "node-join") startMissing(state, findNode(state, step.node.name));
        break;
      case "decommission":
        await decommission(state, step.node);
        break;
    }
    steps.push({ step: label, seconds: (Date.now() - began) / 1000 });
  }
  state.quorum = to.quorum;
  writeState(state);
  const health = await waitHealthy(state, secrets, { timeoutMs: opts.timeoutMs ?? 180_000, onProgress: progress, since: startedAt });
  return { from: from.nodeCount, to: to.nodeCount, state, secrets, health, seconds: (Date.now() - startedAt) / 1000, steps };
}

/** A new node: its namespace on the bridge, its directories, its files as the grown cluster renders them, and its backup script. */
function provision(state: LocalClusterState, ctx: ScriptContext, to: Topology, node: NodeSpec): void {
  const net = { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: to.subnetPrefix, namespaces: {} };
  const local: LocalNode = { name: node.name, address: node.privateIp, namespace: nodeNamespace(net, { name: node.name, privateIp: node.privateIp }), pids: {} };
  // Recorded first, so that `down` removes the namespace even if what follows fails.
  state.nodes.push(local);
  writeState(state);
  addNode(net, { name: node.name, privateIp: node.privateIp });
  prepareNode(state, local, renderNode({ topology: to, node, options: ctx.options, secrets: ctx.secrets, paths: ctx.paths(node) }));
  installBackupFiles({ topology: to, node, options: ctx.options, secrets: ctx.secrets, paths: ctx.paths(node) });
}

/** Runs one script inside the node's namespace, streaming its output, and records the PIDs it left. */
async function runScript(state: LocalClusterState, step: Extract<ScaleStep, { kind: "run" }>, index: number, progress: (line: string) => void): Promise<void> {
  const node = findNode(state, step.node.name);
  const base = path.join(state.root, node.name);
  const dir = path.join(base, "scale");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // The scripts carry secrets: readable by root only, like the rendered files.
  const file = path.join(dir, `${String(index + 1).padStart(2, "0")}-${step.script}.sh`);
  fs.writeFileSync(file, step.text, { mode: 0o700 });
  writePidFiles(state, node);
  const log = fs.openSync(logFile(state, node, "scale"), "a");
  const output: string[] = [];
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn("ip", ["netns", "exec", node.namespace, "bash", file], { env: daemonEnv(), stdio: ["ignore", "pipe", "pipe"] });
      const timer = setTimeout(() => child.kill("SIGTERM"), STEP_TIMEOUT_MS);
      const onData = (chunk: Buffer) => {
        fs.writeSync(log, chunk);
        for (const line of chunk.toString().split("\n")) {
          if (line.trim() === "") continue;
          output.push(line);
          progress(`  ${line}`);
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.on("error", reject);
      child.on("close", (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    if (code !== 0) throw new ScaleStepError(describeStep(step), output);
  } finally {
    fs.closeSync(log);
    readPidFiles(state, node);
    writeState(state);
  }
}

/** Daemons the scripts do not manage (the exporters): started once the node has joined. */
function startMissing(state: LocalClusterState, node: LocalNode): void {
  for (const service of SERVICES) if (!isAlive(node.pids[service])) startService(state, node, service);
}

/** After node-leave: whatever still runs in the namespace stops, then the namespace and the node's data go. */
async function decommission(state: LocalClusterState, spec: NodeSpec): Promise<void> {
  const node = findNode(state, spec.name);
  const running = Object.values(node.pids).filter(isAlive);
  if (running.length > 0) await stopGracefully(running, 10_000);
  const left = namespacePids(node.namespace);
  if (left.length > 0) await killNow(left);
  removeNode({ id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: 0, namespaces: { [node.name]: node.namespace } }, { name: node.name, privateIp: node.address });
  state.nodes = state.nodes.filter((n) => n.name !== node.name);
  writeState(state);
  // Its data goes; its logs stay under left/ for a look (`down` removes them with the rest).
  const kept = path.join(state.root, "left", `${node.name}-${new Date().toISOString().replace(/[:.]/g, "-")}`);
  fs.mkdirSync(path.dirname(kept), { recursive: true });
  fs.renameSync(path.dirname(logFile(state, node, "scale")), kept);
  fs.rmSync(path.join(state.root, node.name), { recursive: true, force: true });
}

// ------------------------------------------------------------------------------------------------
// `svc` for the local runner: the daemons of SCALE_SERVICES, started as `up` starts them.

function pidDir(state: LocalClusterState, node: Pick<NodeSpec, "name">): string {
  return path.join(state.root, node.name, "run", "svc");
}

function writePidFiles(state: LocalClusterState, node: LocalNode): void {
  const dir = pidDir(state, node);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const service of SCALE_SERVICES) {
    const file = path.join(dir, `${service}.pid`);
    const pid = node.pids[service];
    if (isAlive(pid)) fs.writeFileSync(file, `${pid}\n`);
    else fs.rmSync(file, { force: true });
  }
}

function readPidFiles(state: LocalClusterState, node: LocalNode): void {
  for (const service of SCALE_SERVICES) {
    const file = path.join(pidDir(state, node), `${service}.pid`);
    const pid = fs.existsSync(file) ? Number(fs.readFileSync(file, "utf8").trim()) : NaN;
    if (isAlive(pid)) node.pids[service] = pid;
    else delete node.pids[service];
  }
}

/** A word for the shell, single-quoted. */
function sh(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

const GRACE_SECONDS: Record<(typeof SCALE_SERVICES)[number], number> = { etcd: 10, patroni: 30, redis: 10, sentinel: 10, haproxy: 10 };
/** haproxy -W reloads on SIGUSR2 (new workers, old ones finish their sessions); Patroni re-reads its file on SIGHUP. */
const RELOAD_SIGNAL: Partial<Record<(typeof SCALE_SERVICES)[number], string>> = { haproxy: "USR2", patroni: "HUP" };

/**
 * The shell `svc` of a local node: each daemon as `up` starts it (daemonSpec: program, user, working
 * directory, environment, log), detached with setsid so it outlives the script, its PID in a file
 * the runner copies into state.json. The script already runs inside the node's namespace.
 */
export function localControl(state: LocalClusterState, node: NodeSpec): string {
  const local: LocalNode = { name: node.name, address: node.privateIp, namespace: "", pids: {} };
  const p = localPathsOf(state, node);
  const starts = SCALE_SERVICES.map((service) => {
    // etcd's environment is its file as it is when etcd starts (node-join sets the initial cluster
    // in it just before); the others' come from the runner's spec.
    const spec =
      service === "etcd"
        ? { argv: [state.programs.etcd], user: "etcd", cwd: p.etcdDataDir, env: daemonEnv(), log: logFile(state, node, "etcd") }
        : daemonSpec(state, local, service);
    const env = Object.entries(spec.env).map(([k, v]) => sh(`${k}=${v}`));
    const fromFile = service === "etcd" ? ` $(grep -E '^[A-Z_][A-Z0-9_]*=' ${sh(p.config["etcd.conf"])})` : "";
    const user = spec.user ? `${sh(state.programs.setpriv)} --reuid=${spec.user} --regid=${spec.user} --init-groups -- ` : "";
    return [
      `svc_start_${service}() {`,
      `  (cd ${sh(spec.cwd)} && exec setsid env -i ${env.join(" ")}${fromFile} ${user}${spec.argv.map(sh).join(" ")}) >>${sh(spec.log)} 2>&1 </dev/null &`,
      `  echo "$!" >"$SVC_PIDS/${service}.pid"`,
      `}`,
    ].join("\n");
  });
  return [
    "# Local runner: each daemon runs in this node's namespace as its own user, detached (setsid),",
    "# output appended to its log under the node's log/ directory. Its PID is in $SVC_PIDS/<service>.pid,",
    "# which the runner writes from state.json before the script and copies back after it.",
    `readonly SVC_PIDS=${sh(pidDir(state, node))}`,
    "",
    "svc_pid() {",
    '  local pid stat',
    '  pid=$(cat "$SVC_PIDS/$1.pid" 2>/dev/null) && [ -n "$pid" ] || return 1',
    '  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1',
    "  # A zombie (state Z after the command name) has exited.",
    '  stat=${stat##*) }',
    '  [ "${stat:0:1}" != Z ] && echo "$pid"',
    "}",
    "",
    ...starts,
    "",
    "svc() {",
    '  local action=$1 service=$2 pid grace signal',
    '  case "$service" in',
    ...SCALE_SERVICES.map((s) => `    ${s}) grace=${GRACE_SECONDS[s]} signal=${RELOAD_SIGNAL[s] ?? ""} ;;`),
    '    *) die "svc: unknown service $service" ;;',
    "  esac",
    '  pid=$(svc_pid "$service") || pid=""',
    '  case "$action" in',
    '    start) [ -n "$pid" ] || "svc_start_$service" ;;',
    "    stop)",
    '      if [ -n "$pid" ]; then',
    '        kill -TERM "$pid" 2>/dev/null || true',
    "        local tenths=$((grace * 10))",
    '        while ((tenths-- > 0)) && svc_pid "$service" >/dev/null; do sleep 0.1; done',
    '        if svc_pid "$service" >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi',
    "      fi",
    '      rm -f "$SVC_PIDS/$service.pid"',
    "      ;;",
    '    restart) svc stop "$service" && svc start "$service" ;;',
    '    reload) [ -n "$pid" ] && [ -n "$signal" ] || die "svc: cannot reload $service"',
    '      kill -"$signal" "$pid" ;;',
    '    *) die "svc: unknown action $action" ;;',
    "  esac",
    "}",
    "",
    "# A local node is ready as soon as the runner has written its files.",
    "node_ready() { :; }",
  ].join("\n");
}
