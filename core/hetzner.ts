/**
 * What the stack asks of Hetzner, worked out from validated settings before any resource is
 * declared: servers' image and types, firewall rules, the entry point, labels, network zones.
 *
 * Everything here is plain data and plain functions (no Pulumi), so a value the stack cannot use
 * stops the program before it declares anything, and the rules can be tested on their own.
 */
import * as ipaddr from "ipaddr.js";
import { describeCluster, serverTypeFor } from "./cluster";
import { ConfigError } from "./errors";
import type { ClusterOptions } from "./model";
import { serverPaths } from "./paths";
import { renderNode } from "./render";
import { placeholderSecrets } from "./secrets";
import { CONFIG_NAMESPACE, HETZNER_LOCATIONS, StackSettings } from "./settings";
import { placeholderTls } from "./tls";
import { NodeSpec, PORTS, Topology } from "./topology";

/** The Debian 13 (trixie) image every database node boots. */
export const NODE_IMAGE = "debian-13";

/** Hetzner refuses user data larger than this (bytes). */
export const USER_DATA_LIMIT = 32 * 1024;

/** The smallest Hetzner load balancer; it carries TCP only, so size is about connection counts. */
export const LOAD_BALANCER_TYPE = "lb11";

/** Each network zone groups the locations a private network can span. */
export const NETWORK_ZONES: Record<(typeof HETZNER_LOCATIONS)[number], string> = {
  fsn1: "eu-central",
  nbg1: "eu-central",
  hel1: "eu-central",
  ash: "us-east",
  hil: "us-west",
  sin: "ap-southeast",
};

/** Label keys on every Hetzner object of the stack. */
export const LABELS = {
  stack: "madbase-state/stack",
  node: "madbase-state/node",
  role: "madbase-state/role",
} as const;

/** What each port is, for firewall rule descriptions. */
const PORT_PURPOSE: Record<keyof typeof PORTS, string> = {
  postgres: "PostgreSQL",
  postgresPrimary: "HAProxy to the leader's PgBouncer",
  postgresReplicas: "HAProxy to the replicas' PgBouncers",
  postgresDirect: "HAProxy straight to the PostgreSQL leader",
  pgbouncer: "PgBouncer",
  patroni: "Patroni REST",
  etcdClient: "etcd clients",
  etcdPeer: "etcd peers",
  etcdMetrics: "etcd metrics",
  redis: "Redis",
  redisMaster: "HAProxy to the Redis master",
  redisMasterTls: "HAProxy to the Redis master over TLS",
  sentinel: "Redis Sentinel",
  haproxyStats: "HAProxy stats",
  nodeExporter: "node exporter",
  postgresExporter: "PostgreSQL exporter",
  redisExporter: "Redis exporter",
  pgbouncerExporter: "PgBouncer exporter",
};

/** The ports applications connect to: each node's HAProxy, and the load balancer in front of them. */
export const ENTRY_PORTS = [
  PORTS.postgresPrimary,
  PORTS.postgresReplicas,
  PORTS.postgresDirect,
  PORTS.redisMaster,
  PORTS.redisMasterTls,
] as const;

/**
 * The entry ports `clientCidrs` may reach: only those whose traffic is always encrypted. The
 * PostgreSQL ones take TLS logins only (PgBouncer and pg_hba refuse plain text from the network);
 * Redis speaks plain text on 6379, so outside clients get its TLS port instead.
 */
export const CLIENT_PORTS = [
  PORTS.postgresPrimary,
  PORTS.postgresReplicas,
  PORTS.postgresDirect,
  PORTS.redisMasterTls,
] as const;

/** Every port a daemon of the cluster listens on. */
export const SERVICE_PORTS: readonly number[] = [...new Set(Object.values(PORTS))].sort((a, b) => a - b);

export const SSH_PORT = 22;

/** One inbound rule of the node firewall, in the shape hcloud.Firewall takes. */
export interface FirewallRuleSpec {
  description: string;
  direction: "in";
  protocol: "tcp";
  port: string;
  sourceIps: string[];
}

