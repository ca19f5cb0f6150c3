/**
 * The cluster forms from the rendered configuration: a leader with streaming replicas, one Redis
 * master with connected replicas, every HAProxy settled; writes through the entry points land on
 * the leader/master and reach every replica. Also: `status --json` and a second `up`.
 */
import { PORTS, serverPaths } from "../../core";
import * as fs from "node:fs";
import { machineExec, machineExecAsync } from "../../local/machine";
import { AckWriter } from "../../local/writer";
import { address, cli, redisClient, sharedCluster, sleep, sql } from "./harness";
import { SHARED_CLUSTER } from "../support/run-dir";

const loc = SHARED_CLUSTER;
/** The first three octets of the shared cluster's subnet: its nodes are .10, .11, .12. */
const NET = loc.subnetCidr.replace(/\.0\/24$/, "");
const cluster = sharedCluster({ breaks: false });

test("up ends healthy: one leader, replicas streaming, one Redis master, HAProxy settled on every node", () => {
  const h = cluster().health;
  expect(h.problems).toEqual([]);
  expect(h.nodes).toHaveLength(3);
  expect(h.nodes.filter((n) => n.role === "leader")).toHaveLength(1);
  // prod runs synchronous_mode: one replica is the synchronous standby.
  expect(h.nodes.filter((n) => n.role === "sync_standby")).toHaveLength(1);
  expect(h.nodes.filter((n) => n.role !== "leader").every((n) => n.streaming)).toBe(true);
  expect(h.nodes.filter((n) => n.redisRole === "master")).toHaveLength(1);
  for (const n of h.nodes) {
    expect(n.haproxy!.postgres_primary[h.leader!]).toBe("UP");
    expect(Object.values(n.haproxy!.postgres_primary).filter((s) => s === "UP")).toHaveLength(1);
    expect(Object.values(n.haproxy!.redis_master).filter((s) => s === "UP")).toHaveLength(1);
  }
});

test("a write through any node's 5433 lands on the leader and reaches every replica", async () => {
  const { state, secrets, health } = cluster();
  const leaderIp = address(state, health.leader!);
  const entry = state.nodes.find((n) => n.name !== health.leader)!; // not the leader's own HAProxy
  const writer = new AckWriter({
    host: entry.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 1,
  }).start();
  await writer.waitForAcks(5, 30_000);
  await writer.stop();
  const [row] = await sql<{ server: string }>(
    state,
    secrets.app,
    entry.address,
    PORTS.postgresPrimary,
    "SELECT host(inet_server_addr()) AS server",
  );
  expect(row.server).toBe(leaderIp);
  const ids = writer.ackedIds;
  for (const node of state.nodes) {
    let present = 0;
    for (let i = 0; i < 40 && present < ids.length; i++) {
      const rows = await sql<{ n: string }>(
        state,
        secrets.app,
        node.address,
        PORTS.postgres,
        "SELECT count(*) AS n FROM acked_writes WHERE id = ANY($1::bigint[])",
        [ids],
      );
      present = Number(rows[0].n);
      if (present < ids.length) await sleep(250);
    }
    expect({ node: node.name, present }).toEqual({ node: node.name, present: ids.length });
  }
}, 90_000);

test("a SET through 6379 lands on the Redis master and reaches the replicas", async () => {
  const { state, secrets, health } = cluster();
  const entry = state.nodes[2];
  const viaHaproxy = redisClient(state, secrets.redis, entry.address);
  await viaHaproxy.connect();
  await viaHaproxy.set("forms:key", "forms-value");
  const info = await viaHaproxy.info("replication");
  // Two replicas acknowledge the write before we look at them.
  const acked = (await viaHaproxy.call("WAIT", "2", "5000")) as number;
  viaHaproxy.disconnect();
  expect(info).toContain("role:master");
  expect(acked).toBe(2);
  for (const node of state.nodes) {
    const direct = redisClient(state, secrets.redis, node.address, PORTS.redis);
    await direct.connect();
    const [value, role] = [await direct.get("forms:key"), await direct.info("replication")];
    direct.disconnect();
    expect({ node: node.name, value }).toEqual({ node: node.name, value: "forms-value" });
    expect(role).toContain(node.name === health.redisMaster ? "role:master" : "role:slave");
  }
}, 60_000);

test("every node booted the Hetzner way: cloud-init done, every unit active, PostgreSQL's data on the volume, ready", () => {
  for (const n of cluster().health.nodes) {
    expect({
      node: n.name,
      running: n.running,
      cloudInit: n.cloudInit,
      ready: n.ready,
      volume: n.volumeMounted,
    }).toEqual({
      node: n.name,
      running: true,
      cloudInit: "done",
      ready: true,
      volume: true,
    });
    for (const p of Object.keys(n.pids))
      expect({ node: n.name, process: p, pid: n.pids[p as keyof typeof n.pids] }).toEqual({
        node: n.name,
        process: p,
        pid: expect.any(Number),
      });
    const node = cluster().state.nodes.find((x) => x.name === n.name)!;
    // The data directory's file system is the volume's, not the root disk's.
    const mount = machineExec(node.machine, [
      "findmnt",
      "-n",
      "-o",
      "TARGET,SOURCE",
      "--target",
      serverPaths().pgDataDir,
    ]);
    expect(mount.stdout.trim().split(/\s+/)[0]).toBe(serverPaths().volumeMount);
    expect(mount.stdout).not.toMatch(/overlay/);
  }
});

