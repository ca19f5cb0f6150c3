/**
 * The cluster's health as one value: what each node runs and reports, and the list of reasons it
 * is not (yet) healthy. `up` waits for an empty list, `status` prints it, the tests assert on it.
 */
import { ClusterSecrets, RefusedError, serverPaths } from "../core";
import { hostLinkUp, nodeLinkUp } from "./network";
import {
  HaproxyServer,
  PatroniMember,
  PatroniNode,
  RedisReplication,
  etcdHealthy,
  haproxyServers,
  patroniCluster,
  patroniNode,
  redisReplication,
  sentinelMaster,
  probeAuth,
} from "./probes";
import { LocalClusterState } from "./state";
import { machinePath } from "./machine";
import { CloudInitStatus, NodeProbe, probeNode } from "./node-probe";
import {
  EXPORTERS,
  EXPORTER_PORTS,
  Exporter,
  ExporterService,
  ExporterStatus,
  exporterService,
  probeExporters,
} from "./exporters";
import { sampleSum, sampleValue } from "./metrics";

export const PROCESS_NAMES = ["etcd", "patroni", "postgres", "redis", "sentinel", "haproxy", "pgbouncer"] as const;
export type ProcessName = (typeof PROCESS_NAMES)[number];

/** The HAProxy listeners (backends) of the rendered haproxy.cfg. */
export const BACKENDS = ["postgres_primary", "postgres_direct", "postgres_replicas", "redis_master"] as const;
export type Backend = (typeof BACKENDS)[number];

export interface NodeHealth {
  name: string;
  address: string;
  namespace: string;
  linkUp: boolean;
  /** The machine is powered on. */
  running: boolean;
  /** What `cloud-init status` says for this boot. */
  cloudInit: CloudInitStatus;
  /** The node's readiness marker: its first boot finished. */
  ready: boolean;
  /** PostgreSQL's data volume is mounted. */
  volumeMounted: boolean;
  /** PIDs inside the node of each active daemon (systemd's MainPID; the postmaster's from its pid file); null when not running. */
  pids: NodePids;
  /** Patroni's role for the member: leader, sync_standby, replica; "down" when Patroni does not answer. */
  role: string;
  /** Patroni's member state: running, streaming, starting, stopped... */
  postgresState: string;
  /** Bytes behind the leader (replicas). */
  lagBytes: number | null;
  streaming: boolean;
  redisRole: "master" | "replica" | "down";
  /** Address of the master this node's Redis replicates from (replicas). */
  redisMasterHost: string | null;
  sentinelMaster: string | null;
  etcdHealthy: boolean;
  /** Each backend's servers and their HAProxy status, by node name; null when HAProxy does not answer. */
  haproxy: Record<Backend, Record<string, string>> | null;
  /** PostgreSQL timeline as Patroni reports it: one more after every failover or switchover. */
  timeline: number | null;
  /** The node's Prometheus exporters, scraped at its private address (see local/exporters.ts). */
  exporters: Record<Exporter, ExporterStatus>;
}

export interface ClusterHealth {
  nodes: NodeHealth[];
  leader: string | null;
  syncStandby: string | null;
  redisMaster: string | null;
  /** Client connections on the leader against max_connections (the plan's), from its exporter. */
  postgresConnections: { used: number; max: number } | null;
  /** Memory the Redis master uses against its maxmemory, from its exporter. */
  redisMemory: { usedBytes: number; maxBytes: number } | null;
  /** Empty when the cluster is healthy. */
  problems: string[];
  healthy: boolean;
}

export class HostLinkDownError extends RefusedError {
  constructor(state: LocalClusterState) {
    super(
      `this machine's link into the local network (${state.networkId}-host, ${state.hostIp}) is not up; ` +
        "refusing to contact node addresses without it. Run `npm run local -- down` and `up` again.",
    );
  }
}

/** Throws unless connections from this machine to the nodes' addresses will reach our namespaces. */
export function assertHostLink(state: LocalClusterState): void {
  if (!hostLinkUp(state.networkId, state.hostIp)) throw new HostLinkDownError(state);
}

/** The PIDs of a node's daemons, its postmaster and its exporters. */
export type NodePids = Record<ProcessName, number | null> & Partial<Record<ExporterService, number | null>>;

/** The PIDs of a node's daemons as its systemd reports them, and its postmaster's. */
export function nodePids(probe: NodeProbe): NodePids {
  return {
    etcd: probe.units.etcd.pid,
    patroni: probe.units.patroni.pid,
    postgres: probe.postmasterPid,
    redis: probe.units.redis.pid,
    sentinel: probe.units.sentinel.pid,
    haproxy: probe.units.haproxy.pid,
    pgbouncer: probe.units.pgbouncer.pid,
    node_exporter: probe.units.node_exporter.pid,
    postgres_exporter: probe.units.postgres_exporter.pid,
    redis_exporter: probe.units.redis_exporter.pid,
    pgbouncer_exporter: probe.units.pgbouncer_exporter.pid,
  };
}

