/**
 * `npm run local -- scale --nodes N`: grows or shrinks a running local cluster the way the Pulumi
 * program grows or shrinks a Hetzner one: the same membership scripts (core/scale.ts), in the same
 * order, sent as the same remote command strings over SSH as root.
 *
 * What differs from Hetzner is only around the scripts: a new node is a new machine (namespace,
 * overlay root, volume, NoCloud seed with the user data the Pulumi program would send for a node
 * that joins a running cluster) instead of an hcloud Server, and a removed node's machine and
 * namespace go at the end instead of its server. The state file follows every step (a new node is
 * recorded before it boots), so `status` and `down` know every machine even when a step fails.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  buildTopology,
  ClusterSecrets,
  ConfigError,
  describeCluster,
  describeStep,
  FailedError,
  loadStackSettings,
  NodeSpec,
  planScale,
  RefusedError,
  remoteCommand,
  ScaleStep,
  ScriptContext,
  serverPaths,
  systemdControl,
  Topology,
} from "../core";
import {
  LOCAL_VOLUME_GB,
  localMemoryMb,
  Location,
  UnhealthyError,
  bootNode,
  createNodeMachine,
  loadCluster,
  localBackup,
  removeMachine,
  renderLocalNode,
  waitHealthy,
} from "./cluster";
import { assertHostLink } from "./health";
import { ClusterHealth } from "./judge";
import { consoleTail, isRunning, machinePath, nspawnExit, sleep } from "./machine";
import { addNode, removeNode } from "./network";
import { probeNode } from "./node-probe";
import { SshIdentity, ensureSshKey, sshIdentity, sshScript } from "./ssh";
import { LocalClusterState, LocalNode, findNode, writeState } from "./state";
import { ensureClusterTls, readClusterTls } from "./tls";

export interface ScaleOptions extends Location {
  /** The node count to reach: 1, 3, 5 or 7 (the stack's rules apply, such as requireHa). */
  nodes: number | string;
  onProgress?: (line: string) => void;
  /** How long the cluster may take to be healthy once membership has moved. */
  timeoutMs?: number;
  /**
   * Called before each step, with the state as it is then (a new node's machine is booted and
   * ready before its node-join). Tests look at a node there; a throw stops the scale.
   */
  beforeStep?: (step: ScaleStep, state: LocalClusterState) => void | Promise<void>;
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

/** A step that failed on a node; its last output lines say why. */
export class ScaleStepError extends FailedError {
  constructor(
    readonly step: string,
    readonly output: string[],
  ) {
    super(
      `${step} failed:\n  ${output.slice(-15).join("\n  ")}\n` +
        "The cluster is left as it is for inspection (logs: <root>/<node>/log/scale.log); `npm run local -- status` shows it.",
    );
  }
}

/** How long one script may run; each waits for its own conditions well within this. */
const STEP_TIMEOUT_MS = 20 * 60_000;
/** How long a new machine may take from power-on to its ready marker and SSH (its first boot). */
const FIRST_BOOT_TIMEOUT_MS = 10 * 60_000;

/** Another scale of the same cluster is running (its PID holds the lock). */
export class ScaleInProgressError extends RefusedError {
  constructor(pid: number) {
    super(`another scale or apply of this cluster is running (pid ${pid}); wait for it to finish`);
  }
}

/**
 * Grows or shrinks the cluster at `opts.root` to `opts.nodes` nodes, then waits until it is healthy.
 * Refuses a count the stack does not allow, a cluster that is not healthy, and a second scale of the
 * same cluster while one runs.
 */
export async function scale(opts: ScaleOptions): Promise<ScaleResult> {
  return withClusterLock(opts, () => scaleLocked(opts));
}

/** Runs `change` holding the cluster's lock (one scale or apply at a time). */
export async function withClusterLock<T>(loc: Location, change: () => Promise<T>): Promise<T> {
  const release = lock(loadCluster(loc).state.root);
  try {
    return await change();
  } finally {
    release();
  }
}

/**
 * One membership or configuration change at a time per cluster (scale, apply): a lock file holding
 * the PID (a dead holder's lock is taken over).
 */
function lock(root: string): () => void {
  const file = path.join(root, "scale.lock");
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return () => fs.rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw e;
      const holder = Number(fs.readFileSync(file, "utf8").trim());
      if (isRunning(holder)) throw new ScaleInProgressError(holder);
      fs.rmSync(file, { force: true });
    }
  }
}

/**
 * The membership scripts' context for this cluster: the server layout and systemd's `svc` (a
 * local node is a server), with the options `up` rendered the nodes with.
 */
