/**
 * A backup by hand (README "Backups and restores"): `madbase-backup pg full|diff` on the Patroni
 * leader, `madbase-backup redis` on the Redis master, as the node's own timers run them.
 */
import { FailedError, RefusedError } from "../core";
import { RiskFacts } from "../core/ops";
import { ScriptRun } from "../local/backup";
import { OpsSession, backupScript, collectStatus } from "./session";

export async function backup(
  session: OpsSession,
  what: "pg-full" | "pg-diff" | "redis",
  opts: { announce?: (facts: RiskFacts) => void } = {},
): Promise<{ node: string; run: ScriptRun }> {
  const status = await collectStatus(session);
  const node = what === "redis" ? status.redisMaster : status.leader;
  const role = what === "redis" ? "Redis master (named by a majority of Sentinels)" : "Patroni leader";
  if (!node)
    throw new RefusedError(
      `there is no ${role} to take the backup; nothing was done:\n  ${status.problems.join("\n  ")}`,
    );
  opts.announce?.({ clusterName: session.target.clusterName, synchronousMode: status.synchronousMode });
  const args = what === "redis" ? ["redis"] : ["pg", what === "pg-full" ? "full" : "diff"];
  session.log(`${node} (the ${role}): madbase-backup ${args.join(" ")}`);
  const run = await backupScript(session, node, args, { timeoutMs: 6 * 3600_000 });
  for (const line of run.output.trim().split("\n").filter(Boolean)) session.log(`    ${line}`);
  if (run.code !== 0) throw new FailedError(`${node}: madbase-backup ${args.join(" ")} failed (exit ${run.code})`);
  if (/Nothing to do here/.test(run.output))
    throw new FailedError(`${node} no longer was the ${role} when the backup started; no backup taken: run it again`);
  return { node, run };
}

/** `madbase-backup <args>` on every node in node order, as every node's timer runs it (only the leader or master acts). */
export async function backupOnEveryNode(
  session: OpsSession,
  args: string[],
): Promise<(ScriptRun & { node: string })[]> {
  const out: (ScriptRun & { node: string })[] = [];
  for (const n of session.target.nodes) out.push({ node: n.name, ...(await backupScript(session, n.name, args)) });
  return out;
}
