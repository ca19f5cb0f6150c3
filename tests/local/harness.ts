/**
 * Shared by the end-to-end tests of the local runner: each test file gets its own root directory,
 * network id and subnet, so files never collide with each other or with a developer's cluster
 * (`.local-cluster/`, network "mb", 10.42.1.0/24).
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Client } from "pg";
import Redis from "ioredis";
import { APP_DATABASE, PORTS, REDIS_USERS, STEP_LOG, Step, USERS, serverPaths, stepScriptNames } from "../../core";
import { machineExec, machinePath } from "../../local/machine";
import { Location, UpOptions, UpResult, down, status, up, waitHealthy } from "../../local/cluster";
import { assertHostLink } from "../../local/health";
import { ClusterHealth, NodePids, PROCESS_NAMES } from "../../local/judge";
import { LocalClusterState, LocalNode, findNode, readState } from "../../local/state";
import { certPaths, operatorTls, tlsRequest } from "../../local/tls";
import { Ack, DEFAULT_TABLE, PROBE_SSL } from "../../local/writer";
import { BOOTS_FILE, SHARED_CLUSTER, TEST_RUN_DIR_ENV } from "../support/run-dir";

export const REPO = path.resolve(__dirname, "..", "..");

export interface TestCluster extends Required<Location> {
  subnetCidr: string;
}

/** A test file's own place: `n` (1-9) picks network `lt<n>` and subnet 10.42.10<n>.0/24. */
export function testLocation(n: number): TestCluster {
  return {
    root: path.join(os.tmpdir(), `madbase-local-test-${n}`),
    networkId: `lt${n}`,
    subnetCidr: `10.42.${100 + n}.0/24`,
  };
}

/** Stops and removes a test's cluster; MADBASE_TEST_KEEP=1 keeps it (and its logs) for a look. */
export async function finish(loc: TestCluster): Promise<void> {
  if (process.env.MADBASE_TEST_KEEP === "1") {
    console.log(
      `MADBASE_TEST_KEEP=1: cluster left running; remove with MADBASE_LOCAL_ROOT=${loc.root} MADBASE_LOCAL_NET=${loc.networkId} npm run local -- down`,
    );
    return;
  }
  await down(loc);
}

/**
 * Every cluster boot of a test goes through here: it is `up`, and it is counted. The count, per test
 * file, lands in the run's directory (tests/support/run-dir.ts), where the summary reporter reads it
 * to print each file's boots beside its time.
 */
export async function bootCluster(opts: UpOptions): Promise<UpResult> {
  const started = Date.now();
  let healthy = false;
  try {
    const result = await up(opts);
    healthy = true;
    return result;
  } finally {
    // A boot that ended unhealthy cost its time too.
    const dir = process.env[TEST_RUN_DIR_ENV];
    if (dir) {
      const file = path.relative(REPO, expect.getState().testPath ?? "unknown");
      const line = JSON.stringify({ file, root: opts.root, healthy, seconds: (Date.now() - started) / 1000 });
      fs.appendFileSync(path.join(dir, BOOTS_FILE), `${line}\n`);
    }
  }
}

/**
 * Starts a fresh fast-profile prod cluster (removing leftovers of an earlier crashed run first).
 * `up` gives up within 200 s, before the 240 s of a beforeAll that calls this, so a failure names
 * what was unhealthy; it then also carries up's progress lines, to show what got stuck and when.
 */
export async function startCluster(
  loc: TestCluster,
  opts: { stack?: string; nodes?: number } & Pick<UpOptions, "patroniClientCertificates"> = {},
): Promise<UpResult> {
  await down(loc);
  const progress: string[] = [];
  try {
    return await bootCluster({
      ...loc,
      stack: opts.stack ?? "prod",
      nodes: opts.nodes,
      patroniClientCertificates: opts.patroniClientCertificates,
      profile: "fast",
      timeoutMs: 200_000,
      onProgress: (line) => progress.push(line),
    });
  } catch (e) {
    if (e instanceof Error) e.message += `\nup's progress:\n  ${progress.join("\n  ")}`;
    throw e;
  }
}

