/**
 * config-refresh as text: every setting it converges comes from the same source as a new node's
 * files, and a change of one setting changes only the parts of the script that apply it.
 */
import * as yaml from "js-yaml";
import { spawnSync } from "node:child_process";
import {
  ClusterOptions,
  ScriptContext,
  buildTopology,
  describeCluster,
  drainScript,
  dynamicConfig,
  parseSettings,
  refreshOrder,
  refreshScript,
  renderNode,
  serverPaths,
  settleScript,
} from "../../core";
import { fixtureTls, randomSecrets } from "../support/fixtures";

const secrets = randomSecrets();
const optionsFor = (raw: Record<string, unknown>): ClusterOptions =>
  describeCluster(parseSettings("prod", { nodeCount: 3, ...raw })).options;
const base = optionsFor({ plan: "cx21", failoverProfile: "norm", synchronousMode: true });
const topology = buildTopology({ stack: "prod", nodeCount: 3, subnetCidr: "10.42.1.0/24" });
const node = topology.nodes[1];
const ctx = (options: ClusterOptions, extra: Partial<ScriptContext> = {}): ScriptContext => ({
  options,
  tls: fixtureTls(),
  secrets,
  ...extra,
});
const refresh = (options: ClusterOptions, extra: Partial<ScriptContext> = {}) =>
  refreshScript(topology, node, ctx(options, extra));

/** The lines of `b` that are not in `a`. */
function added(a: string, b: string): string[] {
  const old = new Set(a.split("\n"));
  return b.split("\n").filter((line) => !old.has(line));
}

describe("config-refresh", () => {
  it("sets Patroni's dynamic configuration to exactly what a new cluster bootstraps with", () => {
    const patroniYml = renderNode({ topology, node, options: base, secrets, tls: fixtureTls(), paths: serverPaths() })[
      "patroni.yml"
    ];
    const bootstrap = (yaml.load(patroniYml) as { bootstrap: { dcs: unknown } }).bootstrap.dcs;
    expect(bootstrap).toEqual(dynamicConfig(base));
    expect(refresh(base)).toContain(`readonly DYNAMIC_CONFIG='${JSON.stringify(dynamicConfig(base))}'`);
  });

  it("a new failover profile changes the dynamic configuration, HAProxy's checks and Sentinel's timings, nothing else", () => {
    const fast = optionsFor({ plan: "cx21", failoverProfile: "fast", synchronousMode: true });
    const lines = added(refresh(base), refresh(fast));
    expect(
      lines.some(
        (l) => l.startsWith("readonly DYNAMIC_CONFIG=") && l.includes('"ttl":20,"loop_wait":1,"retry_timeout":5'),
      ),
    ).toBe(true);
    expect(lines.some((l) => l.includes("default-server inter 500ms"))).toBe(true);
    expect(lines.some((l) => l.includes('"down-after-milliseconds 3000" "failover-timeout 10000"'))).toBe(true);
    // Nothing about memory, Redis's maxmemory or files.
    expect(lines.filter((l) => /shared_buffers|maxmemory|MADBASE_FILE|put_file/.test(l))).toEqual([]);
  });

  it("a new plan changes max_connections (shared), this node's memory settings and Redis's maxmemory", () => {
    const bigger = optionsFor({ plan: "cx31", failoverProfile: "norm", synchronousMode: true });
    const lines = added(refresh(base), refresh(bigger)).join("\n");
    expect(lines).toContain('"max_connections":200');
    expect(lines).toContain("shared_buffers: 4096MB");
    expect(lines).toContain(`redis_set maxmemory ${2048 * 1024 * 1024}`);
    expect(lines).not.toContain("down-after-milliseconds");
  });

  it("a new poolMode replaces pgbouncer.ini, followed by a PgBouncer reload, and nothing else", () => {
    const session = optionsFor({ plan: "cx21", failoverProfile: "norm", synchronousMode: true, poolMode: "session" });
    const ini = (o: ClusterOptions) =>
      renderNode({ topology, node, options: o, secrets, tls: fixtureTls(), paths: serverPaths() })["pgbouncer.ini"];
    expect(ini(session)).toContain("pool_mode = session");
    const b64 = Buffer.from(ini(session)).toString("base64");
    expect(added(refresh(base), refresh(session))).toEqual([b64]);
    const text = refresh(session);
    const at = text.indexOf(b64);
    expect(text.slice(text.lastIndexOf("put_file", at), at)).toContain(
      'put_file "/etc/pgbouncer/pgbouncer.ini" "root:postgres" "0640"',
    );
    expect(text.slice(at, at + b64.length + 200)).toContain(
      'MADBASE_FILE\nthen\n  say "file: /etc/pgbouncer/pgbouncer.ini replaced"\n  svc reload pgbouncer\n',
    );
  });

  it("makes PgBouncer's auth role and lookup function on the leader when they are missing (a cluster from before PgBouncer)", () => {
    const text = refresh(base);
    expect(text).toContain("to_regprocedure('pgbouncer.get_auth(text)')");
    expect(text).toMatch(/base64 -d <<<'[A-Za-z0-9+/=]+' \| runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1/);
  });

  it("synchronous mode is a dynamic setting only", () => {
    const off = optionsFor({ plan: "cx21", failoverProfile: "norm", synchronousMode: false });
    const lines = added(refresh(base), refresh(off));
    expect(
      lines.filter((l) => !l.startsWith("readonly DYNAMIC_CONFIG=") && !/^\s+synchronous_mode: false$/.test(l)),
    ).toEqual([]);
    expect(lines.some((l) => l.includes('"synchronous_mode":false'))).toBe(true);
  });

  it("makes root's keys exactly the stack's when it has some, and leaves them alone otherwise", () => {
    const keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"];
    const text = refresh(base, { authorizedKeys: keys });
    expect(text).toContain(
      `put_file /root/.ssh/authorized_keys root:root 0600 <<'MADBASE_FILE'\n${Buffer.from(`${keys[0]}\n`).toString("base64")}\n`,
    );
    expect(refresh(base)).not.toContain("authorized_keys");
  });

  it("restarts PostgreSQL only after moving leadership to the nodes refreshed before it", () => {
    // Last node first: node 2 (madbase-prod-2) comes after madbase-prod-3.
    expect(refreshOrder(topology).map((n) => n.name)).toEqual(["madbase-prod-3", "madbase-prod-2", "madbase-prod-1"]);
    expect(refresh(base)).toContain('  drain_postgres "madbase-prod-3"\n');
    expect(refreshScript(topology, topology.nodes[2], ctx(base))).toContain("  drain_postgres\n");
  });

  it("drain and settle are the library's, for the node they run on", () => {
    expect(drainScript(topology, node, ctx(base), { prefer: [topology.nodes[2].name] })).toMatch(
      /\ndrain_postgres "madbase-prod-3"\ndrain_redis\n/,
    );
    expect(settleScript(topology, node, ctx(base))).toMatch(/readonly NODE="madbase-prod-2"[\s\S]*\nsettle_node\n/);
  });
});