export function scriptContext(
  state: LocalClusterState,
  secrets: ClusterSecrets,
  options: ScriptContext["options"],
): ScriptContext {
  return {
    options: {
      ...options,
      memoryMb: localMemoryMb(options.plan),
      volumeSizeGb: LOCAL_VOLUME_GB,
      backup: state.backup ?? localBackup(),
    },
    secrets,
    tls: readClusterTls(state.root),
    paths: () => serverPaths(),
    control: () => systemdControl(),
  };
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
    if (e instanceof UnhealthyError) throw UnhealthyError.refusing("scale", e.health);
    throw e;
  }
  // The stack's own rules (allowed counts, requireHa) with the settings the cluster was started with.
  // The cluster's settings as they are now (up and apply record them), with the new count.
  const settings = loadStackSettings(state.stack, {
    nodeCount: opts.nodes,
    failoverProfile: state.profile,
    synchronousMode: state.synchronousMode,
    ...(state.plan ? { plan: state.plan } : {}),
    subnetCidr: state.subnetCidr,
  });
  const { topology: to, options } = describeCluster(settings);
  const from = buildTopology({ stack: state.stack, nodeCount: state.nodes.length, subnetCidr: state.subnetCidr });
  const names = state.nodes.map((n) => n.name).join(",");
  if (names !== from.nodes.map((n) => n.name).join(",")) {
    throw new ConfigError(
      "nodes",
      names,
      `a running cluster's nodes are ${from.nodes.map((n) => n.name).join(", ")}; this one is not in a state scale can move from`,
    );
  }

  // New nodes get their certificates (signed by the cluster's CA) before anything renders them.
  ensureClusterTls(state.root, to);
  const ctx = scriptContext(state, secrets, options);
  const plan = planScale(from, to, ctx, { requireHa: settings.requireHa });
  progress(
    `Scaling ${state.clusterName} from ${from.nodeCount} to ${to.nodeCount} node(s): ${plan.steps.length} step(s)`,
  );

  const steps: ScaleResult["steps"] = [];
  for (const [i, step] of plan.steps.entries()) {
    const label = describeStep(step);
    const began = Date.now();
    progress(`[${i + 1}/${plan.steps.length}] ${label}`);
    if (opts.beforeStep) await opts.beforeStep(step, state);
    switch (step.kind) {
      case "provision":
        await provision(state, ctx, to, step.node, progress);
        break;
      case "run":
        await runScript(state, step, progress);
        break;
      case "decommission":
        await decommission(state, step.node, progress);
        break;
    }
    steps.push({ step: label, seconds: (Date.now() - began) / 1000 });
  }
  state.quorum = to.quorum;
  writeState(state);
  const health = await waitHealthy(state, secrets, {
    timeoutMs: opts.timeoutMs ?? 300_000,
    onProgress: progress,
    since: startedAt,
  });
  return {
    from: from.nodeCount,
    to: to.nodeCount,
    state,
    secrets,
    health,
    seconds: (Date.now() - startedAt) / 1000,
    steps,
  };
}

/** Where a node's membership scripts log on this machine (kept under left/ once the node is gone). */
export function scaleLogFile(state: LocalClusterState, node: Pick<NodeSpec, "name">): string {
  return path.join(state.root, node.name, "log", "scale.log");
}

function appendLog(state: LocalClusterState, node: Pick<NodeSpec, "name">, text: string): void {
  const file = scaleLogFile(state, node);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.appendFileSync(file, text.endsWith("\n") ? text : `${text}\n`, { mode: 0o600 });
}

/**
 * A new node, as Hetzner would create it: its namespace on the bridge, then a machine whose seed
 * holds the user data of a node joining a running cluster (its first boot starts only HAProxy and
 * the exporters and writes the ready marker; node-join starts the rest). Recorded in the state file
 * before it boots; ready once its marker exists and SSH answers.
 */
async function provision(
  state: LocalClusterState,
  ctx: ScriptContext,
  to: Topology,
  node: NodeSpec,
  progress: (line: string) => void,
): Promise<void> {
  const net = { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: to.subnetPrefix, namespaces: {} };
  addNode(net, { name: node.name, privateIp: node.privateIp });
  const files = renderLocalNode(to, node, ctx.options, ctx.secrets, ctx.tls, { etcdInitialClusterState: "existing" });
  const { publicKey } = ensureSshKey(state.root);
  const local = createNodeMachine(state, node, files["user-data.yaml"], { publicKey });
  // Recorded before it boots, so that `down` finds it whatever happens next.
  state.nodes.push(local);
  writeState(state);
  const began = Date.now();
  await bootNode(state, local);
  progress(`  ${node.name}: booted; waiting for its first boot (cloud-init) and SSH`);
  await waitFirstBoot(state, local);
  progress(`  ${node.name}: ready after ${((Date.now() - began) / 1000).toFixed(1)} s, SSH answers`);
}

