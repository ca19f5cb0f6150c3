/**
 * The local runner: the State Pillar on this machine, one booted node per network namespace at its
 * production private address. The runner provides only what Hetzner provides — a machine booting
 * the node image (local/machine.ts), a data volume, a private network, SSH — and hands each node
 * the user data the Pulumi program sends Hetzner. Everything inside a node is the node's own: its
 * cloud-init first boot, its systemd units, its scripts.
 *
 * Everything lives under one root directory (`.local-cluster/` by default): the generated secrets,
 * the SSH key, `state.json`, and each node's machine (overlay root, volume file, console log).
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  appliedSettings,
  BackupTarget,
  ClusterOptions,
  ClusterSecrets,
  ClusterTls,
  clientUrls,
  ClientUrls,
  PatroniClientCertificates,
  describeCluster,
  GENERATED_SECRET_NAMES,
  hostAddress,
  loadStackSettings,
  MadbaseError,
  NodeSpec,
  Plan,
  RefusedError,
  renderNode,
  SECRET_NAMES,
  serverPaths,
  Topology,
} from "../core";
import { assertHostLink, clusterHealth, summarize } from "./health";
import { ClusterHealth } from "./judge";
import { checkHostTools } from "./host-tools";
import { ensureImage, imageUser } from "./image";
import {
  MachineRecord,
  bootMachine,
  createMachine,
  destroyMachine,
  isRunning,
  machineExec,
  machineExecAsync,
  powerCut,
  shutdown,
  sleep,
  waitForInit,
} from "./machine";
import { machineProcesses } from "./processes";
import { firstBootRunning } from "./node-probe";
import { createNetwork, destroyNetwork, namespaceExists, nodeNamespace, setNodeLink } from "./network";
import { ensureSshKey } from "./ssh";
import { ensureClusterTls } from "./tls";
import {
  LocalClusterState,
  LocalNode,
  SECRETS_FILE,
  SERVICES,
  STATE_VERSION,
  Service,
  UNITS,
  findNode,
  readSecrets,
  readState,
  statePath,
  writeSecrets,
  writeState,
} from "./state";

export const DEFAULT_ROOT = path.resolve(__dirname, "..", ".local-cluster");
export const DEFAULT_NETWORK_ID = "mb";
/**
 * PostgreSQL and Redis are sized for this much memory per GB of the plan locally (a local machine
 * is a small server: cx21 gets 512 MB, cx31 1 GB): a plan change still changes every memory
 * setting, as on Hetzner. Connection limits stay the plan's.
 */
export const LOCAL_MEMORY_MB_PER_PLAN_GB = 64;

export function localMemoryMb(plan: Plan): number {
  return plan.memoryGb * LOCAL_MEMORY_MB_PER_PLAN_GB;
}
/** Each node's data volume (a sparse file: it costs only what is written). */
export const LOCAL_VOLUME_GB = 10;
/** Where every node sees the local backup repository (a host directory shown to all of them). */
export const LOCAL_BACKUP_NODE_DIR = "/srv/madbase-backup";

/**
 * pgBackRest's repository for a local run: a directory all nodes share instead of the bucket, so
 * WAL archiving works without an S3 store on this machine (an unreachable store makes every
 * archive-push hang, which stalls a killed leader's rejoin).
 */
export function localBackup(): BackupTarget {
  return {
    bucket: "madbase-local",
    endpoint: "localhost",
    region: "local",
    retentionFull: 1,
    verifyTls: false,
    localRepoPath: path.posix.join(LOCAL_BACKUP_NODE_DIR, "pgbackrest"),
  };
}

/**
 * The host side of the local repository: `<dir>` holds `pgbackrest/` and `redis/`. `<root>/backup`
 * (gone with `down`) unless the backups must outlive the cluster (`--backup-dir`).
 */
export function backupHostDir(root: string, dir?: string): string {
  return dir ? path.resolve(dir) : path.join(root, "backup");
}

/** Where a cluster lives and which network it uses; tests pick their own so they never meet a developer's. */
export interface Location {
  root?: string;
  networkId?: string;
}

