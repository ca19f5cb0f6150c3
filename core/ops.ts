/**
 * The operator's day-2 procedures as data: `npm run ops -- <verb> --stack S [--local]`'s argument
 * rules, the target a stack's outputs describe, the README's restore procedure as an ordered list
 * of steps, and the loss each verb risks, said before it acts. Pure: the executor (ops/) runs it
 * over SSH, on a Hetzner stack's servers and on a local cluster's nodes alike.
 */
import { parseArgs } from "node:util";
import { ConfigError, UsageError } from "./errors";
import { serverPaths } from "./paths";
import { MaintenanceOptions, parseMaintenanceOptions } from "./maintenance";

export const OPS_VERBS = ["status", "switchover", "restore", "restore-redis", "backup", "maintenance"] as const;
export type OpsVerb = (typeof OPS_VERBS)[number];

/** What to restore: the newest state in the repository, or the state at a moment (PITR). */
export type RestoreTarget = { type: "latest" } | { type: "time"; target: string };

/** A time with its zone, as pgBackRest's --target takes it (madbase-backup checks the same shape). */
const RESTORE_TIME = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}(:?\d{2})?|Z)$/;

/** `latest`, or a time with its zone; `flag` names the option in the refusal. */
export function parseRestoreTarget(flag: string, value: string): RestoreTarget {
  if (value === "latest") return { type: "latest" };
  if (!RESTORE_TIME.test(value)) {
    throw new UsageError(
      `${flag} takes latest or a time with its zone, such as '2025-01-31 14:05:00+00', not ${JSON.stringify(value)}`,
    );
  }
  return { type: "time", target: value };
}

export type OpsRequest =
  | (OpsCommon & { verb: "status"; json: boolean })
  | (OpsCommon & { verb: "switchover"; to?: string })
  | (OpsCommon & { verb: "restore"; target: RestoreTarget; confirm: string })
  | (OpsCommon & { verb: "restore-redis"; name: string; confirm: string })
  | (OpsCommon & { verb: "backup"; what: "pg-full" | "pg-diff" | "redis" })
  | (OpsCommon & { verb: "maintenance"; options: MaintenanceOptions });

export interface OpsCommon {
  stack: string;
  /** The local cluster of the stack (MADBASE_LOCAL_ROOT) instead of the Pulumi stack. */
  local: boolean;
  /** The SSH private key for a Pulumi stack's servers; else its sshPrivateKey config. */
  sshKey?: string;
}

export const OPS_USAGE = `usage: npm run ops -- <verb> --stack S [--local | --ssh-key FILE] [options]

  The target is explicit: --local acts on the local cluster of stack S (npm run local -- up
  --stack S); without it, on the Pulumi stack S (read with pulumi stack output --show-secrets),
  reached over SSH as root at each node's public address with --ssh-key FILE or the stack's
  madbase-state:sshPrivateKey. Every verb acts on the nodes over SSH, and says what it risks first.

  status [--json]           Patroni roles, timeline and lag, the Redis master and its replicas,
                            each Sentinel's master, asked on every node; exits 1 when degraded
  switchover [--to NODE]    hand PostgreSQL's leadership to NODE (default: Patroni's choice; in
                            synchronous mode only the synchronous standby may take it)
  restore latest|--time T --confirm CLUSTER
                            recreate PostgreSQL in place from the backups (README: Restore
                            PostgreSQL, all seven steps); T is a time with its zone
                            ('2026-01-31 14:05:00+00'); CLUSTER is the cluster's name (madbase-S)
  restore-redis [--name NAME] --confirm CLUSTER
                            put a Redis snapshot (default: the newest) back on the master; the
                            replicas resync from it
  backup pg full|diff       a pgBackRest backup, taken on the Patroni leader
  backup redis              an RDB snapshot to the store, taken on the Redis master
  maintenance [--packages data|all|none] [--reboot auto|always|never]
                            a rolling maintenance, node by node, replicas first and the leader's
                            node last: the held data packages (data, the default), every package
                            (all) or none upgraded, each daemon whose code changed restarted once,
                            a reboot where required (auto), on every node (always) or never; stops
                            at the first node that does not settle; run it again to resume.
                            --packages none --reboot always is a rolling reboot`;

