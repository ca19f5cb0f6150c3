/**
 * The local runner: the configuration the render core produces for Hetzner, run on this machine's
 * Debian daemons, one node per network namespace at its production private address.
 *
 * Everything lives under one root directory (`.local-cluster/` by default): the generated secrets,
 * each node's rendered files, data and logs, and `state.json` with the PID of every process.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  APP_DATABASE,
  BackupTarget,
  ClusterSecrets,
  GENERATED_SECRET_NAMES,
  NODE_FILES,
  PORTS,
  SECRET_NAMES,
  USERS,
  describeCluster,
  hostAddress,
  renderNode,
} from "../core";
import { loadStackSettings } from "../cli/render";
import { installBackupFiles } from "./backup";
import { ClusterHealth, assertHostLink, clusterHealth, livePids, summarize } from "./health";
import { EXPORTER_SERVICES, exporterDaemonSpec } from "./exporters";
import { localPathsOf, logFile, runtimeFiles } from "./layout";
import { createNetwork, destroyNetwork, namespaceExists, nodeNamespace, setNodeLink } from "./network";
import { Programs, findPrograms } from "./packages";
import { etcdAnswers, sentinelMaster } from "./probes";
import {
  LocalClusterState,
  LocalNode,
  SECRETS_FILE,
  SERVICES,
  Service,
  findNode,
  readSecrets,
  readState,
  statePath,
  writeSecrets,
  writeState,
} from "./state";
import { DaemonSpec, daemonEnv, isAlive, killNow, namespacePids, runIn, sleep, startDaemon, stopGracefully } from "./supervisor";

export const DEFAULT_ROOT = path.resolve(__dirname, "..", ".local-cluster");
export const DEFAULT_NETWORK_ID = "mb";
/** PostgreSQL is sized for this much memory per node locally; connection limits stay the plan's. */
export const LOCAL_MEMORY_MB = 256;

/**
 * pgBackRest's repository for a local run: a directory all nodes share instead of the bucket, so
 * WAL archiving works (an unreachable store makes every archive-push hang for a minute, which
 * blocks a killed leader's rejoin: Patroni archives its ready WAL before crash recovery).
 */
export function localBackup(root: string, dir?: string) {
  return { bucket: "madbase-local", endpoint: "localhost", region: "local", retentionFull: 1, verifyTls: false, localRepoPath: backupRepo(root, dir) };
}

/**
 * The local repository: `<dir>/pgbackrest`, beside `<dir>/redis` for Redis snapshots. `dir` is
 * `<root>/backup` (gone with `down`) unless the backups must outlive the cluster (`--backup-dir`).
 */
export function backupRepo(root: string, dir?: string): string {
  return path.join(dir ? path.resolve(dir) : path.join(root, "backup"), "pgbackrest");
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
  /** Another subnet than the stack's (tests use their own). */
  subnetCidr?: string;
  /** PATH to find the daemons on (tests point it at a directory without them). */
  searchPath?: string;
  timeoutMs?: number;
  onProgress?: (line: string) => void;
  /** The backup repository: an S3 store instead of the local directory (the backup tests' own store). */
  backup?: BackupTarget;
  /**
   * The local repository's directory when it must outlive `down` (to restore a later cluster from
   * it); `<root>/backup` otherwise. Ignored with `backup`.
   */
  backupDir?: string;
  /** The S3 keys that go with `backup`; generated stand-ins otherwise. */
  s3Keys?: { accessKey: string; secretKey: string };
  /**
   * Runs once etcd is started and before Patroni is: where a backup test attaches its S3 store to
   * the new network and recreates PostgreSQL from a backup (local/backup.ts restorePostgres).
   */
  beforePatroni?: (state: LocalClusterState, secrets: ClusterSecrets) => Promise<void> | void;
}

export class AlreadyRunningError extends Error {
  constructor(root: string) {
    super(
      `a local cluster is already running (state in ${path.relative(process.cwd(), root) || root}); ` +
        "see it with `npm run local -- status`, or stop it with `npm run local -- down`",
    );
    this.name = "AlreadyRunningError";
  }
}

