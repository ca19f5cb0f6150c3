/**
 * Package updates on a booted 3-node cluster, with newer versions served by a test apt repository
 * on the private bridge: re-versioned copies of every installed data package (their exact-version
 * dependencies kept consistent) and of one non-data package, in a suite whose Release matches
 * unattended-upgrades' security origin (Debian, Debian-Security, trixie-security).
 *  1. config-refresh brings the setup to the running nodes (holds, policy-rc.d, the script);
 *  2. an unattended run installs the non-data package and restarts no data daemon;
 *  3. under a writer through 5433 and one through 6379, and a watcher of every node every 0.5 s:
 *     a roll whose first node's PostgreSQL fails on start stops there, names it and leaves the
 *     others as they were; fixed, the same command resumes and finishes: every node on the newer
 *     versions with every daemon started after its install, no acknowledged write lost, never two
 *     nodes down, each PostgreSQL restarted once, the leader's node last.
 */
import { spawn, spawnSync, ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Redis from "ioredis";
import { DATA_SOURCES, PORTS, REDIS_USERS, nextMaintenanceNode, serverPaths } from "../../core";
import { UpResult, down, loadCluster, up } from "../../local/cluster";
import { ensureImage } from "../../local/image";
import { machineExec, machinePath } from "../../local/machine";
import { addNode } from "../../local/network";
import { changeCluster } from "../../local/sequence-runner";
import { LocalClusterState } from "../../local/state";
import { AckWriter, missingIds } from "../../local/writer";
import { REPO, finish, downWatcher, nodeStepLog, patroniGet, redisClient, sleep, testLocation } from "./harness";

const loc = testLocation(22);
const REPO_IP = "10.42.122.200";
const REPO_PORT = 8080;
const SUITE = "trixie-security";
/** The non-data package the unattended run must install (small, nothing pins its version). */
const OTHER = "less";
const SUFFIX = "+madbase1";

let server: ChildProcess | undefined;
let repoDir = "";
const writers: { stop: () => Promise<unknown> }[] = [];
let booted: UpResult | undefined;
// The cluster: booted once with more time than the harness's 200 s (this file's roll runs long
// anyway, and the machine may be loaded); removed after the test, with what it started.
beforeAll(async () => {
  await down(loc);
  booted = await up({ ...loc, stack: "prod", profile: "fast", timeoutMs: 540_000 });
}, 600_000);
afterAll(async () => {
  for (const w of writers) await w.stop();
  if (server?.pid && server.exitCode === null) process.kill(server.pid, "SIGTERM");
  if (repoDir) fs.rmSync(repoDir, { recursive: true, force: true });
  await finish(loc);
}, 180_000);
const cluster = () => {
  if (!booted) throw new Error(`the cluster of ${loc.networkId} did not start (see beforeAll)`);
  return booted;
};

function on(state: LocalClusterState, name: string, cmd: string, timeoutMs = 120_000) {
  const node = state.nodes.find((n) => n.name === name)!;
  const r = machineExec(node.machine, ["bash", "-c", cmd], { timeoutMs });
  return { code: r.code, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Data daemons' PIDs on a node: the postmaster's and each unit's main process. */
function daemonPids(state: LocalClusterState, name: string): Record<string, string> {
  const units = ["patroni", "etcd", "redis-server", "redis-sentinel", "haproxy", "pgbouncer"];
  const r = on(
    state,
    name,
    `head -n 1 ${serverPaths().pgDataDir}/postmaster.pid; for u in ${units.join(" ")}; do systemctl show -p MainPID --value $u; done`,
  );
  const [postmaster, ...rest] = r.out.split("\n");
  return Object.fromEntries([["postgres", postmaster], ...units.map((u, i) => [u, rest[i]])]);
}

function versions(state: LocalClusterState, name: string, pkgs: string[]): Record<string, string> {
  const r = on(state, name, `dpkg-query -W -f '\${Package} \${Version}\\n' ${pkgs.join(" ")}`);
  return Object.fromEntries(r.out.split("\n").map((l) => l.split(" ") as [string, string]));
}

/** `npm run ops -- ARGS` against this cluster, without blocking the writers' event loop. */
function ops(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO, "cli", "ops.ts"), ...args], {
      cwd: REPO,
      env: { ...process.env, MADBASE_LOCAL_ROOT: loc.root, MADBASE_LOCAL_NET: loc.networkId },
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("close", (code) => resolve({ code, out }));
  });
}

/**
 * The repository: each installed data package (every binary of DATA_SOURCES in the image) and
 * OTHER, from the image's downloaded .debs, with SUFFIX added to its version and to every exact
 * (`= V`) dependency on another re-versioned one. Returns the new version of each.
 */
