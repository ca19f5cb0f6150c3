/**
 * Scaling a running cluster on the real daemons (fast profile), with a writer recording every
 * acknowledged write through HAProxy the whole time: 3 → 5 → 3 (the second with the PostgreSQL
 * leader and the Redis master on leaving nodes), 3 → 5 again through the scale API, and 1 → 3.
 * After each step: etcd has exactly N voting members, Patroni N members with one leader, every
 * Sentinel the quorum and peers of N nodes, and every HAProxy lists exactly the live nodes; no
 * acknowledged write is missing. Also: cloud-init's guard, run in a fresh namespace against the
 * live etcd, leaves a joining node's daemons to node-join.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import Redis from "ioredis";
import { BACKUP_SCRIPT, PORTS, describeCluster, renderNode, serverPaths } from "../../core";
import { loadStackSettings } from "../../cli/render";
import { Location, down, loadCluster, up } from "../../local/cluster";
import { assertHostLink } from "../../local/health";
import { addNode, removeNode } from "../../local/network";
import { haproxyServers, parseInfo } from "../../local/probes";
import { localPathsOf } from "../../local/layout";
import { ScaleInProgressError, scale } from "../../local/scale";
import { LocalClusterState } from "../../local/state";
import { AckWriter, missingIds } from "../../local/writer";
import { SCALE_PATH, buildScaleApi } from "../../scale/api";
import { LocalBackend } from "../../scale/localBackend";
import { REPO, redisClient, sleep } from "./harness";

/** This file's own network and subnet, apart from every other test's and a developer's cluster. */
const loc: Required<Location> & { subnetCidr: string } = { root: path.join(os.tmpdir(), "madbase-scale-test"), networkId: "sc", subnetCidr: "10.42.51.0/24" };
const TOKEN = "scale-test-token-0123456789abcdef";

const writers: AckWriter[] = [];
const apps: { close: () => Promise<unknown> }[] = [];

async function startCluster(stack: string, nodes: number) {
  await down(loc);
  return up({ ...loc, stack, nodes, profile: "fast", timeoutMs: 180_000 });
}

function startWriter(state: LocalClusterState, password: string, firstId: number): AckWriter {
  // Through the first node's HAProxy: node 1 stays whatever the count.
  const writer = new AckWriter({ host: state.nodes[0].address, port: PORTS.postgresPrimary, password, firstId, intervalMs: 20 }).start();
  writers.push(writer);
  return writer;
}

/** `npm run local -- ARGS` against this file's cluster, without blocking the writer's event loop. */
function localCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO, "cli", "local.ts"), ...args], {
      cwd: REPO,
      env: { ...process.env, MADBASE_LOCAL_ROOT: loc.root, MADBASE_LOCAL_NET: loc.networkId },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The longest time without an acknowledged write between `from` and `to` (ms since epoch). */
function longestGap(w: AckWriter, from: number, to: number): number {
  const times = [from, ...w.acks.map((a) => a.at).filter((t) => t > from && t < to), to];
  return Math.max(...times.slice(1).map((t, i) => t - times[i]));
}

/** A command to a node's Sentinel (no password: it listens on the private network only). */
async function sentinelCall(ip: string, ...args: string[]): Promise<unknown> {
  assertHostLink(loadCluster(loc).state);
  const client = new Redis({ host: ip, port: PORTS.sentinel, lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on("error", () => undefined);
  await client.connect();
  try {
    return await client.call(args[0], ...args.slice(1));
  } finally {
    client.disconnect();
  }
}

async function sentinelMaster(ip: string, master: string): Promise<Record<string, string>> {
  const flat = (await sentinelCall(ip, "SENTINEL", "MASTER", master)) as string[];
  return Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]]] : [])));
}

async function patroniLeader(ip: string): Promise<string | undefined> {
  const body = (await (await fetch(`http://${ip}:${PORTS.patroni}/cluster`)).json()) as { members: { name: string; role: string }[] };
  return body.members.find((m) => m.role === "leader")?.name;
}

