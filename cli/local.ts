/**
 * npm run local -- <command>: the State Pillar on this machine's Debian daemons, one node per
 * network namespace at its production address. The work is done by local/ (a library the tests
 * and the benchmark call directly); this file only parses arguments and prints.
 *
 * Environment: MADBASE_LOCAL_ROOT (default .local-cluster/) and MADBASE_LOCAL_NET (network id,
 * default "mb") keep several clusters apart.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import {
  ClientUrls,
  MadbaseError,
  UPDATES_METRICS_FILE,
  UsageError,
  describeUpdates,
  parseUpdatesMetrics,
} from "../core";
import {
  Location,
  loadCluster,
  clusterUrls,
  waitHealthy,
  down,
  heal,
  killNode,
  partition,
  startNode,
  status,
  up,
} from "../local/cluster";
import { parseRestoreTarget, riskOf } from "../core/ops";
import { restorePostgres } from "../ops/restore";
import { localSession } from "../ops/target";
import { formatHealth, formatOverview } from "../local/health";
import { findNode } from "../local/state";
import { isRunning, machinePath } from "../local/machine";
import { clusterVersions, nodeVersions } from "../local/versions";
import { sshIdentity, sshInteractive } from "../local/ssh";
import { scale } from "../local/scale";
import { operatorTls } from "../local/tls";
import { apply } from "../local/apply";

const USAGE = `usage: npm run local -- <command> [options]

  up [--stack dev|prod] [--nodes N] [--profile fast|norm|safe] [--backup-dir DIR] [--restore latest|TIME]
                      render and start a cluster (default: prod, 3 nodes); waits until healthy.
                      --backup-dir keeps the backups outside the cluster's directory (down leaves
                      them); --restore recreates PostgreSQL from them once the fresh cluster is
                      healthy (npm run ops -- restore's steps): the newest state, or the state at
                      TIME ('2025-01-31 14:05:00+00'), then replicas from the repository
  status [--json]     roles, lag, Redis, etcd, HAProxy backends, exporters, connections and PIDs;
                      exits 1 when degraded
  apply [--stack S] [--profile P] [--plan P] [--synchronous-mode true|false] [--set KEY=VALUE]... [--volume-gb N]
                      converge the running cluster to changed settings as pulumi up does, by the
                      same steps in the same order over SSH: a new plan resizes every machine, one
                      at a time (drain, clean power-off, new type, boot, settle), then every node's
                      config refresh; prints what changed on each node. Starts from the cluster's
                      applied settings (or stack S's file); refuses what pulumi up refuses
  scale --nodes N     grow or shrink the running cluster to N nodes (1, 3, 5, 7), one node at a time,
                      with the membership scripts a Hetzner node runs; waits until healthy
  down                stop every process, remove the namespaces and all local data
  kill-node NAME      a power cut: every process of the node dies at once
  start-node NAME     boot a powered-off node (or start its stopped units); it rejoins by itself
  ssh NAME [-- CMD]   a root shell on a node, or one command, over SSH as Pulumi reaches it
  partition NAME      cut a node's network; its processes keep running
  heal NAME           restore it

  Backups, restores and switchovers are operations, the same on a local cluster and on a Pulumi
  stack: npm run ops -- backup pg full|diff --stack S --local, backup redis, restore-redis,
  restore, switchover, status (npm run ops -- help). up --restore runs ops' restore.`;

const COMMANDS: Record<
  string,
  { options: Record<string, { type: "string" | "boolean"; multiple?: boolean }>; positionals: number }
> = {
  up: {
    options: {
      stack: { type: "string" },
      nodes: { type: "string" },
      profile: { type: "string" },
      "backup-dir": { type: "string" },
      restore: { type: "string" },
    },
    positionals: 0,
  },
  status: { options: { json: { type: "boolean" } }, positionals: 0 },
  scale: { options: { nodes: { type: "string" } }, positionals: 0 },
  apply: {
    options: {
      stack: { type: "string" },
      profile: { type: "string" },
      plan: { type: "string" },
      "synchronous-mode": { type: "string" },
      set: { type: "string", multiple: true },
      "volume-gb": { type: "string" },
    },
    positionals: 0,
  },
  down: { options: {}, positionals: 0 },
  "kill-node": { options: {}, positionals: 1 },
  ssh: { options: {}, positionals: -1 },
  "start-node": { options: {}, positionals: 1 },
  partition: { options: {}, positionals: 1 },
  heal: { options: {}, positionals: 1 },
};

/** `--set KEY=VALUE` options as stack keys (values as `pulumi config set` takes them: text). */
function stackKeys(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at < 1) throw new UsageError(`--set takes KEY=VALUE (a madbase-state key), not ${JSON.stringify(pair)}`);
    out[pair.slice(0, at).replace(/^madbase-state:/, "")] = pair.slice(at + 1);
  }
  return out;
}

