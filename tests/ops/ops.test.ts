/**
 * `npm run ops`'s rules, without a cluster: the argument rules (a restore without --confirm is
 * refused before any target is read), the Hetzner target as the Pulumi program's own outputs
 * describe it (the program run under mocks, its outputs printed as `pulumi stack output --json
 * --show-secrets` prints them, then parsed), the README's restore steps in order, the status
 * judgement, and the CLI end to end with a stand-in `pulumi` and `ssh` on PATH that record their
 * calls: the wrong --confirm stops before any SSH, and status reaches every server's public address.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ConfigError, UsageError } from "../../core";
import {
  OpsRequest,
  OpsTarget,
  checkConfirm,
  checkLocalStack,
  parseOpsArgs,
  restoreSteps,
  riskOf,
  targetFromStackOutputs,
} from "../../core/ops";
import { NodeReport, judgeStatus, nodeStatusScript, parseNodeReport } from "../../core/ops-status";
import { STATE_VERSION } from "../../local/state";
import { ProgramRun, T, ofType, runProgram, stackFileConfig } from "../stack/harness";

const REPO = path.resolve(__dirname, "..", "..");

function refusal(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("not refused");
}

describe("argument rules", () => {
  test("every verb needs --stack; an unknown verb or option is named", () => {
    expect(refusal(() => parseOpsArgs(["status"]))).toEqual(
      new UsageError("status needs --stack S: the stack whose cluster it acts on (dev, prod, ...)"),
    );
    expect(refusal(() => parseOpsArgs(["failover", "--stack", "prod"])).message).toBe(
      'unknown verb "failover"; the verbs are status, switchover, restore, restore-redis, backup, maintenance',
    );
    expect(refusal(() => parseOpsArgs(["status", "--stack", "prod", "--to", "x"])).message).toBe(
      "status does not take --to; it takes --stack, --local, --ssh-key, --json",
    );
    expect(refusal(() => parseOpsArgs(["status", "--stack", "prod", "--local", "--ssh-key", "k"])).message).toContain(
      "--ssh-key is for a Pulumi stack's servers",
    );
    expect(parseOpsArgs(["status", "--stack", "prod", "--local", "--json"])).toEqual({
      verb: "status",
      stack: "prod",
      local: true,
      json: true,
    });
    expect(parseOpsArgs(["switchover", "--stack", "prod", "--to", "madbase-prod-2", "--ssh-key", "/k"])).toEqual({
      verb: "switchover",
      stack: "prod",
      local: false,
      sshKey: "/k",
      to: "madbase-prod-2",
    });
  });

  test("restore takes latest or --time with a zone, and refuses to start without --confirm", () => {
    for (const args of [
      ["restore", "latest", "--stack", "prod"],
      ["restore", "--time", "2026-01-31 14:05:00+00", "--stack", "prod", "--local"],
    ]) {
      const e = refusal(() => parseOpsArgs(args));
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toBe(
        "restore needs --confirm <cluster name> (madbase-prod for stack prod): a restore replaces the cluster's database with the backups' state. Nothing was touched.",
      );
    }
    expect(
      refusal(() => parseOpsArgs(["restore", "--time", "yesterday", "--stack", "prod", "--confirm", "x"])).message,
    ).toBe(`--time takes latest or a time with its zone, such as '2025-01-31 14:05:00+00', not "yesterday"`);
    expect(refusal(() => parseOpsArgs(["restore", "--stack", "prod", "--confirm", "x"])).message).toContain(
      "restore takes latest or --time T",
    );
    expect(
      refusal(() =>
        parseOpsArgs(["restore", "latest", "--time", "2026-01-31 14:05:00+00", "--stack", "prod", "--confirm", "x"]),
      ).message,
    ).toContain("not both");
    expect(
      parseOpsArgs(["restore", "--time", "2026-01-31 14:05:00+00", "--stack", "prod", "--confirm", "madbase-prod"]),
    ).toEqual({
      verb: "restore",
      stack: "prod",
      local: false,
      target: { type: "time", target: "2026-01-31 14:05:00+00" },
      confirm: "madbase-prod",
    });
    expect(refusal(() => parseOpsArgs(["restore-redis", "--stack", "dev"])).message).toContain(
      "restore-redis needs --confirm <cluster name> (madbase-dev for stack dev)",
    );
    expect(
      refusal(() => parseOpsArgs(["restore-redis", "--stack", "dev", "--name", "../x", "--confirm", "c"])).message,
    ).toContain("--name takes a snapshot's file name");
  });

  test("backup takes pg full, pg diff or redis", () => {
    expect((parseOpsArgs(["backup", "pg", "full", "--stack", "prod"]) as OpsRequest & { what: string }).what).toBe(
      "pg-full",
    );
    expect((parseOpsArgs(["backup", "redis", "--stack", "prod"]) as OpsRequest & { what: string }).what).toBe("redis");
    for (const args of [
      ["backup", "--stack", "prod"],
      ["backup", "pg", "weekly", "--stack", "prod"],
    ])
      expect(refusal(() => parseOpsArgs(args)).message).toMatch(/^backup takes pg full, pg diff or redis, not /);
  });

  test("--confirm must name the target's cluster; --local must name the local cluster's stack", () => {
    const target: OpsTarget = {
      kind: "hetzner",
      stack: "prod",
      clusterName: "madbase-prod",
      nodes: [],
      description: "the Pulumi stack prod",
    };
    const request = parseOpsArgs(["restore", "latest", "--stack", "prod", "--confirm", "madbase-dev"]) as OpsRequest;
    const e = refusal(() => checkConfirm(request, target));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe(
      `--confirm: "madbase-dev" is not allowed; name the cluster this restore replaces: --confirm madbase-prod (the Pulumi stack prod). Nothing was touched`,
    );
    expect(() => checkConfirm({ ...request, confirm: "madbase-prod" } as OpsRequest, target)).not.toThrow();
    expect(refusal(() => checkLocalStack("dev", "prod", "/tmp/x")).message).toBe(
      `--stack: "dev" is not allowed; the local cluster at /tmp/x runs stack prod: say --stack prod (or point MADBASE_LOCAL_ROOT at the cluster of stack dev)`,
    );
  });

  test("each verb states the loss it risks", () => {
    const restore = parseOpsArgs([
      "restore",
      "--time",
      "2026-01-31 14:05:00+00",
      "--stack",
      "prod",
      "--confirm",
      "c",
    ]) as OpsRequest;
    expect(riskOf(restore, { clusterName: "madbase-prod" })).toBe(
      "everything written to madbase-prod after 2026-01-31 14:05:00+00 is gone from the running cluster; PostgreSQL takes no reads or writes until the restored leader is up. " +
        "On every node the old data directory is kept beside the new one as /var/lib/postgresql/17/madbase.before-restore-<time> (copy out what you need, then delete it: it takes the volume's space). " +
        "The full backup it takes counts against backupRetentionFull: the oldest full backup and its WAL may expire, so the earliest point a later restore can reach moves forward.",
    );
    const sw = parseOpsArgs(["switchover", "--stack", "prod"]) as OpsRequest;
    expect(riskOf(sw, { clusterName: "madbase-prod", synchronousMode: true })).toContain(
      "open connections to the leader are cut",
    );
    expect(riskOf(sw, { clusterName: "madbase-prod", synchronousMode: true })).toContain(
      "synchronous_mode is on: no acknowledged commit is lost.",
    );
    const redis = parseOpsArgs(["restore-redis", "--stack", "prod", "--confirm", "c"]) as OpsRequest;
    expect(riskOf(redis, { clusterName: "madbase-prod", redisMaster: "madbase-prod-2" })).toMatch(
      /^every Redis key written since the snapshot \(the newest\) is gone.*dump\.rdb\.before-restore-<time> on madbase-prod-2\.$/,
    );
  });
});

/** What the status script prints on node i of a healthy 3-node prod cluster (node 1 leads both). */
const members = [
  { name: "madbase-prod-1", role: "leader", state: "running", host: "10.42.1.10", timeline: 3 },
  { name: "madbase-prod-2", role: "sync_standby", state: "streaming", host: "10.42.1.11", timeline: 3, lag: 0 },
  { name: "madbase-prod-3", role: "replica", state: "streaming", host: "10.42.1.12", timeline: 3, lag: 0 },
];
const M = "@@madbase-ops";
const said = (i: number, over: { members?: unknown[]; redis?: string; sentinel?: string } = {}) =>
  [
    `${M} node madbase-prod-${i} 10.42.1.${9 + i} madbase-prod`,
    `${M} patroni`,
    JSON.stringify({ state: "running", role: i === 1 ? "primary" : "replica", timeline: 3 }),
    "200",
    `${M} patroni exit 0`,
    `${M} cluster`,
    JSON.stringify({ members: over.members ?? members }),
    "200",
    `${M} cluster exit 0`,
    `${M} config`,
    JSON.stringify({ synchronous_mode: true }),
    "200",
    `${M} config exit 0`,
    `${M} redis`,
    ...(
      over.redis ??
      (i === 1
        ? "# Replication\r\nrole:master\r\nconnected_slaves:2\r"
        : `# Replication\r\nrole:slave\r\nmaster_host:10.42.1.10\r\nmaster_link_status:up\r`)
    ).split("\n"),
    `${M} redis exit 0`,
    `${M} sentinel`,
    over.sentinel ?? "10.42.1.10\n6380",
    `${M} sentinel exit 0`,
    `${M} end`,
  ].join("\n");