async function buildRepository(dir: string): Promise<Record<string, { from: string; to: string }>> {
  const image = await ensureImage({ kind: "baked" });
  const archives = path.join(image, "var", "cache", "apt", "archives");
  const listed = spawnSync(
    "dpkg-query",
    ["--admindir", path.join(image, "var", "lib", "dpkg"), "-W", "-f", "${Package} ${Version} ${source:Package}\\n"],
    { encoding: "utf8" },
  ).stdout;
  const chosen = listed
    .trim()
    .split("\n")
    .map((l) => l.split(" "))
    .filter(([pkg, , source]) => (DATA_SOURCES as readonly string[]).includes(source) || pkg === OTHER);
  const bumped = Object.fromEntries(chosen.map(([pkg, v]) => [pkg, { from: v, to: `${v}${SUFFIX}` }]));
  const pool = path.join(dir, "pool");
  fs.mkdirSync(pool, { recursive: true });
  const debs = fs.readdirSync(archives);
  for (const [pkg, { from, to }] of Object.entries(bumped)) {
    const file = debs.find((f) => f.startsWith(`${pkg}_${from.replace(":", "%3a")}_`));
    if (!file) throw new Error(`no .deb of ${pkg} ${from} in ${archives}`);
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-deb-"));
    try {
      expect(spawnSync("dpkg-deb", ["-R", path.join(archives, file), work]).status).toBe(0);
      const control = path.join(work, "DEBIAN", "control");
      let text = fs.readFileSync(control, "utf8").replace(/^Version: .*$/m, `Version: ${to}`);
      for (const [other, v] of Object.entries(bumped))
        text = text.split(`${other} (= ${v.from})`).join(`${other} (= ${v.to})`);
      fs.writeFileSync(control, text);
      const out = path.join(pool, `${pkg}_${to.replace(":", "%3a")}_${file.split("_").pop()}`);
      const built = spawnSync("dpkg-deb", ["-Zgzip", "-z1", "--root-owner-group", "-b", work, out], {
        encoding: "utf8",
      });
      expect(built.stderr.replace(/dpkg-deb: warning: .*\n?/g, "")).toBe("");
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  const binDir = path.join(dir, "dists", SUITE, "main", "binary-amd64");
  fs.mkdirSync(binDir, { recursive: true });
  const index = spawnSync("dpkg-scanpackages", ["--multiversion", "pool", "/dev/null"], {
    cwd: dir,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  expect(index.status).toBe(0);
  fs.writeFileSync(path.join(binDir, "Packages"), index.stdout);
  const packages = fs.readFileSync(path.join(binDir, "Packages"));
  const sha = createHash("sha256").update(packages).digest("hex");
  fs.writeFileSync(
    path.join(dir, "dists", SUITE, "Release"),
    [
      "Origin: Debian",
      "Label: Debian-Security",
      `Suite: ${SUITE}`,
      `Codename: ${SUITE}`,
      `Date: ${new Date().toUTCString()}`,
      "Architectures: amd64",
      "Components: main",
      "SHA256:",
      ` ${sha} ${packages.length} main/binary-amd64/Packages`,
      "",
    ].join("\n"),
  );
  return bumped;
}

// Not passing yet, so not collected (jest runs *.test.ts; rename it back once it passes): the last run (01:41 UTC, issue 23) booted,
// refreshed and built the repository, then found no newer version on the nodes because the
// repository's server did not answer yet ("connection refused") and the update loop took apt's
// warning for success; the loop now waits for an update without errors. The roll below has not
// yet run on a booted cluster.
test("held data packages, an unattended run and a rolling maintenance that stops at a failing node and resumes", async () => {
  const { state } = cluster();
  const names = state.nodes.map((n) => n.name);
  const secrets = loadCluster(loc).secrets;
  const timings: string[] = [];
  const t0 = Date.now();

  // ---- 1. config-refresh brings the update setup to the running nodes.
  await changeCluster({ ...loc, verb: "apply" });
  timings.push(`refresh ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  for (const name of names) {
    const held = on(state, name, "apt-mark showhold").out.split("\n");
    expect(held).toEqual(
      expect.arrayContaining([
        "postgresql-17",
        "libpq5",
        "patroni",
        "etcd-server",
        "redis-server",
        "redis-tools",
        "haproxy",
        "pgbouncer",
        "pgbackrest",
      ]),
    );
    expect(held).not.toContain(OTHER);
    expect(
      on(
        state,
        name,
        "/usr/sbin/policy-rc.d patroni.service restart; echo $?; /usr/sbin/policy-rc.d ssh restart; echo $?",
      ).out,
    ).toBe("101\n0");
  }

  // ---- The repository on the bridge; the nodes' apt points at it only.
  repoDir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-maint-apt-"));
  const bumped = await buildRepository(repoDir);
  timings.push(`repository ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const ns = addNode(
    { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: 24, namespaces: {} },
    { name: "apt", privateIp: REPO_IP },
  );
  server = spawn(
    "ip",
    ["netns", "exec", ns, "python3", "-m", "http.server", String(REPO_PORT), "--bind", REPO_IP, "--directory", repoDir],
    {
      stdio: "ignore",
    },
  );
  for (const name of names) {
    const r = on(
      state,
      name,
      `mkdir -p /etc/apt/sources.disabled && mv /etc/apt/sources.list.d/* /etc/apt/sources.disabled/ 2>/dev/null; : >/etc/apt/sources.list; ` +
        `echo 'deb [trusted=yes] http://${REPO_IP}:${REPO_PORT}/ ${SUITE} main' >/etc/apt/sources.list.d/madbase-test.list; ` +
        `for i in $(seq 60); do apt-get -q update >/tmp/update.log 2>&1; grep -q '^Err:\\|^W: Failed' /tmp/update.log || break; sleep 1; done; cat /tmp/update.log; apt-cache policy postgresql-17 ${OTHER}; /usr/local/sbin/madbase-updates metrics && cat /var/lib/prometheus/node-exporter/madbase-updates.prom`,
    );
    expect(r.out).toContain(
      `madbase_updates_pending_since_timestamp_seconds{package="postgresql-17",installed="${bumped["postgresql-17"].from}",candidate="${bumped["postgresql-17"].to}",held="1",security="1"}`,
    );
    expect(r.out).toMatch(/madbase_updates_held_security [1-9]/);
    expect(r.out).toContain(`package="${OTHER}"`);
  }

  // ---- 2. An unattended run installs the non-data package and restarts no data daemon.
  const unattended = names[names.length - 1];
  const pidsBefore = daemonPids(state, unattended);
  const dataBefore = versions(state, unattended, ["postgresql-17", "patroni", "redis-server"]);
  const run = on(state, unattended, "unattended-upgrade -v 2>&1; echo exit=$?", 600_000);
  expect(run.out).toContain("exit=0");
  expect(versions(state, unattended, [OTHER])[OTHER]).toBe(bumped[OTHER].to);
  expect(versions(state, unattended, ["postgresql-17", "patroni", "redis-server"])).toEqual(dataBefore);
  expect(daemonPids(state, unattended)).toEqual(pidsBefore);
  timings.push(`unattended ${((Date.now() - t0) / 1000).toFixed(0)} s`);

  // ---- 3. The roll, under writers and the watcher.
  const leader0 = (
    (await patroniGet(state, state.nodes[0].address, "cluster")) as { members: { name: string; role: string }[] }
  ).members.find((m) => m.role === "leader")!.name;
  const failing = nextMaintenanceNode(names, leader0)!;
  const pidsAtStart = Object.fromEntries(names.map((n) => [n, daemonPids(state, n)]));
  const postmasters = Object.fromEntries(names.map((n) => [n, new Set<string>([pidsAtStart[n].postgres])]));
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const n of state.nodes) {
        const file = machinePath(n.machine, `${serverPaths().pgDataDir}/postmaster.pid`);
        try {
          const pid = fs.readFileSync(file!, "utf8").split("\n")[0];
          if (pid) postmasters[n.name].add(pid);
        } catch {
          /* between a stop and a start */
        }
      }
      await sleep(500);
    }
  })();
  const pgWriter = new AckWriter({
    host: state.nodes[0].address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 1,
    intervalMs: 20,
  }).start();
  writers.push(pgWriter);
  const redisAcks: { key: number; at: number }[] = [];
  let redisRunning = true;
  const redisLoop = (async () => {
    let client: Redis | undefined;
    for (let i = 1; redisRunning; i++) {
      try {
        if (!client) {
          client = redisClient(state, secrets.redis, state.nodes[0].address, PORTS.redisMaster);
          await client.connect();
        }
        if ((await client.set(`maint:${i}`, String(i))) === "OK") redisAcks.push({ key: i, at: Date.now() });
      } catch {
        client?.disconnect();
        client = undefined;
        await sleep(100);
      }
      await sleep(20);
    }
    client?.disconnect();
  })();
  writers.push({ stop: async () => ((redisRunning = false), await redisLoop) });
  const watch = downWatcher(state);
  const rollStart = Date.now();

  // The first node of the roll cannot start PostgreSQL again (a library it must preload is missing).
  const autoConf = `${serverPaths().pgDataDir}/postgresql.auto.conf`;
  on(state, failing, `echo "shared_preload_libraries = 'madbase_missing'" >>${autoConf}`);
  const failed = await ops(["maintenance", "--stack", state.stack, "--local"]);
  expect(failed.code).toBe(1);
  expect(failed.out).toContain(`the maintenance stopped at ${failing}`);
  expect(failed.out).toContain("start failed");
  for (const other of names.filter((n) => n !== failing)) {
    expect(versions(state, other, ["postgresql-17"])["postgresql-17"]).toBe(bumped["postgresql-17"].from);
    expect(daemonPids(state, other)).toEqual(pidsAtStart[other]);
  }
  timings.push(`failed roll ${((Date.now() - rollStart) / 1000).toFixed(0)} s`);

  // Fixed: Patroni starts it again; the same command resumes.
  on(state, failing, `sed -i '/madbase_missing/d' ${autoConf}`);
  for (let i = 0; i < 120; i++) {
    if ((await ops(["status", "--stack", state.stack, "--local"])).code === 0) break;
    await sleep(1000);
  }
  const resumed = await ops(["maintenance", "--stack", state.stack, "--local"]);
  const rollEnd = Date.now();
  expect({ code: resumed.code, tail: resumed.code === 0 ? "" : resumed.out.slice(-3000) }).toEqual({
    code: 0,
    tail: "",
  });
  await sleep(2000);
  polling = false;
  await poller;
  const seen = await watch.stop();
  await pgWriter.stop();
  redisRunning = false;
  await redisLoop;

  // Every node on the newer versions, every data daemon started after its install.
  for (const name of names) {
    const v = versions(
      state,
      name,
      Object.keys(bumped).filter((p) => p !== OTHER),
    );
    for (const [pkg, version] of Object.entries(v)) expect([name, pkg, version]).toEqual([name, pkg, bumped[pkg].to]);
    expect([name, on(state, name, "/usr/local/sbin/madbase-updates stale").out]).toEqual([name, ""]);
    expect(on(state, name, "apt-mark showhold").out).toContain("postgresql-17");
  }
  // Each PostgreSQL restarted once: two postmasters seen (the failing node's failed start may add one that never ran).
  for (const name of names.filter((n) => n !== failing)) expect([name, postmasters[name].size]).toEqual([name, 2]);
  expect(daemonPids(state, failing).postgres).not.toBe(pidsAtStart[failing].postgres);
  // Never two nodes down; the leader's node last.
  expect(seen.maxDown).toBeLessThanOrEqual(1);
  const starts = state.nodes
    .flatMap((n) => nodeStepLog(n, rollStart))
    .filter((e) => e.event === "start" && e.script === "node-maintain")
    .sort((a, b) => a.at - b.at)
    .map((e) => e.node);
  expect(starts[0]).toBe(failing);
  expect(starts[starts.length - 1]).toBe(leader0);
  // Zero acknowledged writes lost, through 5433 and 6379.
  const ids = pgWriter.ackedIds;
  expect(ids.length).toBeGreaterThan(100);
  for (const node of state.nodes) {
    let missing = ids;
    for (let i = 0; i < 40 && missing.length > 0; i++) {
      missing = await missingIds({ host: node.address, port: PORTS.postgres, password: secrets.app }, ids);
      if (missing.length > 0) await sleep(250);
    }
    expect({ node: node.name, missing: missing.length }).toEqual({ node: node.name, missing: 0 });
  }
  const admin = redisClient(state, secrets.redisAdmin, state.nodes[0].address, PORTS.redisMaster, REDIS_USERS.admin);
  await admin.connect();
  const values = await admin.mget(...redisAcks.map((a) => `maint:${a.key}`));
  admin.disconnect();
  const lostSets = redisAcks.filter((a, i) => values[i] !== String(a.key)).length;
  expect(redisAcks.length).toBeGreaterThan(100);
  expect(lostSets).toBe(0);

  const gap = (times: number[]) =>
    Math.max(
      ...[rollStart, ...times.filter((t) => t > rollStart && t < rollEnd), rollEnd].map((t, i, a) =>
        i ? t - a[i - 1] : 0,
      ),
    );
  console.log(
    `maintenance: ${timings.join(", ")}; roll (failed + resumed) ${((rollEnd - rollStart) / 1000).toFixed(0)} s; ` +
      `5433: ${ids.length} acknowledged, 0 lost, longest gap ${gap(pgWriter.acks.map((a) => a.at))} ms; ` +
      `6379: ${redisAcks.length} acknowledged, ${lostSets} lost, longest gap ${gap(redisAcks.map((a) => a.at))} ms; ` +
      `most nodes down at once ${seen.maxDown} (${seen.samples} samples); postmasters seen ${names.map((n) => `${n} ${postmasters[n].size}`).join(", ")}; ` +
      `order ${starts.join(" → ")}; load ${os
        .loadavg()
        .map((l) => l.toFixed(1))
        .join(" ")}\n${resumed.out}`,
  );
}, 3_600_000);
