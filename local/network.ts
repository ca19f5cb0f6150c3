/**
 * A private network of node namespaces on this machine: each node gets its own network namespace
 * with its production private IP on `eth0` (and its own 127.0.0.1), joined by a bridge that lives
 * in a hub namespace. Nothing here touches the machine's own interfaces except, when asked, one
 * veth that lets this machine reach the nodes' subnet (as a client on Hetzner's network would).
 *
 * Cutting a node's link on the bridge side is a real, silent partition: its processes keep running.
 */
import { execFileSync } from "node:child_process";

export interface NodeAddress {
  name: string;
  privateIp: string;
}

export interface LocalNetwork {
  /** Short prefix of every namespace and link this network created. */
  id: string;
  hub: string;
  subnetPrefix: number;
  /** Namespace of each node, by node name. */
  namespaces: Record<string, string>;
  /** The address this machine has on the nodes' subnet, when it was linked in. */
  hostIp?: string;
}

function ip(args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

export function namespaceExists(name: string): boolean {
  return ip(["netns", "list"])
    .split("\n")
    .some((line) => line.split(" ")[0] === name);
}

/** Bridge-side link of node i, in the hub namespace. */
function hubLink(index: number): string {
  return `n${index}`;
}

/**
 * Creates the namespaces and links. `id` keeps networks of parallel runs apart (at most 6
 * characters, since Linux link names are limited to 15). The node list may grow later with
 * `addNode`.
 */
export function createNetwork(opts: {
  id: string;
  subnetPrefix: number;
  nodes: NodeAddress[];
  hostIp?: string;
}): LocalNetwork {
  if (!/^[a-z0-9]{1,6}$/.test(opts.id))
    throw new Error(`network id ${JSON.stringify(opts.id)}: use 1-6 lower-case letters and digits`);
  const hub = `${opts.id}-hub`;
  if (namespaceExists(hub)) throw new Error(`network ${opts.id} already exists (namespace ${hub}); remove it first`);
  ip(["netns", "add", hub]);
  ip(["-n", hub, "link", "set", "lo", "up"]);
  ip(["-n", hub, "link", "add", "br0", "type", "bridge"]);
  ip(["-n", hub, "link", "set", "br0", "up"]);
  const net: LocalNetwork = { id: opts.id, hub, subnetPrefix: opts.subnetPrefix, namespaces: {} };
  opts.nodes.forEach((node) => addNode(net, node));
  if (opts.hostIp) linkHost(net, opts.hostIp);
  return net;
}

export function nodeNamespace(net: Pick<LocalNetwork, "id">, node: NodeAddress): string {
  const index = Number(node.privateIp.split(".")[3]);
  return `${net.id}-${index}`;
}

export function addNode(net: LocalNetwork, node: NodeAddress): string {
  const ns = nodeNamespace(net, node);
  const index = Number(node.privateIp.split(".")[3]);
  ip(["netns", "add", ns]);
  ip(["-n", ns, "link", "set", "lo", "up"]);
  ip(["-n", net.hub, "link", "add", hubLink(index), "type", "veth", "peer", "name", "eth0", "netns", ns]);
  ip(["-n", net.hub, "link", "set", hubLink(index), "master", "br0", "up"]);
  ip(["-n", ns, "addr", "add", `${node.privateIp}/${net.subnetPrefix}`, "dev", "eth0"]);
  ip(["-n", ns, "link", "set", "eth0", "up"]);
  net.namespaces[node.name] = ns;
  return ns;
}

export function removeNode(net: LocalNetwork, node: NodeAddress): void {
  const ns = net.namespaces[node.name] ?? nodeNamespace(net, node);
  if (namespaceExists(ns)) ip(["netns", "del", ns]);
  delete net.namespaces[node.name];
}

/** Lets this machine reach the subnet through a veth into the bridge. */
export function linkHost(net: LocalNetwork, hostIp: string): void {
  const hostSide = `${net.id}-host`;
  ip(["link", "add", hostSide, "type", "veth", "peer", "name", "uplink", "netns", net.hub]);
  ip(["-n", net.hub, "link", "set", "uplink", "master", "br0", "up"]);
  ip(["addr", "add", `${hostIp}/${net.subnetPrefix}`, "dev", hostSide]);
  ip(["link", "set", hostSide, "up"]);
  net.hostIp = hostIp;
}

/** Cuts (or restores) a node's only link: its processes keep running, unreachable. */
export function setNodeLink(net: LocalNetwork, node: NodeAddress, up: boolean): void {
  const index = Number(node.privateIp.split(".")[3]);
  ip(["-n", net.hub, "link", "set", hubLink(index), up ? "up" : "down"]);
}

/** Removes every namespace and link of a network id; safe to call for a half-built one. */
export function destroyNetwork(id: string): void {
  const hostSide = `${id}-host`;
  try {
    ip(["link", "del", hostSide]);
  } catch {
    /* not linked */
  }
  for (const line of ip(["netns", "list"]).split("\n")) {
    const name = line.split(" ")[0];
    if (name && name.startsWith(`${id}-`)) ip(["netns", "del", name]);
  }
}

/** argv that runs a command inside a node's namespace, optionally as another user. */
export function inNamespace(ns: string, argv: string[], user?: string): string[] {
  const cmd = user ? ["runuser", "-u", user, "--", ...argv] : argv;
  return ["ip", "netns", "exec", ns, ...cmd];
}

function linkIsUp(args: string[]): boolean {
  try {
    // `ip -br link`: "<name>@<peer> <STATE> ..."; a veth whose own side is up reports UP or LOWERLAYERDOWN.
    const fields = ip(["-br", ...args])
      .trim()
      .split(/\s+/);
    return fields[1] === "UP";
  } catch {
    return false;
  }
}

/**
 * True when this machine's link into the network is up and holds `hostIp`. Check it before any
 * connection from this machine to a node address: without the link, such an address would leave
 * through the machine's own routes instead of reaching a namespace of ours.
 */
export function hostLinkUp(id: string, hostIp: string): boolean {
  const dev = `${id}-host`;
  if (!linkIsUp(["link", "show", "dev", dev])) return false;
  try {
    return ip(["-br", "-4", "addr", "show", "dev", dev])
      .split(/\s+/)
      .some((a) => a.split("/")[0] === hostIp);
  } catch {
    return false;
  }
}

/** Whether a node's link on the bridge is up (false while it is partitioned). */
export function nodeLinkUp(net: Pick<LocalNetwork, "hub">, node: NodeAddress): boolean {
  const index = Number(node.privateIp.split(".")[3]);
  return linkIsUp(["-n", net.hub, "link", "show", "dev", hubLink(index)]);
}