export interface UpOptions extends Location {
  stack?: string;
  nodes?: number | string;
  profile?: string;
  /** Another plan than the stack's (cx21, cx31, cx41). */
  plan?: string;
  /** Another subnet than the stack's (tests use their own). */
  subnetCidr?: string;
  /** How long the whole of `up` may take, boot and the wait for health included (default 240 s). */
  timeoutMs?: number;
  onProgress?: (line: string) => void;
  /** The backup repository: an S3 store instead of the local directory (the backup tests' own store). */
  backup?: BackupTarget;
  /** The local repository's host directory when it must outlive `down`; `<root>/backup` otherwise. */
  backupDir?: string;
  /** The S3 keys that go with `backup`; generated stand-ins otherwise. */
  s3Keys?: { accessKey: string; secretKey: string };
  /** Boot these nodes without their volume attached (a test of the first boot's refusal). */
  withoutVolume?: string[];
  /**
   * `prepared`: boot the nodes as a stack from before Patroni asked for client certificates is
   * after its first update (a test of the next update, which requires them). `required` otherwise.
   */
  patroniClientCertificates?: PatroniClientCertificates;
  /** Which image the nodes boot: `baked` (default) or `base`, Hetzner's alone (cloud-init installs). */
  imageKind?: "baked" | "base";
  /** Extra cloud-config merged into each node's user data (the apt source of a Hetzner-way test). */
  extraUserData?: (node: NodeSpec) => string;
  /** Wait for a healthy cluster (default); false: return once the machines booted. */
  waitHealthy?: boolean;
  /**
   * Runs once the network exists and before any node boots: where a test attaches the S3 store a
   * first boot archives into (on Hetzner, the store exists before the servers).
   */
  afterNetwork?: (state: LocalClusterState) => Promise<void> | void;
  /**
   * Runs once the cluster is healthy, before `up` returns (the CLI's `--restore` recreates
   * PostgreSQL from the backups there, with the operator's procedure, over SSH).
   */
  afterHealthy?: (state: LocalClusterState, secrets: ClusterSecrets) => Promise<ClusterHealth | void>;
}

export class AlreadyRunningError extends RefusedError {
  constructor(root: string) {
    super(
      `a local cluster is already running (state in ${path.relative(process.cwd(), root) || root}); ` +
        "see it with `npm run local -- status`, or stop it with `npm run local -- down`",
    );
  }
}

export class NotRunningError extends RefusedError {
  constructor() {
    super("no local cluster is running; start one with `npm run local -- up`");
  }
}

export function resolveLocation(loc: Location): { root: string; networkId: string } {
  return { root: path.resolve(loc.root ?? DEFAULT_ROOT), networkId: loc.networkId ?? DEFAULT_NETWORK_ID };
}

export function loadCluster(loc: Location = {}): { state: LocalClusterState; secrets: ClusterSecrets } {
  const { root } = resolveLocation(loc);
  const state = readState(root);
  if (!state) throw new NotRunningError();
  return { state, secrets: readSecrets(root) };
}

function generateSecrets(): ClusterSecrets {
  const secret = () => randomBytes(18).toString("base64url");
  const out = Object.fromEntries(SECRET_NAMES.map((n) => [n, secret()])) as unknown as ClusterSecrets;
  // Nothing listens for S3 locally; the keys only have to be well-formed.
  for (const n of SECRET_NAMES) if (!GENERATED_SECRET_NAMES.includes(n)) out[n] = `local-${secret()}`;
  return out;
}

export interface UpResult {
  state: LocalClusterState;
  secrets: ClusterSecrets;
  health: ClusterHealth;
  seconds: number;
}

/** The files a node is rendered with: the server's layout, sized for a local machine. */
export function renderLocalNode(
  topology: Topology,
  node: NodeSpec,
  options: ClusterOptions,
  secrets: ClusterSecrets,
  tls: ClusterTls,
  extra: { etcdInitialClusterState?: "new" | "existing"; redisMasterIp?: string } = {},
) {
  return renderNode({
    topology,
    node,
    options: { ...options, memoryMb: localMemoryMb(options.plan), volumeSizeGb: LOCAL_VOLUME_GB },
    secrets,
    tls,
    paths: serverPaths(),
    ...extra,
  });
}