function groupHaproxy(servers: HaproxyServer[] | undefined): Record<Backend, Record<string, string>> | null {
  if (!servers) return null;
  const out = Object.fromEntries(BACKENDS.map((b) => [b, {}])) as Record<Backend, Record<string, string>>;
  for (const s of servers)
    if ((BACKENDS as readonly string[]).includes(s.proxy)) out[s.proxy as Backend][s.server] = s.status;
  return out;
}

/** Patroni's member list as most reachable nodes report it. */
function agreedMembers(views: (PatroniMember[] | undefined)[]): PatroniMember[] {
  const answered = views.filter((v): v is PatroniMember[] => Array.isArray(v));
  const leaderOf = (v: PatroniMember[]) => v.find((m) => m.role === "leader")?.name ?? "";
  const votes = new Map<string, number>();
  for (const v of answered) votes.set(leaderOf(v), (votes.get(leaderOf(v)) ?? 0) + 1);
  const best = [...votes.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  return answered.find((v) => leaderOf(v) === best) ?? [];
}

export async function clusterHealth(state: LocalClusterState, secrets: ClusterSecrets): Promise<ClusterHealth> {
  assertHostLink(state);
  const net = { hub: `${state.networkId}-hub` };
  const probes = await Promise.all(
    state.nodes.map(async (node) => {
      const probe = probeNode(node.machine);
      // HAProxy's admin socket, inside the node, seen through its /proc root.
      const socket = machinePath(node.machine, serverPaths().haproxySocket);
      const [members, self, redis, sentinel, etcd, haproxy, exporters] = await Promise.all([
        patroniCluster(node.address),
        patroniNode(node.address),
        redisReplication(node.address, probeAuth(secrets).redis),
        sentinelMaster(node.address, state.clusterName, probeAuth(secrets).sentinel),
        etcdHealthy(node.address),
        socket ? haproxyServers(socket) : Promise.resolve(undefined),
        probeExporters(node.address),
      ]);
      return { node, probe, members, self, redis, sentinel, etcd, haproxy, exporters };
    }),
  );
  const members = agreedMembers(probes.map((p) => p.members));
  const leader = members.find((m) => m.role === "leader")?.name ?? null;
  const syncStandby = members.find((m) => m.role === "sync_standby")?.name ?? null;
  const leaderSelf: PatroniNode | undefined = probes.find((p) => p.node.name === leader)?.self;
  const streamingNames = new Set(
    (leaderSelf?.replication ?? []).filter((r) => r.state === "streaming").map((r) => r.application_name),
  );
  const masters = probes.filter((p) => p.redis?.role === "master");
  const redisMaster = masters.length === 1 ? masters[0].node : null;

  const nodes: NodeHealth[] = probes.map(({ node, probe, self, redis, sentinel, etcd, haproxy, exporters }) => {
    const member = members.find((m) => m.name === node.name);
    return {
      name: node.name,
      address: node.address,
      namespace: node.namespace,
      linkUp: nodeLinkUp(net, { name: node.name, privateIp: node.address }),
      running: probe.running,
      cloudInit: probe.cloudInit,
      ready: probe.ready,
      volumeMounted: probe.volumeMounted,
      pids: nodePids(probe),
      role: self ? (member?.role ?? "unknown") : "down",
      postgresState: member?.state ?? self?.state ?? "unreachable",
      lagBytes: typeof member?.lag === "number" ? member.lag : null,
      streaming: streamingNames.has(node.name),
      redisRole: redisRoleOf(redis),
      redisMasterHost: redis?.role === "slave" ? (redis.masterHost ?? null) : null,
      sentinelMaster: sentinel ?? null,
      etcdHealthy: etcd,
      haproxy: groupHaproxy(haproxy),
      timeline: typeof self?.timeline === "number" ? self.timeline : (member?.timeline ?? null),
      exporters: exporters.status,
    };
  });

  const problems: string[] = [];
  for (const n of nodes) {
    const probe = probes.find((p) => p.node.name === n.name)!.probe;
    if (!n.running) {
      problems.push(`${n.name}: powered off`);
      continue;
    }
    if (!n.linkUp) problems.push(`${n.name}: network link is cut`);
    if (n.cloudInit === "error") problems.push(`${n.name}: cloud-init failed: ${probe.cloudInitErrors.join("; ")}`);
    else if (n.cloudInit !== "done") problems.push(`${n.name}: cloud-init is ${n.cloudInit}`);
    if (!n.volumeMounted)
      problems.push(
        `${n.name}: no data volume mounted at ${serverPaths().volumeMount}: PostgreSQL will not start without it`,
      );
    if (!n.ready) problems.push(`${n.name}: first boot not finished (no ${serverPaths().readyMarker})`);
    for (const p of PROCESS_NAMES) if (n.pids[p] === null) problems.push(`${n.name}: ${p} is not running`);
    if (!n.etcdHealthy) problems.push(`${n.name}: etcd is not healthy`);
  }
  if (!leader) problems.push("postgres: no leader");
  for (const n of nodes) {
    if (n.name !== leader && !n.streaming) problems.push(`postgres: ${n.name} is not streaming from the leader`);
  }
  if (state.synchronousMode && state.nodes.length > 1 && !syncStandby)
    problems.push("postgres: no synchronous standby");
  if (masters.length !== 1)
    problems.push(`redis: ${masters.length} masters (${masters.map((m) => m.node.name).join(", ") || "none"})`);
  for (const n of nodes) {
    if (redisMaster && n.name !== redisMaster.name) {
      const r = probes.find((p) => p.node.name === n.name)?.redis;
      if (!r || r.role !== "slave" || r.masterHost !== redisMaster.address || !r.masterLinkUp) {
        problems.push(`redis: ${n.name} is not a connected replica of ${redisMaster.name}`);
      }
    }
    if (redisMaster && n.sentinelMaster !== redisMaster.address) {
      problems.push(`sentinel on ${n.name} names ${n.sentinelMaster ?? "nothing"} as master`);
    }
  }
  for (const n of nodes) {
    if (!n.haproxy) {
      if (n.pids.haproxy !== null) problems.push(`haproxy on ${n.name}: stats socket does not answer`);
      continue;
    }
    const expectUp: Record<Backend, (server: NodeHealth) => boolean> = {
      postgres_primary: (s) => s.name === leader,
      postgres_direct: (s) => s.name === leader,
      postgres_replicas: (s) => s.name !== leader && s.streaming,
      redis_master: (s) => s.name === redisMaster?.name,
    };
    for (const backend of BACKENDS) {
      for (const server of nodes) {
        const status = n.haproxy[backend][server.name] ?? "missing";
        const expected = expectUp[backend](server) ? "UP" : "DOWN";
        if (status !== expected)
          problems.push(`haproxy on ${n.name}: ${backend}/${server.name} is ${status}, expected ${expected}`);
      }
    }
  }
  for (const n of nodes) {
    for (const e of EXPORTERS) {
      const pid = n.pids[exporterService(e)] ?? null;
      if (n.exporters[e] === "down" && pid !== null)
        problems.push(`metrics: ${e} exporter on ${n.name} does not answer on ${n.address}:${EXPORTER_PORTS[e]}`);
      if (n.exporters[e] === "down" && pid === null)
        problems.push(`metrics: ${e} exporter on ${n.name} is not running`);
      // Only worth a line when the daemon runs: then the exporter cannot reach it or log in.
      const target =
        e === "postgres" ? n.pids.postgres : e === "redis" ? n.pids.redis : e === "pgbouncer" ? n.pids.pgbouncer : null;
      if (n.exporters[e] === "target-down" && target !== null)
        problems.push(`metrics: ${e} exporter on ${n.name} cannot reach its ${e}`);
    }
  }
  const leaderPg = probes.find((p) => p.node.name === leader)?.exporters.samples.postgres;
  const used = leaderPg && sampleSum(leaderPg, "pg_stat_database_numbackends");
  const max = leaderPg && sampleValue(leaderPg, "pg_settings_max_connections");
  const masterRedis = redisMaster
    ? probes.find((p) => p.node.name === redisMaster.name)?.exporters.samples.redis
    : undefined;
  const usedBytes = masterRedis && sampleValue(masterRedis, "redis_memory_used_bytes");
  const maxBytes = masterRedis && sampleValue(masterRedis, "redis_memory_max_bytes");
  return {
    nodes,
    leader,
    syncStandby,
    redisMaster: redisMaster?.name ?? null,
    postgresConnections: used !== undefined && max !== undefined ? { used, max } : null,
    redisMemory: usedBytes !== undefined && maxBytes !== undefined ? { usedBytes, maxBytes } : null,
    problems,
    healthy: problems.length === 0,
  };
}

function redisRoleOf(r: RedisReplication | undefined): NodeHealth["redisRole"] {
  if (!r) return "down";
  return r.role === "master" ? "master" : "replica";
}

/** Which servers a backend routes to (the UP ones), as node numbers: "1", "2,3", "-". */
function upServers(n: NodeHealth, backend: Backend, names: string[]): string {
  if (!n.haproxy) return "?";
  const up = names.filter((s) => n.haproxy![backend][s] === "UP").map((s) => String(names.indexOf(s) + 1));
  const settling = names.some((s) => !["UP", "DOWN"].includes(n.haproxy![backend][s] ?? ""));
  return (up.join(",") || "-") + (settling ? "~" : "");
}

function formatLag(n: NodeHealth): string {
  if (n.role === "leader") return "";
  if (n.lagBytes === null) return "?";
  return n.lagBytes < 1024 ? `${n.lagBytes} B` : `${(n.lagBytes / 1024).toFixed(0)} kB`;
}

/** "ok" when every exporter answer and reach their daemons; otherwise which do not. */
function formatExporters(n: NodeHealth): string {
  const bad = EXPORTERS.filter((e) => n.exporters[e] !== "up");
  return bad.length === 0 ? "ok" : bad.map((e) => `${e}:${n.exporters[e]}`).join(",");
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * The few cluster-wide lines an operator reads first: who leads (and on which timeline), how full
 * the connection slots and Redis memory are, and whether metrics are being exported everywhere.
 */
export function formatOverview(h: ClusterHealth): string {
  const leader = h.nodes.find((n) => n.name === h.leader);
  const pg = h.leader
    ? `postgres: leader ${h.leader}${leader?.timeline != null ? ` (timeline ${leader.timeline})` : ""}, sync standby ${h.syncStandby ?? "none"}`
    : "postgres: no leader";
  const conns = h.postgresConnections
    ? `, connections ${h.postgresConnections.used}/${h.postgresConnections.max} (${Math.round((100 * h.postgresConnections.used) / h.postgresConnections.max)}%)`
    : "";
  const mem = h.redisMemory ? `, memory ${mib(h.redisMemory.usedBytes)} of ${mib(h.redisMemory.maxBytes)}` : "";
  const exporting = h.nodes.filter((n) => EXPORTERS.every((e) => n.exporters[e] === "up")).length;
  return [
    pg + conns,
    `redis: ${h.redisMaster ? `master ${h.redisMaster}` : "no single master"}${mem}`,
    `metrics: ${exporting}/${h.nodes.length} nodes export ${EXPORTERS.join("/")} metrics (${EXPORTERS.map((e) => EXPORTER_PORTS[e]).join("/")})`,
  ].join("\n");
}

/** A plain-text table of the cluster, one row per node. */
export function formatHealth(h: ClusterHealth): string {
  const names = h.nodes.map((n) => n.name);
  const header = [
    "NODE",
    "ADDRESS",
    "BOOT",
    "POSTGRES",
    "LAG",
    "REDIS",
    "SENTINEL",
    "ETCD",
    "HAPROXY pg/direct/ro/redis",
    "METRICS",
    "PIDS etcd patroni postgres redis sentinel haproxy pgbouncer",
  ];
  const rows = h.nodes.map((n) => [
    n.linkUp ? n.name : `${n.name} (cut)`,
    n.address,
    !n.running ? "off" : n.ready ? "ready" : n.cloudInit === "done" ? "booted" : `cloud-init ${n.cloudInit}`,
    n.role === "down"
      ? "down"
      : `${n.role}${n.postgresState === "running" || n.postgresState === "streaming" ? "" : ` (${n.postgresState})`}`,
    formatLag(n),
    n.redisRole,
    n.sentinelMaster ? `-> ${n.sentinelMaster}` : "-",
    n.etcdHealthy ? "ok" : "down",
    BACKENDS.map((b) => upServers(n, b, names)).join(" / "),
    formatExporters(n),
    PROCESS_NAMES.map((p) => n.pids[p] ?? "-").join(" "),
  ]);
  const widths = header.map((_, i) => Math.max(header[i].length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: (string | number)[]) =>
    cells
      .map((c, i) => String(c).padEnd(widths[i]))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** One line summing up how far the cluster has come, for progress while it starts. */
export function summarize(h: ClusterHealth, state: LocalClusterState): string {
  const total = h.nodes.length;
  const etcd = h.nodes.filter((n) => n.etcdHealthy).length;
  const streaming = h.nodes.filter((n) => n.streaming).length;
  const redisReplicas = h.nodes.filter(
    (n) =>
      n.redisRole === "replica" &&
      h.redisMaster &&
      n.redisMasterHost === state.nodes.find((x) => x.name === h.redisMaster)?.address,
  ).length;
  const haproxySettled = h.nodes.filter(
    (n) => !h.problems.some((p) => p.startsWith(`haproxy on ${n.name}:`)) && n.haproxy,
  ).length;
  return [
    `etcd ${etcd}/${total}`,
    `postgres ${h.leader ? `leader ${h.leader}` : "electing"}, ${streaming}/${total - 1} streaming`,
    `redis ${h.redisMaster ? `master ${h.redisMaster}` : "no master"}, ${redisReplicas}/${total - 1} replicas`,
    `haproxy ${haproxySettled}/${total} settled`,
  ].join(" · ");
}
