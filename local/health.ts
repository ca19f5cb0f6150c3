/**
 * Asking the cluster how it is: one look at every node (its console, Patroni, Redis, Sentinel,
 * etcd, HAProxy's socket, the exporters), judged by local/judge.ts; and the text `status` prints.
 */
import { ClusterSecrets, RefusedError, serverPaths } from "../core";
import { hostLinkUp, nodeLinkUp } from "./network";
import {
  etcdHealthy,
  haproxyServers,
  patroniCluster,
  patroniNode,
  redisReplication,
  sentinelView,
  probeAuth,
} from "./probes";
import { operatorTls } from "./tls";
import { LocalClusterState } from "./state";
import { machinePath } from "./machine";
import { probeNode } from "./node-probe";
import { EXPORTERS, EXPORTER_PORTS, probeExporters } from "./exporters";
import { BACKENDS, Backend, ClusterHealth, NodeHealth, NodeObservation, PROCESS_NAMES, judgeHealth } from "./judge";

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

/** Looks at every node once (all at the same time) and judges what it saw. */
export async function clusterHealth(state: LocalClusterState, secrets: ClusterSecrets): Promise<ClusterHealth> {
  assertHostLink(state);
  const net = { hub: `${state.networkId}-hub` };
  // Patroni's REST API is HTTPS both ways: verified with the cluster CA, and it asks this machine
  // for a certificate of that CA (the operator's pair).
  const patroniTls = operatorTls(state.root);
  // The links are read (quick, blocking `ip` calls) before any probe starts. Every probe after
  // that is asynchronous and bounded in time: a call that blocked this process while probes were
  // in flight (one node slow to answer) would run every one of them past its timeout.
  const links = state.nodes.map((node) => nodeLinkUp(net, { name: node.name, privateIp: node.address }));
  const nodes = await Promise.all(
    state.nodes.map(async (node, i): Promise<NodeObservation> => {
      const linkUp = links[i];
      // HAProxy's admin socket, inside the node, seen through its /proc root.
      const socket = machinePath(node.machine, serverPaths().haproxySocket);
      const [probe, members, self, redis, sentinel, etcd, haproxy, exporters] = await Promise.all([
        probeNode(node.machine),
        patroniCluster(node.address, patroniTls),
        patroniNode(node.address, patroniTls),
        redisReplication(node.address, probeAuth(secrets).redis),
        sentinelView(node.address, state.clusterName, probeAuth(secrets).sentinel),
        etcdHealthy(node.address),
        socket ? haproxyServers(socket) : Promise.resolve(undefined),
        probeExporters(node.address),
      ]);
      return { node, linkUp, probe, members, self, redis, sentinel, etcd, haproxy, exporters };
    }),
  );
  return judgeHealth({ nodes, synchronousMode: state.applied.synchronousMode ?? false });
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
  // Ready to fail over: it names the master, knows every replica and hears every other Sentinel.
  const sentinelsArmed = h.nodes.filter(
    (n) => n.sentinelMaster && !h.problems.some((p) => p.startsWith(`sentinel on ${n.name} `)),
  ).length;
  return [
    `etcd ${etcd}/${total}`,
    `postgres ${h.leader ? `leader ${h.leader}` : "electing"}, ${streaming}/${total - 1} streaming`,
    `redis ${h.redisMaster ? `master ${h.redisMaster}` : "no master"}, ${redisReplicas}/${total - 1} replicas`,
    `sentinel ${sentinelsArmed}/${total} armed`,
    `haproxy ${haproxySettled}/${total} settled`,
  ].join(" · ");
}
