/**
 * npm run ops -- <verb> --stack S [--local]: the operator's day-2 procedures as one command each,
 * on a Pulumi stack's servers or on the local cluster of the stack, over SSH as root either way.
 * The rules are core/ops.ts's, the work ops/'s; this file parses, resolves the target and prints.
 *
 * Environment (with --local): MADBASE_LOCAL_ROOT (default .local-cluster/), MADBASE_LOCAL_NET.
 */
import { MadbaseError, UsageError } from "../core";
import { OPS_USAGE, OpsRequest, RiskFacts, checkConfirm, parseOpsArgs, riskOf } from "../core/ops";
import { formatOpsStatus } from "../core/ops-status";
import { Location } from "../local/cluster";
import { backup } from "../ops/backup";
import { maintenance, serverRebooter } from "../ops/maintenance";
import { loadCluster } from "../local/cluster";
import { rebootMachine } from "../local/sequence-runner";
import { restoreRedis } from "../ops/redis";
import { restorePostgres } from "../ops/restore";
import { collectStatus } from "../ops/session";
import { switchover } from "../ops/switchover";
import { CommandRunner, resolveSession, runCommand } from "../ops/target";

const log = (line: string) => console.log(line);

export async function runOps(argv: string[], loc: Location, run: CommandRunner = runCommand): Promise<number> {
  const parsed = parseOpsArgs(argv);
  if (parsed.verb === "help") {
    console.log(OPS_USAGE);
    return 0;
  }
  const request = parsed as OpsRequest;
  const { session, cleanup } = resolveSession(request, loc, log, run);
  try {
    const { target } = session;
    // A restore names the cluster it replaces; the wrong name stops here, before any node is touched.
    checkConfirm(request, target);
    const announce = (facts: RiskFacts) =>
      log(`${request.verb} on ${target.clusterName} (${target.description}). What it risks: ${riskOf(request, facts)}`);
    switch (request.verb) {
      case "status": {
        const status = await collectStatus(session);
        console.log(request.json ? JSON.stringify({ ...status, target }, null, 2) : formatOpsStatus(status, target));
        return status.healthy ? 0 : 1;
      }
      case "switchover": {
        const r = await switchover(session, request.to, { announce });
        log(`\n${r.to} leads ${target.clusterName} (was ${r.from}), every replica streams; ${r.seconds.toFixed(1)} s.`);
        return 0;
      }
      case "restore": {
        const status = await restorePostgres(session, request.target, { announce });
        log(`\n${target.clusterName} restored; ${status.leader} leads, every replica streams.`);
        return 0;
      }
      case "restore-redis": {
        const r = await restoreRedis(session, request.name, { announce });
        log(`\nRedis restored on ${r.master}; the replicas resynced from it.`);
        return 0;
      }
      case "backup": {
        const r = await backup(session, request.what, { announce });
        log(`\nbackup done on ${r.node}.`);
        return 0;
      }
      case "maintenance": {
        const reboot =
          target.kind === "local"
            ? (node: string) => rebootMachine(loadCluster(loc).state, node, `${node}: maintenance`, log)
            : serverRebooter(session);
        const r = await maintenance(session, request.options, {
          reboot,
          announce: () => announce({ clusterName: target.clusterName }),
        });
        log(
          `\n${target.clusterName} maintained in ${r.seconds.toFixed(1)} s: ${r.nodes.map((n) => `${n.name} ${n.seconds.toFixed(0)} s${n.rebooted ? " (rebooted)" : ""}`).join(", ")}; ${r.status.leader} leads.`,
        );
        return 0;
      }
    }
  } finally {
    cleanup();
  }
}

async function main(): Promise<void> {
  const loc: Location = {
    root: process.env.MADBASE_LOCAL_ROOT || undefined,
    networkId: process.env.MADBASE_LOCAL_NET || undefined,
  };
  try {
    process.exitCode = await runOps(process.argv.slice(2), loc);
  } catch (e) {
    if (e instanceof UsageError) console.error(`ops: ${e.message}\n\n${OPS_USAGE}`);
    else if (e instanceof MadbaseError) console.error(`ops: ${e.message}`);
    else console.error(`ops: ${(e as Error).stack ?? e}`);
    process.exitCode = e instanceof MadbaseError ? e.exitCode : 1;
  }
}

if (require.main === module) void main();