/** Waits for a new machine's ready marker and for SSH; a failed first boot fails at once, saying why. */
async function waitFirstBoot(state: LocalClusterState, node: LocalNode): Promise<void> {
  const step = `${node.name}: provision`;
  const deadline = Date.now() + FIRST_BOOT_TIMEOUT_MS;
  const firstBootLog = () => {
    const file = machinePath(node.machine, serverPaths().firstBootLog);
    return file && fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n").filter(Boolean).slice(-10) : [];
  };
  for (;;) {
    const probe = await probeNode(node.machine);
    // Only systemd-nspawn's exit says the machine stopped: a probe that misses PID 1 for a moment
    // while nspawn still runs is asked again.
    if (!probe.running && !isRunning(node.machine.nspawnPid)) {
      throw new ScaleStepError(step, [
        `the machine stopped during its first boot (${nspawnExit(node.machine)}); console:`,
        ...consoleTail(node.machine),
      ]);
    }
    if (probe.cloudInit === "error")
      throw new ScaleStepError(step, ["cloud-init failed:", ...probe.cloudInitErrors, ...firstBootLog()]);
    if (probe.ready) break;
    if (Date.now() > deadline) {
      throw new ScaleStepError(step, [
        `no ready marker after ${FIRST_BOOT_TIMEOUT_MS / 1000} s (cloud-init ${probe.cloudInit})`,
        ...firstBootLog(),
      ]);
    }
    await sleep(1000);
  }
  const id = sshIdentity(state.root);
  for (;;) {
    const r = await sshScript(id, node.address, "true\n", { timeoutMs: 20_000 });
    if (r.code === 0) return;
    if (Date.now() > deadline)
      throw new ScaleStepError(step, [`SSH to root@${node.address} does not answer:`, r.stderr.trim()]);
    await sleep(1000);
  }
}

/**
 * Runs one membership script on its node as Pulumi's remote command does: the same command string
 * (core's `remoteCommand`), over SSH as root, its output streamed to the progress and the node's log.
 */
export async function runScript(
  state: LocalClusterState,
  step: Extract<ScaleStep, { kind: "run" }>,
  progress: (line: string) => void,
  identity: SshIdentity = sshIdentity(state.root),
): Promise<string[]> {
  const node = findNode(state, step.node.name);
  const label = describeStep(step);
  appendLog(state, node, `==== ${new Date().toISOString()} ${label} (ssh root@${node.address})`);
  const output: string[] = [];
  const result = await sshScript(identity, node.address, remoteCommand([{ name: step.script, text: step.text }]), {
    timeoutMs: STEP_TIMEOUT_MS,
    onLine: (line) => {
      appendLog(state, node, line);
      if (line.trim() === "") return;
      output.push(line);
      progress(`  ${line}`);
    },
  });
  if (result.code !== 0) {
    const why =
      result.code === null
        ? `ssh did not finish (${result.stderr.trim().split("\n").slice(-1)[0] || "timed out"})`
        : `exit ${result.code}`;
    appendLog(state, node, `==== ${label}: ${why}`);
    throw new ScaleStepError(label, [...output, why]);
  }
  return output;
}

/** After node-leave: the machine shuts down cleanly and goes, then its namespace; its scale log stays under left/. */
async function decommission(state: LocalClusterState, spec: NodeSpec, progress: (line: string) => void): Promise<void> {
  const node = findNode(state, spec.name);
  const how = await removeMachine(node, { clean: true });
  progress(
    `  ${node.name}: machine removed (${how === "clean" ? "clean shutdown" : how === "forced" ? "power cut after the shutdown timed out" : "was not running"})`,
  );
  removeNode(
    {
      id: state.networkId,
      hub: `${state.networkId}-hub`,
      subnetPrefix: 0,
      namespaces: { [node.name]: node.namespace },
    },
    { name: node.name, privateIp: node.address },
  );
  state.nodes = state.nodes.filter((n) => n.name !== node.name);
  writeState(state);
  const dir = path.join(state.root, node.name);
  const log = scaleLogFile(state, node);
  if (fs.existsSync(log)) {
    const kept = path.join(state.root, "left", `${node.name}-${new Date().toISOString().replace(/[:.]/g, "-")}.log`);
    fs.mkdirSync(path.dirname(kept), { recursive: true });
    fs.renameSync(log, kept);
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
