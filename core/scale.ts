/**
 * The scripts the steps of a change run on a node (core/sequence.ts says which, where and when).
 *
 * One set of shell scripts (templates/scripts/), sent over SSH as one remote command each: by
 * Pulumi (`@pulumi/command`) to a Hetzner server, by the local runner to a local node, which boots
 * the same image and user data. The scripts start and stop daemons only through `svc ACTION
 * SERVICE` (control-systemd.sh: the node's systemd units), never directly.
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
import { serverPaths } from "./paths";
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
import { refreshedBefore } from "./sequence";
import { MaintenanceOptions, UPDATES_SCRIPT } from "./maintenance";
import type { Step } from "./sequence";
import { NodeSpec, PORTS, Topology, possibleNodeAddresses } from "./topology";

export const SCALE_SCRIPTS = [
  "node-join",
  "leadership-handoff",
  "config-refresh",
  "node-leave",
  "node-drain",
  "node-settle",
  "node-maintain",
] as const;
export type ScaleScript = (typeof SCALE_SCRIPTS)[number];

/** The daemons scripts start and stop through `svc`. */
export const SCALE_SERVICES = ["etcd", "patroni", "redis", "sentinel", "haproxy"] as const;
export type ScaleService = (typeof SCALE_SERVICES)[number];

/** Everything a node script is rendered from, besides the topology and the node. */
export interface ScriptContext {
  options: ClusterOptions;
  secrets: ClusterSecrets;
  /** The cluster's certificates: config-refresh keeps each node's files at them (a renewal). */
  tls: ClusterTls;
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

export function shellSafe(field: string, value: string): string {
  if (!SHELL_SAFE.test(value))
    throw new ConfigError(
      field,
      value,
      "use letters, digits, spaces and . _ ~ / : , = @ + - only (it is written into shell scripts)",
    );
  return value;
}

function libModel(script: ScaleScript, purpose: string, topology: Topology, node: NodeSpec, ctx: ScriptContext) {
  const paths = serverPaths();
  const files = {
    etcdEnv: paths.config["etcd.conf"],
    etcdData: paths.etcdDataDir,
    redisConf: paths.config["redis.conf"],
    sentinelConf: paths.config["sentinel.conf"],
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
    control: systemdControl(),
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
    paths: serverPaths(),
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
 * Runs on a node before it goes down as a whole (a resize): the PostgreSQL leader and the Redis
 * master move off it, to one of `prefer` (names of nodes already done) when one can take them.
 */
export function drainScript(
  topology: Topology,
  node: NodeSpec,
  ctx: ScriptContext,
  opts: { prefer?: string[] } = {},
): string {
  return render("node-drain", "moves leadership off this node before it goes down", topology, node, ctx, {
    preferred: (opts.prefer ?? []).map((name) => ({ name })),
  });
}

/** Runs on a node once it is back (a resize, a reboot): waits until it is a full member again. */
export function settleScript(topology: Topology, node: NodeSpec, ctx: ScriptContext): string {
  return render("node-settle", "waits until this node is back in the cluster", topology, node, ctx);
}

/**
 * One node's part of a rolling maintenance (templates/scripts/node-maintain.sh.hbs): upgrade,
 * restart what changed once, or move the leaderships off for a reboot the driver then makes. It
 * carries no secret and nothing of the node: its values are the node's own (node-values.sh.hbs),
 * so `npm run ops` renders it for any stack, and Pulumi's chain sends the same text. `prefer`:
 * the nodes already done, where a leadership it moves should go.
 */
export function maintainScript(opts: MaintenanceOptions & { prefer?: string[] }): string {
  for (const name of opts.prefer ?? []) shellSafe("prefer", name);
  return nodeValuesScript(
    "node-maintain",
    `one node's part of a rolling maintenance (packages ${opts.packages}, reboot ${opts.reboot})`,
    {
      packages: opts.packages,
      reboot: opts.reboot,
      preferred: opts.prefer ?? [],
      updatesScript: `${serverPaths().scriptDir}/${UPDATES_SCRIPT}`,
    },
  );
}

/** node-settle with the node's own values (no secret): after a maintenance's reboot, for any driver. */
export function nodeSettleScript(): string {
  return nodeValuesScript("node-settle", "waits until this node is back in the cluster", {});
}

/** A node script whose values the node supplies (node-values.sh.hbs), then scale-lib, `svc` and the script. */
function nodeValuesScript(script: ScaleScript, purpose: string, extra: Record<string, unknown>): string {
  const paths = serverPaths();
  const files = {
    patroniYml: paths.config["patroni.yml"],
    etcdEnv: paths.config["etcd.conf"],
    haproxyCfg: paths.config["haproxy.cfg"],
  };
  for (const [key, value] of Object.entries(files)) shellSafe(`paths.${key}`, value);
  const model = {
    script,
    purpose,
    nodeEnv: paths.nodeEnvFile,
    backupEnv: paths.backupEnvFile,
    ports: PORTS,
    files,
    ...extra,
  };
  return [
    template("scripts/node-values.sh")(model),
    plainScript("scale-lib.sh"),
    systemdControl(),
    renderScript(script, model),
  ].join("\n");
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
    paths: serverPaths(),
  };
  const etcdHosts = to.nodes.map((n) => `${n.privateIp}:${PORTS.etcdClient}`);
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
    preferred: refreshedBefore(to, node),
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
    updatesScript: `${input.paths.scriptDir}/${UPDATES_SCRIPT}`,
  });
}