/**
 * A test file's one cluster: booted fresh before its first test, removed after its last (kept with
 * MADBASE_TEST_KEEP=1), after `cleanup`. Returns the booted cluster's getter, for use inside tests.
 * For a file whose cluster must be its own: one that restores, scales, or boots another topology.
 * A file that only needs the standard 3-node prod cluster uses sharedCluster.
 */
/** What a file that does not break the shared cluster must leave as it found: who runs what, where. */
interface ClusterMark {
  nodes: string[];
  leader: string | null;
  syncStandby: string | null;
  redisMaster: string | null;
  timeline: number | null;
  /** Every daemon's PID on every node: a daemon restarted is a cluster changed. */
  pids: Record<string, NodePids>;
  applied: unknown;
}

function clusterMark(state: LocalClusterState, h: ClusterHealth): ClusterMark {
  return {
    nodes: h.nodes.map((n) => n.name).sort(),
    leader: h.leader,
    syncStandby: h.syncStandby,
    redisMaster: h.redisMaster,
    timeline: h.nodes.find((n) => n.name === h.leader)?.timeline ?? null,
    pids: Object.fromEntries(
      h.nodes.map((n) => [n.name, Object.fromEntries(PROCESS_NAMES.map((p) => [p, n.pids[p]])) as NodePids]),
    ),
    applied: state.applied,
  };
}

/**
 * The shared cluster as the previous file left it, once healthy; booted anew (saying why) when
 * there is none, or when it does not heal within two minutes: a file that failed before this one
 * must not fail this one too.
 */
async function openSharedCluster(): Promise<UpResult> {
  if (readState(SHARED_CLUSTER.root)) {
    const started = Date.now();
    try {
      const { state, secrets } = await status(SHARED_CLUSTER);
      const h = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
      return { state, secrets, health: h, seconds: (Date.now() - started) / 1000 };
    } catch (e) {
      console.warn(`the shared cluster is not usable, booting it anew: ${(e as Error).message}`);
    }
  }
  return startCluster(SHARED_CLUSTER);
}

/**
 * The standard cluster (3 nodes, prod stack, fast profile), booted once per test run and shared by
 * every file that needs no other: a boot costs more than most files' tests. Files run one at a time
 * (`--runInBand`; tests/support/sequencer.js runs the files that leave it as they found it before
 * those that break it); the global teardown removes it. Each file gets it healthy and without the
 * writers' table of the file before (so every file's write ids are its own), and must end with
 * `handBack()`, its last test:
 *  - `breaks: false`: the same nodes, leader, synchronous standby, Redis master, timeline, daemons
 *    (PIDs) and applied settings as at the file's start, and healthy;
 *  - `breaks: true` (the file kills, cuts or stops something): healthy again within two minutes.
 */
export function sharedCluster(opts: { breaks: boolean; cleanup?: () => Promise<unknown> }) {
  let cluster: UpResult | undefined;
  let found: ClusterMark | undefined;
  beforeAll(async () => {
    cluster = await openSharedCluster();
    found = clusterMark(cluster.state, cluster.health);
    const { state, secrets } = cluster;
    await sql(
      state,
      secrets.app,
      state.nodes[0].address,
      PORTS.postgresPrimary,
      `DROP TABLE IF EXISTS ${DEFAULT_TABLE}`,
    );
  }, 300_000);
  // What the file started against the cluster (writers, proxies) stops first.
  afterAll(async () => {
    await opts.cleanup?.();
  }, 120_000);
  const get = (): UpResult => {
    if (!cluster) throw new Error("the shared cluster did not start (see beforeAll)");
    return cluster;
  };
  return Object.assign(get, {
    /** Declares the file's last test: the cluster handed back healthy, and as found unless the file breaks it. */
    handBack(): void {
      const title = opts.breaks
        ? "the shared cluster is handed back healthy"
        : "the shared cluster is handed back healthy and as this file found it";
      test(
        title,
        async () => {
          const { state, secrets } = get();
          const h = await waitHealthy(readState(state.root) ?? state, secrets, { timeoutMs: 120_000 });
          expect(h.problems).toEqual([]);
          if (!opts.breaks) expect(clusterMark(readState(state.root) ?? state, h)).toEqual(found);
        },
        150_000,
      );
    },
  });
}