/** Hetzner-style volume ids: stable per node, distinct across nodes. */
function volumeIdOf(node: NodeSpec): number {
  return 100 + node.index;
}

/** A machine for a node: overlay root, volume, and the seed with the node's user data. */
export function createNodeMachine(
  state: LocalClusterState,
  node: NodeSpec,
  userData: string,
  opts: { publicKey: string; serverType: string; attachVolume?: boolean },
): LocalNode {
  const namespace = nodeNamespace({ id: state.networkId }, { name: node.name, privateIp: node.privateIp });
  const dir = path.join(state.root, node.name, "machine");
  const binds = state.backupHostDir ? [{ host: state.backupHostDir, node: LOCAL_BACKUP_NODE_DIR }] : [];
  const machine: MachineRecord = createMachine({
    name: node.name,
    namespace,
    dir,
    image: state.image,
    volumeId: volumeIdOf(node),
    volumeGb: LOCAL_VOLUME_GB,
    attachVolume: opts.attachVolume,
    userData,
    metaData: {
      instanceId: `${state.clusterName}-${node.name}-${Date.now()}`,
      hostname: node.name,
      publicKeys: [opts.publicKey],
    },
    binds,
  });
  return { name: node.name, address: node.privateIp, namespace, serverType: opts.serverType, machine };
}

/**
 * Makes the host directory of the local repository, owned as the nodes' users expect. An image
 * without those users (the base image: cloud-init creates them on each node) gets directories
 * every node user may write, sticky like /tmp.
 */
function prepareBackupDir(image: string, dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const [sub, user] of [
    ["pgbackrest", "postgres"],
    ["redis", "redis"],
  ] as const) {
    const d = path.join(dir, sub);
    fs.mkdirSync(d, { recursive: true });
    let owner: { uid: number; gid: number } | undefined;
    try {
      owner = imageUser(image, user);
    } catch {
      owner = undefined;
    }
    if (owner) {
      fs.chownSync(d, owner.uid, owner.gid);
      fs.chmodSync(d, 0o750);
    } else {
      fs.chmodSync(d, 0o1777);
    }
  }
}

/**
 * Boots a cluster and waits until it is healthy. Refuses when one already runs at this root. A
 * failure after the state file exists leaves the cluster for inspection (`npm run local -- ssh`,
 * each node's console log under `<root>/<node>/machine/`); `down` removes it.
 */