export interface EntrySpec {
  /** `load-balancer` with 3+ nodes; `node` for a single dev node. */
  kind: "load-balancer" | "node";
  /** The private address applications connect to. */
  host: string;
}

export interface StackPlan {
  settings: StackSettings;
  topology: Topology;
  options: ClusterOptions;
  serverType: string;
  networkZone: string;
  firewallRules: FirewallRuleSpec[];
  entry: EntrySpec;
  /** Things an operator should know before the stack is built (never secrets). */
  warnings: string[];
}

/**
 * Works out the whole stack from its settings. Throws a ConfigError (key, value, what is allowed)
 * for anything Hetzner or the cluster could not use.
 */
export function planStack(settings: StackSettings): StackPlan {
  const { topology, options } = describeCluster(settings);
  const warnings: string[] = [];
  const firewallRules = nodeFirewallRules(settings, warnings);
  if (settings.sshPublicKeys.length === 0) {
    warnings.push(
      `${CONFIG_NAMESPACE}:sshPublicKeys is empty: Hetzner will e-mail a root password for each server instead. Add a key with ` +
        `pulumi config set --path '${CONFIG_NAMESPACE}:sshPublicKeys[0]' "ssh-ed25519 ..." before the first pulumi up (keys are read only when a server is created).`,
    );
  }
  for (const node of topology.nodes) checkUserDataSize(node, renderUserData(topology, node, options));
  return {
    settings,
    topology,
    options,
    serverType: serverTypeFor(settings),
    networkZone: NETWORK_ZONES[settings.location as keyof typeof NETWORK_ZONES],
    firewallRules,
    entry: topology.highlyAvailable
      ? { kind: "load-balancer", host: topology.loadBalancerIp }
      : { kind: "node", host: topology.nodes[0].privateIp },
    warnings,
  };
}

/**
 * The node firewall: SSH from `adminCidrs`; every service port from the private subnet; the
 * encrypted entry ports (CLIENT_PORTS) also from `clientCidrs`. Anything not listed is dropped
 * (Hetzner firewalls deny inbound traffic no rule allows), so there is no rule for "everything else".
 */
export function nodeFirewallRules(settings: StackSettings, warnings: string[] = []): FirewallRuleSpec[] {
  const rules: FirewallRuleSpec[] = [];
  const admin = settings.adminCidrs.map((c, i) => normalizeCidr(c, `${CONFIG_NAMESPACE}:adminCidrs.${i}`));
  if (admin.length > 0) {
    rules.push({
      description: "SSH from admin networks",
      direction: "in",
      protocol: "tcp",
      port: String(SSH_PORT),
      sourceIps: admin,
    });
    const open = admin.filter(isWholeInternet);
    if (open.length > 0) {
      warnings.push(
        `${CONFIG_NAMESPACE}:adminCidrs opens SSH to the whole Internet (${open.join(", ")}); list your admin networks instead.`,
      );
    }
  } else {
    warnings.push(
      `${CONFIG_NAMESPACE}:adminCidrs is empty: SSH to the nodes is closed. Configuration pushed over SSH (scaling, config changes) needs the address you run pulumi from in adminCidrs.`,
    );
  }
  // Hetzner Cloud firewalls act on the servers' public interfaces; the cluster's own traffic runs
  // on the private network, and the daemons bind only private and loopback addresses. These rules
  // still state the private subnet as the one source of every service port, so the rule set reads
  // as the complete answer to "who may reach this port" and never contains a public source.
  for (const port of SERVICE_PORTS) {
    rules.push({
      description: `${purposeOf(port)} from the private subnet`,
      direction: "in",
      protocol: "tcp",
      port: String(port),
      sourceIps: [settings.subnetCidr],
    });
  }
  const clients = settings.clientCidrs.map((c, i) => normalizeCidr(c, `${CONFIG_NAMESPACE}:clientCidrs.${i}`));
  clients.forEach((cidr, i) => {
    if (tooWideForDatabase(cidr)) {
      throw new ConfigError(
        `${CONFIG_NAMESPACE}:clientCidrs.${i}`,
        settings.clientCidrs[i],
        "the database and Redis entry ports must not face the whole Internet: use networks no wider than /8 (IPv4) or /32 (IPv6)",
      );
    }
  });
  if (clients.length > 0) {
    for (const port of CLIENT_PORTS) {
      rules.push({
        description: `${purposeOf(port)} from client networks`,
        direction: "in",
        protocol: "tcp",
        port: String(port),
        sourceIps: clients,
      });
    }
  }
  return rules;
}