/** The operation verbs the runner had, and the `npm run ops` line that does each now. */
const MOVED_TO_OPS: Record<string, (args: string[]) => string> = {
  "backup-pg": (args) => `backup pg ${args[0] ?? "full|diff"}`,
  "backup-redis": () => "backup redis",
  "restore-redis": (args) => `restore-redis${args.length ? ` ${args.join(" ")}` : ""} --confirm <cluster name>`,
};

function parse(argv: string[]) {
  const [command, ...rest] = argv;
  if (!command || command === "--help" || command === "-h" || command === "help")
    return { command: "help", values: {}, positionals: [] };
  const moved = MOVED_TO_OPS[command];
  if (moved)
    throw new UsageError(
      `${command} is an operation now, the same for a local cluster and a Pulumi stack: npm run ops -- ${moved(rest)} --stack <its stack> --local`,
    );
  const spec = COMMANDS[command];
  if (!spec) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: spec.options, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (spec.positionals === -1 && parsed.positionals.length === 0)
    throw new UsageError(`${command} needs a node name, such as madbase-prod-1`);
  if (spec.positionals !== -1 && parsed.positionals.length !== spec.positionals) {
    throw new UsageError(
      spec.positionals === 0 ? `${command} takes no arguments` : `${command} needs a node name, such as madbase-prod-1`,
    );
  }
  return {
    command,
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

const log = (line: string) => console.log(line);

/**
 * The URLs as environment lines, named after the stack's outputs (databaseReadUrl: DATABASE_READ_URL).
 * Beside the TLS URL, how to use it: a rediss:// client verifies the server, and the cluster's CA
 * is one no client knows (`redis-cli -u` alone fails with "certificate verify failed").
 */
function envLines(urls: ClientUrls, root: string): string {
  const ca = path.relative(process.cwd(), operatorTls(root).caFile) || operatorTls(root).caFile;
  return Object.entries(urls)
    .flatMap(([output, url]) => {
      const name = output.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
      const line = `${name}=${url}`;
      return output === "redisTlsUrl"
        ? [line, `# verified with the cluster's CA: redis-cli --cacert ${ca} -u "$${name}" (ioredis: tls: { ca })`]
        : [line];
    })
    .join("\n");
}

async function run(argv: string[], loc: Location): Promise<number> {
  const { command, values, positionals } = parse(argv);
  switch (command) {
    case "help":
      console.log(USAGE);
      return 0;
    case "up": {
      const restore =
        values.restore === undefined ? undefined : parseRestoreTarget("--restore", values.restore as string);
      const result = await up({
        ...loc,
        stack: values.stack as string | undefined,
        nodes: values.nodes as string | undefined,
        profile: values.profile as string | undefined,
        backupDir: values["backup-dir"] as string | undefined,
        // The backups' cluster replaces the fresh one, by the operator's restore (npm run ops -- restore).
        afterHealthy: restore
          ? async (state, secrets) => {
              await restorePostgres(localSession(state, log), restore, {
                announce: (facts) =>
                  log(
                    `What the restore risks: ${riskOf({ verb: "restore", stack: state.stack, local: true, target: restore, confirm: state.clusterName }, facts)}`,
                  ),
              });
              return waitHealthy(state, secrets, { timeoutMs: 180_000, onProgress: log });
            }
          : undefined,
        onProgress: log,
      });
      const urls = clusterUrls(result.state, result.secrets);
      console.log(
        `\nHealthy in ${result.seconds.toFixed(1)} s.\n\n${formatHealth(result.health)}\n\n${formatOverview(result.health)}\n`,
      );
      console.log(envLines(urls, result.state.root));
      console.log(
        "\nAny node's address works the same (5433 leader, pooled; 5435 leader, direct; 5434 replicas, pooled; 6379 Redis master). " +
          "Stop with `npm run local -- down`.",
      );
      return 0;
    }
    case "status": {
      const { state, secrets, health } = await status(loc);
      const urls = clusterUrls(state, secrets);
      if (values.json) {
        const versions = clusterVersions(
          state.nodes.filter((n) => isRunning(n.machine.nspawnPid)).map((n) => nodeVersions(n.machine)),
        );
        console.log(JSON.stringify({ ...health, versions, nodes: health.nodes, ...urls }, null, 2));
      } else {
        console.log(formatHealth(health));
        console.log(`\n${formatOverview(health)}`);
        // Each node's package updates, as its timer last wrote them (config-refresh installs it).
        const updates = state.nodes.flatMap((n) => {
          const file = isRunning(n.machine.nspawnPid) ? machinePath(n.machine, UPDATES_METRICS_FILE) : undefined;
          return file && fs.existsSync(file)
            ? [`  ${n.name}: ${describeUpdates(parseUpdatesMetrics(fs.readFileSync(file, "utf8")))}`]
            : [];
        });
        if (updates.length > 0) console.log(`\nupdates:\n${updates.join("\n")}`);
        console.log(health.healthy ? "\nhealthy" : `\ndegraded:\n  ${health.problems.join("\n  ")}`);
        console.log(`\n${envLines(urls, state.root)}`);
      }
      return health.healthy ? 0 : 1;
    }
    case "scale": {
      if (values.nodes === undefined) throw new UsageError("scale needs --nodes N, such as --nodes 5");
      const result = await scale({ ...loc, nodes: values.nodes as string, onProgress: log });
      console.log(
        `\nScaled from ${result.from.nodeCount} to ${result.to.nodeCount} node(s) in ${result.seconds.toFixed(1)} s; healthy.\n\n${formatHealth(result.health)}`,
      );
      return 0;
    }
    case "apply": {
      const volumeGb = values["volume-gb"] === undefined ? undefined : Number(values["volume-gb"]);
      const result = await apply({
        ...loc,
        stack: values.stack as string | undefined,
        profile: values.profile as string | undefined,
        plan: values.plan as string | undefined,
        synchronousMode: values["synchronous-mode"] as string | undefined,
        set: stackKeys((values.set as string[] | undefined) ?? []),
        volumeGb,
        onProgress: log,
      });
      console.log("\nWhat changed:");
      for (const { node, lines } of result.changes)
        console.log(`  ${node}: ${lines.length ? lines.join("; ") : "nothing (already up to date)"}`);
      console.log(`\nApplied in ${result.seconds.toFixed(1)} s; healthy.\n\n${formatHealth(result.health)}`);
      return 0;
    }
    case "down": {
      const { machines } = await down({ ...loc, onProgress: log });
      console.log(`removed ${machines} machine(s), their volumes, the namespaces and all local data`);
      return 0;
    }
    case "kill-node": {
      const pids = await killNode(positionals[0], loc);
      console.log(`power cut on ${positionals[0]}: ${pids.length} process(es) ended at once`);
      return 0;
    }
    case "start-node": {
      const { booted, started } = await startNode(positionals[0], loc);
      if (booted) console.log(`${positionals[0]}: booting (systemd starts its units after the network and the volume)`);
      else
        console.log(
          started.length
            ? `started ${started.join(", ")} on ${positionals[0]}`
            : `${positionals[0]}: everything is already running`,
        );
      return 0;
    }
    case "ssh": {
      const { state } = loadCluster(loc);
      const node = findNode(state, positionals[0]);
      return sshInteractive(sshIdentity(state.root), node.address, positionals.slice(1));
    }
    case "partition":
      partition(positionals[0], loc);
      console.log(
        `${positionals[0]}: network cut (processes keep running); \`npm run local -- heal ${positionals[0]}\` restores it`,
      );
      return 0;
    case "heal":
      heal(positionals[0], loc);
      console.log(`${positionals[0]}: network restored`);
      return 0;
  }
  return 2;
}

async function main(): Promise<void> {
  const loc: Location = {
    root: process.env.MADBASE_LOCAL_ROOT || undefined,
    networkId: process.env.MADBASE_LOCAL_NET || undefined,
  };
  try {
    process.exitCode = await run(process.argv.slice(2), loc);
  } catch (e) {
    if (e instanceof UsageError) console.error(`local: ${e.message}\n\n${USAGE}`);
    else if (e instanceof MadbaseError) console.error(`local: ${e.message}`);
    else console.error(`local: ${(e as Error).stack ?? e}`);
    process.exitCode = e instanceof MadbaseError ? e.exitCode : 1;
  }
}

if (require.main === module) void main();