export async function up(opts: UpOptions = {}): Promise<UpResult> {
  const startedAt = Date.now();
  const { root, networkId } = resolveLocation(opts);
  const progress = opts.onProgress ?? (() => undefined);
  const overrides: Record<string, unknown> = {};
  if (opts.nodes !== undefined) overrides.nodeCount = opts.nodes;
  if (opts.profile !== undefined) overrides.failoverProfile = opts.profile;
  if (opts.plan !== undefined) overrides.plan = opts.plan;
  if (opts.subnetCidr !== undefined) overrides.subnetCidr = opts.subnetCidr;
  const settings = loadStackSettings(opts.stack ?? "prod", overrides);
  const { topology, options } = describeCluster(settings);
  checkHostTools();
  if (fs.existsSync(statePath(root))) throw new AlreadyRunningError(root);
  if (namespaceExists(`${networkId}-hub`)) {
    throw new Error(
      `network ${networkId} exists without a cluster state at ${root}: a crashed run? \`npm run local -- down\` removes it`,
    );
  }
  const image = await ensureImage({ kind: opts.imageKind, onProgress: progress });

  const secrets = generateSecrets();
  if (opts.s3Keys) Object.assign(secrets, { s3AccessKey: opts.s3Keys.accessKey, s3SecretKey: opts.s3Keys.secretKey });
  const backup = opts.backup ?? localBackup();
  const subnetSize = 2 ** (32 - topology.subnetPrefix);
  const applied = appliedSettings(settings, { sshPrivateKeySet: true });
  const state: LocalClusterState = {
    version: STATE_VERSION,
    stack: topology.stack,
    applied,
    clusterName: topology.clusterName,
    subnetCidr: topology.subnetCidr,
    networkId,
    // The subnet's last usable address: far from the nodes' (.10 up) and the load balancer's (.5).
    hostIp: hostAddress(topology.subnetCidr, subnetSize - 2),
    root,
    startedAt: new Date().toISOString(),
    image,
    backup,
    backupHostDir: backup.localRepoPath ? backupHostDir(root, opts.backupDir) : undefined,
    nodes: [],
  };
  fs.mkdirSync(root, { recursive: true, mode: 0o755 });
  fs.chmodSync(root, 0o755);
  writeSecrets(root, secrets);
  // The CA, each node's pair and this machine's operator pair, as the Pulumi program makes them.
  const tls = ensureClusterTls(root, topology);
  writeState(state);
  if (state.backupHostDir) prepareBackupDir(image, state.backupHostDir);
  const { publicKey } = ensureSshKey(root);

  progress(
    `Booting ${topology.clusterName}: ${topology.nodeCount} node(s), profile ${options.profile.name}, ` +
      `synchronous_mode ${options.synchronousMode}, subnet ${topology.subnetCidr} (this machine: ${state.hostIp})`,
  );
  createNetwork({
    id: networkId,
    subnetPrefix: topology.subnetPrefix,
    nodes: topology.nodes.map((n) => ({ name: n.name, privateIp: n.privateIp })),
    hostIp: state.hostIp,
  });
  for (const node of topology.nodes) {
    const files = renderLocalNode(
      topology,
      node,
      { ...options, backup, patroniClientCertificates: opts.patroniClientCertificates },
      secrets,
      tls,
    );
    const userData = opts.extraUserData
      ? mergeUserData(files["user-data.yaml"], opts.extraUserData(node))
      : files["user-data.yaml"];
    const local = createNodeMachine(state, node, userData, {
      publicKey,
      serverType: applied.serverType,
      attachVolume: !(opts.withoutVolume ?? []).includes(node.name),
    });
    // Recorded before it boots, so that `down` finds it whatever happens next.
    state.nodes.push(local);
    writeState(state);
  }
  if (opts.afterNetwork) await opts.afterNetwork(state);
  // All at once, as Hetzner creates a stack's servers: each node's first boot waits for the
  // others (etcd's quorum, Patroni's leader), so booting one after the other only delays them.
  for (const node of state.nodes) bootMachine(node.machine);
  writeState(state);
  await Promise.all(state.nodes.map((node) => waitForInit(node.machine)));
  progress(
    `[${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)} s] ${state.nodes.length} machine(s) booted; cloud-init runs each node's first boot`,
  );
  if (opts.waitHealthy === false) {
    return { state, secrets, health: await clusterHealth(state, secrets), seconds: (Date.now() - startedAt) / 1000 };
  }
  // The deadline counts from the start, so a caller's own timeout can be set above it and the
  // failure that surfaces is ours (which names each problem), not the caller's bare timeout.
  let health = await waitHealthy(state, secrets, {
    timeoutMs: (opts.timeoutMs ?? 240_000) - (Date.now() - startedAt),
    onProgress: progress,
    since: startedAt,
  });
  if (opts.afterHealthy) health = (await opts.afterHealthy(state, secrets)) ?? health;
  return { state, secrets, health, seconds: (Date.now() - startedAt) / 1000 };
}

/**
 * Appends cloud-config keys to rendered user data (only keys the rendered document lacks: a second
 * `packages:` would replace ours). Used by tests that give a node an apt source.
 */
export function mergeUserData(userData: string, extra: string): string {
  return `${userData.replace(/\n*$/, "\n")}${extra.replace(/^#cloud-config\n/, "")}`;
}

export async function bootNode(state: LocalClusterState, node: LocalNode): Promise<void> {
  bootMachine(node.machine);
  writeState(state);
  await waitForInit(node.machine);
}

/**
 * The cluster is not healthy: after waiting for it (a failure: it is left running for a look), or
 * before a change that needs a healthy cluster (a refusal: nothing was changed).
 */
