/**
 * The node scripts, without daemons: what each script does in which order, that a node's join and
 * leave scripts never depend on the node count, and the cloud-init guard that keeps a joining
 * node's daemons stopped (run against a stand-in etcdctl and systemctl). The order of the steps
 * is tests/core/sequence.test.ts's.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  ScriptContext,
  Step,
  Topology,
  buildTopology,
  describeCluster,
  handoffScript,
  joinScript,
  leaveScript,
  parseSettings,
  refreshScript,
  shellSafe,
  stepScripts,
  renderNode,
  serverPaths,
  writtenFiles,
  systemdControl,
} from "../../core";
import { fixtureTls, randomSecrets } from "../support/fixtures";

const secrets = randomSecrets();
const { options } = describeCluster(parseSettings("prod", { nodeCount: 3, plan: "cx31", synchronousMode: true }));
const tls = fixtureTls();
const ctx: ScriptContext = { options, secrets, tls };
const topo = (nodeCount: number): Topology => buildTopology({ stack: "prod", nodeCount, subnetCidr: "10.42.1.0/24" });
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
    for (const script of [text, joinScript(topo(5), topo(5).nodes[3], ctx)])
      expect(commands(script)).not.toMatch(/patronictl/);
  });

  it("asks etcd at every address a node of the stack can have, so it finds the live members whatever the count", () => {
    const text = leaveScript(topo(3), topo(3).nodes[2], ctx);
    expect(text).toContain(
      `readonly CANDIDATE_IPS=(${["10", "11", "12", "13", "14", "15", "16"].map((h) => `"10.42.1.${h}"`).join(" ")} )`,
    );
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
    const files = renderNode({ topology: five, node, options, secrets, tls, paths: serverPaths() });
    expect(text).toContain(`<<'MADBASE_HAPROXY_CFG'\n${files["haproxy.cfg"]}MADBASE_HAPROXY_CFG\n`);
    expect(text).toContain(`<<'MADBASE_PATRONI_YML'\n${files["patroni.yml"]}MADBASE_PATRONI_YML\n`);
    expect(text).toContain(
      "patroni: restarted with etcd hosts 10.42.1.10:2379, 10.42.1.11:2379, 10.42.1.12:2379, 10.42.1.13:2379, 10.42.1.14:2379",
    );
    expect(text).toContain('"quorum 3"');
    expect(text).toContain("redis_set min-replicas-to-write 1");
    // Validated before it replaces the running file; Patroni restarts only inside maintenance mode.
    expectInOrder(text, ['haproxy -q -c -f "$haproxy_new"', "install_if_changed", "svc reload haproxy"]);
    expectInOrder(text, ["set_pause true", "paused", "svc restart patroni", "patroni_running_here", "resume"]);
    // A lone node has no replica to wait for.
    expect(refreshScript(topo(1), topo(1).nodes[0], ctx)).toContain("redis_set min-replicas-to-write 0");
    expect(refreshScript(topo(1), topo(1).nodes[0], ctx)).toContain('"quorum 1"');
  });
});

describe("the scripts as shell", () => {
  const scripts = () => {
    const out: Record<string, string> = {};
    const [five, three] = [topo(5), topo(3)];
    const steps: [Step, typeof five][] = [
      ...five.nodes.map((node): [Step, typeof five] => [{ kind: "join", node }, five]),
      ...five.nodes.map((node): [Step, typeof five] => [{ kind: "leave", node }, five]),
      ...five.nodes.map((node): [Step, typeof five] => [
        { kind: "resize", node, serverType: "cx33", prefer: five.nodes.slice(node.index + 1).map((n) => n.name) },
        five,
      ]),
      ...three.nodes.map((node): [Step, typeof five] => [{ kind: "refresh", node, handoff: node.index === 2 }, three]),
    ];
    for (const [step, topology] of steps)
      for (const script of stepScripts(step, topology, ctx)) out[`${script.name}-${step.node.name}`] = script.text;
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
    for (const [unit, service] of [
      ["etcd", "etcd"],
      ["patroni", "patroni"],
      ["redis-server", "redis"],
      ["redis-sentinel", "sentinel"],
      ["haproxy", "haproxy"],
    ]) {
      expect(control).toContain(`${service}) unit=${unit} ;;`);
    }
    // Outside the driver's svc (systemd's units), nothing in the scripts starts, stops or signals a daemon.
    const texts = [
      joinScript(topo(5), topo(5).nodes[3], ctx),
      leaveScript(topo(5), topo(5).nodes[3], ctx),
      handoffScript(topo(3), topo(3).nodes[0], ctx),
      refreshScript(topo(3), topo(3).nodes[0], ctx),
    ];
    for (const text of texts) {
      expect(text).toContain(control);
      expect(commands(text.replace(control, ""))).not.toMatch(
        /systemctl|\bkill\b|pg_ctl|\betcd --|redis-server|redis-sentinel /,
      );
    }
  });

  it("refuse a path the shell would expand (every file path a script names is checked)", () => {
    expect(() => shellSafe("paths.etcdEnv", "/tmp/$HOME/etcd.conf")).toThrow(/written into shell scripts/);
    expect(shellSafe("paths.etcdEnv", serverPaths().config["etcd.conf"])).toBe(serverPaths().config["etcd.conf"]);
  });
});

describe("a new server's first boot (madbase-first-boot, with stand-ins for systemd and the daemons)", () => {
  interface Boot {
    code: number | null;
    output: string;
    calls: string[];
    ready?: string;
    failed?: string;
  }
  /** Runs the node's first-boot script from its user-data, every system command replaced by a stub that logs its call. */
  function boot(
    nodeIndex: number,
    opts: {
      joining?: boolean;
      mountFails?: boolean;
      primary?: boolean;
      electedAfter?: number;
      stanzaError?: string;
    } = {},
  ): Boot {
    const five = topo(5);
    const userData = renderNode({
      topology: five,
      node: five.nodes[nodeIndex],
      options,
      secrets,
      tls,
      paths: serverPaths(),
      etcdInitialClusterState: opts.joining ? "existing" : "new",
    })["user-data.yaml"];
    const files = Object.fromEntries(writtenFiles(userData).map((f) => [f.path, f.content]));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-boot-"));
    try {
      const bin = path.join(dir, "bin");
      fs.mkdirSync(bin);
      const calls = path.join(dir, "calls");
      const stub = (name: string, body = "") =>
        fs.writeFileSync(path.join(bin, name), `#!/bin/bash\necho "${name} $*" >>${calls}\n${body}\n`, { mode: 0o755 });
      for (const name of ["sysctl", "mountpoint", "install", "systemctl", "nft", "usermod"]) stub(name);
      stub("runuser", opts.stanzaError ? `echo "${opts.stanzaError}" >&2; exit 28` : "");
      // Patroni's answers: /health at once; the role (/primary or /replica) only after
      // `electedAfter` role questions, as while the members still elect a leader.
      const asked = path.join(dir, "role-questions");
      stub(
        "curl",
        [
          'case "$*" in *"/health"*) echo -n 200; exit 0 ;; esac',
          `n=$(( $(cat ${asked} 2>/dev/null || echo 0) + 1 )); echo $n > ${asked}`,
          `if [ $n -le ${opts.electedAfter ?? 0} ]; then echo -n 503; exit 0; fi`,
          `case "$*" in *"/primary"*) echo -n ${opts.primary === false ? 503 : 200} ;; *"/replica"*) echo -n ${opts.primary === false ? 200 : 503} ;; *) echo -n 000 ;; esac`,
        ].join("\n"),
      );
      stub("redis-cli", "echo PONG");
      stub("madbase-mount-volume", opts.mountFails ? 'echo "madbase: no Hetzner volume attached" >&2; exit 1' : "");
      const env = path.join(dir, "node.env");
      fs.writeFileSync(
        env,
        files["/etc/madbase/node.env"] +
          [
            `SCRIPT_DIR=${bin}`,
            `POLICY_RC_D=${dir}/policy-rc.d`,
            `READY_MARKER=${dir}/state/ready`,
            `FAILED_MARKER=${dir}/state/failed`,
            `FIRST_BOOT_LOG=${dir}/log/first-boot.log`,
            `BACKUP_ENV_FILE=${dir}/backup.env`,
            "WAIT_SECONDS=5",
            "",
          ].join("\n"),
      );
      fs.writeFileSync(path.join(dir, "backup.env"), "REDISCLI_AUTH=x\n");
      const script = path.join(dir, "first-boot");
      fs.writeFileSync(script, files["/usr/local/sbin/madbase-first-boot"], { mode: 0o755 });
      const r = spawnSync("bash", [script, env], {
        env: { PATH: `${bin}:/usr/bin:/bin` },
        encoding: "utf8",
        timeout: 60_000,
      });
      const read = (p: string) => (fs.existsSync(p) ? fs.readFileSync(p, "utf8") : undefined);
      return {
        code: r.status,
        output: r.stdout + r.stderr,
        calls: (read(calls) ?? "").split("\n").filter(Boolean),
        ready: read(path.join(dir, "state", "ready")),
        failed: read(path.join(dir, "state", "failed")),
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it("on a founding node: mounts the volume, starts every daemon, waits for them, creates the stanza, starts the first backup, then writes the ready marker", () => {
    const b = boot(0);
    expect([b.code, b.failed]).toEqual([0, undefined]);
    expect(b.calls).toContain("systemctl enable --no-reload --quiet etcd patroni redis-server redis-sentinel");
    // One reload of systemd for the whole boot: enabling a unit never reloads it (each used to).
    expect(b.calls.filter((c) => c === "systemctl daemon-reload")).toHaveLength(1);
    expect(b.calls.filter((c) => /^systemctl (enable|disable) /.test(c) && !c.includes("--no-reload"))).toEqual([]);
    // etcd reads the node's TLS key (root:ssl-cert 0640) through the group.
    expect(b.calls).toContain("usermod -a -G ssl-cert etcd");
    expect(b.calls).toContain("systemctl restart --no-block etcd patroni redis-server redis-sentinel");
    expect(b.calls).toContain(
      "systemctl enable --no-reload --quiet --now madbase-pg-backup-first.timer madbase-pg-backup-full.timer madbase-pg-backup-diff.timer madbase-redis-snapshot.timer madbase-pg-metrics.timer madbase-tls-metrics.timer",
    );
    expectInOrder(b.calls.join("\n"), [
      // The metadata guard before anything else runs.
      "systemctl enable --no-reload --quiet nftables",
      "systemctl reload-or-restart nftables",
      "nft list table inet madbase_guard",
      "madbase-mount-volume /var/lib/postgresql",
      "install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/17",
      "systemctl daemon-reload",
      "systemctl restart --no-block etcd patroni",
      "curl",
      "runuser -u postgres -- pgbackrest --config=/etc/pgbackrest.conf --stanza=madbase-prod --log-level-console=warn stanza-create",
      "systemctl start --no-block madbase-pg-backup@first.service",
    ]);
    expect(b.ready).toMatch(/^ready_at=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\njoining=0\n$/);
  });

  it("asks for its role until a leader is elected, so the leader never skips the stanza", () => {
    const b = boot(0, { electedAfter: 4 });
    expect([b.code, b.failed]).toEqual([0, undefined]);
    expect(b.output).toContain("PostgreSQL runs here as the primary");
    expect(b.calls.filter((c) => /stanza-create/.test(c))).toHaveLength(1);
    expect(b.calls).toContain("systemctl start --no-block madbase-pg-backup@first.service");
  });

  it("leaves a repository that holds another cluster's stanza alone: a warning, no first backup, and the node still comes up", () => {
    const b = boot(0, {
      stanzaError: "ERROR: [028]: backup and archive info files exist but do not match the database",
    });
    expect([b.code, b.failed]).toEqual([0, undefined]);
    expect(b.output).toContain("WARNING: the backup repository holds another cluster's stanza madbase-prod");
    expect(b.calls.filter((c) => /madbase-pg-backup@first/.test(c))).toEqual([]);
    expect(b.ready).toContain("joining=0");
  });

  it("fails the first boot on any other stanza-create error, saying what pgBackRest said", () => {
    const b = boot(0, { stanzaError: "ERROR: [039]: HTTP request failed" });
    expect(b.code).not.toBe(0);
    expect(b.output).toContain("stanza-create: ERROR: [039]: HTTP request failed");
    expect(b.failed).toContain("step=creating the pgBackRest stanza madbase-prod");
    expect(b.ready).toBeUndefined();
  });

  it("on a replica: no stanza, no backup", () => {
    const b = boot(1, { primary: false });
    expect(b.code).toBe(0);
    expect(b.calls.filter((c) => /stanza-create|madbase-pg-backup@first/.test(c))).toEqual([]);
    expect(b.ready).toContain("joining=0");
  });

  it("on a node joining a running cluster (decided when rendering): only HAProxy, PgBouncer, the exporters and the timers; node-join starts the rest", () => {
    const b = boot(3, { joining: true });
    expect(b.code).toBe(0);
    expect(b.output).toContain(
      "madbase-prod-4 joins a running cluster: node-join starts etcd, Patroni, Redis and Sentinel",
    );
    expect(b.calls).toContain("systemctl disable --no-reload --now etcd patroni redis-server redis-sentinel");
    expect(b.calls).toContain(
      "systemctl restart --no-block haproxy pgbouncer prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter prometheus-pgbouncer-exporter",
    );
    expect(
      b.calls.filter((c) => /systemctl (enable|restart).*\b(etcd|patroni|redis-server|redis-sentinel)\b/.test(c)),
    ).toEqual([]);
    expect(b.calls.filter((c) => c.startsWith("curl") || c.startsWith("runuser"))).toEqual([]);
    expect(b.ready).toContain("joining=1");
  });

  it("stops at a failed volume mount: no daemon starts, no ready marker, and the failed marker says why", () => {
    const b = boot(0, { mountFails: true });
    expect(b.code).not.toBe(0);
    expect(b.ready).toBeUndefined();
    expect(b.failed).toContain("step=mounting the data volume at /var/lib/postgresql");
    expect(b.output).toContain("no Hetzner volume attached");
    // Only the metadata guard, which comes first, was loaded.
    expect(b.calls.filter((c) => c.startsWith("systemctl"))).toEqual([
      "systemctl enable --no-reload --quiet nftables",
      "systemctl reload-or-restart nftables",
    ]);
  });
});

describe("madbase-redis-follow (redis-server's ExecStartPre)", () => {
  /** Runs the guard with a redis-cli stand-in whose Sentinels (by address) name the given masters. */
  function follow(
    named: Record<string, string>,
    conf: string,
    quorumInSentinelConf?: number,
  ): { conf: string; code: number | null; output: string } {
    const three = topo(3);
    const userData = renderNode({ topology: three, node: three.nodes[0], options, secrets, tls, paths: serverPaths() })[
      "user-data.yaml"
    ];
    const files = Object.fromEntries(writtenFiles(userData).map((f) => [f.path, f.content]));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-follow-"));
    try {
      const bin = path.join(dir, "bin");
      fs.mkdirSync(bin);
      const cases = Object.entries(named)
        .map(([ip, m]) => `${ip}) printf '%s\\n' ${m} 6380 ;;`)
        .join(" ");
      // A Sentinel answers only with its password, which reaches redis-cli in its environment.
      const stub = `#!/bin/bash\n[ "$REDISCLI_AUTH" = ${secrets.sentinel} ] || exit 1\ncase "$2" in ${cases} *) exit 1 ;; esac\n`;
      fs.writeFileSync(path.join(bin, "redis-cli"), stub, { mode: 0o755 });
      const backupEnv = path.join(dir, "backup.env");
      fs.writeFileSync(backupEnv, files["/etc/madbase/backup.env"]);
      const redisConf = path.join(dir, "redis.conf");
      const sentinelConf = path.join(dir, "sentinel.conf");
      fs.writeFileSync(redisConf, conf);
      fs.writeFileSync(
        sentinelConf,
        quorumInSentinelConf ? `sentinel monitor madbase-prod 10.42.1.10 6380 ${quorumInSentinelConf}\n` : "",
      );
      const env = path.join(dir, "node.env");
      fs.writeFileSync(
        env,
        files["/etc/madbase/node.env"] +
          `REDIS_CONF=${redisConf}\nSENTINEL_CONF=${sentinelConf}\nBACKUP_ENV_FILE=${backupEnv}\n`,
      );
      const script = path.join(dir, "follow");
      fs.writeFileSync(script, files["/usr/local/sbin/madbase-redis-follow"]);
      const r = spawnSync("bash", [script, env], {
        env: { PATH: `${bin}:/usr/bin:/bin` },
        encoding: "utf8",
        timeout: 20_000,
      });
      return { conf: fs.readFileSync(redisConf, "utf8"), code: r.status, output: r.stdout + r.stderr };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const base = "port 6380\nmasterauth x\n";

  it("turns a returning old master into a replica of the master a majority names", () => {
    const r = follow({ "10.42.1.11": "10.42.1.11", "10.42.1.12": "10.42.1.11" }, base);
    expect(r.code).toBe(0);
    expect(r.conf).toBe(`${base}replicaof 10.42.1.11 6380\n`);
  });

  it("replaces an older replicaof line, and drops it when the majority names this node", () => {
    expect(
      follow({ "10.42.1.11": "10.42.1.12", "10.42.1.12": "10.42.1.12" }, `${base}replicaof 10.42.1.11 6380\n`).conf,
    ).toBe(`${base}replicaof 10.42.1.12 6380\n`);
    expect(
      follow({ "10.42.1.11": "10.42.1.10", "10.42.1.12": "10.42.1.10" }, `${base}replicaof 10.42.1.11 6380\n`).conf,
    ).toBe(base);
  });

  it("leaves the file alone without a majority (the quorum Sentinel keeps), and never fails", () => {
    const r = follow({ "10.42.1.11": "10.42.1.11", "10.42.1.12": "10.42.1.12" }, base);
    expect([r.code, r.conf]).toEqual([0, base]);
    expect(r.output).toContain("no 2 Sentinels agree");
    expect(follow({ "10.42.1.11": "10.42.1.11", "10.42.1.12": "10.42.1.11" }, base, 3).conf).toBe(base);
    expect(follow({}, base).code).toBe(0);
  });
});
