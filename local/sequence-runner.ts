/**
 * Runs core's sequence of steps (core/sequence.ts) on a local cluster, the way the Pulumi engine
 * runs the resources StatePillar declares from it: one step at a time, in its order, the scripts
 * sent over SSH as root as the same remote command (`remoteCommand`). `scale` and `apply` are this
 * with another node count or other settings; what they refuse is what `changeSequence` refuses.
 *
 * Around the scripts the runner does only what Hetzner does: a provision is a new machine (its
 * namespace on the bridge, an overlay root, a volume, a NoCloud seed with the user data of a node
 * joining a running cluster); a resize is a clean power-off, the machine's new type, and a boot
 * (a local machine's type is a label: its memory is the host's, and what a plan sizes are
 * PostgreSQL's and Redis's settings, which the refreshes bring); a decommission is the machine
 * and its namespace going. The state file follows every step (a new node is recorded before it
 * boots, a resized one before it boots again), so `status` and `down` know every machine even
 * when a step fails; the applied settings are recorded once every step has run.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  AppliedSettings,
  ClusterSecrets,
  FailedError,
  MAINTENANCE_REBOOT_MARK,
  NodeScript,
  RefusedError,
  ScriptContext,
  Step,
  Topology,
  appliedSettings,
  buildTopology,
  changeSequence,
  describeCluster,
  describeStep,
  loadStackSettings,
  remoteCommand,
  serverPaths,
  stepScripts,
} from "../core";
import {
  LOCAL_VOLUME_GB,
  Location,
  UnhealthyError,
  bootNode,
  createNodeMachine,
  loadCluster,
  localBackup,
  localMemoryMb,
  removeMachine,
  renderLocalNode,
  waitHealthy,
} from "./cluster";
import { assertHostLink } from "./health";
import { ClusterHealth } from "./judge";
import { consoleTail, isRunning, machinePath, nspawnExit, shutdown, sleep } from "./machine";
import { addNode, removeNode } from "./network";
import { probeNode } from "./node-probe";
import { SshIdentity, ensureSshKey, sshIdentity, sshScript } from "./ssh";
import { LocalClusterState, LocalNode, findNode, writeState } from "./state";
import { ensureClusterTls, readClusterTls } from "./tls";

/** A step that failed on a node; its last output lines say why. */
export class StepError extends FailedError {
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

/** Another scale or apply of the same cluster is running (its PID holds the lock). */
export class ScaleInProgressError extends RefusedError {
  constructor(pid: number) {
    super(`another scale or apply of this cluster is running (pid ${pid}); wait for it to finish`);
  }
}

/** How long one script may run; each waits for its own conditions well within this. */
const STEP_TIMEOUT_MS = 20 * 60_000;
/** How long a machine may take from power-on to its ready marker and SSH (a first boot installs nothing here, but waits for cloud-init). */
const BOOT_TIMEOUT_MS = 10 * 60_000;
/** How long a drained node may take to power off cleanly (Hetzner's ACPI shutdown waits as long; resize-server.sh). */
const SHUTDOWN_GRACE_MS = 300_000;

export interface ChangeOptions extends Location {
  /**
   * The wanted settings, as overrides of what the cluster runs (its applied record), or of the
   * stack file's settings with `fromStackFile`: `pulumi config set` for a local cluster.
   */
  set?: Record<string, unknown>;
  /** Start from the stack file's settings (the cluster's stack) instead of the applied record. */
  fromStackFile?: boolean;
  /** Keep the running node count whatever the stack file says (apply: a count change is `scale`). */
  keepNodeCount?: boolean;
  /** Extra context for the scripts (root's authorized keys). */
  authorizedKeys?: (state: LocalClusterState) => string[] | undefined;
  /** The key the runner logs in with for this change and after it (a rotated key). */
  identity?: SshIdentity;
  /** What runs before the first step, once nothing was refused (a grown volume). */
  beforeSteps?: (state: LocalClusterState) => void | Promise<void>;
  /**
   * Called before each step, with the state as it is then (a new node's machine is booted and
   * ready before its join). Tests look at a node there; a throw stops the change.
   */
  beforeStep?: (step: Step, state: LocalClusterState) => void | Promise<void>;
  onProgress?: (line: string) => void;
  /** How long the cluster may take to be healthy once every step has run. */
  timeoutMs?: number;
  /** What the change is called in messages ("scale", "apply"). */
  verb: string;
}

export interface ChangeResult {
  from: AppliedSettings;
  to: AppliedSettings;
  state: LocalClusterState;
  secrets: ClusterSecrets;
  health: ClusterHealth;
  seconds: number;
  /** Each step, how long it took and its output lines. */
  steps: { step: Step; label: string; seconds: number; output: string[] }[];
}

/** The settings a cluster runs with (its applied record) as stack-config overrides. */
export function recordedSettings(applied: AppliedSettings): Record<string, unknown> {
  return {
    nodeCount: applied.nodeCount,
    plan: applied.plan,
    ...(applied.serverTypeOverride ? { serverType: applied.serverType } : {}),
    ...(applied.failoverProfile !== undefined ? { failoverProfile: applied.failoverProfile } : {}),
    ...(applied.synchronousMode !== undefined ? { synchronousMode: applied.synchronousMode } : {}),
    subnetCidr: applied.subnetCidr,
  };
}

/**
 * Takes the local cluster at `opts.root` to the wanted settings by core's sequence, then waits
 * until it is healthy. Refuses, before any step: what checkStackChange refuses, a cluster that is
 * not healthy, and a second change of the same cluster while one runs.
 */
export async function changeCluster(opts: ChangeOptions): Promise<ChangeResult> {
  return withClusterLock(opts, () => changeLocked(opts));
}

async function changeLocked(opts: ChangeOptions): Promise<ChangeResult> {
  const startedAt = Date.now();
  const progress = opts.onProgress ?? (() => undefined);
  const { state, secrets } = loadCluster(opts);
  assertHostLink(state);
  const settings = loadStackSettings(state.stack, {
    ...(opts.fromStackFile ? { subnetCidr: state.subnetCidr } : recordedSettings(state.applied)),
    ...opts.set,
    ...(opts.keepNodeCount ? { nodeCount: state.applied.nodeCount } : {}),
  });
  const { topology: to, options } = describeCluster(settings);
  const wanted = appliedSettings(settings, { sshPrivateKeySet: true });
  const running = state.applied;
  const steps = changeSequence({ stack: state.stack, running, wanted, refresh: true });
  const from = buildTopology({ stack: state.stack, nodeCount: running.nodeCount, subnetCidr: running.subnetCidr });
  const names = state.nodes.map((n) => n.name).join(",");
  if (names !== from.nodes.map((n) => n.name).join(",")) {
    throw new RefusedError(
      `a running cluster of ${running.nodeCount} node(s) has nodes ${from.nodes.map((n) => n.name).join(", ")}; this one has ${names || "none"}: it is not in a state ${opts.verb} can move from (\`npm run local -- status\`)`,
    );
  }
  // A change starts only from a healthy cluster (etcd quorum, a leader, replicas streaming...).
  try {
    await waitHealthy(state, secrets, { timeoutMs: 60_000 });
  } catch (e) {
    if (e instanceof UnhealthyError) throw UnhealthyError.refusing(opts.verb, e.health);
    throw e;
  }
  if (opts.beforeSteps) await opts.beforeSteps(state);

  // New nodes get their certificates (signed by the cluster's CA) before anything renders them;
  // a node whose certificate files were removed gets a new pair (README, Rotation).
  ensureClusterTls(state.root, to);
  const identity = opts.identity ?? sshIdentity(state.root);
  const ctx: ScriptContext = {
    ...scriptContext(state, secrets, options),
    authorizedKeys: opts.authorizedKeys?.(state),
  };
  progress(
    `${opts.verb} ${state.clusterName}: ${running.nodeCount} → ${wanted.nodeCount} node(s), plan ${wanted.plan} (${wanted.serverType}), ` +
      `profile ${options.profile.name}, synchronous_mode ${options.synchronousMode}: ${steps.length} step(s)`,
  );
  const done: ChangeResult["steps"] = [];
  for (const [i, step] of steps.entries()) {
    const label = describeStep(step);
    const began = Date.now();
    progress(`[${i + 1}/${steps.length}] ${label}`);
    if (opts.beforeStep) await opts.beforeStep(step, state);
    const output = await runStep(state, step, { wanted, to, from, ctx, identity, progress });
    done.push({ step, label, seconds: (Date.now() - began) / 1000, output });
  }
  state.applied = wanted;
  writeState(state);
  const health = await waitHealthy(state, secrets, {
    timeoutMs: opts.timeoutMs ?? 300_000,
    onProgress: progress,
    since: startedAt,
  });
  return {
    from: running,
    to: wanted,
    state,
    secrets,
    health,
    seconds: (Date.now() - startedAt) / 1000,
    steps: done,
  };
}

interface StepContext {
  wanted: AppliedSettings;
  to: Topology;
  from: Topology;
  ctx: ScriptContext;
  identity: SshIdentity;
  progress: (line: string) => void;
}

/** One step of the sequence on this machine; returns the output lines of its scripts. */
async function runStep(state: LocalClusterState, step: Step, c: StepContext): Promise<string[]> {
  switch (step.kind) {
    case "provision":
      await provision(state, c.ctx, c.to, step, c.wanted.serverType, c.progress);
      return [];
    case "join":
    case "refresh":
      return runScripts(state, step, stepScripts(step, c.to, c.ctx), c.progress, c.identity);
    case "leave":
      return runScripts(state, step, stepScripts(step, c.from, c.ctx), c.progress, c.identity);
    case "resize":
      return resize(state, step, c);
    case "maintain": {
      const [maintain, settle] = stepScripts(step, c.to, c.ctx);
      const output = await runScripts(state, step, [maintain], c.progress, c.identity);
      if (!output.some((l) => l.startsWith(MAINTENANCE_REBOOT_MARK))) return output;
      await rebootMachine(state, step.node.name, describeStep(step), c.progress);
      output.push(...(await runScripts(state, step, [settle], c.progress, c.identity)));
      return output;
    }
    case "decommission":
      await decommission(state, step, c.progress);
      return [];
  }
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

/** The node scripts' context for this cluster, sized for a local machine (core's server layout). */
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
  };
}

