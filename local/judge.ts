/**
 * Judging the cluster's health from one look at it: a pure function from what every node answered
 * (see local/health.ts, which asks) to the value `up` waits on, `status` prints and the tests assert
 * on, with the list of reasons the cluster is not (yet) healthy. No I/O here, so every rule is
 * tested without root (tests/runner/judge.test.ts).
 */
import { serverPaths } from "../core";
import { HaproxyServer, PatroniMember, PatroniNode, RedisReplication, SentinelView } from "./probes";
import { LocalNode } from "./state";
import { CloudInitStatus, NodeProbe } from "./node-probe";
import {
  EXPORTERS,
  EXPORTER_PORTS,
  Exporter,
  ExporterProbe,
  ExporterService,
  ExporterStatus,
  exporterService,
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
  /** Addresses of the replicas this node's Sentinel would promote or reconfigure (see SentinelView). */
  sentinelReplicas: string[];
  /** Addresses of the other Sentinels this node's Sentinel hears. */
  sentinelPeers: string[];
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

/** What one node answered in one look; undefined where a daemon did not answer. */
export interface NodeObservation {
  node: Pick<LocalNode, "name" | "address" | "namespace">;
  /** The node's link into the local network is up. */
  linkUp: boolean;
  /** The node's own report, read through its console. */
  probe: NodeProbe;
  /** Patroni's member list as this node's Patroni sees it (GET /cluster). */
  members?: PatroniMember[];
  /** This node's Patroni about itself (GET /patroni). */
  self?: PatroniNode;
  redis?: RedisReplication;
  /** What this node's Sentinel knows: the master it names, the replicas and Sentinels it can use. */
  sentinel?: SentinelView;
  etcd: boolean;
  /** HAProxy's servers from its stats socket. */
  haproxy?: HaproxyServer[];
  exporters: ExporterProbe;
}

export interface ClusterObservation {
  nodes: NodeObservation[];
  /** Patroni runs with synchronous_mode, so a cluster of more than one node needs a sync standby. */
  synchronousMode: boolean;
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

/** The cluster's health as the observations show it. */
export function judgeHealth(observed: ClusterObservation): ClusterHealth {
  const members = agreedMembers(observed.nodes.map((o) => o.members));
  const leader = members.find((m) => m.role === "leader")?.name ?? null;
  const syncStandby = members.find((m) => m.role === "sync_standby")?.name ?? null;
  const leaderSelf: PatroniNode | undefined = observed.nodes.find((o) => o.node.name === leader)?.self;
  const streamingNames = new Set(
    (leaderSelf?.replication ?? []).filter((r) => r.state === "streaming").map((r) => r.application_name),
  );
  const masters = observed.nodes.filter((o) => o.redis?.role === "master");
  const redisMaster = masters.length === 1 ? masters[0].node : null;

  const nodes: NodeHealth[] = observed.nodes.map(
    ({ node, linkUp, probe, self, redis, sentinel, etcd, haproxy, exporters }) => {
      const member = members.find((m) => m.name === node.name);
      return {
        name: node.name,
        address: node.address,
        namespace: node.namespace,
        linkUp,
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
        sentinelMaster: sentinel?.master ?? null,
        sentinelReplicas: sentinel?.replicas ?? [],
        sentinelPeers: sentinel?.sentinels ?? [],
        etcdHealthy: etcd,
        haproxy: groupHaproxy(haproxy),
        timeline: typeof self?.timeline === "number" ? self.timeline : (member?.timeline ?? null),
        exporters: exporters.status,
      };
    },
  );

  const problems: string[] = [];
  for (const n of nodes) {
    const probe = observed.nodes.find((o) => o.node.name === n.name)!.probe;
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
  if (observed.synchronousMode && nodes.length > 1 && !syncStandby) problems.push("postgres: no synchronous standby");
  if (masters.length !== 1)
    problems.push(`redis: ${masters.length} masters (${masters.map((m) => m.node.name).join(", ") || "none"})`);
  for (const n of nodes) {
    if (redisMaster && n.name !== redisMaster.name) {
      const r = observed.nodes.find((o) => o.node.name === n.name)?.redis;
      if (!r || r.role !== "slave" || r.masterHost !== redisMaster.address || !r.masterLinkUp) {
        problems.push(`redis: ${n.name} is not a connected replica of ${redisMaster.name}`);
      }
    }
    if (redisMaster && n.sentinelMaster !== redisMaster.address) {
      problems.push(`sentinel on ${n.name} names ${n.sentinelMaster ?? "nothing"} as master`);
    } else if (redisMaster) {
      // Armed for a failover: a Sentinel promotes and repoints only the replicas it learnt from the
      // master's INFO (every 10 s), and votes with the Sentinels it hears; a cluster that has just
      // come up can name its master before it knows them.
      const unknown = nodes.filter((r) => r.name !== redisMaster.name && !n.sentinelReplicas.includes(r.address));
      if (unknown.length > 0)
        problems.push(`sentinel on ${n.name} does not know ${unknown.map((r) => r.name).join(", ")} as replicas`);
      const unheard = nodes.filter((p) => p.name !== n.name && !n.sentinelPeers.includes(p.address));
      if (unheard.length > 0)
        problems.push(`sentinel on ${n.name} does not hear the Sentinels of ${unheard.map((p) => p.name).join(", ")}`);
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
  const leaderPg = observed.nodes.find((o) => o.node.name === leader)?.exporters.samples.postgres;
  const used = leaderPg && sampleSum(leaderPg, "pg_stat_database_numbackends");
  const max = leaderPg && sampleValue(leaderPg, "pg_settings_max_connections");
  const masterRedis = redisMaster
    ? observed.nodes.find((o) => o.node.name === redisMaster.name)?.exporters.samples.redis
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