/** Where a node records each step script's start and end (its own clock), whoever sent it. */
export const STEP_LOG = "/var/log/madbase-steps.log";

/**
 * One shell command that runs scripts in turn, each from its own file: what every driver sends
 * over SSH (Pulumi's remote commands, the local runner). The files live in a private directory
 * under /run (they carry secrets) and are gone when the command ends. Each script's start and end
 * (with its exit status) go to the node's STEP_LOG, so the order the steps really ran in can be
 * read off the nodes themselves.
 */
export function remoteCommand(scripts: { name: string; text: string }[]): string {
  const lines = [
    "set -eu",
    "dir=$(mktemp -d /run/madbase-scale.XXXXXX)",
    "trap 'rm -rf \"$dir\"' EXIT",
    `step_log() { printf '%s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" "$*" >>${STEP_LOG} || true; }`,
  ];
  scripts.forEach(({ name, text }, i) => {
    const delimiter = "MADBASE_SCRIPT_END";
    if (text.split("\n").includes(delimiter)) throw new Error(`${name} contains the line ${delimiter}`);
    const file = `"$dir/${i + 1}-${name}.sh"`;
    lines.push(`cat >${file} <<'${delimiter}'`, text.endsWith("\n") ? text.slice(0, -1) : text, delimiter);
  });
  scripts.forEach(({ name }, i) =>
    lines.push(
      `step_log start ${name}`,
      `rc=0; bash "$dir/${i + 1}-${name}.sh" || rc=$?`,
      `step_log end ${name} "$rc"`,
      '[ "$rc" -eq 0 ] || exit "$rc"',
    ),
  );
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

/** A script of a step, named as the node logs it (`[node-join madbase-prod-4]`). */
export interface NodeScript {
  name: ScaleScript;
  text: string;
}

/** The scripts a step runs on its node, in order, by name (none for a machine's provision or decommission). */
export function stepScriptNames(step: Step): ScaleScript[] {
  switch (step.kind) {
    case "join":
      return ["node-join"];
    case "refresh":
      return step.handoff ? ["leadership-handoff", "config-refresh"] : ["config-refresh"];
    case "leave":
      return ["node-leave"];
    case "resize":
      return ["node-drain", "node-settle"];
    case "maintain":
      return ["node-maintain", "node-settle"];
    case "provision":
    case "decommission":
      return [];
  }
}

/**
 * The scripts a step runs on its node, in order, as one remote command: `to` is the cluster the
 * change leads to (for a leave, any topology that holds the node: node-leave depends only on the
 * node and the stack). A resize's are its drain and settle, which run around the power-off.
 */
export function stepScripts(step: Step, to: Topology, ctx: ScriptContext): NodeScript[] {
  const { node } = step;
  const text: Record<ScaleScript, () => string> = {
    "node-join": () => joinScript(to, node, ctx),
    "leadership-handoff": () => handoffScript(to, node, ctx),
    "config-refresh": () => refreshScript(to, node, ctx),
    "node-leave": () => leaveScript(to, node, ctx),
    "node-drain": () => drainScript(to, node, ctx, { prefer: step.kind === "resize" ? step.prefer : [] }),
    "node-settle": () => settleScript(to, node, ctx),
    "node-maintain": () =>
      maintainScript({
        packages: step.kind === "maintain" ? step.packages : "none",
        reboot: step.kind === "maintain" ? step.reboot : "never",
        prefer: step.kind === "maintain" ? step.prefer : [],
      }),
  };
  return stepScriptNames(step).map((name) => ({ name, text: text[name]() }));
}