/** config-refresh for node 2 of a prod cluster, run here by bash with only `env` added to PATH. */
function refreshHere(env: Record<string, string>) {
  const { topology, options } = describeCluster(parseSettings("prod", { nodeCount: 3 }));
  const script = refreshScript(topology, topology.nodes[1], ctx(options));
  return spawnSync("bash", ["-s"], { input: script, encoding: "utf8", env: { PATH: process.env.PATH, ...env } });
}

test("config-refresh on a node without PgBouncer stops before touching HAProxy, saying why", () => {
  const r = refreshHere({ PGBOUNCER_BIN: "/nonexistent/pgbouncer" });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/FAILED: this node has no PgBouncer .*Nothing was changed\./);
  expect(r.stdout).not.toMatch(/haproxy:/);
});

test("config-refresh on a node first booted before TLS (no cluster CA) stops before touching HAProxy, saying why", () => {
  // PgBouncer is there (any executable passes that check); the CA is not.
  const r = refreshHere({ PGBOUNCER_BIN: "/bin/true", TLS_CA_FILE: "/nonexistent/ca.crt" });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/FAILED: this node has no cluster CA at \/nonexistent\/ca\.crt .*Nothing was changed\./);
  expect(r.stdout).not.toMatch(/haproxy:/);
  // On a server the check reads the node's own CA path (the script's TLS_CA), which this machine lacks.
  const server = refreshHere({ PGBOUNCER_BIN: "/bin/true" });
  expect(server.stderr).toContain(`FAILED: this node has no cluster CA at ${serverPaths().tls.caCert} `);
});