export class NotRunningError extends Error {
  constructor() {
    super("no local cluster is running; start one with `npm run local -- up`");
    this.name = "NotRunningError";
  }
}

function resolveLocation(loc: Location): { root: string; networkId: string } {
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

function uidOf(user: string): { uid: number; gid: number } {
  const [uid, gid] = ["-u", "-g"].map((flag) => Number(execFileSync("id", [flag, user], { encoding: "utf8" }).trim()));
  return { uid, gid };
}

function makeDir(dir: string, owner: string, mode: number): void {
  fs.mkdirSync(dir, { recursive: true });
  const { uid, gid } = uidOf(owner);
  fs.chownSync(dir, uid, gid);
  fs.chmodSync(dir, mode);
}

function writeFile(file: string, content: string, owner: string, mode: number): void {
  fs.writeFileSync(file, content, { mode });
  const { uid, gid } = uidOf(owner);
  fs.chownSync(file, uid, gid);
  fs.chmodSync(file, mode);
}

/** Who owns each rendered file locally: secrets readable only by the daemon that needs them. */
const RENDERED_OWNERS: Record<string, { owner: string; mode: number }> = {
  "patroni.yml": { owner: "postgres", mode: 0o600 },
  "pgbackrest.conf": { owner: "postgres", mode: 0o600 },
  "etcd.conf": { owner: "root", mode: 0o600 },
  "redis.conf": { owner: "root", mode: 0o600 },
  "sentinel.conf": { owner: "root", mode: 0o600 },
  "haproxy.cfg": { owner: "root", mode: 0o600 },
  // The runner reads the exporters' environment files; the Redis exporter reads its password file itself.
  "node-exporter.env": { owner: "root", mode: 0o600 },
  "postgres-exporter.env": { owner: "root", mode: 0o600 },
  "redis-exporter.env": { owner: "root", mode: 0o600 },
  "redis-exporter-passwords.json": { owner: "prometheus", mode: 0o600 },
};

/** Lays out one node's directories (owned by the user of each daemon) and its rendered files. */
export function prepareNode(state: LocalClusterState, node: LocalNode, files: Record<string, string>): void {
  const p = localPathsOf(state, node);
  const base = path.join(state.root, node.name);
  const rt = runtimeFiles(state, node);
  makeDir(base, "root", 0o755);
  makeDir(path.dirname(p.config["patroni.yml"]), "root", 0o755);
  makeDir(rt.logDir, "root", 0o755);
  makeDir(p.pgDataDir, "postgres", 0o700);
  makeDir(path.dirname(p.pgpassFile), "postgres", 0o755);
  makeDir(p.pgSocketDir, "postgres", 0o755);
  for (const dir of [p.pgbackrestLogDir, p.pgbackrestSpoolDir, p.pgbackrestLockDir]) makeDir(dir, "postgres", 0o750);
  makeDir(p.etcdDataDir, "etcd", 0o700);
  makeDir(p.redisDir, "redis", 0o750);
  makeDir(p.sentinelDir, "redis", 0o750);
  for (const name of NODE_FILES) {
    if (name === "user-data.yaml") continue; // cloud-init's, for Hetzner only
    writeFile(p.config[name], files[name], RENDERED_OWNERS[name].owner, RENDERED_OWNERS[name].mode);
  }
  // Redis and Sentinel rewrite their files: they run from their own copies, seeded once.
  writeFile(rt.redisConf, files["redis.conf"], "redis", 0o640);
  writeFile(rt.sentinelConf, files["sentinel.conf"], "redis", 0o640);
}

/** KEY=VALUE lines of an environment file such as the rendered etcd.conf. */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2];
  }
  return env;
}

