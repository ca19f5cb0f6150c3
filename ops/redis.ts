/**
 * Redis's snapshot put back (README "Restore Redis"): every Redis server stops (replicas first),
 * the snapshot replaces the master's dump.rdb (`madbase-backup redis-restore`, which keeps the old
 * file), the master starts, then the replicas, which resync from it.
 */
import { FailedError } from "../core";
import { RiskFacts } from "../core/ops";
import { OpsStatus } from "../core/ops-status";
import { ScriptRun } from "../local/backup";
import { requireEveryNode } from "./restore";
import { OpsSession, backupScript, collectStatus, mustRun, onNode, waitStatus } from "./session";

const systemctl = (session: OpsSession, node: string, verb: "start" | "stop") =>
  mustRun(
    session,
    `${node}: systemctl ${verb} redis-server`,
    onNode(session, node, `systemctl ${verb} redis-server.service </dev/null`, { timeoutMs: 120_000 }),
  );

export async function restoreRedis(
  session: OpsSession,
  name = "latest",
  opts: { timeoutMs?: number; announce?: (facts: RiskFacts) => void } = {},
): Promise<{ run: ScriptRun; master: string; status: OpsStatus }> {
  const { target } = session;
  const before = await collectStatus(session);
  requireEveryNode(before, "a Redis restore");
  const master = before.redisMaster ?? target.nodes[0].name;
  if (!before.redisMaster) session.log(`no Redis master named by a majority of Sentinels: restoring on ${master}`);
  const replicas = target.nodes.map((n) => n.name).filter((n) => n !== master);
  opts.announce?.({ clusterName: target.clusterName, redisMaster: master });
  session.log(`stopping Redis on ${[...replicas, master].join(", ")} (replicas first)`);
  for (const n of [...replicas, master]) await systemctl(session, n, "stop");
  session.log(`${master}: madbase-backup redis-restore ${name}`);
  const run = await backupScript(session, master, ["redis-restore", name], { timeoutMs: 300_000 });
  for (const line of run.output.trim().split("\n").filter(Boolean)) session.log(`    ${line}`);
  session.log(`starting Redis on ${master}, then on ${replicas.join(", ") || "no other node"}`);
  await systemctl(session, master, "start");
  for (const n of replicas) await systemctl(session, n, "start");
  const status = await waitStatus(
    session,
    "one Redis master with every replica in sync",
    (s) => s.redisProblems.length === 0,
    opts.timeoutMs ?? 180_000,
  );
  if (run.code !== 0)
    throw new FailedError(
      `the Redis restore on ${master} failed (exit ${run.code}); Redis runs again with its old data:\n${run.output.trim()}`,
    );
  return { run, master, status };
}
