/**
 * Scaling by node count: the membership scripts every node runs, and the order they run in.
 *
 * One set of shell scripts (templates/scripts/), two drivers: on Hetzner, Pulumi runs them over SSH
 * (`@pulumi/command`), on this machine the local runner runs them inside each node's namespace.
 * The scripts never start or stop a daemon themselves: they call `svc ACTION SERVICE`, a shell
 * function each driver supplies (systemd units on a server, the runner's supervisor locally).
 *
 *  - node-join (on a new node): etcd learner → promoted, Patroni clones a replica, Redis replicates
 *    from the master the Sentinels name, its Sentinel joins, HAProxy starts.
 *  - leadership-handoff (on a node that stays, before a shrink): the Patroni leader and the Redis
 *    master move to nodes that stay.
 *  - config-refresh (on every node that stays): HAProxy's backends, Patroni's etcd hosts, Redis's
 *    min-replicas-to-write and Sentinel's quorum for the new count.
 *  - node-leave (on a leaving node, before its server goes): hand-off if it still leads, Patroni
 *    stops, etcd member remove, Sentinel reset on the rest.
 *
 * node-join and node-leave depend only on the node and the stack, never on the node count: Pulumi
 * keeps a node's leave script from the day the node joined and runs it when the node goes, so it
 * must be right for whatever cluster exists then. They find the live members through etcd.
 */
import { createHash } from "node:crypto";
import { ConfigError } from "./errors";
import { NodePaths, serverPaths } from "./paths";
import { dynamicConfig, STANDBY_MINIMUM_PARAMETERS } from "./patroni";
import { AUTH_DATABASE, AUTH_FUNCTION } from "./pooler";
import type { ClusterOptions } from "./model";
import {
  nodeMemoryMb,
  poolerSetupSql,
  redisMaxMemoryMb,
  redisMinReplicasToWrite,
  refreshedFiles,
  renderNode,
  tlsReloadCommand,
} from "./render";
import { plainScript, renderScript, template } from "./templates";
import { ClusterSecrets, REDIS_USERS, USERS } from "./secrets";
import type { ClusterTls } from "./tls";
import { NodeSpec, PORTS, Topology, possibleNodeAddresses } from "./topology";

export const SCALE_SCRIPTS = [
  "node-join",
  "leadership-handoff",
  "config-refresh",
  "node-leave",
  "node-drain",
  "node-settle",
] as const;
export type ScaleScript = (typeof SCALE_SCRIPTS)[number];

/** The daemons scripts start and stop through `svc`. */
export const SCALE_SERVICES = ["etcd", "patroni", "redis", "sentinel", "haproxy"] as const;
export type ScaleService = (typeof SCALE_SERVICES)[number];

/** Everything a membership script is rendered from, besides the topology and the node. */
export interface ScriptContext {
  options: ClusterOptions;
  secrets: ClusterSecrets;
  /** The cluster's certificates: config-refresh keeps each node's files at them (a renewal). */
  tls: ClusterTls;
  /** Where a node keeps its files: `serverPaths()`, on Hetzner and on a local (booted) node alike. */
  paths: (node: NodeSpec) => NodePaths;
  /**
   * The files Redis and Sentinel run from, when not the installed ones (the local runner gives each
   * its own writable copy). On a server they are the installed files.
   */
  runtimeFiles?: (node: NodeSpec) => { redisConf: string; sentinelConf: string };
  /** Shell that defines `svc ACTION SERVICE` and `node_ready` for the driver (see `systemdControl`). */
  control: (node: NodeSpec) => string;
  /**
   * root's authorized SSH keys, which config-refresh makes exactly these (the new file replaces the
   * old one at once, so every key in it works from that instant). Absent: the file is left alone.
   */
  authorizedKeys?: string[];
}

/** `svc` and `node_ready` on a Hetzner server: the Debian units, after cloud-init has finished. */
export function systemdControl(): string {
  const { readyMarker, firstBootLog } = serverPaths();
  return template("scripts/control-systemd.sh")({ readyMarker, firstBootLog });
}

// Values go into the scripts inside double quotes: refuse anything the shell would expand there.
const SHELL_SAFE = /^[A-Za-z0-9 ._~/:,=@+-]*$/;

function shellSafe(field: string, value: string): string {
  if (!SHELL_SAFE.test(value))
    throw new ConfigError(
      field,
      value,
      "use letters, digits, spaces and . _ ~ / : , = @ + - only (it is written into shell scripts)",
    );
  return value;
}