export async function health(loc: TestCluster): Promise<ClusterHealth> {
  return (await status(loc)).health;
}

/** Polls until `predicate` holds for the cluster's health; fails with the last health seen. */
export async function waitFor(
  loc: TestCluster,
  what: string,
  predicate: (h: ClusterHealth) => boolean,
  timeoutMs = 90_000,
): Promise<ClusterHealth> {
  const deadline = Date.now() + timeoutMs;
  let last: ClusterHealth | undefined;
  while (Date.now() < deadline) {
    last = await health(loc);
    if (predicate(last)) return last;
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what}; last problems:\n  ${last?.problems.join("\n  ")}`);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function address(state: LocalClusterState, name: string): string {
  return findNode(state, name).address;
}

/** A SQL client to a node's port (5433 HAProxy, 5432 PostgreSQL), as the application user. */
export async function sql<T extends Record<string, unknown>>(
  state: LocalClusterState,
  password: string,
  host: string,
  port: number,
  text: string,
  params: unknown[] = [],
): Promise<T[]> {
  assertHostLink(state);
  const client = new Client({
    host,
    port,
    user: USERS.app,
    password,
    database: APP_DATABASE,
    connectionTimeoutMillis: 3000,
    query_timeout: 10_000,
    ssl: PROBE_SSL,
  });
  client.on("error", () => undefined);
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Which server a write through `host`'s HAProxy 5433 reaches, and whether it is in recovery. */
export async function writeEntryServer(
  state: LocalClusterState,
  password: string,
  host: string,
): Promise<{ server: string; recovery: boolean }> {
  const [row] = await sql<{ server: string; recovery: boolean }>(
    state,
    password,
    host,
    PORTS.postgresPrimary,
    "SELECT host(inet_server_addr()) AS server, pg_is_in_recovery() AS recovery",
  );
  return row;
}

/**
 * Runs SQL on a node as postgres over its Unix socket, through the node's console (so it works
 * while the node's network is cut). Returns psql's unaligned output, or undefined when it failed.
 */
export function nodeSql(state: LocalClusterState, name: string, text: string): string | undefined {
  const node = findNode(state, name);
  const r = machineExec(
    node.machine,
    [
      "runuser",
      "-u",
      "postgres",
      "--",
      "psql",
      "-h",
      serverPaths().pgSocketDir,
      "-p",
      String(PORTS.postgres),
      "-d",
      "postgres",
      "-Atc",
      text,
    ],
    { timeoutMs: 10_000 },
  );
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** A Redis client as `username` (the application's user unless told: Redis's `default` is off). */
export function redisClient(
  state: LocalClusterState,
  password: string,
  host: string,
  port: number = PORTS.redisMaster,
  username: string = REDIS_USERS.app,
): Redis {
  assertHostLink(state);
  const client = new Redis({
    host,
    port,
    username,
    password,
    lazyConnect: true,
    connectTimeout: 2000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on("error", () => undefined);
  return client;
}

/** Runs the CLI as a user would (`npm run local -- ...`), against the test's own cluster. */
export function cli(args: string[], opts: { loc?: TestCluster; env?: NodeJS.ProcessEnv } = {}) {
  const env = { ...process.env, ...(opts.env ?? {}) };
  if (opts.loc) {
    env.MADBASE_LOCAL_ROOT = opts.loc.root;
    env.MADBASE_LOCAL_NET = opts.loc.networkId;
  }
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(REPO, "cli", "local.ts"), ...args], {
    cwd: REPO,
    env,
    encoding: "utf8",
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A writer running inside a node's namespace (local/writer.ts as a process), for writes from the
 * far side of a partition. Its acknowledged writes arrive as `ack <id> <ms>` lines.
 */
export function namespaceWriter(ns: string, opts: { host: string; port: number; password: string; firstId: number }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-writer-"));
  const passwordFile = path.join(dir, "password");
  fs.writeFileSync(passwordFile, opts.password, { mode: 0o600 });
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns,
      process.execPath,
      "--import",
      "tsx",
      path.join(REPO, "local", "writer.ts"),
      "--host",
      opts.host,
      "--port",
      String(opts.port),
      "--password-file",
      passwordFile,
      "--first",
      String(opts.firstId),
      "--interval-ms",
      "20",
    ],
    { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] },
  );
  const acks: Ack[] = [];
  let buffer = "";
  child.stdout.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    for (const line of lines) {
      const m = /^ack (\d+) (\d+)$/.exec(line);
      if (m) acks.push({ id: Number(m[1]), at: Number(m[2]) });
    }
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return {
    acks,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await Promise.race([exited, sleep(10_000)]);
      if (child.exitCode === null) child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Patroni's REST API over HTTPS (verified with the cluster CA, presenting the operator's pair),
 * from inside `from`'s network namespace: unsafe calls (PATCH /config, POST /switchover) are taken
 * only from the cluster's members, and this machine is not one. The password reaches curl on its
 * standard input.
 */
export function patroniCall(
  state: LocalClusterState,
  from: LocalNode,
  ip: string,
  method: string,
  what: string,
  opts: { body?: unknown; password?: string } = {},
): { status: number; body: string } {
  const argv = [
    "curl",
    "-s",
    "-m",
    "30",
    "-K",
    "-",
    "--cacert",
    certPaths(state.root, "ca").cert,
    "--cert",
    certPaths(state.root, "operator").cert,
    "--key",
    certPaths(state.root, "operator").key,
    "-X",
    method,
    "-H",
    "content-type: application/json",
  ];
  if (opts.body !== undefined) argv.push("-d", JSON.stringify(opts.body));
  argv.push("-w", "\n%{http_code}", `https://${ip}:${PORTS.patroni}/${what}`);
  const config = opts.password ? `user = "${USERS.patroniRest}:${opts.password}"\n` : "";
  const run = spawnSync("ip", ["netns", "exec", from.namespace, ...argv], {
    input: config,
    encoding: "utf8",
    timeout: 40_000,
  });
  const out = run.stdout ?? "";
  const cut = out.lastIndexOf("\n");
  return { status: Number(out.slice(cut + 1)) || 0, body: out.slice(0, cut) };
}

