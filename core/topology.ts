import * as ipaddr from "ipaddr.js";
import { ConfigError } from "./errors";
import { MAX_NODE_COUNT } from "./plans";

/** 1 node is a dev cluster without HA; odd counts from 3 give etcd and Sentinel a clear majority. */
export const ALLOWED_NODE_COUNTS = [1, 3, 5, MAX_NODE_COUNT] as const;

/**
 * Node i (0-based) takes host number FIRST_NODE_HOST + i in the subnet. Hetzner keeps the first
 * address of a subnet for its gateway; the low numbers stay free for the load balancer and others.
 */
export const FIRST_NODE_HOST = 10;
/** The private load balancer's address, when there is one. */
export const LOAD_BALANCER_HOST = 5;

export const PORTS = {
  postgres: 5432,
  postgresPrimary: 5433,
  postgresReplicas: 5434,
  /** HAProxy → the leader's PostgreSQL itself, not its pool (LISTEN/NOTIFY, migrations, session locks). */
  postgresDirect: 5435,
  /** PgBouncer on each node, in front of its PostgreSQL (5433 and 5434 lead to it). */
  pgbouncer: 6432,
  patroni: 8008,
  etcdClient: 2379,
  etcdPeer: 2380,
  /** etcd's /metrics and /health in plain HTTP (no keys or data): 2379 takes only the cluster's certificates. */
  etcdMetrics: 2381,
  redis: 6380,
  redisMaster: 6379,
  /**
   * HAProxy → the same Redis master, with TLS ended at HAProxy (the node certificate): the only Redis
   * port `clientCidrs` may reach, so Redis traffic that leaves the private network is encrypted.
   */
  redisMasterTls: 6381,
  sentinel: 26379,
  haproxyStats: 7000,
  nodeExporter: 9100,
  postgresExporter: 9187,
  redisExporter: 9121,
  pgbouncerExporter: 9127,
} as const;

export interface NodeSpec {
  /** 0-based position; stable for the life of the node. */
  index: number;
  /** Hostname, etcd member name, Patroni member name. */
  name: string;
  privateIp: string;
}

export interface Topology {
  stack: string;
  /** Patroni scope, pgBackRest stanza, Sentinel master name. */
  clusterName: string;
  nodeCount: number;
  subnetCidr: string;
  /** Dotted netmask form is not needed; prefix length of the subnet. */
  subnetPrefix: number;
  nodes: NodeSpec[];
  loadBalancerIp: string;
  /** etcd's --initial-cluster value. */
  etcdInitialCluster: string;
  etcdClusterToken: string;
  /** Members that must agree: etcd's and Sentinel's majority. */
  quorum: number;
  /** True when the cluster can lose a node and keep serving. */
  highlyAvailable: boolean;
}

export interface TopologyInput {
  stack: string;
  nodeCount: unknown;
  subnetCidr: string;
}

const NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;

export function checkNodeCount(nodeCount: unknown, field = "nodeCount"): number {
  if (
    typeof nodeCount !== "number" ||
    !Number.isInteger(nodeCount) ||
    !(ALLOWED_NODE_COUNTS as readonly number[]).includes(nodeCount)
  ) {
    throw new ConfigError(
      field,
      nodeCount,
      `use one of ${ALLOWED_NODE_COUNTS.join(", ")} (1 is a dev node without HA; an odd count of 3 or more keeps a majority through the loss of a node)`,
    );
  }
  return nodeCount;
}

export function parseCidr(cidr: unknown, field: string): [ipaddr.IPv4, number] {
  if (typeof cidr !== "string" || !ipaddr.IPv4.isValidCIDR(cidr)) {
    throw new ConfigError(field, cidr, "use an IPv4 network in CIDR form, such as 10.42.1.0/24");
  }
  const [address, prefix] = ipaddr.IPv4.parseCIDR(cidr);
  const network = ipaddr.IPv4.networkAddressFromCIDR(cidr);
  if (network.toString() !== address.toString()) {
    throw new ConfigError(field, cidr, `use the network address itself: ${network.toString()}/${prefix}`);
  }
  if (address.range() !== "private") {
    throw new ConfigError(field, cidr, "use a private range (10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16)");
  }
  return [address, prefix];
}

/** The nth host address of a subnet. */
export function hostAddress(cidr: string, host: number): string {
  const [address, prefix] = ipaddr.IPv4.parseCIDR(cidr);
  const size = 2 ** (32 - prefix);
  if (host < 1 || host > size - 2) throw new RangeError(`host ${host} is outside ${cidr}`);
  const base = address.toByteArray().reduce((acc, b) => acc * 256 + b, 0);
  const n = base + host;
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

export function subnetContains(outerCidr: string, innerCidr: string): boolean {
  const [inner, innerPrefix] = ipaddr.IPv4.parseCIDR(innerCidr);
  const outer = ipaddr.IPv4.parseCIDR(outerCidr);
  return innerPrefix >= outer[1] && inner.match(outer);
}

/**
 * Every address a node of a cluster in this subnet can ever have (index 0 to MAX_NODE_COUNT - 1),
 * whatever the current count: scripts that outlive a count change (a node's join and leave) find
 * the live members by asking etcd at these.
 */
export function possibleNodeAddresses(subnetCidr: string): string[] {
  return Array.from({ length: MAX_NODE_COUNT }, (_, index) => hostAddress(subnetCidr, FIRST_NODE_HOST + index));
}

export function nodeName(stack: string, index: number): string {
  return `madbase-${stack}-${index + 1}`;
}

export function buildTopology(input: TopologyInput): Topology {
  if (!NAME_RE.test(input.stack)) {
    throw new ConfigError(
      "stack",
      input.stack,
      "use lower-case letters, digits and dashes, starting with a letter (at most 31)",
    );
  }
  const nodeCount = checkNodeCount(input.nodeCount);
  const [, prefix] = parseCidr(input.subnetCidr, "subnetCidr");
  const usableHosts = 2 ** (32 - prefix) - 2;
  const lastHost = FIRST_NODE_HOST + MAX_NODE_COUNT - 1;
  if (lastHost > usableHosts) {
    throw new ConfigError(
      "subnetCidr",
      input.subnetCidr,
      `the subnet must hold host numbers up to ${lastHost} (nodes from .${FIRST_NODE_HOST}, room to grow to ${MAX_NODE_COUNT}); use /27 or larger, such as /24`,
    );
  }
  const nodes = Array.from({ length: nodeCount }, (_, index) => ({
    index,
    name: nodeName(input.stack, index),
    privateIp: hostAddress(input.subnetCidr, FIRST_NODE_HOST + index),
  }));
  const clusterName = `madbase-${input.stack}`;
  return {
    stack: input.stack,
    clusterName,
    nodeCount,
    subnetCidr: input.subnetCidr,
    subnetPrefix: prefix,
    nodes,
    loadBalancerIp: hostAddress(input.subnetCidr, LOAD_BALANCER_HOST),
    etcdInitialCluster: nodes.map((n) => `${n.name}=https://${n.privateIp}:${PORTS.etcdPeer}`).join(","),
    etcdClusterToken: `${clusterName}-etcd`,
    quorum: Math.floor(nodeCount / 2) + 1,
    highlyAvailable: nodeCount >= 3,
  };
}