/** The outputs as `pulumi stack output --json --show-secrets` prints them: output name → value. */
function cliOutputs(run: ProgramRun): string {
  return JSON.stringify(Object.fromEntries(Object.entries(run.outputs).map(([k, o]) => [k, o.value])), null, 2);
}

describe("the Hetzner target, from the outputs the Pulumi program produces", () => {
  let prod: ProgramRun;
  beforeAll(async () => {
    prod = await runProgram({ stack: "prod", config: stackFileConfig("prod") });
  });

  test("every node with its name, private address and public IPv4 (where SSH goes), and Patroni's scope", () => {
    expect(prod.error).toBeUndefined();
    const target = targetFromStackOutputs("prod", JSON.parse(cliOutputs(prod)));
    const servers = ofType(prod, T.server);
    expect(target).toMatchObject({ kind: "hetzner", stack: "prod", clusterName: "madbase-prod" });
    expect(target.nodes.map((n) => n.name)).toEqual(servers.map((s) => s.name));
    expect(target.nodes.map((n) => n.privateIp)).toEqual(["10.42.1.10", "10.42.1.11", "10.42.1.12"]);
    for (const n of target.nodes) expect(n.sshHost).toMatch(/^203\.0\.113\.\d+$/);
    expect(new Set(target.nodes.map((n) => n.sshHost)).size).toBe(3);
  });

  test("a missing or malformed output is named", () => {
    const outputs = JSON.parse(cliOutputs(prod));
    expect(refusal(() => targetFromStackOutputs("prod", {})).message).toBe(
      `pulumi stack output patroniScope (stack prod): (missing) is not allowed; the cluster's name (madbase-<stack>), which every deployment outputs`,
    );
    outputs.nodes[1].publicIpv4 = "";
    expect(refusal(() => targetFromStackOutputs("prod", outputs)).message).toBe(
      `pulumi stack output nodes[1].publicIpv4 (stack prod): "" is not allowed; the server's public IPv4 address, which SSH reaches`,
    );
    expect(refusal(() => targetFromStackOutputs("prod", [])).message).toContain("has the stack been deployed");
  });

  describe("the CLI, with a stand-in pulumi and ssh on PATH", () => {
    let dir: string;
    const calls = (tool: string) =>
      fs.existsSync(path.join(dir, `${tool}.calls`)) ? fs.readFileSync(path.join(dir, `${tool}.calls`), "utf8") : "";
    const ops = (args: string[], pathDirs = [dir, "/usr/bin", "/bin"]) => {
      const r = spawnSync(process.execPath, ["--import", "tsx", path.join(REPO, "cli", "ops.ts"), ...args], {
        cwd: REPO,
        env: { ...process.env, PATH: pathDirs.join(":"), XDG_STATE_HOME: dir },
        encoding: "utf8",
        timeout: 60_000,
      });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };

    beforeAll(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-ops-cli-"));
      fs.writeFileSync(path.join(dir, "outputs.json"), cliOutputs(prod));
      // pulumi: the outputs for `stack output`, a key for `config get`; each call logged.
      fs.writeFileSync(
        path.join(dir, "pulumi"),
        `#!/bin/sh\necho "$*" >> ${dir}/pulumi.calls\ncase "$1 $2" in\n  "stack output") cat ${dir}/outputs.json ;;\n  "config get") printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\nstand-in\\n-----END OPENSSH PRIVATE KEY-----\\n' ;;\n  *) exit 1 ;;\nesac\n`,
        { mode: 0o755 },
      );
      // ssh: logs its arguments and the key file's mode; answers the status script with the report
      // in reports/<host> when there is one, and fails as an unreachable host does otherwise. Any
      // other script (a change) is logged as such and fails.
      fs.mkdirSync(path.join(dir, "reports"));
      fs.writeFileSync(
        path.join(dir, "ssh"),
        `#!/bin/sh\nkey=""; prev=""; host=""; for a in "$@"; do [ "$prev" = -i ] && key=$a; case "$a" in root@*) host=\${a#root@};; esac; prev=$a; done\n` +
          `echo "$* mode=$(stat -c %a "$key")" >> ${dir}/ssh.calls\nscript=$(cat)\n` +
          `case "$script" in *"@@madbase-ops end"*) ;; *) echo "CHANGE on $host" >> ${dir}/ssh.calls; exit 1;; esac\n` +
          `[ -f ${dir}/reports/$host ] && exec cat ${dir}/reports/$host\necho "ssh: connect to host: No route to host" >&2\nexit 255\n`,
        { mode: 0o755 },
      );
    });
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
    beforeEach(() => {
      for (const f of ["pulumi.calls", "ssh.calls"]) fs.rmSync(path.join(dir, f), { force: true });
      for (const f of fs.readdirSync(path.join(dir, "reports"))) fs.rmSync(path.join(dir, "reports", f));
    });
    /** Nodes 1..3 of the stack answer the status script as a healthy cluster would (none: all). */
    const answering = (which = [1, 2, 3], over: Parameters<typeof said>[1] = {}) => {
      const target = targetFromStackOutputs("prod", JSON.parse(cliOutputs(prod)));
      for (const i of which) fs.writeFileSync(path.join(dir, "reports", target.nodes[i - 1].sshHost), said(i, over));
      return target;
    };

    test("restore without --confirm is refused before the stack is read", () => {
      const r = ops(["restore", "latest", "--stack", "prod"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("restore needs --confirm <cluster name> (madbase-prod for stack prod)");
      expect([calls("pulumi"), calls("ssh")]).toEqual(["", ""]);
    });

    test("restore --confirm with another cluster's name is refused after reading the outputs, before any SSH", () => {
      const r = ops(["restore", "latest", "--stack", "prod", "--confirm", "madbase-dev"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(
        `--confirm: "madbase-dev" is not allowed; name the cluster this restore replaces: --confirm madbase-prod`,
      );
      expect(calls("pulumi")).toContain("stack output --json --show-secrets --stack prod");
      expect(calls("ssh")).toBe("");
    });

    test("status asks every server at its public address as root, with the stack's key in a 0600 file it removes", () => {
      const r = ops(["status", "--stack", "prod"]);
      expect(r.code).toBe(1);
      const target = targetFromStackOutputs("prod", JSON.parse(cliOutputs(prod)));
      const lines = calls("ssh").trim().split("\n");
      expect(lines).toHaveLength(3);
      for (const n of target.nodes) {
        const line = lines.find((l) => l.includes(`root@${n.sshHost} `));
        expect(line).toMatch(/ bash -s -- mode=600$/);
        expect(r.stdout).toMatch(new RegExp(`${n.name}\\s+${n.privateIp.replace(/\./g, "\\.")}\\s+UNREACHABLE`));
        const key = /-i (\S+)/.exec(line!)![1];
        expect(fs.existsSync(key)).toBe(false);
      }
      expect(calls("pulumi")).toContain("config get madbase-state:sshPrivateKey --stack prod");
      expect(r.stdout).toContain("madbase-prod: the Pulumi stack prod, 3 node(s)");
      expect(r.stdout).toMatch(/degraded:\n {2}madbase-prod-1: not reachable over SSH/);
    }, 60_000);

    test("--ssh-key FILE is used instead of the stack's key; without the Pulumi CLI the command says so", () => {
      const key = path.join(dir, "my-key");
      fs.writeFileSync(key, "k", { mode: 0o600 });
      ops(["status", "--stack", "prod", "--ssh-key", key]);
      expect(calls("pulumi")).not.toContain("config get");
      expect(calls("ssh")).toContain(`-i ${key} `);
      const none = fs.mkdtempSync(path.join(dir, "empty-"));
      const r = ops(["status", "--stack", "prod"], [none]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("the Pulumi CLI is not installed here (no pulumi on PATH)");
    }, 60_000);

    test("status of a healthy stack, asked on its servers: the leader and the Redis master, exit 0", () => {
      answering();
      const r = ops(["status", "--stack", "prod"]);
      expect([r.code, r.stderr]).toEqual([0, ""]);
      expect(r.stdout).toContain(
        "PostgreSQL leader: madbase-prod-1 (synchronous_mode on); Redis master: madbase-prod-1",
      );
      expect(r.stdout).toMatch(
        /madbase-prod-2\s+10\.42\.1\.11\s+sync_standby\s+streaming\s+3\s+0\s+replica \(link up\)/,
      );
      expect(r.stdout).toMatch(/\nhealthy$/m);
      expect(calls("ssh")).not.toContain("CHANGE");
    });

    test("switchover --to a replica that is not the synchronous standby is refused before any change", () => {
      answering();
      const r = ops(["switchover", "--stack", "prod", "--to", "madbase-prod-3"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(
        "--to madbase-prod-3: synchronous_mode is on, and Patroni hands over only to the synchronous standby, madbase-prod-2: say --to madbase-prod-2 or leave --to out; nothing was touched",
      );
      expect(calls("ssh")).not.toContain("CHANGE");
      const unknown = ops(["switchover", "--stack", "prod", "--to", "madbase-prod-9"]);
      expect([unknown.code, unknown.stderr]).toEqual([
        2,
        expect.stringContaining(
          `--to: "madbase-prod-9" is not allowed; one of the nodes of the Pulumi stack prod: madbase-prod-1, madbase-prod-2, madbase-prod-3`,
        ),
      ]);
    });

    test("a restore with a node that does not answer over SSH is refused before any change", () => {
      answering([1, 2]);
      const r = ops(["restore", "latest", "--stack", "prod", "--confirm", "madbase-prod"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(
        "a restore needs every node, and madbase-prod-3 did not answer over SSH; nothing was touched",
      );
      expect(calls("ssh")).not.toContain("CHANGE");
    });

    test("--local refuses a local cluster of another stack", () => {
      const root = fs.mkdtempSync(path.join(dir, "local-"));
      fs.writeFileSync(
        path.join(root, "state.json"),
        JSON.stringify({ version: STATE_VERSION, stack: "prod", nodes: [] }),
      );
      fs.writeFileSync(path.join(root, "secrets.json"), "{}");
      const r = spawnSync(
        process.execPath,
        ["--import", "tsx", path.join(REPO, "cli", "ops.ts"), "status", "--stack", "dev", "--local"],
        {
          cwd: REPO,
          env: { ...process.env, MADBASE_LOCAL_ROOT: root },
          encoding: "utf8",
        },
      );
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`--stack: "dev" is not allowed; the local cluster at ${root} runs stack prod`);
    });
  });
});

describe("restore as the README's seven steps", () => {
  const nodes = ["madbase-prod-1", "madbase-prod-2", "madbase-prod-3"];
  const brief = (s: ReturnType<typeof restoreSteps>) =>
    s.map((x) => `${x.readme} ${x.kind}${x.node ? ` ${x.node}` : ""}`);

  test("to a time: the restorer last to stop, first to start, a full backup before the replicas", () => {
    expect(
      brief(restoreSteps("madbase-prod", nodes, "madbase-prod-2", { type: "time", target: "2026-01-31 14:05:00+00" })),
    ).toEqual([
      "1 stop-backup-jobs madbase-prod-1",
      "1 stop-backup-jobs madbase-prod-2",
      "1 stop-backup-jobs madbase-prod-3",
      "1 stop-patroni madbase-prod-1",
      "1 stop-patroni madbase-prod-3",
      "1 stop-patroni madbase-prod-2",
      "2 remove-cluster-state madbase-prod-2",
      "3 pg-restore madbase-prod-2",
      "4 start-leader madbase-prod-2",
      "5 full-backup madbase-prod-2",
      "6 rebuild-replica madbase-prod-1",
      "6 rebuild-replica madbase-prod-3",
      "7 check",
    ]);
  });

  test("to the latest state: the full backup comes last (step 7)", () => {
    const steps = restoreSteps("madbase-prod", nodes, "madbase-prod-1", { type: "latest" });
    expect(brief(steps).slice(-4)).toEqual([
      "6 rebuild-replica madbase-prod-2",
      "6 rebuild-replica madbase-prod-3",
      "7 check",
      "7 full-backup madbase-prod-1",
    ]);
    expect(steps.find((s) => s.kind === "remove-cluster-state")!.text).toBe(
      "patronictl -c /etc/patroni/config.yml remove madbase-prod (the cluster's state leaves etcd)",
    );
    expect(steps.find((s) => s.kind === "pg-restore")!.text).toBe("madbase-backup pg-restore latest (as postgres)");
  });
});

describe("status, from what each node says", () => {
  const target: OpsTarget = {
    kind: "local",
    stack: "prod",
    clusterName: "madbase-prod",
    nodes: [1, 2, 3].map((i) => ({
      name: `madbase-prod-${i}`,
      privateIp: `10.42.1.${9 + i}`,
      sshHost: `10.42.1.${9 + i}`,
    })),
    description: "the local cluster of stack prod",
  };
  test("the script asks the node's own Patroni, Redis and Sentinel, with the node's credentials", () => {
    const s = nodeStatusScript();
    expect(s).toContain(". /etc/madbase/node.env; . /etc/madbase/backup.env;");
    expect(s).toContain('--cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY"');
    expect(s).toContain('"https://$NODE_IP:8008/$1"');
    expect(s).toContain("redis-cli --user admin --no-auth-warning -h 127.0.0.1 -p 6380");
    expect(s).toContain('REDISCLI_AUTH="$SENTINEL_AUTH"');
  });

  test("a leader, streaming replicas and one Redis master: healthy", () => {
    const reports = [1, 2, 3].map((i) => parseNodeReport(`madbase-prod-${i}`, said(i), 0));
    const status = judgeStatus(target, reports);
    expect(status.problems).toEqual([]);
    expect(status).toMatchObject({
      leader: "madbase-prod-1",
      redisMaster: "madbase-prod-1",
      synchronousMode: true,
      healthy: true,
    });
    expect(status.nodes[1]).toMatchObject({
      role: "sync_standby",
      state: "streaming",
      timeline: 3,
      lag: 0,
      redisRole: "replica",
      redisLinkUp: true,
    });
  });

  test("an unreachable node, a replica that stopped streaming, a Redis replica cut off: degraded, each named", () => {
    const stopped = members.map((m) => (m.name === "madbase-prod-2" ? { ...m, state: "stopped", lag: "unknown" } : m));
    const reports: NodeReport[] = [
      parseNodeReport("madbase-prod-1", said(1, { members: stopped }), 0),
      parseNodeReport(
        "madbase-prod-2",
        said(2, { members: stopped, redis: "role:slave\r\nmaster_host:10.42.1.10\r\nmaster_link_status:down\r" }),
        0,
      ),
      parseNodeReport("madbase-prod-3", "ssh: connect to host 10.42.1.12 port 22: No route to host", 255),
    ];
    const status = judgeStatus(target, reports);
    expect(status.healthy).toBe(false);
    expect(status.problems).toEqual([
      "madbase-prod-3: not reachable over SSH (ssh exit 255: ssh: connect to host 10.42.1.12 port 22: No route to host)",
      "madbase-prod-2: sync_standby stopped, not streaming from the leader",
      "madbase-prod-2: lag unknown",
      "madbase-prod-2: Redis's link to its master is down",
    ]);
  });
});
