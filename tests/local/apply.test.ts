/**
 * Settings reach a running cluster as `pulumi up` brings them: `apply` runs every node's
 * config-refresh, one node at a time, over SSH. Under a writer that counts acknowledged writes:
 * a new failover profile reaches Patroni, every Sentinel and every HAProxy without restarting
 * PostgreSQL; a new plan reaches every node's memory and connection settings, one node restarting
 * at a time; synchronous mode turns off; a rotated SSH key set never locks anyone out; a grown
 * volume's file system grows online.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PLANS, Plan, PORTS, PROFILES, changeSequence, serverPaths } from "../../core";
import { ApplyOptions, apply } from "../../local/apply";
import { UpResult, down, killNode, loadCluster, localMemoryMb, startNode, waitHealthy } from "../../local/cluster";
import { machineExec } from "../../local/machine";
import { SshIdentity, sshIdentity, sshScript } from "../../local/ssh";
import { LocalClusterState } from "../../local/state";
import { AckWriter, missingIds } from "../../local/writer";
import {
  bootCluster,
  downWatcher,
  expectedScripts,
  expectLoggedInOrder,
  finish,
  nodeRedisCli,
  nodeSql,
  nodeStepLog,
  patroniGet as harnessPatroniGet,
  sleep,
  testLocation,
  waitFor,
} from "./harness";

const loc = testLocation(12);
let cluster: UpResult;
const writers: AckWriter[] = [];

beforeAll(async () => {
  await down(loc);
  cluster = await bootCluster({ ...loc, stack: "prod", plan: "cx21", profile: "norm", timeoutMs: 180_000 });
}, 300_000);

afterAll(async () => {
  await Promise.all(writers.map((w) => w.stop()));
  await finish(loc);
}, 120_000);

// The cluster's root (where its CA is) never changes: read from the state `up` returned, not the
// state file, which a reboot rewrites while the down watcher asks every 300 ms.
async function patroniGet(ip: string, what: string): Promise<any> {
  return harnessPatroniGet(cluster.state, ip, what);
}

function onNode(state: LocalClusterState, name: string, command: string[]): string {
  const node = state.nodes.find((n) => n.name === name)!;
  const r = machineExec(node.machine, command, { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`${name}: ${command.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

function sentinelMaster(state: LocalClusterState, name: string): Record<string, string> {
  const ip = state.nodes.find((n) => n.name === name)!.address;
  const lines = onNode(
    state,
    name,
    nodeRedisCli("sentinel", [
      "-h",
      ip,
      "-p",
      String(PORTS.sentinel),
      "--raw",
      "SENTINEL",
      "MASTER",
      state.clusterName,
    ]),
  ).split("\n");
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i]] = lines[i + 1];
  return out;
}

function postmasterStart(state: LocalClusterState, name: string): string | undefined {
  return nodeSql(state, name, "SELECT pg_postmaster_start_time()");
}

function startWriter(firstId: number): AckWriter {
  const { state, secrets } = cluster;
  const writer = new AckWriter({
    host: state.nodes[0].address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId,
    intervalMs: 20,
  }).start();
  writers.push(writer);
  return writer;
}

/**
 * Runs `apply` with `change` while a writer (ids from `firstId`) writes through 5433 and the
 * watcher counts nodes down; prints what changed on each node.
 */
async function applyUnderLoad(change: Partial<ApplyOptions>, firstId: number) {
  const writer = startWriter(firstId);
  await writer.waitForAcks(20, 30_000);
  const watch = downWatcher(cluster.state);
  const result = await apply({ ...loc, ...change }).finally(() => watch.stop());
  const watched = await watch.stop();
  console.log(
    `apply ${JSON.stringify(change)} in ${result.seconds.toFixed(1)} s:\n${result.changes.map((c) => `  ${c.node}: ${c.lines.join("; ")}`).join("\n")}`,
  );
  return { writer, result, watched };
}

/**
 * Every node runs the plan's sizes: shared_buffers and max_connections in PostgreSQL, with no
 * restart left pending, and maxmemory in Redis, also written to redis.conf (CONFIG REWRITE, in
 * Redis's own units) so that it survives a restart of Redis.
 */