/** Patroni's GET endpoints from this machine, over HTTPS verified with the cluster CA, with the operator's pair. */
export async function patroniGet(state: LocalClusterState, ip: string, what: string): Promise<any> {
  const r = await tlsRequest(`https://${ip}:${PORTS.patroni}/${what}`, { ...operatorTls(state.root), timeoutMs: 3000 });
  return JSON.parse(r.body);
}

/**
 * argv running redis-cli on a node with the node's own credentials, read there from its backup.env
 * (Redis's admin user, or Sentinel's password): no password on any command line.
 */
export function nodeRedisCli(target: "redis" | "sentinel", args: string[]): string[] {
  const auth =
    target === "sentinel" ? 'export REDISCLI_AUTH="$SENTINEL_AUTH"' : `set -- --user ${REDIS_USERS.admin} "$@"`;
  const script = `set -a; . ${serverPaths().backupEnvFile}; set +a; ${auth}; exec redis-cli --no-auth-warning "$@"`;
  return ["bash", "-c", script, "redis-cli", ...args];
}

/**
 * Watches the cluster while a change runs: every 500 ms, each node's Patroni is asked for its own
 * state; a member (of etcd, as node 1's etcd lists them: a node that left is none) whose
 * PostgreSQL is not running under Patroni, or that does not answer, is down. Reports the most
 * members down at one sample, and which nodes were ever seen down.
 */