/** What each daemon reports about membership, for the assertions after each step. */
async function membership() {
  const { state, secrets } = loadCluster(loc);
  const names = state.nodes.map((n) => n.name);
  const first = state.nodes[0].address;
  const etcd = (await (await fetch(`http://${first}:${PORTS.etcdClient}/v3/cluster/member/list`, { method: "POST", body: "{}" })).json()) as {
    members: { name: string; isLearner?: boolean }[];
  };
  const patroni = (await (await fetch(`http://${first}:${PORTS.patroni}/cluster`)).json()) as { members: { name: string; role: string; state: string }[] };
  const sentinels = await Promise.all(state.nodes.map((n) => sentinelMaster(n.address, state.clusterName)));
  const haproxy = await Promise.all(state.nodes.map((n) => haproxyServers(localPathsOf(state, n).haproxySocket)));
  const redisRoles = await Promise.all(
    state.nodes.map(async (n) => {
      const c = redisClient(state, secrets.redis, n.address, PORTS.redis);
      await c.connect();
      const role = parseInfo(await c.info("replication")).role;
      c.disconnect();
      return role;
    }),
  );
  return {
    names,
    etcd: { members: etcd.members.map((m) => m.name).sort(), learners: etcd.members.filter((m) => m.isLearner).length },
    patroni: {
      members: patroni.members.map((m) => m.name).sort(),
      leaders: patroni.members.filter((m) => m.role === "leader").length,
      running: patroni.members.every((m) => ["running", "streaming"].includes(m.state)),
    },
    sentinels: sentinels.map((s) => ({ quorum: Number(s.quorum), otherSentinels: Number(s["num-other-sentinels"]), replicas: Number(s["num-slaves"]) })),
    haproxy: haproxy.map((servers) => {
      const byBackend: Record<string, string[]> = {};
      for (const s of servers ?? []) (byBackend[s.proxy] ??= []).push(s.server);
      return Object.fromEntries(["postgres_primary", "postgres_replicas", "redis_master"].map((b) => [b, (byBackend[b] ?? []).sort()]));
    }),
    redisMasters: redisRoles.filter((r) => r === "master").length,
  };
}

/** Exactly N members everywhere; waits for Patroni's keys of departed members to expire (their TTL). */
async function expectMembers(n: number): Promise<void> {
  const expected = (names: string[]) => ({
    names,
    etcd: { members: [...names].sort(), learners: 0 },
    patroni: { members: [...names].sort(), leaders: 1, running: true },
    sentinels: names.map(() => ({ quorum: Math.floor(n / 2) + 1, otherSentinels: n - 1, replicas: n - 1 })),
    haproxy: names.map(() => ({ postgres_primary: [...names].sort(), postgres_replicas: [...names].sort(), redis_master: [...names].sort() })),
    redisMasters: 1,
  });
  let last: Awaited<ReturnType<typeof membership>> | undefined;
  for (let i = 0; i < 60; i++) {
    last = await membership();
    if (JSON.stringify(last) === JSON.stringify(expected(last.names))) break;
    await sleep(1000);
  }
  expect(last!.names).toHaveLength(n);
  expect(last).toEqual(expected(last!.names));
}

/** Every acknowledged write is on the leader and on every replica. */
async function expectNoLostWrite(w: AckWriter): Promise<void> {
  const { state, secrets } = loadCluster(loc);
  const ids = w.ackedIds;
  expect(ids.length).toBeGreaterThan(100);
  for (const node of state.nodes) {
    let missing = ids;
    for (let i = 0; i < 40 && missing.length > 0; i++) {
      missing = await missingIds({ host: node.address, port: PORTS.postgres, password: secrets.app }, ids);
      if (missing.length > 0) await sleep(250);
    }
    expect({ node: node.name, missing }).toEqual({ node: node.name, missing: [] });
  }
}

function report(label: string, result: { seconds: number; steps: { step: string; seconds: number }[] }, gap: number, w: AckWriter) {
  console.log(
    `${label}: ${result.seconds.toFixed(1)} s, longest write gap ${gap} ms, ${w.acks.length} acknowledged writes so far, ${w.failures} failed attempts\n  ` +
      result.steps.map((s) => `${s.step} ${s.seconds.toFixed(1)} s`).join("\n  "),
  );
}

afterAll(async () => {
  await Promise.all(writers.map((w) => w.stop()));
  await Promise.all(apps.map((a) => a.close()));
  if (process.env.MADBASE_TEST_KEEP === "1") console.log(`MADBASE_TEST_KEEP=1: cluster left running under ${loc.root}`);
  else await down(loc);
}, 180_000);