function libModel(script: ScaleScript, purpose: string, topology: Topology, node: NodeSpec, ctx: ScriptContext) {
  const paths = ctx.paths(node);
  const runtime = ctx.runtimeFiles?.(node) ?? {
    redisConf: paths.config["redis.conf"],
    sentinelConf: paths.config["sentinel.conf"],
  };
  const files = {
    etcdEnv: paths.config["etcd.conf"],
    etcdData: paths.etcdDataDir,
    redisConf: runtime.redisConf,
    sentinelConf: runtime.sentinelConf,
    haproxyCfg: paths.config["haproxy.cfg"],
    patroniYml: paths.config["patroni.yml"],
    tlsCa: paths.tls.caCert,
    tlsCert: paths.tls.cert,
    tlsKey: paths.tls.key,
  };
  for (const [key, value] of Object.entries(files)) shellSafe(`paths.${key}`, value);
  // Secrets are limited to shell-safe characters by checkSecrets (renderNode runs it).
  return {
    script,
    purpose,
    node,
    clusterName: topology.clusterName,
    candidateIps: possibleNodeAddresses(topology.subnetCidr),
    ports: PORTS,
    patroniAuth: `${USERS.patroniRest}:${ctx.secrets.patroniRest}`,
    secrets: ctx.secrets,
    redisUsers: REDIS_USERS,
    profile: ctx.options.profile,
    files,
    control: ctx.control(node),
  };
}

function render(
  script: ScaleScript,
  purpose: string,
  topology: Topology,
  node: NodeSpec,
  ctx: ScriptContext,
  extra: Record<string, unknown> = {},
): string {
  const model = { ...libModel(script, purpose, topology, node, ctx), ...extra };
  // The rendered values, the library (a real .sh file), the driver's `svc`, then the script.
  return [
    template("scripts/scale-values.sh")(model),
    plainScript("scale-lib.sh"),
    model.control,
    renderScript(script, model),
  ].join("\n");
}

/** The node's files as the topology renders them (for config-refresh). */
function renderFor(topology: Topology, node: NodeSpec, ctx: ScriptContext) {
  return renderNode({
    topology,
    node,
    options: ctx.options,
    secrets: ctx.secrets,
    tls: ctx.tls,
    paths: ctx.paths(node),
  });
}

/**
 * Runs on a new node: joins it to the running cluster. Depends only on the node and the stack
 * (not on the node count); safe to run again on a node that is already a member.
 */
export function joinScript(topology: Topology, node: NodeSpec, ctx: ScriptContext): string {
  return render("node-join", "joins this node to the running cluster, one daemon at a time", topology, node, ctx);
}

/**
 * Runs on a leaving node before its server (or namespace) goes. Depends only on the node and the
 * stack: it learns who else is a member from etcd when it runs.
 */
export function leaveScript(topology: Topology, node: NodeSpec, ctx: ScriptContext): string {
  return render("node-leave", "takes this node out of the cluster before it is deleted", topology, node, ctx);
}

/** Runs on a node of `to` before a shrink: moves leadership off the nodes that leave. */
export function handoffScript(to: Topology, node: NodeSpec, ctx: ScriptContext): string {
  return render(
    "leadership-handoff",
    "moves the PostgreSQL leader and the Redis master to nodes that stay",
    to,
    node,
    ctx,
    { staying: to.nodes },
  );
}

function singleQuotable(what: string, text: string): string {
  if (text.includes("'")) throw new Error(`${what} contains a single quote: ${text}`);
  return text;
}

/**
 * The order config-refresh visits the nodes in, one at a time: from the last node to the first.
 * Node 0 founded the cluster and usually leads, so a refresh that must restart PostgreSQL restarts
 * the replicas first and the leader last, handing its leadership to a node already refreshed.
 */
export function refreshOrder(topology: Topology): NodeSpec[] {
  return [...topology.nodes].reverse();
}

/**
 * Runs on a node before it goes down as a whole (a resize): the PostgreSQL leader and the Redis
 * master move off it, to one of `prefer` (nodes already done) when one can take them.
 */
export function drainScript(
  topology: Topology,
  node: NodeSpec,
  ctx: ScriptContext,
  opts: { prefer?: NodeSpec[] } = {},
): string {
  return render("node-drain", "moves leadership off this node before it goes down", topology, node, ctx, {
    preferred: opts.prefer ?? [],
  });
}

/** Runs on a node once it is back (a resize, a reboot): waits until it is a full member again. */
export function settleScript(topology: Topology, node: NodeSpec, ctx: ScriptContext): string {
  return render("node-settle", "waits until this node is back in the cluster", topology, node, ctx);
}

