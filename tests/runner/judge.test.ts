/**
 * The health rules on made-up observations (no node, no root): a healthy three-node cluster judged
 * healthy, and each thing that can be wrong with one named in the problems, the way `up` and the
 * end-to-end tests read them.
 */
import { HaproxyServer } from "../../local/probes";
import { BACKENDS, ClusterObservation, NodeObservation, PROCESS_NAMES, judgeHealth } from "../../local/judge";
import { EXPORTERS } from "../../local/exporters";
import { LocalClusterState, SERVICES } from "../../local/state";
import { summarize } from "../../local/health";

const NAMES = ["n-1", "n-2", "n-3"];
const ip = (name: string) => `10.9.0.${NAMES.indexOf(name) + 11}`;

/** Three nodes as a settled cluster shows them: n-1 leads PostgreSQL and Redis, n-2 is sync standby. */
function healthy(): ClusterObservation {
  const members = NAMES.map((name, i) => ({
    name,
    role: ["leader", "sync_standby", "replica"][i],
    state: i === 0 ? "running" : "streaming",
    host: ip(name),
    timeline: 3,
    lag: i === 0 ? undefined : 0,
  }));
  const routes = (name: string): HaproxyServer[] =>
    BACKENDS.flatMap((proxy): HaproxyServer[] =>
      NAMES.map((server) => ({
        proxy,
        server,
        status: (proxy === "postgres_replicas" ? server !== "n-1" : server === "n-1") ? "UP" : "DOWN",
      })),
    ).concat([{ proxy: "stats", server: name, status: "no check" }]);
  const node = (name: string, i: number): NodeObservation => ({
    node: { name, address: ip(name), namespace: `ns-${name}` },
    linkUp: true,
    probe: {
      running: true,
      units: Object.fromEntries(SERVICES.map((s, k) => [s, { state: "active", pid: 100 + k }])) as never,
      postmasterPid: 90,
      cloudInit: "done",
      cloudInitErrors: [],
      ready: true,
      volumeMounted: true,
    },
    members: members.map((m) => ({ ...m })),
    self: {
      state: "running",
      role: i === 0 ? "primary" : "replica",
      timeline: 3,
      replication:
        i === 0
          ? [
              { application_name: "n-2", state: "streaming", sync_state: "sync" },
              { application_name: "n-3", state: "streaming", sync_state: "async" },
            ]
          : undefined,
    },
    redis:
      i === 0
        ? { role: "master", connectedReplicas: 2 }
        : { role: "slave", connectedReplicas: 0, masterHost: ip("n-1"), masterLinkUp: true },
    sentinel: {
      master: ip("n-1"),
      replicas: ["n-2", "n-3"].map(ip),
      sentinels: NAMES.filter((n) => n !== name).map(ip),
    },
    etcd: true,
    haproxy: routes(name),
    exporters: {
      status: Object.fromEntries(EXPORTERS.map((e) => [e, "up"])) as never,
      samples: {
        postgres: [
          { name: "pg_stat_database_numbackends", labels: { datname: "app" }, value: 7 },
          { name: "pg_stat_database_numbackends", labels: { datname: "postgres" }, value: 3 },
          { name: "pg_settings_max_connections", labels: {}, value: 100 },
        ],
        redis: [
          { name: "redis_memory_used_bytes", labels: {}, value: 1024 },
          { name: "redis_memory_max_bytes", labels: {}, value: 4096 },
        ],
      },
    },
  });
  return { nodes: NAMES.map(node), synchronousMode: true };
}

/** The observation of one node, to change in place. */
const at = (o: ClusterObservation, name: string) => o.nodes.find((n) => n.node.name === name)!;

