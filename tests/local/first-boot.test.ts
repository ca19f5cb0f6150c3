/**
 * The first boot as Hetzner runs it, on a single dev node each time:
 *  - the Hetzner way: a node booted from the base image (what Hetzner's debian-13 holds, none of
 *    our packages), so cloud-init installs every package from an apt repository this test serves
 *    on the private bridge, then runs the first boot;
 *  - a node whose volume never attached: its first boot fails at the mount, PostgreSQL never
 *    starts (not even on a later start of Patroni), and `status` says why.
 */
import { spawn, spawnSync, ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { serverPaths } from "../../core";
import { down, waitHealthy } from "../../local/cluster";
import { ensureImage } from "../../local/image";
import { machineExec } from "../../local/machine";
import { addNode } from "../../local/network";
import { probeNode } from "../../local/node-probe";
import { bootCluster, cli, finish, sleep, testLocation } from "./harness";

const loc = testLocation(10);
const REPO_IP = "10.42.110.200";
const REPO_PORT = 8080;

afterAll(async () => {
  await finish(loc);
}, 120_000);

describe("the Hetzner way: cloud-init installs the packages", () => {
  let server: ChildProcess | undefined;
  let repoDir = "";
  const requests: string[] = [];

  afterAll(async () => {
    if (server?.pid && server.exitCode === null) process.kill(server.pid, "SIGTERM");
    await down(loc);
    if (repoDir) fs.rmSync(repoDir, { recursive: true, force: true });
  }, 120_000);

  test("a node booted from the base image installs every package from the repository, finishes its first boot and serves", async () => {
    // The repository: every package the baked image downloaded for the node's package list.
    const baked = await ensureImage({ kind: "baked" });
    const debs = fs.readdirSync(path.join(baked, "var", "cache", "apt", "archives")).filter((f) => f.endsWith(".deb"));
    expect(debs.some((f) => f.startsWith("patroni_"))).toBe(true);
    repoDir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-apt-"));
    for (const f of debs)
      fs.copyFileSync(path.join(baked, "var", "cache", "apt", "archives", f), path.join(repoDir, f));
    const index = spawnSync("dpkg-scanpackages", ["--multiversion", ".", "/dev/null"], {
      cwd: repoDir,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    expect(index.status).toBe(0);
    fs.writeFileSync(path.join(repoDir, "Packages"), index.stdout);

    const result = await bootCluster({
      ...loc,
      stack: "dev",
      nodes: 1,
      profile: "fast",
      imageKind: "base",
      timeoutMs: 600_000,
      // The repository answers on the private bridge before the node boots, as Debian's mirror
      // would on Hetzner.
      afterNetwork: (state) => {
        const ns = addNode(
          { id: state.networkId, hub: `${state.networkId}-hub`, subnetPrefix: 24, namespaces: {} },
          { name: "apt", privateIp: REPO_IP },
        );
        server = spawn(
          "ip",
          [
            "netns",
            "exec",
            ns,
            "python3",
            "-m",
            "http.server",
            String(REPO_PORT),
            "--bind",
            REPO_IP,
            "--directory",
            repoDir,
          ],
          {
            stdio: ["ignore", "ignore", "pipe"],
          },
        );
        server.stderr!.on("data", (chunk: Buffer) =>
          requests.push(
            ...chunk
              .toString()
              .split("\n")
              .filter((l) => l.includes("GET ")),
          ),
        );
      },
      extraUserData: () =>
        [
          "apt:",
          "  preserve_sources_list: false",
          "  sources_list: |",
          `    deb [trusted=yes] http://${REPO_IP}:${REPO_PORT}/ ./`,
          "",
        ].join("\n"),
    });
    const node = result.state.nodes[0];
    const h = result.health.nodes[0];
    expect([h.cloudInit, h.ready, h.volumeMounted]).toEqual(["done", true, true]);
    // The base image had none of them: cloud-init installed them from this test's repository.
    expect(fs.existsSync(path.join(await ensureImage({ kind: "base" }), "usr", "bin", "patroni"))).toBe(false);
    const installed = machineExec(node.machine, [
      "dpkg-query",
      "-W",
      "-f",
      "${Package} ${Status}\\n",
      "patroni",
      "postgresql-17",
      "etcd-server",
      "redis-server",
      "haproxy",
      "pgbackrest",
    ]);
    expect(
      installed.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[0] + " " + l.split(" ").slice(-1)[0])
        .sort(),
    ).toEqual(
      ["etcd-server", "haproxy", "patroni", "pgbackrest", "postgresql-17", "redis-server"].map((p) => `${p} installed`),
    );
    // dpkg-scanpackages names files ./patroni_….deb, so apt asks for /./patroni_….deb.
    expect(requests.some((r) => /GET \S*\/patroni_[^ ]+\.deb/.test(r))).toBe(true);
    expect(result.health.leader).toBe(node.name);
  }, 900_000);
});

describe("a node whose volume never attached", () => {
  afterAll(async () => {
    await down(loc);
  }, 120_000);

  test("fails its first boot at the mount, never starts PostgreSQL, and status says why", async () => {
    const name = "madbase-dev-1";
    const result = await bootCluster({
      ...loc,
      stack: "dev",
      nodes: 1,
      profile: "fast",
      withoutVolume: [name],
      waitHealthy: false,
    });
    const node = result.state.nodes[0];
    // The mount script looks for the volume for two minutes (Hetzner attaches it after boot).
    let probe = await probeNode(node.machine);
    for (const deadline = Date.now() + 240_000; probe.cloudInit !== "error" && Date.now() < deadline;) {
      await sleep(2000);
      probe = await probeNode(node.machine);
    }
    expect(probe.cloudInit).toBe("error");
    expect(probe.ready).toBe(false);
    expect(probe.volumeMounted).toBe(false);
    expect(probe.postmasterPid).toBeNull();
    expect(probe.units.patroni.state).not.toBe("active");
    const log = machineExec(node.machine, ["cat", serverPaths().firstBootLog]).stdout;
    expect(log).toContain(`FAILED while mounting the data volume at ${serverPaths().volumeMount}`);
    // Patroni started by hand still refuses: its unit requires the mounted volume.
    machineExec(node.machine, ["systemctl", "start", "--no-block", "patroni.service"]);
    await sleep(8000);
    expect((await probeNode(node.machine)).postmasterPid).toBeNull();
    expect(
      machineExec(node.machine, ["test", "-e", path.posix.join(serverPaths().pgDataDir, "PG_VERSION")]).code,
    ).not.toBe(0);

    const st = cli(["status"], { loc });
    expect(st.code).toBe(1);
    expect(st.stdout).toContain(`${name}: no data volume mounted at ${serverPaths().volumeMount}`);
    expect(st.stdout).toContain(`${name}: cloud-init failed`);
    await expect(waitHealthy(result.state, result.secrets, { timeoutMs: 1000 })).rejects.toThrow(/cloud-init failed/);
  }, 400_000);
});