/**
 * Runs on every node of `to`, one at a time in `refreshOrder`, whenever what it applies changes (a
 * new node count, a new setting): the node's daemons take the cluster's files and values. What can
 * change in place does (Patroni's dynamic settings, Redis and Sentinel values, HAProxy, files);
 * what needs a restart restarts this node's PostgreSQL only, its leadership moved off first.
 */
export function refreshScript(to: Topology, node: NodeSpec, ctx: ScriptContext): string {
  const files = renderFor(to, node, ctx);
  const heredoc = (name: string, text: string, delimiter: string) => {
    const body = text.endsWith("\n") ? text : `${text}\n`;
    if (body.split("\n").includes(delimiter)) throw new Error(`${name} contains the line ${delimiter}`);
    return body;
  };
  const input = {
    topology: to,
    node,
    options: ctx.options,
    secrets: ctx.secrets,
    tls: ctx.tls,
    paths: ctx.paths(node),
  };
  const etcdHosts = to.nodes.map((n) => `${n.privateIp}:${PORTS.etcdClient}`);
  const order = refreshOrder(to);
  const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
  return render("config-refresh", `brings this node's daemons to the ${to.nodeCount}-node cluster`, to, node, ctx, {
    nodeCount: to.nodeCount,
    topology: to,
    haproxyCfg: heredoc("haproxy.cfg", files["haproxy.cfg"], "MADBASE_HAPROXY_CFG"),
    patroniYml: heredoc("patroni.yml", files["patroni.yml"], "MADBASE_PATRONI_YML"),
    etcdHosts: etcdHosts.join(", "),
    firstEtcdHost: etcdHosts[0],
    dynamicConfig: singleQuotable("Patroni's dynamic configuration", JSON.stringify(dynamicConfig(ctx.options))),
    standbyMinimum: STANDBY_MINIMUM_PARAMETERS.join(" "),
    // The nodes refreshed before this one: where its leadership goes when it must restart.
    preferred: order.slice(
      0,
      order.findIndex((n) => n.name === node.name),
    ),
    minReplicasToWrite: redisMinReplicasToWrite(to),
    redisMaxMemoryBytes: redisMaxMemoryMb(nodeMemoryMb(ctx.options)) * 1024 * 1024,
    quorum: to.quorum,
    sentinel: ctx.options.profile.sentinel,
    refreshed: refreshedFiles(input, files).map((f) => ({ ...f, content: b64(f.content), after: f.after ?? "" })),
    tlsReload: tlsReloadCommand(input.paths),
    poolerSql: b64(poolerSetupSql(ctx.secrets)),
    pgSocketDir: input.paths.pgSocketDir,
    authDatabase: AUTH_DATABASE,
    authRole: USERS.pgbouncerAuth,
    authFunction: AUTH_FUNCTION,
    authorizedKeys: ctx.authorizedKeys ? b64(ctx.authorizedKeys.map((k) => `${k.trim()}\n`).join("")) : "",
    volumeMount: input.paths.volumeMount,
  });
}

/**
 * One shell command that runs scripts in turn, each from its own file, as the local runner does
 * (`bash FILE`): what a remote command executes over SSH. The files live in a private directory
 * under /run (they carry secrets) and are gone when the command ends.
 */
export function remoteCommand(scripts: { name: string; text: string }[]): string {
  const lines = ["set -eu", "dir=$(mktemp -d /run/madbase-scale.XXXXXX)", "trap 'rm -rf \"$dir\"' EXIT"];
  scripts.forEach(({ name, text }, i) => {
    const delimiter = "MADBASE_SCRIPT_END";
    if (text.split("\n").includes(delimiter)) throw new Error(`${name} contains the line ${delimiter}`);
    const file = `"$dir/${i + 1}-${name}.sh"`;
    lines.push(`cat >${file} <<'${delimiter}'`, text.endsWith("\n") ? text.slice(0, -1) : text, delimiter);
  });
  scripts.forEach(({ name }, i) => lines.push(`bash "$dir/${i + 1}-${name}.sh"`));
  return lines.join("\n") + "\n";
}

/**
 * What a remote command executes over SSH: a shell reading its script from standard input, so the
 * script (and the passwords in it) never shows in the node's process list, as the exec string of
 * an SSH session does (sshd runs it as `bash -c <string>`, readable in /proc/PID/cmdline).
 */
export const REMOTE_EXEC = "bash -s";

/** The two actions a membership's standard input holds; its exec string names the one to run. */
export const MEMBERSHIP_ACTIONS = ["join", "leave"] as const;