function purposeOf(port: number): string {
  const key = (Object.keys(PORTS) as (keyof typeof PORTS)[]).find((k) => PORTS[k] === port);
  return key ? PORT_PURPOSE[key] : `port ${port}`;
}

/**
 * The network address of a CIDR ("203.0.113.7/24" → "203.0.113.0/24"): Hetzner only takes
 * network addresses in firewall rules, and a host address with a short prefix usually means the
 * operator meant something narrower, so say which network it really is.
 */
export function normalizeCidr(cidr: string, field: string): string {
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    parsed = ipaddr.parseCIDR(cidr);
  } catch {
    throw new ConfigError(field, cidr, 'use an address in CIDR form, such as "203.0.113.4/32"');
  }
  const [address, prefix] = parsed;
  if (address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress()) {
    // ::ffff:0:0/96 and friends would be IPv4 ranges in disguise; ask for the IPv4 form.
    throw new ConfigError(field, cidr, "use the IPv4 form of an IPv4-mapped address");
  }
  const network =
    address.kind() === "ipv4"
      ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${prefix}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${prefix}`);
  return `${network.toString()}/${prefix}`;
}

function prefixOf(cidr: string): { kind: "ipv4" | "ipv6"; prefix: number } {
  const [address, prefix] = ipaddr.parseCIDR(cidr);
  return { kind: address.kind(), prefix };
}

/** 0.0.0.0/0 or ::/0. */
export function isWholeInternet(cidr: string): boolean {
  return prefixOf(cidr).prefix === 0;
}

/** Wider than a /8 (IPv4) or /32 (IPv6): no client network of a database is that big. */
export function tooWideForDatabase(cidr: string): boolean {
  const { kind, prefix } = prefixOf(cidr);
  return kind === "ipv4" ? prefix < 8 : prefix < 32;
}

/** Node labels: the stack's, the node's name, and its role (what the load balancer selects). */
export function nodeLabels(stack: string, node: Pick<NodeSpec, "name">): Record<string, string> {
  return { [LABELS.stack]: stack, [LABELS.role]: "database", [LABELS.node]: node.name };
}

export function stackLabels(stack: string): Record<string, string> {
  return { [LABELS.stack]: stack };
}

/** The label selector that matches every database node of a stack, whatever its count. */
export function databaseNodeSelector(stack: string): string {
  return `${LABELS.stack}=${stack},${LABELS.role}=database`;
}

function renderUserData(topology: Topology, node: NodeSpec, options: ClusterOptions): string {
  const tls = placeholderTls(topology.nodes.map((n) => n.name));
  return renderNode({ topology, node, options, secrets: placeholderSecrets(), tls, paths: serverPaths() })[
    "user-data.yaml"
  ];
}

/** Throws when a node's cloud-init document is over Hetzner's limit; returns it otherwise. */
export function checkUserDataSize(node: Pick<NodeSpec, "name">, userData: string): string {
  const size = Buffer.byteLength(userData, "utf8");
  if (size >= USER_DATA_LIMIT) {
    throw new ConfigError(
      `user-data of ${node.name}`,
      `${size} bytes`,
      `Hetzner accepts at most ${USER_DATA_LIMIT} bytes of user data`,
    );
  }
  return userData;
}