/** Where a node's scripts log on this machine (kept under left/ once the node is gone). */
export function scaleLogFile(state: LocalClusterState, node: { name: string }): string {
  return path.join(state.root, node.name, "log", "scale.log");
}

function appendLog(state: LocalClusterState, node: { name: string }, text: string): void {
  const file = scaleLogFile(state, node);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.appendFileSync(file, text.endsWith("\n") ? text : `${text}\n`, { mode: 0o600 });
}

/**
 * Runs scripts on a step's node as Pulumi's remote command does: the same command string (core's
 * `remoteCommand`), over SSH as root, its output streamed to the progress and the node's log.
 */
export async function runScripts(
  state: LocalClusterState,
  step: Step,
  scripts: NodeScript[],
  progress: (line: string) => void,
  identity: SshIdentity = sshIdentity(state.root),
): Promise<string[]> {
  const node = findNode(state, step.node.name);
  const label = `${node.name}: ${scripts.map((s) => s.name).join(", ")}`;
  appendLog(state, node, `==== ${new Date().toISOString()} ${label} (ssh root@${node.address})`);
  const output: string[] = [];
  const result = await sshScript(identity, node.address, remoteCommand(scripts), {
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
    throw new StepError(label, [...output, why]);
  }
  return output;
}

/**
 * A new node, as Hetzner creates a server: its namespace on the bridge, then a machine whose seed
 * holds the user data of a node joining a running cluster (its first boot starts only HAProxy and
 * the exporters and writes the ready marker; the join starts the rest). Recorded in the state file
 * before it boots; ready once its marker exists and SSH answers.
 */
async function provision(
  state: LocalClusterState,
  ctx: ScriptContext,
  to: Topology,
  step: Extract<Step, { kind: "provision" }>,
  serverType: string,
  progress: (line: string) => void,
): Promise<void> {
  const { node } = step;
  const net = { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: to.subnetPrefix, namespaces: {} };
  addNode(net, { name: node.name, privateIp: node.privateIp });
  const files = renderLocalNode(to, node, ctx.options, ctx.secrets, ctx.tls, { etcdInitialClusterState: "existing" });
  const { publicKey } = ensureSshKey(state.root);
  // Hetzner creates a new server with the declared type; its resize step then has nothing to do.
  const local = createNodeMachine(state, node, files["user-data.yaml"], { publicKey, serverType });
  // Recorded before it boots, so that `down` finds it whatever happens next.
  state.nodes.push(local);
  writeState(state);
  const began = Date.now();
  await bootNode(state, local);
  progress(`  ${node.name}: booted; waiting for its first boot (cloud-init) and SSH`);
  await waitBooted(state, local, `${node.name}: provision`);
  progress(`  ${node.name}: ready after ${((Date.now() - began) / 1000).toFixed(1)} s, SSH answers`);
}

/**
 * Waits for a machine's ready marker and for SSH; a failed boot fails at once, saying why (the
 * console's and the first-boot log's last lines).
 */
async function waitBooted(state: LocalClusterState, node: LocalNode, step: string): Promise<void> {
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  const firstBootLog = () => {
    const file = machinePath(node.machine, serverPaths().firstBootLog);
    return file && fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n").filter(Boolean).slice(-10) : [];
  };
  for (;;) {
    const probe = await probeNode(node.machine);
    // Only systemd-nspawn's exit says the machine stopped: a probe that misses PID 1 for a moment
    // while nspawn still runs is asked again.
    if (!probe.running && !isRunning(node.machine.nspawnPid)) {
      throw new StepError(step, [
        `the machine stopped during its boot (${nspawnExit(node.machine)}); console:`,
        ...consoleTail(node.machine),
      ]);
    }
    if (probe.cloudInit === "error")
      throw new StepError(step, ["cloud-init failed:", ...probe.cloudInitErrors, ...firstBootLog()]);
    if (probe.ready) break;
    if (Date.now() > deadline) {
      throw new StepError(step, [
        `no ready marker after ${BOOT_TIMEOUT_MS / 1000} s (cloud-init ${probe.cloudInit})`,
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
      throw new StepError(step, [`SSH to root@${node.address} does not answer:`, r.stderr.trim()]);
    await sleep(1000);
  }
}

/**
 * What Hetzner does on a resize, as scripts/hetzner/resize-server.sh drives it (core's
 * RESIZE_PHASES): drain over SSH, a clean power-off (systemd stops every unit in order), the
 * machine's new type, power on, SSH answers, settle over SSH. A machine already of the type is
 * left alone, as the script leaves such a server.
 */
async function resize(
  state: LocalClusterState,
  step: Extract<Step, { kind: "resize" }>,
  c: StepContext,
): Promise<string[]> {
  const node = findNode(state, step.node.name);
  if (node.serverType === step.serverType) {
    c.progress(`  ${node.name}: already ${step.serverType}; nothing to do`);
    return [];
  }
  const [drain, settle] = stepScripts(step, c.to, c.ctx);
  const output = await runScripts(state, step, [drain], c.progress, c.identity);
  const how = await shutdown(node.machine, SHUTDOWN_GRACE_MS);
  writeState(state);
  if (how !== "clean") {
    throw new StepError(`${describeStep(step)}: power-off`, [
      how === "forced"
        ? `the machine did not power off within ${SHUTDOWN_GRACE_MS / 1000} s and lost power`
        : "the machine was not running",
    ]);
  }
  c.progress(`  ${node.name}: powered off cleanly; type ${node.serverType} → ${step.serverType}`);
  node.serverType = step.serverType;
  writeState(state);
  await bootNode(state, node);
  await waitBooted(state, node, `${describeStep(step)}: power-on`);
  c.progress(`  ${node.name}: booted, SSH answers`);
  output.push(...(await runScripts(state, step, [settle], c.progress, c.identity)));
  return output;
}

/**
 * A reboot as a server makes one (`systemctl reboot`: systemd stops every unit in order), which a
 * local machine makes as a clean power-off and a boot (an nspawn container does not boot again by
 * itself); ready once its marker exists and SSH answers. The caller drained the node first.
 */
export async function rebootMachine(
  state: LocalClusterState,
  name: string,
  step: string,
  progress: (line: string) => void,
): Promise<void> {
  const node = findNode(state, name);
  const how = await shutdown(node.machine, SHUTDOWN_GRACE_MS);
  writeState(state);
  if (how !== "clean")
    throw new StepError(`${step}: reboot`, [
      how === "forced"
        ? `the machine did not power off within ${SHUTDOWN_GRACE_MS / 1000} s and lost power`
        : "the machine was not running",
    ]);
  progress(`  ${name}: shut down cleanly; booting`);
  await bootNode(state, node);
  await waitBooted(state, node, `${step}: reboot`);
  progress(`  ${name}: booted, SSH answers`);
}

/** After a leave: the machine shuts down cleanly and goes, then its namespace; its log stays under left/. */
async function decommission(
  state: LocalClusterState,
  step: Extract<Step, { kind: "decommission" }>,
  progress: (line: string) => void,
): Promise<void> {
  const node = findNode(state, step.node.name);
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