test("a settled cluster is healthy: who leads, who is sync standby, who is Redis master, the usage figures", () => {
  const h = judgeHealth(healthy());
  expect(h.problems).toEqual([]);
  expect(h.healthy).toBe(true);
  expect([h.leader, h.syncStandby, h.redisMaster]).toEqual(["n-1", "n-2", "n-1"]);
  expect(h.postgresConnections).toEqual({ used: 10, max: 100 });
  expect(h.redisMemory).toEqual({ usedBytes: 1024, maxBytes: 4096 });
  const n2 = h.nodes[1];
  expect([n2.role, n2.streaming, n2.redisRole, n2.redisMasterHost, n2.timeline]).toEqual([
    "sync_standby",
    true,
    "replica",
    ip("n-1"),
    3,
  ]);
  expect(n2.haproxy!.postgres_replicas).toEqual({ "n-1": "DOWN", "n-2": "UP", "n-3": "UP" });
  expect(Object.keys(n2.pids).sort()).toEqual(expect.arrayContaining([...PROCESS_NAMES].sort()));
});

test("a powered-off node is one problem, not a list of every daemon it does not run", () => {
  const o = healthy();
  at(o, "n-3").probe.running = false;
  const h = judgeHealth(o);
  expect(h.problems.filter((p) => p.startsWith("n-3:"))).toEqual(["n-3: powered off"]);
  expect(h.healthy).toBe(false);
});

test("a node's own troubles are named: cut link, failed cloud-init with its error, no volume, not ready, a stopped daemon, etcd", () => {
  const o = healthy();
  const n3 = at(o, "n-3");
  n3.linkUp = false;
  n3.probe.cloudInit = "error";
  n3.probe.cloudInitErrors = ["scripts-user failed"];
  n3.probe.volumeMounted = false;
  n3.probe.ready = false;
  n3.probe.units.sentinel = { state: "failed", pid: null };
  n3.etcd = false;
  const problems = judgeHealth(o).problems.filter((p) => p.startsWith("n-3:"));
  expect(problems).toEqual([
    "n-3: network link is cut",
    "n-3: cloud-init failed: scripts-user failed",
    expect.stringMatching(/^n-3: no data volume mounted at \/\S+: PostgreSQL will not start without it$/),
    expect.stringMatching(/^n-3: first boot not finished \(no \/\S+\)$/),
    "n-3: sentinel is not running",
    "n-3: etcd is not healthy",
  ]);
});

test("the leader is the one most nodes' Patroni agree on; a node that disagrees does not decide", () => {
  const o = healthy();
  // n-3 lost touch and believes it leads; n-1 and n-2 still agree on n-1.
  at(o, "n-3").members = at(o, "n-3").members!.map((m) => ({ ...m, role: m.name === "n-3" ? "leader" : "replica" }));
  expect(judgeHealth(o).leader).toBe("n-1");
  // When no node's Patroni answers, there is no leader.
  for (const n of o.nodes) n.members = undefined;
  const h = judgeHealth(o);
  expect(h.leader).toBeNull();
  expect(h.problems).toContain("postgres: no leader");
});

test("a replica the leader does not list as streaming, and a missing sync standby, are problems", () => {
  const o = healthy();
  at(o, "n-1").self!.replication = [{ application_name: "n-2", state: "streaming", sync_state: "sync" }];
  expect(judgeHealth(o).problems).toEqual(expect.arrayContaining(["postgres: n-3 is not streaming from the leader"]));
  for (const n of o.nodes)
    n.members = n.members!.map((m) => ({ ...m, role: m.role === "sync_standby" ? "replica" : m.role }));
  expect(judgeHealth(o).problems).toContain("postgres: no synchronous standby");
  // Without synchronous_mode, no sync standby is needed.
  expect(judgeHealth({ ...o, synchronousMode: false }).problems).not.toContain("postgres: no synchronous standby");
});

test("Redis: two masters is no master; a replica of the wrong master, a broken link, a Sentinel naming another", () => {
  const two = healthy();
  at(two, "n-3").redis = { role: "master", connectedReplicas: 0 };
  const h = judgeHealth(two);
  expect(h.redisMaster).toBeNull();
  expect(h.problems).toContain("redis: 2 masters (n-1, n-3)");

  const o = healthy();
  at(o, "n-2").redis = { role: "slave", connectedReplicas: 0, masterHost: ip("n-3"), masterLinkUp: true };
  at(o, "n-3").redis = { role: "slave", connectedReplicas: 0, masterHost: ip("n-1"), masterLinkUp: false };
  at(o, "n-3").sentinel = undefined;
  expect(judgeHealth(o).problems).toEqual([
    "redis: n-2 is not a connected replica of n-1",
    "redis: n-3 is not a connected replica of n-1",
    "sentinel on n-3 names nothing as master",
  ]);
});