/**
 * A membership's standard input: Pulumi's remote command sends the same one to its create
 * (`bash -s -- join`) and its delete (`bash -s -- leave`), so it holds both remote commands and
 * runs the one its first argument names, each in a shell of its own.
 */
export function membershipStdin(commands: Record<(typeof MEMBERSHIP_ACTIONS)[number], string>): string {
  const lines = ['case "${1:-}" in'];
  for (const action of MEMBERSHIP_ACTIONS) {
    const delimiter = `MADBASE_${action.toUpperCase()}_END`;
    const text = commands[action];
    if (text.split("\n").includes(delimiter)) throw new Error(`the ${action} command contains the line ${delimiter}`);
    lines.push(
      `${action}) exec bash -s <<'${delimiter}'`,
      text.endsWith("\n") ? text.slice(0, -1) : text,
      delimiter,
      ";;",
    );
  }
  lines.push(`*) echo "usage: ${REMOTE_EXEC} -- ${MEMBERSHIP_ACTIONS.join("|")}" >&2; exit 2 ;;`, "esac");
  return lines.join("\n") + "\n";
}

/** sha256 of a script: a Pulumi trigger that changes exactly when the script does. */
export function scriptDigest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

export type ScaleStep =
  /** The node's machine comes to exist with its rendered files (a server; a namespace locally). */
  | { kind: "provision"; node: NodeSpec }
  /** A script runs on the node. */
  | { kind: "run"; node: NodeSpec; script: ScaleScript; text: string }
  /** The node's machine and its data go (after it left). */
  | { kind: "decommission"; node: NodeSpec };

export interface ScalePlan {
  from: number;
  to: number;
  steps: ScaleStep[];
}

export function describeStep(step: ScaleStep): string {
  return step.kind === "run" ? `${step.node.name}: ${step.script}` : `${step.node.name}: ${step.kind}`;
}

export interface ScaleRules {
  /** The stack's `requireHa`: never fewer than 3 nodes. */
  requireHa?: boolean;
}

/** Refuses a count the stack must not go to; see `planScale`. */
export function checkScale(from: Topology, to: Topology, rules: ScaleRules = {}): void {
  if (from.clusterName !== to.clusterName || from.subnetCidr !== to.subnetCidr) {
    throw new ConfigError(
      "topology",
      `${to.clusterName} ${to.subnetCidr}`,
      `scale the same cluster: ${from.clusterName} in ${from.subnetCidr}`,
    );
  }
  if (rules.requireHa && to.nodeCount < 3) {
    throw new ConfigError(
      "nodeCount",
      to.nodeCount,
      `this stack requires HA (requireHa: true), so it cannot shrink from ${from.nodeCount} to ${to.nodeCount} node(s): use 3, 5 or 7, or set requireHa to false first`,
    );
  }
}

/**
 * The ordered steps that take a running cluster from `from` to `to` nodes, keeping every node that
 * stays (node i keeps its name, address and data; nodes are added and removed at the end).
 *
 *  grow:   for each new node in turn: provision, node-join; then config-refresh on every node
 *          (in refreshOrder, as everywhere below).
 *  shrink: leadership-handoff, config-refresh on every node that stays (their HAProxy drops the
 *          leaving nodes, which no longer lead); then, from the last node down: node-leave,
 *          decommission.
 */
export function planScale(from: Topology, to: Topology, ctx: ScriptContext, rules: ScaleRules = {}): ScalePlan {
  checkScale(from, to, rules);
  const steps: ScaleStep[] = [];
  const refreshAll = () =>
    refreshOrder(to).forEach((node) =>
      steps.push({ kind: "run", node, script: "config-refresh", text: refreshScript(to, node, ctx) }),
    );
  if (to.nodeCount > from.nodeCount) {
    for (const node of to.nodes.slice(from.nodeCount)) {
      steps.push({ kind: "provision", node });
      steps.push({ kind: "run", node, script: "node-join", text: joinScript(to, node, ctx) });
    }
    refreshAll();
  } else if (to.nodeCount < from.nodeCount) {
    steps.push({
      kind: "run",
      node: to.nodes[0],
      script: "leadership-handoff",
      text: handoffScript(to, to.nodes[0], ctx),
    });
    refreshAll();
    for (const node of from.nodes.slice(to.nodeCount).reverse()) {
      steps.push({ kind: "run", node, script: "node-leave", text: leaveScript(from, node, ctx) });
      steps.push({ kind: "decommission", node });
    }
  }
  return { from: from.nodeCount, to: to.nodeCount, steps };
}