export function daemonSpec(state: LocalClusterState, node: LocalNode, service: Service, extraArgs: string[] = []): DaemonSpec {
  const p = localPathsOf(state, node);
  const rt = runtimeFiles(state, node);
  const prog: Programs = state.programs;
  const common = { namespace: node.namespace, log: logFile(state, node, service) };
  switch (service) {
    case "etcd":
      return {
        ...common,
        argv: [prog.etcd],
        user: "etcd",
        env: daemonEnv(parseEnvFile(fs.readFileSync(p.config["etcd.conf"], "utf8"))),
        cwd: p.etcdDataDir,
      };
    case "patroni":
      return { ...common, argv: [prog.patroni, p.config["patroni.yml"]], user: "postgres", env: daemonEnv({}, "/var/lib/postgresql"), cwd: p.pgSocketDir };
    case "redis":
      return { ...common, argv: [prog.redisServer, rt.redisConf, ...extraArgs], user: "redis", env: daemonEnv(), cwd: p.redisDir };
    case "sentinel":
      return { ...common, argv: [prog.redisSentinel, rt.sentinelConf], user: "redis", env: daemonEnv(), cwd: p.sentinelDir };
    case "haproxy":
      // Master-worker (-W) in the foreground (-db): SIGUSR2 to the master reloads gracefully.
      return { ...common, argv: [prog.haproxy, "-W", "-db", "-f", p.config["haproxy.cfg"]], env: daemonEnv(), cwd: path.dirname(p.haproxySocket) };
    case "node_exporter":
    case "postgres_exporter":
    case "redis_exporter":
      return exporterDaemonSpec(state, node, service);
  }
}

export function startService(state: LocalClusterState, node: LocalNode, service: Service, extraArgs: string[] = []): number {
  const pid = startDaemon(daemonSpec(state, node, service, extraArgs), state.programs.setpriv);
  node.pids[service] = pid;
  writeState(state);
  return pid;
}

export interface UpResult {
  state: LocalClusterState;
  secrets: ClusterSecrets;
  health: ClusterHealth;
  seconds: number;
}

/**
 * Renders, starts and waits for a healthy cluster. Refuses when one already runs at this root.
 * A failure after the state file exists leaves the cluster for inspection (logs under
 * `<root>/<node>/log/`); `down` removes it.
 */
