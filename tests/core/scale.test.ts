/**
 * The scaling plan and its scripts, without daemons: the order of the steps, what each script does
 * in which order, the rules (requireHa), that a node's join and leave scripts never depend on the
 * node count, and the cloud-init guard that keeps a joining node's daemons stopped (run against a
 * stand-in etcdctl and systemctl).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  ConfigError,
  ScaleStep,
  ScriptContext,
  Topology,
  buildTopology,
  describeCluster,
  describeStep,
  handoffScript,
  joinScript,
  leaveScript,
  localPaths,
  parseSettings,
  planScale,
  refreshScript,
  renderNode,
  serverPaths,
  systemdControl,
} from "../../core";
import { randomSecrets } from "../support/fixtures";

const secrets = randomSecrets();
const { options } = describeCluster(parseSettings("prod", { nodeCount: 3, plan: "cx31", synchronousMode: true }));
const ctx: ScriptContext = { options, secrets, paths: () => serverPaths(), control: () => systemdControl() };
const topo = (nodeCount: number): Topology => buildTopology({ stack: "prod", nodeCount, subnetCidr: "10.42.1.0/24" });
const labels = (steps: ScaleStep[]) => steps.map(describeStep);
/** A script's commands: no comments, and none of the configuration files it carries. */
const commands = (text: string) =>
  text
    .replace(/<<'(MADBASE_[A-Z_]+)'\n[\s\S]*?\n\1\n/g, "")
    .split("\n")
    .filter((line) => !/^\s*#/.test(line))
    .join("\n");

/** Asserts that the snippets appear in `text` in this order. */
function expectInOrder(text: string, snippets: string[]): void {
  let from = 0;
  for (const snippet of snippets) {
    const at = text.indexOf(snippet, from);
    expect({ snippet, found: at >= 0 }).toEqual({ snippet, found: true });
    from = at + snippet.length;
  }
}

describe("planScale", () => {
  it("grows one node at a time, each joined before the next is created, and refreshes every node last", () => {
    expect(labels(planScale(topo(3), topo(5), ctx).steps)).toEqual([
      "madbase-prod-4: provision",
      "madbase-prod-4: node-join",
      "madbase-prod-5: provision",
      "madbase-prod-5: node-join",
      "madbase-prod-1: config-refresh",
      "madbase-prod-2: config-refresh",
      "madbase-prod-3: config-refresh",
      "madbase-prod-4: config-refresh",
      "madbase-prod-5: config-refresh",
    ]);
  });

  it("shrinks with the leadership hand-off first and each server's deletion after its node left, last node first", () => {
    expect(labels(planScale(topo(5), topo(3), ctx).steps)).toEqual([
      "madbase-prod-1: leadership-handoff",
      "madbase-prod-1: config-refresh",
      "madbase-prod-2: config-refresh",
      "madbase-prod-3: config-refresh",
      "madbase-prod-5: node-leave",
      "madbase-prod-5: decommission",
      "madbase-prod-4: node-leave",
      "madbase-prod-4: decommission",
    ]);
  });

  it("turns a dev node into an HA cluster (1 → 3), with requireHa too", () => {
    expect(labels(planScale(topo(1), topo(3), ctx, { requireHa: true }).steps)).toEqual([
      "madbase-prod-2: provision",
      "madbase-prod-2: node-join",
      "madbase-prod-3: provision",
      "madbase-prod-3: node-join",
      "madbase-prod-1: config-refresh",
      "madbase-prod-2: config-refresh",
      "madbase-prod-3: config-refresh",
    ]);
  });

  it("refuses to go below 3 nodes when HA is required, saying why and what to do", () => {
    let error: unknown;
    try {
      planScale(topo(3), topo(1), ctx, { requireHa: true });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe("nodeCount");
    expect((error as Error).message).toMatch(/requires HA \(requireHa: true\), so it cannot shrink from 3 to 1 node\(s\): use 3, 5 or 7, or set requireHa to false first/);
  });

  it("shrinks to one node when HA is not required", () => {
    expect(labels(planScale(topo(3), topo(1), ctx).steps)).toEqual([
      "madbase-prod-1: leadership-handoff",
      "madbase-prod-1: config-refresh",
      "madbase-prod-3: node-leave",
      "madbase-prod-3: decommission",
      "madbase-prod-2: node-leave",
      "madbase-prod-2: decommission",
    ]);
  });

  it("has nothing to do when the count does not change, and refuses another cluster", () => {
    expect(planScale(topo(3), topo(3), ctx).steps).toEqual([]);
    const other = buildTopology({ stack: "dev", nodeCount: 3, subnetCidr: "10.42.1.0/24" });
    expect(() => planScale(topo(3), other, ctx)).toThrow(ConfigError);
  });
});

describe("node-join and node-leave", () => {
  it("do not depend on the node count: Pulumi runs a node's leave script long after it was rendered", () => {
    for (const index of [1, 2]) {
      const at = (n: number) => topo(n).nodes[index];
      expect(joinScript(topo(5), at(5), ctx)).toBe(joinScript(topo(3), at(3), ctx));
      expect(leaveScript(topo(7), at(7), ctx)).toBe(leaveScript(topo(3), at(3), ctx));
    }
  });

  it("join: etcd learner, started as an existing member, promoted; then Patroni, Redis, Sentinel, HAProxy", () => {
    const text = joinScript(topo(5), topo(5).nodes[3], ctx);
    expectInOrder(text, [
      "node_ready",
      'member add "$NODE" --learner',
      "set_env ETCD_INITIAL_CLUSTER_STATE existing",
      "svc start etcd",
      "promote",
      "svc start patroni",
      "streaming_from_leader",
      "replicaof $master",
      "svc start redis",
      "svc start sentinel",
      'SENTINEL SET "$CLUSTER" quorum',
      "svc start haproxy",
    ]);
  });

  it("leave: hand-off, the Sentinels settle, Patroni stops, etcd member remove then wipe, Sentinel reset on the rest, and never patronictl remove", () => {
    const text = leaveScript(topo(5), topo(5).nodes[4], ctx);
    expectInOrder(text, [
      "switchover_from",
      "CONFIG SET replica-priority 0",
      "redis_failover_until",
      "sentinels_settled",
      "svc stop patroni",
      "member remove",
      "svc stop etcd",
      'find "$ETCD_DATA_DIR" -mindepth 1 -delete',
      "svc stop sentinel",
      "SENTINEL RESET",
      "svc stop haproxy",
    ]);
    for (const script of [text, joinScript(topo(5), topo(5).nodes[3], ctx)]) expect(commands(script)).not.toMatch(/patronictl/);
  });

  it("asks etcd at every address a node of the stack can have, so it finds the live members whatever the count", () => {
    const text = leaveScript(topo(3), topo(3).nodes[2], ctx);
    expect(text).toContain(`readonly CANDIDATE_IPS=(${["10", "11", "12", "13", "14", "15", "16"].map((h) => `"10.42.1.${h}"`).join(" ")} )`);
  });
});

describe("leadership-handoff and config-refresh", () => {
  it("hand-off names exactly the nodes that stay", () => {
    const text = handoffScript(topo(3), topo(3).nodes[0], ctx);
    expect(text).toContain('readonly STAYING_NAMES=("madbase-prod-1" "madbase-prod-2" "madbase-prod-3" )');
    expect(text).toContain('readonly STAYING_IPS=("10.42.1.10" "10.42.1.11" "10.42.1.12" )');
  });

  it("refresh installs the new cluster's haproxy.cfg and patroni.yml as rendered, and its Redis/Sentinel values", () => {
    const five = topo(5);
    const node = five.nodes[0];
    const text = refreshScript(five, node, ctx);
    const files = renderNode({ topology: five, node, options, secrets, paths: serverPaths() });
    expect(text).toContain(`<<'MADBASE_HAPROXY_CFG'\n${files["haproxy.cfg"]}MADBASE_HAPROXY_CFG\n`);
    expect(text).toContain(`<<'MADBASE_PATRONI_YML'\n${files["patroni.yml"]}MADBASE_PATRONI_YML\n`);
    expect(text).toContain("patroni: restarted with etcd hosts 10.42.1.11:2379, 10.42.1.12:2379, 10.42.1.13:2379, 10.42.1.14:2379");
    expect(text).toContain('SENTINEL SET "$CLUSTER" quorum 3');
    expect(text).toContain("CONFIG SET min-replicas-to-write 1");
    // Validated before it replaces the running file; Patroni restarts only inside maintenance mode.
    expectInOrder(text, ['haproxy -q -c -f "$haproxy_new"', "install_if_changed", "svc reload haproxy"]);
    expectInOrder(text, ["set_pause true", "paused", "svc restart patroni", "running_again", "resume"]);
    // A lone node has no replica to wait for.
    expect(refreshScript(topo(1), topo(1).nodes[0], ctx)).toContain("CONFIG SET min-replicas-to-write 0");
    expect(refreshScript(topo(1), topo(1).nodes[0], ctx)).toContain('SENTINEL SET "$CLUSTER" quorum 1');
  });
});

describe("the scripts as shell", () => {
  const scripts = () => {
    const out: Record<string, string> = {};
    for (const step of [...planScale(topo(3), topo(5), ctx).steps, ...planScale(topo(5), topo(3), ctx).steps]) {
      if (step.kind === "run") out[`${step.script}-${step.node.name}`] = step.text;
    }
    return out;
  };

  it("parse (bash -n), and pass shellcheck where it is installed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-scale-scripts-"));
    try {
      const shellcheck = spawnSync("shellcheck", ["--version"]).status === 0;
      for (const [name, text] of Object.entries(scripts())) {
        const file = path.join(dir, `${name}.sh`);
        fs.writeFileSync(file, text);
        const parsed = spawnSync("bash", ["-n", file], { encoding: "utf8" });
        expect({ name, stderr: parsed.stderr, status: parsed.status }).toEqual({ name, stderr: "", status: 0 });
        if (shellcheck) {
          const checked = spawnSync("shellcheck", ["-s", "bash", "-S", "warning", file], { encoding: "utf8" });
          expect({ name, findings: checked.stdout }).toEqual({ name, findings: "" });
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("start and stop daemons only through the driver's svc (systemd units on a server)", () => {
    const control = systemdControl();
    for (const [unit, service] of [["etcd", "etcd"], ["patroni", "patroni"], ["redis-server", "redis"], ["redis-sentinel", "sentinel"], ["haproxy", "haproxy"]]) {
      expect(control).toContain(`${service}) unit=${unit} ;;`);
    }
    // With a driver whose svc does nothing, nothing in the scripts starts, stops or signals a daemon.
    const inert: ScriptContext = { ...ctx, control: () => "svc() { :; }\nnode_ready() { :; }" };
    const texts = [
      joinScript(topo(5), topo(5).nodes[3], inert),
      leaveScript(topo(5), topo(5).nodes[3], inert),
      handoffScript(topo(3), topo(3).nodes[0], inert),
      refreshScript(topo(3), topo(3).nodes[0], inert),
    ];
    for (const text of texts) expect(commands(text)).not.toMatch(/systemctl|\bkill\b|pg_ctl|\betcd --|redis-server|redis-sentinel /);
  });

  it("refuse a path the shell would expand", () => {
    const bad: ScriptContext = { ...ctx, paths: (node) => localPaths("/tmp/$HOME", node) };
    expect(() => joinScript(topo(3), topo(3).nodes[1], bad)).toThrow(/written into shell scripts/);
  });
});

describe("cloud-init on a new server", () => {
  /** Runs the node's guard from its user-data with stand-ins for etcdctl and systemctl. */
  function boot(memberList: string | null): string[] {
    const five = topo(5);
    const userData = yaml.load(renderNode({ topology: five, node: five.nodes[3], options, secrets, paths: serverPaths() })["user-data.yaml"]) as { runcmd: unknown[] };
    const guard = userData.runcmd.find((c): c is string => typeof c === "string" && c.includes("member list"))!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-boot-"));
    try {
      const calls = path.join(dir, "calls");
      fs.writeFileSync(path.join(dir, "etcdctl"), memberList === null ? "#!/bin/sh\nexit 1\n" : `#!/bin/sh\necho "etcdctl $*" >>${calls}\ncat <<'EOF'\n${memberList}\nEOF\n`, { mode: 0o755 });
      fs.writeFileSync(path.join(dir, "systemctl"), `#!/bin/sh\necho "systemctl $*" >>${calls}\n`, { mode: 0o755 });
      const r = spawnSync("sh", ["-c", guard], { env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8" });
      expect(r.status).toBe(0);
      return [...r.stdout.split("\n"), ...(fs.existsSync(calls) ? fs.readFileSync(calls, "utf8").split("\n") : [])].filter(Boolean);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  const running = [
    "8e9e05c52164694d, started, madbase-prod-1, http://10.42.1.10:2380, http://10.42.1.10:2379, false",
    "91bc3c398fb3c146, started, madbase-prod-2, http://10.42.1.11:2380, http://10.42.1.11:2379, false",
    "fd422379fda50e48, started, madbase-prod-3, http://10.42.1.12:2380, http://10.42.1.12:2379, false",
  ];

  it("leaves the cluster daemons of a node joining a running cluster to node-join", () => {
    const out = boot(running.join("\n"));
    expect(out).toContain("madbase-prod-4 joins a running cluster: node-join starts etcd, Patroni, Redis and Sentinel");
    expect(out.filter((l) => l.startsWith("systemctl"))).toEqual([]);
    // It asks every other possible node address, never its own.
    const asked = out.find((l) => l.startsWith("etcdctl"))!;
    expect(asked).toContain("http://10.42.1.10:2379,http://10.42.1.11:2379,http://10.42.1.12:2379,http://10.42.1.14:2379");
    expect(asked).not.toContain("10.42.1.13:2379");
  });

  it("starts them on a node of a new cluster: nobody answers yet, or etcd lists it among the founders", () => {
    const starts = ["systemctl enable etcd patroni redis-server redis-sentinel", "systemctl restart etcd", "systemctl restart patroni", "systemctl restart redis-server", "systemctl restart redis-sentinel"];
    expect(boot(null).filter((l) => l.startsWith("systemctl"))).toEqual(starts);
    const founders = [...running, "0a1b2c3d4e5f6071, unstarted, , http://10.42.1.13:2380, , false"].join("\n");
    expect(boot(founders).filter((l) => l.startsWith("systemctl"))).toEqual(starts);
  });
});