async function expectSizedFor(state: LocalClusterState, plan: Plan): Promise<void> {
  const memoryMb = localMemoryMb(plan);
  for (const node of state.nodes) {
    const maxmemory = onNode(
      state,
      node.name,
      nodeRedisCli("redis", ["-h", node.address, "-p", String(PORTS.redis), "CONFIG", "GET", "maxmemory"]),
    );
    expect({
      node: node.name,
      shared: nodeSql(state, node.name, "SHOW shared_buffers"),
      max: nodeSql(state, node.name, "SHOW max_connections"),
      maxmemory: maxmemory.split("\n")[1],
      written: onNode(state, node.name, ["grep", "^maxmemory ", serverPaths().config["redis.conf"]]),
    }).toEqual({
      node: node.name,
      shared: `${memoryMb / 4}MB`,
      max: String(plan.maxConnections),
      maxmemory: String((memoryMb / 8) * 1024 * 1024),
      written: `maxmemory ${memoryMb / 8}mb`,
    });
  }
  const pending = await Promise.all(
    state.nodes.map(async (n) => (await patroniGet(n.address, "patroni")).pending_restart ?? false),
  );
  expect(pending).toEqual(state.nodes.map(() => false));
}

async function expectNoLostWrite(writer: AckWriter): Promise<void> {
  const { state, secrets } = cluster;
  await writer.stop();
  expect(writer.ackedIds.length).toBeGreaterThan(20);
  const h = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  const leaderIp = state.nodes.find((n) => n.name === h.leader)!.address;
  expect(
    await missingIds({ host: leaderIp, port: PORTS.postgresPrimary, password: secrets.app }, writer.ackedIds),
  ).toEqual([]);
}

test("apply --profile fast on a norm cluster: Patroni, every Sentinel and every HAProxy take the fast timings, PostgreSQL is not restarted", async () => {
  const { state } = cluster;
  const fast = PROFILES.fast;
  const before = Object.fromEntries(state.nodes.map((n) => [n.name, postmasterStart(state, n.name)]));
  const writer = startWriter(1_000_000);
  await writer.waitForAcks(20, 30_000);
  const watch = downWatcher(cluster.state);
  const result = await apply({ ...loc, profile: "fast" }).finally(() => watch.stop());
  expect(await watch.stop()).toMatchObject({ maxDown: 0, seenDown: [] });
  const config = await patroniGet(state.nodes[0].address, "config");
  expect({ ttl: config.ttl, loop_wait: config.loop_wait, retry_timeout: config.retry_timeout }).toEqual({
    ttl: fast.patroni.ttl,
    loop_wait: fast.patroni.loopWait,
    retry_timeout: fast.patroni.retryTimeout,
  });
  for (const node of state.nodes) {
    const master = sentinelMaster(state, node.name);
    expect({
      node: node.name,
      downAfter: master["down-after-milliseconds"],
      failoverTimeout: master["failover-timeout"],
    }).toEqual({
      node: node.name,
      downAfter: String(fast.sentinel.downAfterMs),
      failoverTimeout: String(fast.sentinel.failoverTimeoutMs),
    });
    const cfg = onNode(state, node.name, ["cat", serverPaths().config["haproxy.cfg"]]);
    expect(cfg).toContain(`default-server inter ${fast.haproxy.interMs}ms`);
    expect(postmasterStart(state, node.name)).toBe(before[node.name]);
  }
  // Patroni's shared settings changed once; every node's HAProxy and Sentinel said what changed.
  const lines = result.changes.flatMap((c) => c.lines);
  expect(lines.filter((l) => l.startsWith("patroni: dynamic configuration set"))).toHaveLength(1);
  for (const c of result.changes) {
    expect(c.lines).toContain(`haproxy: reloaded with 3 server(s) per backend`);
    expect(
      c.lines.some(
        (l) => l.startsWith("sentinel: set") && l.includes(`down-after-milliseconds ${fast.sentinel.downAfterMs}`),
      ),
    ).toBe(true);
  }
  expect(result.state.applied.failoverProfile).toBe("fast");
  await expectNoLostWrite(writer);

  // Applied again, nothing changes.
  const again = await apply({ ...loc, profile: "fast" });
  expect(again.changes.flatMap((c) => c.lines)).toEqual([]);
}, 300_000);

test("after it, a power cut of the leader fails over within the fast profile's time", async () => {
  const { state, secrets } = cluster;
  const leader = (await waitHealthy(state, secrets)).leader!;
  const entry = state.nodes.find((n) => n.name !== leader)!;
  const writer = new AckWriter({
    host: entry.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 2_000_000,
    intervalMs: 20,
  }).start();
  writers.push(writer);
  await writer.waitForAcks(20, 30_000);
  const cutAt = Date.now();
  await killNode(leader, loc);
  await waitFor(loc, "a new leader", (h) => h.leader !== null && h.leader !== leader, 60_000);
  await writer.waitForAcks(10, 60_000);
  const oldIp = state.nodes.find((n) => n.name === leader)!.address;
  const resumed = writer.firstAckAfter(cutAt, oldIp)!.at;
  const fast = PROFILES.fast;
  // The lost leader's key lives ttl seconds; then a loop to promote and HAProxy's checks to see it.
  const budget =
    fast.patroni.ttl +
    fast.patroni.loopWait +
    (fast.haproxy.interMs * (fast.haproxy.fall + fast.haproxy.rise)) / 1000 +
    5;
  console.log(
    `failover after a power cut with the applied fast profile: ${((resumed - cutAt) / 1000).toFixed(1)} s (budget ${budget} s)`,
  );
  expect((resumed - cutAt) / 1000).toBeLessThan(budget);
  await startNode(leader, loc);
  // The node booted again: a new machine process, which the state file records.
  cluster = { ...cluster, state: loadCluster(loc).state };
  await expectNoLostWrite(writer);
}, 300_000);