export function downWatcher(state: LocalClusterState) {
  let running = true;
  let maxDown = 0;
  let samples = 0;
  const seenDown = new Set<string>();
  const members = async (): Promise<Set<string> | undefined> => {
    try {
      const answer = await tlsRequest(`https://${state.nodes[0].address}:${PORTS.etcdClient}/v3/cluster/member/list`, {
        ...operatorTls(state.root),
        method: "POST",
        body: "{}",
        timeoutMs: 2000,
      });
      return new Set((JSON.parse(answer.body) as { members: { name: string }[] }).members.map((m) => m.name));
    } catch {
      return undefined;
    }
  };
  const loop = (async () => {
    while (running) {
      const [listed, states] = await Promise.all([
        members(),
        Promise.all(
          state.nodes.map(async (n) => {
            try {
              return { name: n.name, up: (await patroniGet(state, n.address, "patroni")).state === "running" };
            } catch {
              return { name: n.name, up: false };
            }
          }),
        ),
      ]);
      // Without an answer from etcd, every node counts.
      const downNow = states.filter((s) => !s.up && (listed === undefined || listed.has(s.name)));
      downNow.forEach((s) => seenDown.add(s.name));
      maxDown = Math.max(maxDown, downNow.length);
      samples++;
      await sleep(500);
    }
  })();
  return {
    /** Stops watching (again: a no-op) and says what was seen. */
    async stop() {
      running = false;
      await loop;
      return { maxDown, seenDown: [...seenDown].sort(), samples };
    },
  };
}

export interface NodeStepEvent {
  /** The node's clock (ms since epoch). */
  at: number;
  node: string;
  event: "start" | "end";
  script: string;
  rc?: number;
}

/** The step scripts a node logged in its own STEP_LOG (core's remoteCommand writes it), since `since`. */
export function nodeStepLog(node: LocalNode, since = 0): NodeStepEvent[] {
  const file = machinePath(node.machine, STEP_LOG);
  if (!file || !fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [time, event, script, rc] = line.split(" ");
      // The log's nanoseconds, to the millisecond.
      return {
        at: Date.parse(time.replace(/(\.\d{3})\d*Z$/, "$1Z")),
        node: node.name,
        event: event as "start" | "end",
        script,
        ...(rc === undefined ? {} : { rc: Number(rc) }),
      };
    })
    .filter((e) => e.at >= since);
}

/**
 * The node scripts core's steps run, in order (a resize's drain and settle only where the machine
 * changes type, as resize-server.sh skips a server that has it): what the nodes must have logged.
 */
export function expectedScripts(steps: Step[], resized: (node: string) => boolean): string[] {
  return steps.flatMap((s) => {
    if (s.kind === "resize" && !resized(s.node.name)) return [];
    return stepScriptNames(s).map((name) => `${s.node.name} ${name}`);
  });
}

/**
 * What the nodes logged, merged by their clocks, is exactly the scripts in `expected` order, each
 * ended with status 0 before the next one started: no two node scripts ran at once.
 */
export function expectLoggedInOrder(events: NodeStepEvent[], expected: string[]): void {
  const sorted = [...events].sort((a, b) => a.at - b.at);
  const starts = sorted.filter((e) => e.event === "start").map((e) => `${e.node} ${e.script}`);
  expect(starts).toEqual(expected);
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i];
    // start, end, start, end...: each script ended (status 0) before the next started.
    expect({ i, node: e.node, script: e.script, event: e.event }).toEqual({
      i,
      node: e.node,
      script: e.script,
      event: i % 2 === 0 ? "start" : "end",
    });
    if (e.event === "end") {
      expect({ script: `${e.node} ${e.script}`, rc: e.rc }).toEqual({ script: `${e.node} ${e.script}`, rc: 0 });
      expect(`${sorted[i - 1].node} ${sorted[i - 1].script}`).toBe(`${e.node} ${e.script}`);
    }
  }
}