describe("prod, 3 → 5 → 3 → 5 (scale API)", () => {
  let w: AckWriter;
  beforeAll(async () => {
    const { state, secrets } = await startCluster("prod", 3);
    w = startWriter(state, secrets.app, 1);
    // A fresh fast-profile cluster on a loaded machine may still hold an election; measure after it.
    await w.waitForAcks(20, 120_000);
  }, 300_000);

  test("npm run local -- scale refuses what the stack does not allow, and changes nothing", async () => {
    const ha = await localCli(["scale", "--nodes", "1"]);
    expect(ha.code).toBe(2);
    expect(ha.stderr).toMatch(/nodeCount: 1 is not allowed; this stack requires HA \(requireHa: true\)/);
    const even = await localCli(["scale", "--nodes", "4"]);
    expect(even.code).toBe(2);
    expect(even.stderr).toMatch(/use one of 1, 3, 5, 7/);
    const missing = await localCli(["scale"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/scale needs --nodes N/);
    await expectMembers(3);
  }, 120_000);

  test("3 → 5: new nodes join one at a time; every acknowledged write kept", async () => {
    await expectMembers(3);
    const t0 = Date.now();
    const running = scale({ ...loc, nodes: 5 });
    // One scale at a time per cluster.
    await expect(scale({ ...loc, nodes: 5 })).rejects.toThrow(ScaleInProgressError);
    const result = await running;
    const gap = longestGap(w, t0, Date.now());
    report("3 → 5", result, gap, w);
    expect(result.health.healthy).toBe(true);
    await expectMembers(5);
    // The new nodes are rendered like the first ones: the same backup repository, and its script.
    const { state } = loadCluster(loc);
    const repoOf = (name: string) => /^repo1-path=.*$/m.exec(fs.readFileSync(localPathsOf(state, { name }).config["pgbackrest.conf"], "utf8"))?.[0];
    expect(repoOf("madbase-prod-5")).toBe(repoOf("madbase-prod-1"));
    expect(fs.existsSync(path.join(localPathsOf(state, { name: "madbase-prod-5" }).scriptDir, BACKUP_SCRIPT))).toBe(true);
    await w.waitForAcks(20, 30_000);
    await expectNoLostWrite(w);
  }, 900_000);

  test("cloud-init's guard in a new server's namespace: etcd answers without it, so it starts nothing itself", async () => {
    const { state } = loadCluster(loc);
    const settings = loadStackSettings("prod", { nodeCount: 7, subnetCidr: loc.subnetCidr });
    const { topology, options } = describeCluster(settings);
    const node = topology.nodes[6];
    const { secrets } = loadCluster(loc);
    const userData = yaml.load(renderNode({ topology, node, options, secrets, paths: serverPaths() })["user-data.yaml"]) as { runcmd: unknown[] };
    const guard = userData.runcmd.find((c): c is string => typeof c === "string" && c.includes("member list"))!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-guard-"));
    const net = { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: 24, namespaces: {} };
    addNode(net, { name: node.name, privateIp: node.privateIp });
    try {
      fs.writeFileSync(path.join(dir, "systemctl"), `#!/bin/sh\necho "systemctl $*"\n`, { mode: 0o755 });
      const run = (ns: string) =>
        spawnSync("ip", ["netns", "exec", ns, "sh", "-c", guard], { env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8", timeout: 60_000 });
      const joining = run(`${state.networkId}-${node.privateIp.split(".")[3]}`);
      expect(joining.stdout.trim()).toBe(`${node.name} joins a running cluster: node-join starts etcd, Patroni, Redis and Sentinel`);
      // A member of the cluster (node 2, as if it rebooted into cloud-init) starts its daemons.
      const memberGuard = (yaml.load(renderNode({ topology, node: topology.nodes[1], options, secrets, paths: serverPaths() })["user-data.yaml"]) as { runcmd: unknown[] }).runcmd.find(
        (c): c is string => typeof c === "string" && c.includes("member list"),
      )!;
      const member = spawnSync("ip", ["netns", "exec", state.nodes[1].namespace, "sh", "-c", memberGuard], { env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8", timeout: 60_000 });
      expect(member.stdout).toContain("systemctl restart etcd");
    } finally {
      removeNode(net, { name: node.name, privateIp: node.privateIp });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  test("5 → 3 while a leaving node leads PostgreSQL and another is the Redis master: hand-off first, no acknowledged write lost", async () => {
    const { state, secrets } = loadCluster(loc);
    const [n1, , , n4, n5] = state.nodes;
    const patroni = (p: string, method: string, body: unknown) =>
      fetch(`http://${n1.address}:${PORTS.patroni}/${p}`, {
        method,
        headers: { authorization: `Basic ${Buffer.from(`patroni:${secrets.patroniRest}`).toString("base64")}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    // synchronous_mode only switches over to the sync standby: lift it for the move, then restore it.
    await patroni("config", "PATCH", { synchronous_mode: false });
    await sleep(5000);
    const leader = await patroniLeader(n1.address);
    if (leader !== n5.name) expect((await patroni("switchover", "POST", { leader, candidate: n5.name })).status).toBe(200);
    await patroni("config", "PATCH", { synchronous_mode: true });
    // Redis: only node 4 may be promoted, then everyone may again.
    const others = state.nodes.filter((n) => n.name !== n4.name);
    const setPriority = async (value: string) => {
      for (const n of others) {
        const c = redisClient(state, secrets.redis, n.address, PORTS.redis);
        await c.connect();
        await c.config("SET", "replica-priority", value);
        c.disconnect();
      }
    };
    await setPriority("0");
    await sentinelCall(n1.address, "SENTINEL", "FAILOVER", state.clusterName);
    for (let i = 0; i < 30 && ((await sentinelCall(n1.address, "SENTINEL", "get-master-addr-by-name", state.clusterName)) as string[])[0] !== n4.address; i++) {
      await sleep(1000);
    }
    await setPriority("100");
    await expectMembers(5);
    const before = (await membership()).names;
    expect(before).toHaveLength(5);
    expect(await patroniLeader(n1.address)).toBe(n5.name);

    const t0 = Date.now();
    const handoff: string[] = [];
    const result = await scale({ ...loc, nodes: 3, onProgress: (line) => line.includes("[leadership-handoff") && handoff.push(line.trim()) });
    const gap = longestGap(w, t0, Date.now());
    report("5 → 3 (leader and Redis master leaving)", result, gap, w);
    console.log(`leadership-handoff:\n  ${handoff.join("\n  ")}`);
    expect(result.health.healthy).toBe(true);
    expect(["madbase-prod-1", "madbase-prod-2", "madbase-prod-3"]).toContain(result.health.leader);
    expect(["madbase-prod-1", "madbase-prod-2", "madbase-prod-3"]).toContain(result.health.redisMaster);
    await expectMembers(3);
    // The removed nodes' namespaces are gone and the state file lists three nodes.
    const ns = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout;
    expect(ns).not.toMatch(new RegExp(`^${loc.networkId}-1[34]\\b`, "m"));
    expect(loadCluster(loc).state.nodes.map((n) => n.name)).toEqual(["madbase-prod-1", "madbase-prod-2", "madbase-prod-3"]);
    await w.waitForAcks(20, 30_000);
    await expectNoLostWrite(w);
  }, 900_000);

  test("the scale API, local backend: auth and validation, then a real 3 → 5 as a job", async () => {
    const { app, jobs } = buildScaleApi({ backend: new LocalBackend(loc), token: TOKEN });
    apps.push(app);
    const base = await app.listen({ host: "127.0.0.1", port: 0 });
    const call = (method: string, p: string, body?: unknown, token: string | null = TOKEN) =>
      fetch(`${base}${p}`, {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    expect((await call("POST", SCALE_PATH, { target_db_count: 5 }, null)).status).toBe(401);
    expect((await call("POST", SCALE_PATH, { target_db_count: 4 })).status).toBe(400);
    expect(await (await call("POST", SCALE_PATH, { target_db_count: 1, min_ha_nodes: true })).json()).toMatchObject({ field: "target_db_count" });

    const t0 = Date.now();
    const accepted = await call("POST", SCALE_PATH, { target_db_count: 5, min_ha_nodes: true });
    expect(accepted.status).toBe(202);
    const { job_id: id } = (await accepted.json()) as { job_id: string };
    expect((await call("POST", SCALE_PATH, { target_db_count: 3 })).status).toBe(409);
    await jobs.idle();
    const job = (await (await call("GET", `${SCALE_PATH}/${id}`)).json()) as { state: string; from: number; target: number; log: string[]; error: string | null };
    console.log(`scale API job ${id}: ${job.state}, longest write gap ${longestGap(w, t0, Date.now())} ms\n  ${job.log.slice(-3).join("\n  ")}`);
    expect(job).toMatchObject({ state: "succeeded", from: 3, target: 5, error: null });
    expect(job.log.join("\n")).toMatch(/madbase-prod-4: node-join[\s\S]*madbase-prod-5: node-join[\s\S]*healthy/);
    await expectMembers(5);
    await w.waitForAcks(20, 30_000);
    await w.stop();
    await expectNoLostWrite(w);
  }, 900_000);
});

describe("dev, 1 → 3", () => {
  test("a lone dev node becomes a 3-node cluster in place; every acknowledged write kept", async () => {
    const { state, secrets } = await startCluster("dev", 1);
    const w = startWriter(state, secrets.app, 10_000_000);
    await w.waitForAcks(20, 120_000);
    const t0 = Date.now();
    const result = await scale({ ...loc, nodes: 3 });
    const gap = longestGap(w, t0, Date.now());
    report("1 → 3 (dev)", result, gap, w);
    expect(result.health.healthy).toBe(true);
    expect(result.health.leader).toBe("madbase-dev-1");
    await expectMembers(3);
    await w.waitForAcks(20, 30_000);
    await w.stop();
    await expectNoLostWrite(w);
  }, 900_000);
});