/**
 * A plan change as Hetzner makes it: every machine resized (drain, clean power-off, new type, boot,
 * settle) from the last node to the first, then every node's refresh; the order read off what each
 * node logged of its own scripts must be core's sequence, one script at a time.
 */
async function expectResizedBySequence(
  result: Awaited<ReturnType<typeof apply>>,
  since: number,
  bootsBefore: Record<string, number | undefined>,
) {
  const { state } = loadCluster(loc);
  const steps = changeSequence({ stack: state.stack, running: result.from, wanted: result.to, refresh: true });
  expect(steps.filter((s) => s.kind === "resize").map((s) => s.node.name)).toEqual(
    [...state.nodes].reverse().map((n) => n.name),
  );
  expectLoggedInOrder(
    state.nodes.flatMap((n) => nodeStepLog(n, since)),
    expectedScripts(steps, () => true),
  );
  for (const node of state.nodes) {
    // A new machine process: the node was powered off and booted again, at its new type.
    expect({
      node: node.name,
      type: node.serverType,
      rebooted: node.machine.nspawnPid !== bootsBefore[node.name],
    }).toEqual({
      node: node.name,
      type: result.to.serverType,
      rebooted: true,
    });
  }
  cluster = { ...cluster, state };
}

const machinePids = () => Object.fromEntries(loadCluster(loc).state.nodes.map((n) => [n.name, n.machine.nspawnPid]));

test("apply --plan cx31 on a cx21 cluster: every machine resized, one at a time, then every node's shared_buffers, max_connections and Redis maxmemory follow", async () => {
  const since = Date.now();
  const pids = machinePids();
  const { writer, result, watched } = await applyUnderLoad({ plan: "cx31" }, 3_000_000);
  expect(watched.maxDown).toBeLessThanOrEqual(1);
  await expectResizedBySequence(result, since, pids);
  // Every node's PostgreSQL restarted (each was seen down, never two at once).
  expect(watched.seenDown.length).toBeGreaterThanOrEqual(2);
  await expectSizedFor(cluster.state, PLANS.cx31);
  expect(
    result.changes.filter((c) => c.lines.includes("postgres: restarted with the new parameters")).length,
  ).toBeGreaterThanOrEqual(2);
  await expectNoLostWrite(writer);
}, 600_000);

test("apply --plan cx21 back: resized one at a time again, then a lowered max_connections restarts the leader first, in place, then the replicas", async () => {
  const since = Date.now();
  const pids = machinePids();
  const { writer, result, watched } = await applyUnderLoad({ plan: "cx21" }, 3_500_000);
  expect(watched.maxDown).toBeLessThanOrEqual(1);
  await expectResizedBySequence(result, since, pids);
  // The first node visited saw the leader's lowered value and restarted it before anything else.
  expect(
    result.changes[0].lines.some((l) =>
      /^postgres: the leader \(.*\) lowers max_connections: restarting it in place first$/.test(l),
    ),
  ).toBe(true);
  await expectSizedFor(cluster.state, PLANS.cx21);
  await expectNoLostWrite(writer);
}, 600_000);

test("apply --synchronous-mode false turns synchronous replication off", async () => {
  const { state, secrets } = cluster;
  expect((await patroniGet(state.nodes[0].address, "config")).synchronous_mode).toBe(true);
  const writer = startWriter(4_000_000);
  await writer.waitForAcks(20, 30_000);
  await apply({ ...loc, synchronousMode: "false" });
  await writer.waitForAcks(20, 30_000);
  await expectNoLostWrite(writer);
  expect((await patroniGet(state.nodes[0].address, "config")).synchronous_mode).toBe(false);
  await waitFor(loc, "no synchronous standby", (h) => h.syncStandby === null && h.leader !== null, 30_000);
  expect((await waitHealthy(state, secrets)).healthy).toBe(true);
}, 180_000);