export async function up(opts: UpOptions = {}): Promise<UpResult> {
  const startedAt = Date.now();
  const { root, networkId } = resolveLocation(opts);
  const progress = opts.onProgress ?? (() => undefined);
  const overrides: Record<string, unknown> = {};
  if (opts.nodes !== undefined) overrides.nodeCount = opts.nodes;
  if (opts.profile !== undefined) overrides.failoverProfile = opts.profile;
  if (opts.subnetCidr !== undefined) overrides.subnetCidr = opts.subnetCidr;
  const settings = loadStackSettings(opts.stack ?? "prod", overrides);
  const { topology, options } = describeCluster(settings);
  const programs = findPrograms(opts.searchPath);
  if (fs.existsSync(statePath(root))) throw new AlreadyRunningError(root);
  if (namespaceExists(`${networkId}-hub`)) {
    throw new Error(`network ${networkId} exists without a cluster state at ${root}: a crashed run? \`npm run local -- down\` removes it`);
  }

  const secrets = generateSecrets();
  if (opts.s3Keys) Object.assign(secrets, { s3AccessKey: opts.s3Keys.accessKey, s3SecretKey: opts.s3Keys.secretKey });
  const backup = opts.backup ?? localBackup(root, opts.backupDir);
  const subnetSize = 2 ** (32 - topology.subnetPrefix);
  const state: LocalClusterState = {
    version: 1,
    stack: topology.stack,
    profile: options.profile.name,
    synchronousMode: options.synchronousMode,
    clusterName: topology.clusterName,
    subnetCidr: topology.subnetCidr,
    quorum: topology.quorum,
    networkId,
    // The subnet's last usable address: far from the nodes' (.10 up) and the load balancer's (.5).
    hostIp: hostAddress(topology.subnetCidr, subnetSize - 2),
    root,
    startedAt: new Date().toISOString(),
    programs,
    backup,
    nodes: topology.nodes.map((n) => ({
      name: n.name,
      address: n.privateIp,
      namespace: nodeNamespace({ id: networkId }, { name: n.name, privateIp: n.privateIp }),
      pids: {},
    })),
  };
  fs.mkdirSync(root, { recursive: true, mode: 0o755 });
  fs.chmodSync(root, 0o755);
  writeSecrets(root, secrets);
  writeState(state);
  if (backup.localRepoPath) {
    makeDir(path.dirname(backup.localRepoPath), "root", 0o755);
    makeDir(backup.localRepoPath, "postgres", 0o750);
  }

  progress(
    `Starting ${topology.clusterName}: ${topology.nodeCount} node(s), profile ${options.profile.name}, ` +
      `synchronous_mode ${options.synchronousMode}, subnet ${topology.subnetCidr} (this machine: ${state.hostIp})`,
  );
  createNetwork({
    id: networkId,
    subnetPrefix: topology.subnetPrefix,
    nodes: topology.nodes.map((n) => ({ name: n.name, privateIp: n.privateIp })),
    hostIp: state.hostIp,
  });
  for (const node of topology.nodes) {
    const files = renderNode({
      topology,
      node,
      options: { ...options, memoryMb: LOCAL_MEMORY_MB, backup },
      secrets,
      paths: localPathsOf(state, node),
    });
    prepareNode(state, findNode(state, node.name), files);
    installBackupFiles({ topology, node, options: { ...options, backup }, secrets, paths: localPathsOf(state, node) });
  }
  // etcd first (Patroni needs its DCS), then everything else; each node's daemons in its namespace.
  for (const node of state.nodes) startService(state, node, "etcd");
  await waitForEtcd(state, state.nodes);
  if (opts.beforePatroni) await opts.beforePatroni(state, secrets);
  for (const service of ["patroni", "redis", "sentinel", "haproxy", ...EXPORTER_SERVICES] as const) {
    for (const node of state.nodes) startService(state, node, service);
  }
  const health = await waitHealthy(state, secrets, { timeoutMs: opts.timeoutMs ?? 180_000, onProgress: progress, since: startedAt });
  await createStanza(state, findNode(state, health.leader!));
  return { state, secrets, health, seconds: (Date.now() - startedAt) / 1000 };
}

/**
 * pgBackRest's stanza-create, once, on the leader: WAL archiving succeeds from then on. Until then
 * the leader's archiver keeps trying, and its archive-push can hold the stanza's lock for a
 * moment: a create that finds the lock taken tries again, for up to a minute.
 */
async function createStanza(state: LocalClusterState, leader: LocalNode): Promise<void> {
  const conf = localPathsOf(state, leader).config["pgbackrest.conf"];
  const argv = [state.programs.pgbackrest, `--config=${conf}`, `--stanza=${state.clusterName}`, "--log-level-console=warn", "stanza-create"];
  for (let attempt = 1; ; attempt++) {
    try {
      runIn(leader.namespace, argv, { user: "postgres", setpriv: state.programs.setpriv });
      return;
    } catch (err) {
      if (attempt >= 60 || !/unable to acquire lock/.test(String((err as { stderr?: string }).stderr ?? err))) throw err;
      await sleep(1000);
    }
  }
}

export class UnhealthyError extends Error {
  constructor(
    readonly health: ClusterHealth,
    seconds: number,
    state: LocalClusterState,
  ) {
    super(
      `the cluster is not healthy after ${seconds.toFixed(0)} s:\n  ${health.problems.join("\n  ")}\n` +
        `Logs: ${path.join(state.root, "<node>", "log")}/`,
    );
    this.name = "UnhealthyError";
  }
}