test("npm run local -- ssh runs a command on a node over SSH, as root", () => {
  const node = cluster().state.nodes[1];
  const r = cli(["ssh", node.name, "--", "id", "-un", "&&", "hostname"], { loc });
  expect(r.stderr).toBe("");
  expect(r.stdout.trim().split("\n")).toEqual(["root", node.name]);
});

test("status --json names every node's role and processes, and the URLs", () => {
  const r = cli(["status", "--json"], { loc });
  const out = JSON.parse(r.stdout);
  expect(out.problems).toEqual([]);
  expect(r.code).toBe(0);
  expect(out.nodes.map((n: { name: string }) => n.name)).toEqual(cluster().state.nodes.map((n) => n.name));
  for (const n of out.nodes) {
    expect(n.address).toMatch(new RegExp(`^${NET.replace(/\./g, "\\.")}\\.1[0-2]$`));
    expect(["leader", "sync_standby", "replica"]).toContain(n.role);
    for (const p of ["etcd", "patroni", "postgres", "redis", "sentinel", "haproxy"])
      expect(n.pids[p]).toBeGreaterThan(1);
  }
  for (const n of out.nodes) expect([n.cloudInit, n.ready]).toEqual(["done", true]);
  // Debian 13's daemons, as the nodes report them.
  expect(out.versions).toEqual({
    postgres: expect.stringMatching(/^17\.\d+$/),
    patroni: expect.stringMatching(/^4\.\d+\.\d+$/),
    etcd: expect.stringMatching(/^3\.5\.\d+$/),
    redis: expect.stringMatching(/^8\.\d+\.\d+$/),
    haproxy: expect.stringMatching(/^3\.0\.\d+$/),
    pgbackrest: expect.stringMatching(/^2\.55\.\d+$/),
  });
  expect(out.databaseUrl).toBe(`postgresql://madbase:${cluster().secrets.app}@${NET}.10:5433/madbase?sslmode=require`);
  expect(out.redisUrl).toBe(`redis://app:${cluster().secrets.redis}@${NET}.10:6379/0`);
});

test("a second up says the cluster is already running and starts nothing", () => {
  const before = cli(["status", "--json"], { loc });
  const r = cli(["up", "--profile", "fast"], { loc });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("already running");
  expect(r.stderr).toContain("npm run local -- status");
  expect(r.stderr).toContain("npm run local -- down");
  const after = cli(["status", "--json"], { loc });
  expect(JSON.parse(after.stdout).nodes.map((n: { pids: unknown }) => n.pids)).toEqual(
    JSON.parse(before.stdout).nodes.map((n: { pids: unknown }) => n.pids),
  );
}, 60_000);

test("a command run in a node past its timeout is ended inside the node, even one that ignores SIGTERM; one that ends answers with its exit code", async () => {
  const m = cluster().state.nodes[0].machine;
  // Processes anywhere on this machine with exactly this command line: a command that outlives
  // nsenter is reparented outside the node's tree.
  const running = (argv: string[]) =>
    fs.readdirSync("/proc").filter((pid) => {
      try {
        return (
          /^\d+$/.test(pid) && fs.readFileSync(`/proc/${pid}/cmdline`, "utf8") === argv.map((a) => `${a}\0`).join("")
        );
      } catch {
        return false; // ended meanwhile
      }
    });
  // A hung command that does not stop at SIGTERM (this shell ignores it), as a stuck client can be.
  const hung = (seconds: number) => ["sh", "-c", `trap '' TERM; sleep ${seconds}`];
  expect((await machineExecAsync(m, hung(987), { timeoutMs: 1000 })).code).toBeNull();
  expect(running(hung(987))).toEqual([]);
  expect(machineExec(m, hung(986), { timeoutMs: 1000 }).code).toBeNull();
  expect(running(hung(986))).toEqual([]);
  expect((await machineExecAsync(m, ["sh", "-c", "exit 3"], { timeoutMs: 5000 })).code).toBe(3);
  expect(machineExec(m, ["true"], { timeoutMs: 5000 }).code).toBe(0);
  // A command's own timeout, before ours, is its answer (124), not a kill.
  expect(machineExec(m, ["timeout", "0.2", "sleep", "5"], { timeoutMs: 5000 }).code).toBe(124);
  expect((await machineExecAsync(m, ["timeout", "0.2", "sleep", "5"], { timeoutMs: 5000 })).code).toBe(124);
});

cluster.handBack();