test("a rotated SSH key set: the new key logs in, the old one no longer does, and no node was ever without a working key", async () => {
  const { state } = cluster;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-rotate-"));
  const fresh: SshIdentity = { keyFile: path.join(dir, "id_ed25519"), knownHosts: sshIdentity(state.root).knownHosts };
  expect(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "rotated", "-f", fresh.keyFile]).status).toBe(
    0,
  );
  const freshPub = fs.readFileSync(`${fresh.keyFile}.pub`, "utf8").trim();
  const old = sshIdentity(state.root);
  const logsIn = async (id: SshIdentity, ip: string) =>
    (await sshScript(id, ip, "true\n", { timeoutMs: 15_000 })).code === 0;
  try {
    // Step 1: the new key is added (the runner's own stays).
    await apply({ ...loc, authorizedKeys: [freshPub] });
    for (const n of state.nodes)
      expect([n.name, await logsIn(fresh, n.address), await logsIn(old, n.address)]).toEqual([n.name, true, true]);

    // Step 2: the runner moves to the new key, and the old one goes; a watcher logs in with the
    // new key all along.
    let watching = true;
    const failures: string[] = [];
    const watcher = (async () => {
      while (watching) {
        for (const n of state.nodes) if (!(await logsIn(fresh, n.address))) failures.push(n.name);
        await sleep(200);
      }
    })();
    await apply({ ...loc, authorizedKeys: [freshPub], identity: fresh }).finally(() => (watching = false));
    await watcher;
    expect(failures).toEqual([]);
    for (const n of state.nodes)
      expect([n.name, await logsIn(fresh, n.address), await logsIn(old, n.address)]).toEqual([n.name, true, false]);
  } finally {
    // Give the runner its key back (later commands of a developer's session use it).
    await apply({
      ...loc,
      authorizedKeys: [freshPub, fs.readFileSync(`${old.keyFile}.pub`, "utf8").trim()],
      identity: fresh,
    }).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 300_000);

test("what Pulumi refuses is refused, by the same checkStackChange, before any node is touched", async () => {
  const since = Date.now();
  await expect(apply({ ...loc, stack: "dev" })).rejects.toThrow(/keeps its stack/);
  await expect(apply({ ...loc, plan: "cx99" })).rejects.toThrow(/plan/);
  // Keys Hetzner cannot change in place: refused naming the key, the value and what to do.
  await expect(apply({ ...loc, set: { location: "hel1" } })).rejects.toThrow(
    /madbase-state:location.*"hel1".*Hetzner cannot move a server/s,
  );
  await expect(apply({ ...loc, set: { subnetCidr: "10.42.99.0/24" } })).rejects.toThrow(/madbase-state:subnetCidr/);
  await expect(apply({ ...loc, set: { nodeCount: "5" } })).rejects.toThrow(/scale --nodes N/);
  const { state } = loadCluster(loc);
  expect(state.nodes.flatMap((n) => nodeStepLog(n, since))).toEqual([]);
}, 120_000);

/** Whether root here may resize a mounted ext4 file system (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE). */
function hostMayResize(): boolean {
  const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync("/proc/self/status", "utf8"))![1];
  return ((BigInt(`0x${eff}`) >> 24n) & 1n) === 1n;
}

// Last: where the file system cannot grow, every later refresh would stop at it.
test("a grown volume: the node sees the bigger device, and its file system grows online (or, without CAP_SYS_RESOURCE, the refresh stops saying why)", async () => {
  const { state, secrets } = cluster;
  const node = state.nodes[0].name;
  const sizeGb = () =>
    Number(onNode(state, node, ["df", "--output=size", "-B1G", serverPaths().volumeMount]).split("\n")[1].trim());
  const before = sizeGb();
  // A smaller one is refused before anything changes.
  await expect(apply({ ...loc, volumeGb: 9 })).rejects.toThrow(/cannot shrink|from 10 to 10240/);
  const applied = apply({ ...loc, volumeGb: 12 });
  if (hostMayResize()) {
    await applied;
    expect(sizeGb()).toBeGreaterThan(before);
  } else {
    // This machine's root lacks CAP_SYS_RESOURCE (containers often drop it): the kernel refuses
    // an online resize, and the refresh says so instead of going on as if it had grown.
    await expect(applied).rejects.toThrow(/resize2fs .* failed: .*Permission denied to resize filesystem/);
    expect(sizeGb()).toBe(before);
  }
  const device = Number(
    onNode(state, node, [
      "blockdev",
      "--getsize64",
      `/dev/disk/by-id/scsi-0HC_Volume_${state.nodes[0].machine.volumeId}`,
    ]),
  );
  expect(device).toBe(12 * 1024 ** 3);
  expect((await waitHealthy(state, secrets)).healthy).toBe(true);
}, 180_000);