/** Polls the cluster until it is healthy, reporting each change of its summary. */
export async function waitHealthy(
  state: LocalClusterState,
  secrets: ClusterSecrets,
  opts: { timeoutMs?: number; onProgress?: (line: string) => void; since?: number } = {},
): Promise<ClusterHealth> {
  const since = opts.since ?? Date.now();
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let last = "";
  for (;;) {
    // Re-read: kill-node and start-node (maybe another process) record new PIDs in the state file.
    const current = readState(state.root) ?? state;
    const health = await clusterHealth(current, secrets);
    const line = summarize(health, current);
    if (line !== last && opts.onProgress) opts.onProgress(`[${((Date.now() - since) / 1000).toFixed(1).padStart(5)} s] ${line}`);
    last = line;
    if (health.healthy) return health;
    if (Date.now() > deadline) throw new UnhealthyError(health, (Date.now() - since) / 1000, state);
    await sleep(500);
  }
}

/** The connection URLs, through the first node's HAProxy (any node's works the same). */
export function clusterUrls(state: LocalClusterState, secrets: ClusterSecrets): { databaseUrl: string; redisUrl: string } {
  const ip = state.nodes[0].address;
  return {
    databaseUrl: `postgresql://${USERS.app}:${secrets.app}@${ip}:${PORTS.postgresPrimary}/${APP_DATABASE}`,
    redisUrl: `redis://:${secrets.redis}@${ip}:${PORTS.redisMaster}/0`,
  };
}

export async function status(loc: Location = {}): Promise<{ state: LocalClusterState; secrets: ClusterSecrets; health: ClusterHealth }> {
  const { state, secrets } = loadCluster(loc);
  return { state, secrets, health: await clusterHealth(state, secrets) };
}

/** Every PID of a node: those we started, the postmaster, and anything else in its namespace. */
function nodePids(state: LocalClusterState, node: LocalNode): number[] {
  const pids = new Set<number>(Object.values(livePids(state, node)).filter((p): p is number => p !== null));
  for (const pid of namespacePids(node.namespace)) pids.add(pid);
  return [...pids];
}

/** Simulates losing a node: kill -9 of all its processes, postmaster included. */
export async function killNode(name: string, loc: Location = {}): Promise<number[]> {
  const { state } = loadCluster(loc);
  const node = findNode(state, name);
  const pids = nodePids(state, node);
  await killNow(pids);
  node.pids = {};
  writeState(state);
  return pids;
}

/** Stops one service of a node (SIGTERM, then SIGKILL after `graceMs`); 0 means kill -9 at once. */
export async function stopService(name: string, service: Service, opts: Location & { graceMs?: number } = {}): Promise<void> {
  const { state } = loadCluster(opts);
  const node = findNode(state, name);
  const pid = node.pids[service];
  if (isAlive(pid)) {
    if (opts.graceMs === 0) await killNow([pid]);
    else await stopGracefully([pid], opts.graceMs ?? 10_000);
  }
  delete node.pids[service];
  writeState(state);
}

/**
 * The master a majority of the other nodes' Sentinels name, when they agree; a returning Redis
 * must start as its replica, or it comes back as a second master until Sentinel notices.
 */
async function redisMasterByMajority(state: LocalClusterState, node: LocalNode): Promise<string | undefined> {
  assertHostLink(state);
  const answers = await Promise.all(state.nodes.filter((n) => n.name !== node.name).map((n) => sentinelMaster(n.address, state.clusterName)));
  const votes = new Map<string, number>();
  for (const a of answers) if (a) votes.set(a, (votes.get(a) ?? 0) + 1);
  const [best] = [...votes.entries()].sort((a, b) => b[1] - a[1]);
  return best && best[1] >= state.quorum ? best[0] : undefined;
}

/**
 * Starts whatever of a node's services is not running (all of them after kill-node). Returns the
 * services started and, when Redis was, the master it was told to follow.
 */