export class UnhealthyError extends MadbaseError {
  private constructor(
    readonly health: ClusterHealth,
    message: string,
    exitCode: 1 | 2,
  ) {
    super(message, exitCode);
  }

  static after(health: ClusterHealth, seconds: number, state: LocalClusterState): UnhealthyError {
    return new UnhealthyError(
      health,
      `the cluster is not healthy after ${seconds.toFixed(0)} s:\n  ${health.problems.join("\n  ")}\n` +
        `Look inside a node with \`npm run local -- ssh <node>\` (journalctl, cloud-init status --long); ` +
        `consoles: ${path.join(state.root, "<node>", "machine", "console.log")}\n` +
        "The cluster is left running for inspection; `npm run local -- down` removes it.",
      1,
    );
  }

  static refusing(what: string, health: ClusterHealth): UnhealthyError {
    return new UnhealthyError(
      health,
      `the cluster is not healthy; ${what} a healthy cluster (npm run local -- status):\n  ${health.problems.join("\n  ")}`,
      2,
    );
  }
}

/** How often `waitHealthy` looks at every daemon while a first boot runs (see there). */
const BOOTING_LOOK_MS = 2_000;

/** Polls the cluster until it is healthy, reporting each change of its summary. */
export async function waitHealthy(
  state: LocalClusterState,
  secrets: ClusterSecrets,
  opts: { timeoutMs?: number; onProgress?: (line: string) => void; since?: number } = {},
): Promise<ClusterHealth> {
  const since = opts.since ?? Date.now();
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let last = "";
  let lastLook = 0;
  for (;;) {
    // Re-read: kill-node and start-node (maybe another process) record machine changes in the state file.
    const current = readState(state.root) ?? state;
    // No cluster is healthy while a node's first boot runs (judge: every node's readiness marker).
    // Meanwhile a full look (every daemon of every node, each exporter scraped), which costs the
    // nodes 40 % of a core when taken back to back (28 % idle, 68 % looking, one look each 1.5 s,
    // at load 8), is taken every 2 s for the progress line, and the markers, read through /proc,
    // every 250 ms.
    const booting = current.nodes.some((n) => firstBootRunning(n.machine));
    if (booting && Date.now() - lastLook < BOOTING_LOOK_MS && Date.now() < deadline) {
      await sleep(250);
      continue;
    }
    lastLook = Date.now();
    const health = await clusterHealth(current, secrets);
    const line = summarize(health, current);
    if (line !== last && opts.onProgress)
      opts.onProgress(`[${((Date.now() - since) / 1000).toFixed(1).padStart(5)} s] ${line}`);
    last = line;
    if (health.healthy) return health;
    // A failed first boot never heals by itself: say so now rather than at the deadline.
    if (Date.now() > deadline || health.nodes.some((n) => n.cloudInit === "error"))
      throw UnhealthyError.after(health, (Date.now() - since) / 1000, state);
    await sleep(500);
  }
}

/** The connection URLs, through the first node's HAProxy (any node's works the same). */
export function clusterUrls(state: LocalClusterState, secrets: ClusterSecrets): ClientUrls {
  return clientUrls(secrets, state.nodes[0].address);
}

export async function status(
  loc: Location = {},
): Promise<{ state: LocalClusterState; secrets: ClusterSecrets; health: ClusterHealth }> {
  const { state, secrets } = loadCluster(loc);
  return { state, secrets, health: await clusterHealth(state, secrets) };
}

/** A power cut: every process of the node dies at the same instant. Returns the PIDs that died. */
export async function killNode(name: string, loc: Location = {}): Promise<number[]> {
  const { state } = loadCluster(loc);
  const node = findNode(state, name);
  const pids = machineProcesses(node.machine.nspawnPid).filter((p) => p !== node.machine.nspawnPid);
  await powerCut(node.machine);
  writeState(state);
  return pids;
}