test("Sentinel is armed for a failover only when it knows every replica and hears every other Sentinel", () => {
  const o = healthy();
  // Just after `up`: n-2's Sentinel names the master but has not yet read n-3 from its INFO.
  at(o, "n-2").sentinel!.replicas = [ip("n-2")];
  at(o, "n-3").sentinel!.sentinels = [];
  expect(judgeHealth(o).problems).toEqual([
    "sentinel on n-2 does not know n-3 as replicas",
    "sentinel on n-3 does not hear the Sentinels of n-1, n-2",
  ]);
});

test("up's progress line counts the Sentinels armed for a failover, so a wait on them is visible", () => {
  const state = { nodes: NAMES.map((name) => ({ name, address: ip(name) })) } as unknown as LocalClusterState;
  const o = healthy();
  expect(summarize(judgeHealth(o), state)).toContain("sentinel 3/3 armed");
  at(o, "n-2").sentinel!.replicas = [];
  at(o, "n-3").sentinel = undefined;
  expect(summarize(judgeHealth(o), state)).toContain("sentinel 1/3 armed");
});

test("HAProxy: every backend on every node must route to exactly the right servers", () => {
  const o = healthy();
  const n2 = at(o, "n-2");
  n2.haproxy = n2.haproxy!.map((s) =>
    s.proxy === "postgres_primary" && s.server === "n-3"
      ? { ...s, status: "UP" }
      : s.proxy === "redis_master" && s.server === "n-1"
        ? { ...s, status: "DOWN 1/2" }
        : s,
  );
  n2.haproxy = n2.haproxy.filter((s) => !(s.proxy === "postgres_direct" && s.server === "n-2"));
  expect(judgeHealth(o).problems).toEqual([
    "haproxy on n-2: postgres_primary/n-3 is UP, expected DOWN",
    "haproxy on n-2: postgres_direct/n-2 is missing, expected DOWN",
    "haproxy on n-2: redis_master/n-1 is DOWN 1/2, expected UP",
  ]);
  // A running HAProxy whose socket is silent is a problem; a stopped one is named once, as a daemon.
  n2.haproxy = undefined;
  expect(judgeHealth(o).problems).toEqual(["haproxy on n-2: stats socket does not answer"]);
  n2.probe.units.haproxy = { state: "inactive", pid: null };
  expect(judgeHealth(o).problems).toEqual(["n-2: haproxy is not running"]);
});

test("exporters: silent while running, not running, or unable to reach a daemon that runs", () => {
  const o = healthy();
  const n1 = at(o, "n-1");
  n1.exporters.status.node = "down";
  n1.exporters.status.redis = "target-down";
  n1.exporters.status.pgbouncer = "down";
  n1.probe.units.pgbouncer_exporter = { state: "failed", pid: null };
  expect(judgeHealth(o).problems).toEqual([
    expect.stringMatching(/^metrics: node exporter on n-1 does not answer on 10\.9\.0\.11:\d+$/),
    "metrics: redis exporter on n-1 cannot reach its redis",
    "metrics: pgbouncer exporter on n-1 is not running",
  ]);
  // An exporter that cannot reach a daemon which is itself down adds nothing: the daemon is named.
  n1.probe.units.redis = { state: "failed", pid: null };
  expect(judgeHealth(o).problems).not.toContain("metrics: redis exporter on n-1 cannot reach its redis");
});

test("no usage figures without the leader's and the master's exporter samples", () => {
  const o = healthy();
  at(o, "n-1").exporters.samples = {};
  const h = judgeHealth(o);
  expect([h.postgresConnections, h.redisMemory]).toEqual([null, null]);
});