export async function startNode(name: string, loc: Location = {}): Promise<{ started: Service[]; redisReplicaOf?: string }> {
  const { state } = loadCluster(loc);
  const node = findNode(state, name);
  const started: Service[] = [];
  let redisReplicaOf: string | undefined;
  for (const service of SERVICES) {
    if (isAlive(node.pids[service])) continue;
    let extra: string[] = [];
    if (service === "redis") {
      redisReplicaOf = await redisMasterByMajority(state, node);
      if (redisReplicaOf && redisReplicaOf !== node.address) extra = ["--replicaof", redisReplicaOf, String(PORTS.redis)];
      else redisReplicaOf = undefined;
    }
    if (service === "patroni") await waitForEtcd(state, patroniEtcdNodes(state, node).slice(0, 1));
    if (service === "patroni" && localPidsOfPostgres(state, node)) {
      // A postmaster left from before would refuse a second one on the same data directory.
      throw new Error(`${name}: a postmaster is still running without its Patroni; kill-node first`);
    }
    startService(state, node, service, extra);
    started.push(service);
  }
  return { started, redisReplicaOf };
}

/** The etcd members a node's Patroni is configured with, in order (templates/patroni.yml.hbs). */
function patroniEtcdNodes(state: LocalClusterState, node: LocalNode): LocalNode[] {
  return state.nodes.length >= 3 ? state.nodes.filter((n) => n.name !== node.name) : state.nodes;
}

/**
 * Waits until each given node's etcd answers. Patroni 3.0.2 with `use_proxies` exits at start when
 * the first etcd in its list does not answer, so it is only started once that one does.
 */
async function waitForEtcd(state: LocalClusterState, nodes: LocalNode[], timeoutMs = 60_000): Promise<void> {
  assertHostLink(state);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answers = await Promise.all(nodes.map((n) => etcdAnswers(n.address)));
    if (answers.every(Boolean)) return;
    if (Date.now() > deadline) {
      const silent = nodes.filter((_, i) => !answers[i]).map((n) => n.name);
      throw new Error(`etcd does not answer on ${silent.join(", ")}; Patroni 3.0.2 cannot start without it (start that node first)`);
    }
    await sleep(200);
  }
}

function localPidsOfPostgres(state: LocalClusterState, node: LocalNode): boolean {
  return livePids(state, node).postgres !== null;
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
  setNodeLink({ id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: 0, namespaces: {} }, { name, privateIp: node.address }, up);
}

/** Order of a graceful stop: entry points first, the DCS last. */
const STOP_ORDER: Service[] = [...EXPORTER_SERVICES, "haproxy", "sentinel", "redis", "patroni", "etcd"];

/**
 * Stops every process (SIGTERM, then SIGKILL after a grace period), removes the namespaces and
 * deletes the root with all data. Works on a half-started cluster and is a no-op when none runs.
 */
export async function down(loc: Location & { graceMs?: number; onProgress?: (line: string) => void } = {}): Promise<{ stopped: number; forced: number }> {
  const { root, networkId } = resolveLocation(loc);
  const progress = loc.onProgress ?? (() => undefined);
  const state = readState(root);
  let stopped = 0;
  let forced = 0;
  if (state) {
    for (const service of STOP_ORDER) {
      const pids = state.nodes.map((n) => n.pids[service]).filter(isAlive);
      if (pids.length === 0) continue;
      progress(`stopping ${service} (${pids.join(", ")})`);
      // Patroni stops PostgreSQL itself (fast shutdown) and releases the leader key.
      const stubborn = await stopGracefully(pids, loc.graceMs ?? (service === "patroni" ? 30_000 : 10_000));
      stopped += pids.length;
      forced += stubborn.length;
    }
    for (const node of state.nodes) {
      const left = nodePids(state, node);
      if (left.length > 0) {
        progress(`killing what is left in ${node.namespace} (${left.join(", ")})`);
        await killNow(left);
        forced += left.length;
      }
    }
  }
  destroyNetwork(state?.networkId ?? networkId);
  if (state || fs.existsSync(path.join(root, SECRETS_FILE))) fs.rmSync(root, { recursive: true, force: true });
  return { stopped, forced };
}