/** Runs systemctl on a node through its console (works while its network is cut). */
function systemctl(node: LocalNode, args: string[]): void {
  const r = machineExec(node.machine, ["systemctl", ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`${node.name}: systemctl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
}

/**
 * Stops one service of a node: `systemctl stop` (Patroni, say, then stops PostgreSQL itself), or
 * with `graceMs: 0` a SIGKILL of the unit's processes first, a crash rather than a stop. Either
 * way the unit stays stopped (its Restart= does not bring it back) until `start-node`.
 */
export async function stopService(
  name: string,
  service: Service,
  opts: Location & { graceMs?: number } = {},
): Promise<void> {
  const { state } = loadCluster(opts);
  const node = findNode(state, name);
  if (opts.graceMs === 0) systemctl(node, ["kill", "--signal=SIGKILL", UNITS[service]]);
  systemctl(node, ["stop", UNITS[service]]);
}

/**
 * Brings a node back: a powered-off node boots (and its units start in their own order, after the
 * network and the volume); on a running node, the units that are not active start.
 */
export async function startNode(name: string, loc: Location = {}): Promise<{ booted: boolean; started: Service[] }> {
  const { state } = loadCluster(loc);
  const node = findNode(state, name);
  if (!isRunning(node.machine.nspawnPid)) {
    await bootNode(state, node);
    return { booted: true, started: [...SERVICES] };
  }
  // Asynchronous: a unit's start can take seconds (Redis asks the Sentinels first), and whoever
  // watches the cluster meanwhile (a test's sampler) must not stop watching.
  const active = await Promise.all(
    SERVICES.map(
      async (s) => (await machineExecAsync(node.machine, ["systemctl", "is-active", "--quiet", UNITS[s]])).code === 0,
    ),
  );
  const inactive = SERVICES.filter((_, i) => !active[i]);
  if (inactive.length > 0) {
    const args = ["start", ...inactive.map((s) => UNITS[s])];
    const r = await machineExecAsync(node.machine, ["systemctl", ...args], { timeoutMs: 120_000 });
    if (r.code !== 0)
      throw new Error(`${node.name}: systemctl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  }
  return { booted: false, started: inactive };
}

/** Cuts a node's network (its processes keep running) or restores it. */
export function partition(name: string, loc: Location = {}): void {
  setLink(name, false, loc);
}

export function heal(name: string, loc: Location = {}): void {
  setLink(name, true, loc);
}

function setLink(name: string, up: boolean, loc: Location): void {
  const { state } = loadCluster(loc);
  const node = findNode(state, name);
  setNodeLink(
    { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: 0, namespaces: {} },
    { name, privateIp: node.address },
    up,
  );
}

/** Removes one node's machine: power off (clean, or cut after `graceMs`), then its layers and volume. */
export async function removeMachine(
  node: LocalNode,
  opts: { clean?: boolean; graceMs?: number } = {},
): Promise<"clean" | "forced" | "not running"> {
  let how: "clean" | "forced" | "not running" = "not running";
  if (isRunning(node.machine.nspawnPid)) {
    if (opts.clean) how = await shutdown(node.machine, opts.graceMs ?? 60_000);
    else {
      await powerCut(node.machine);
      how = "forced";
    }
  }
  destroyMachine(node.machine);
  return how;
}

/**
 * Removes the cluster: every machine loses power (its data is deleted with it, so a clean
 * shutdown would only cost time), then volumes, overlays, namespaces and the root go. Works on a
 * half-started cluster and is a no-op when none runs. The local backup repository stays when it
 * was given with `--backup-dir`.
 */
export async function down(
  loc: Location & { onProgress?: (line: string) => void } = {},
): Promise<{ machines: number }> {
  const { root, networkId } = resolveLocation(loc);
  const progress = loc.onProgress ?? (() => undefined);
  const state = readState(root);
  let machines = 0;
  if (state) {
    for (const node of state.nodes) {
      progress(`removing ${node.name}`);
      await removeMachine(node);
      machines += 1;
    }
  }
  destroyNetwork(state?.networkId ?? networkId);
  if (state || fs.existsSync(path.join(root, SECRETS_FILE))) fs.rmSync(root, { recursive: true, force: true });
  return { machines };
}

export { assertHostLink };