const OPTIONS = {
  stack: { type: "string" },
  local: { type: "boolean" },
  "ssh-key": { type: "string" },
  json: { type: "boolean" },
  to: { type: "string" },
  time: { type: "string" },
  confirm: { type: "string" },
  name: { type: "string" },
  packages: { type: "string" },
  reboot: { type: "string" },
} as const;

/** The options each verb takes besides --stack, --local and --ssh-key. */
const VERB_OPTIONS: Record<OpsVerb, string[]> = {
  status: ["json"],
  switchover: ["to"],
  restore: ["time", "confirm"],
  "restore-redis": ["name", "confirm"],
  backup: [],
  maintenance: ["packages", "reboot"],
};

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * The command line → a request, or a UsageError naming the flag, the value and what is allowed.
 * Everything a verb needs to refuse on its own (a restore without --confirm) is refused here,
 * before any target is read or any node touched.
 */
export function parseOpsArgs(argv: string[]): OpsRequest | { verb: "help" } {
  const [verb, ...rest] = argv;
  if (!verb || verb === "help" || verb === "--help" || verb === "-h") return { verb: "help" };
  if (!(OPS_VERBS as readonly string[]).includes(verb))
    throw new UsageError(`unknown verb ${JSON.stringify(verb)}; the verbs are ${OPS_VERBS.join(", ")}`);
  const v = verb as OpsVerb;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError(`${v}: ${(e as Error).message}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const positionals = parsed.positionals;
  for (const key of Object.keys(values)) {
    if (["stack", "local", "ssh-key"].includes(key) || VERB_OPTIONS[v].includes(key)) continue;
    throw new UsageError(
      `${v} does not take --${key}; it takes ${["--stack", "--local", "--ssh-key", ...VERB_OPTIONS[v].map((o) => `--${o}`)].join(", ")}`,
    );
  }
  const stack = values.stack as string | undefined;
  if (stack === undefined)
    throw new UsageError(`${v} needs --stack S: the stack whose cluster it acts on (dev, prod, ...)`);
  if (!NAME.test(stack))
    throw new UsageError(`--stack ${JSON.stringify(stack)} is not a stack name (letters, digits, . _ -)`);
  const local = values.local === true;
  const sshKey = values["ssh-key"] as string | undefined;
  if (local && sshKey !== undefined)
    throw new UsageError("--ssh-key is for a Pulumi stack's servers; --local uses the local cluster's own key");
  const common: OpsCommon = { stack, local, ...(sshKey !== undefined ? { sshKey } : {}) };
  const none = (what: string) => {
    if (positionals.length > 0)
      throw new UsageError(`${v} takes no ${what}, not ${JSON.stringify(positionals.join(" "))}`);
  };
  const confirm = (what: string): string => {
    const c = values.confirm as string | undefined;
    if (c === undefined || c === "")
      throw new UsageError(
        `${v} needs --confirm <cluster name> (madbase-${stack} for stack ${stack}): ${what}. Nothing was touched.`,
      );
    return c;
  };
  switch (v) {
    case "status":
      none("arguments");
      return { ...common, verb: v, json: values.json === true };
    case "switchover": {
      none("arguments");
      const to = values.to as string | undefined;
      if (to !== undefined && !NAME.test(to)) throw new UsageError(`--to ${JSON.stringify(to)} is not a node name`);
      return { ...common, verb: v, ...(to !== undefined ? { to } : {}) };
    }
    case "restore": {
      const time = values.time as string | undefined;
      if (time !== undefined && positionals.length > 0)
        throw new UsageError(
          `restore takes latest or --time T, not both (${JSON.stringify(positionals.join(" "))} and --time)`,
        );
      let target: RestoreTarget;
      if (time !== undefined) {
        target = parseRestoreTarget("--time", time);
        if (target.type === "latest")
          throw new UsageError("--time takes a time with its zone; for the newest state say: restore latest");
      } else if (positionals.length === 1 && positionals[0] === "latest") target = { type: "latest" };
      else
        throw new UsageError(
          `restore takes latest or --time T (a time with its zone, such as '2025-01-31 14:05:00+00'), not ${JSON.stringify(positionals.join(" ")) || "nothing"}`,
        );
      return {
        ...common,
        verb: v,
        target,
        confirm: confirm("a restore replaces the cluster's database with the backups' state"),
      };
    }
    case "restore-redis": {
      none("arguments (the snapshot is --name NAME)");
      const name = (values.name as string | undefined) ?? "latest";
      if (!/^(latest|[0-9A-Za-z._-]+\.rdb)$/.test(name))
        throw new UsageError(
          `--name takes a snapshot's file name (…Z-<node>.rdb, see madbase-backup redis-restore list), not ${JSON.stringify(name)}`,
        );
      return {
        ...common,
        verb: v,
        name,
        confirm: confirm("a Redis restore replaces every key with the snapshot's"),
      };
    }
    case "maintenance":
      none("arguments");
      return {
        ...common,
        verb: v,
        options: parseMaintenanceOptions(values.packages as string | undefined, values.reboot as string | undefined),
      };
    case "backup": {
      const what = positionals.join(" ");
      const map: Record<string, "pg-full" | "pg-diff" | "redis"> = {
        "pg full": "pg-full",
        "pg diff": "pg-diff",
        redis: "redis",
      };
      if (!map[what])
        throw new UsageError(`backup takes pg full, pg diff or redis, not ${JSON.stringify(what) || "nothing"}`);
      return { ...common, verb: v, what: map[what] };
    }
  }
}

/** A node as an operation reaches it. */
export interface OpsNode {
  name: string;
  /** Where SSH connects: a server's public IPv4, a local node's private address. */
  sshHost: string;
  privateIp: string;
}

/** The cluster an operation acts on, after its source (Pulumi outputs or the local state) was read. */
export interface OpsTarget {
  kind: "hetzner" | "local";
  stack: string;
  /** Patroni's scope: also the pgBackRest stanza and the Sentinel master name. */
  clusterName: string;
  nodes: OpsNode[];
  /** Said in every line about the target: "the Pulumi stack prod", "the local cluster of stack prod (…)". */
  description: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The target the outputs of `pulumi stack output --json --show-secrets --stack S` describe (a map
 * of output name → value, as index.ts returns them): every node with its name, its private
 * address and its public IPv4 (where SSH goes), and Patroni's scope. A missing or malformed
 * output is a ConfigError naming it.
 */
export function targetFromStackOutputs(stack: string, outputs: unknown): OpsTarget {
  const field = (name: string) => `pulumi stack output ${name} (stack ${stack})`;
  if (!outputs || typeof outputs !== "object" || Array.isArray(outputs))
    throw new ConfigError(
      field("--json"),
      outputs,
      "a JSON object of the stack's outputs; has the stack been deployed (pulumi up)?",
    );
  const o = outputs as Record<string, unknown>;
  const scope = o.patroniScope;
  if (typeof scope !== "string" || !NAME.test(scope))
    throw new ConfigError(
      field("patroniScope"),
      scope,
      "the cluster's name (madbase-<stack>), which every deployment outputs",
    );
  const nodes = o.nodes;
  if (!Array.isArray(nodes) || nodes.length === 0)
    throw new ConfigError(
      field("nodes"),
      nodes,
      "a list of the nodes ({name, privateIp, publicIpv4}) with at least one",
    );
  const parsed = nodes.map((n, i): OpsNode => {
    const at = (key: string) => field(`nodes[${i}].${key}`);
    if (!n || typeof n !== "object")
      throw new ConfigError(field(`nodes[${i}]`), n, "an object {name, privateIp, publicIpv4}");
    const { name, privateIp, publicIpv4 } = n as Record<string, unknown>;
    if (typeof name !== "string" || !NAME.test(name)) throw new ConfigError(at("name"), name, "the node's name");
    if (typeof privateIp !== "string" || !IPV4.test(privateIp))
      throw new ConfigError(at("privateIp"), privateIp, "an IPv4 address in the stack's subnet");
    if (typeof publicIpv4 !== "string" || !IPV4.test(publicIpv4))
      throw new ConfigError(at("publicIpv4"), publicIpv4, "the server's public IPv4 address, which SSH reaches");
    return { name, privateIp, sshHost: publicIpv4 };
  });
  const seen = new Set<string>();
  for (const n of parsed) {
    if (seen.has(n.name)) throw new ConfigError(field("nodes"), n.name, "each node name once");
    seen.add(n.name);
  }
  return { kind: "hetzner", stack, clusterName: scope, nodes: parsed, description: `the Pulumi stack ${stack}` };
}

/** `--local --stack S` names the stack the local cluster runs; another one is refused. */
export function checkLocalStack(requested: string, running: string, where: string): void {
  if (requested !== running)
    throw new ConfigError(
      "--stack",
      requested,
      `the local cluster at ${where} runs stack ${running}: say --stack ${running} (or point MADBASE_LOCAL_ROOT at the cluster of stack ${requested})`,
    );
}

/** A restore's --confirm must name the target's cluster; checked before any node is touched. */
export function checkConfirm(request: OpsRequest, target: OpsTarget): void {
  if (request.verb !== "restore" && request.verb !== "restore-redis") return;
  if (request.confirm !== target.clusterName)
    throw new ConfigError(
      "--confirm",
      request.confirm,
      `name the cluster this ${request.verb} replaces: --confirm ${target.clusterName} (${target.description}). Nothing was touched`,
    );
}

/** A node by name, or a UsageError naming the flag and the nodes there are. */
export function findTargetNode(target: OpsTarget, name: string, flag: string): OpsNode {
  const node = target.nodes.find((n) => n.name === name);
  if (!node)
    throw new ConfigError(
      flag,
      name,
      `one of the nodes of ${target.description}: ${target.nodes.map((n) => n.name).join(", ")}`,
    );
  return node;
}

// ---------------------------------------------------------------- restore, as the README's steps

export type RestoreStepKind =
  | "stop-backup-jobs"
  | "stop-patroni"
  | "remove-cluster-state"
  | "pg-restore"
  | "start-leader"
  | "full-backup"
  | "rebuild-replica"
  | "check";

export interface RestoreStep {
  /** The step of README "Restore PostgreSQL" it is. */
  readme: number;
  kind: RestoreStepKind;
  node?: string;
  /** What it does, as the log says it. */
  text: string;
}

/**
 * The README's seven steps for this cluster, in the order they run: `restorer` (the leader, when
 * there is one) restores; every other node becomes a replica of it. The full backup runs right
 * after the restored leader is up when the target is a time (step 5: the repository's newest
 * backup lies past the new timeline's fork, and a replica restored from it would never stream), and
 * at the end after a restore to the latest state (step 7).
 */
export function restoreSteps(
  clusterName: string,
  nodes: string[],
  restorer: string,
  target: RestoreTarget,
): RestoreStep[] {
  if (!nodes.includes(restorer)) throw new Error(`restorer ${restorer} is not one of ${nodes.join(", ")}`);
  const others = nodes.filter((n) => n !== restorer);
  const conf = serverPaths().config["patroni.yml"];
  const what = target.type === "latest" ? "latest" : `time '${target.target}'`;
  const steps: RestoreStep[] = [
    ...nodes.map((node) => ({
      readme: 1,
      kind: "stop-backup-jobs" as const,
      node,
      text: "stop any running backup job (it would fail half-way once PostgreSQL stops)",
    })),
    ...[...others, restorer].map((node) => ({
      readme: 1,
      kind: "stop-patroni" as const,
      node,
      text: "systemctl stop patroni (PostgreSQL stops with it; writes stop here)",
    })),
    {
      readme: 2,
      kind: "remove-cluster-state",
      node: restorer,
      text: `patronictl -c ${conf} remove ${clusterName} (the cluster's state leaves etcd)`,
    },
    { readme: 3, kind: "pg-restore", node: restorer, text: `madbase-backup pg-restore ${what} (as postgres)` },
    { readme: 4, kind: "start-leader", node: restorer, text: "systemctl start patroni; wait for /primary 200" },
  ];
  if (target.type === "time")
    steps.push({
      readme: 5,
      kind: "full-backup",
      node: restorer,
      text: "madbase-backup pg full (the replicas restore from a backup on the new timeline)",
    });
  for (const node of others)
    steps.push({
      readme: 6,
      kind: "rebuild-replica",
      node,
      text: "madbase-backup pg-restore replica; systemctl start patroni (a replica from the repository, else pg_basebackup)",
    });
  steps.push({ readme: 7, kind: "check", text: "wait until every node streams from the restored leader" });
  if (target.type === "latest")
    steps.push({
      readme: 7,
      kind: "full-backup",
      node: restorer,
      text: "madbase-backup pg full (a first backup of the new timeline)",
    });
  return steps;
}

// ---------------------------------------------------------------- what each verb risks

export interface RiskFacts {
  clusterName: string;
  /** Patroni's synchronous_mode as the cluster runs it (unknown when nobody answered). */
  synchronousMode?: boolean;
  /** Where the Redis master is (restore-redis). */
  redisMaster?: string;
}

/** The loss a verb risks, said before it acts. */
export function riskOf(request: OpsRequest, facts: RiskFacts): string {
  const paths = serverPaths();
  switch (request.verb) {
    case "status":
      return "none: it only reads.";
    case "backup":
      return request.what === "redis"
        ? "no data: the master forks for a BGSAVE (memory while it writes) and ships the file."
        : "no data: the leader reads the whole database (full) or what changed (diff) and ships it; expect more I/O while it runs.";
    case "switchover":
      return (
        "open connections to the leader are cut (clients reconnect through 5433/5435 within seconds) and writes pause while it moves; " +
        (facts.synchronousMode === true
          ? "synchronous_mode is on: no acknowledged commit is lost."
          : facts.synchronousMode === false
            ? "synchronous_mode is off: the old leader stops cleanly and sends its WAL to the connected replicas first, but a commit a replica had not received is lost."
            : "synchronous_mode unknown (Patroni did not say): with it off, a commit the candidate had not received is lost.")
      );
    case "restore": {
      const point =
        request.target.type === "latest"
          ? "the newest WAL the repository holds (a commit not yet archived when PostgreSQL stops is lost)"
          : `${request.target.target}`;
      return (
        `everything written to ${facts.clusterName} after ${point} is gone from the running cluster; ` +
        `PostgreSQL takes no reads or writes until the restored leader is up. On every node the old data directory is kept beside the new one as ` +
        `${paths.pgDataDir}.before-restore-<time> (copy out what you need, then delete it: it takes the volume's space). ` +
        "The full backup it takes counts against backupRetentionFull: the oldest full backup and its WAL may expire, so the earliest point a later restore can reach moves forward."
      );
    }
    case "maintenance":
      return (
        "no acknowledged write: one node at a time is restarted or rebooted, each leadership moved off it first " +
        "(PostgreSQL by a switchover, Redis with its writes paused until a replica has them); open connections to a restarted daemon are cut " +
        `and clients reconnect. Packages: ${request.options.packages}; reboot: ${request.options.reboot}.`
      );
    case "restore-redis":
      return (
        `every Redis key written since the snapshot ${request.name === "latest" ? "(the newest)" : request.name} is gone, and every key deleted since comes back; ` +
        `Redis is down on every node while it runs. The master's old file is kept as ${paths.redisDir}/dump.rdb.before-restore-<time>` +
        (facts.redisMaster ? ` on ${facts.redisMaster}.` : ".")
      );
  }
}
