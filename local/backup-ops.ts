/**
 * Backups and restores of a running local cluster, as `npm run local --` offers them: the node's
 * own `madbase-backup` script run on every node over SSH (only the leader or the Redis master
 * acts, as with the timers on a server), and the Redis restore sequence (all Redis servers
 * stopped, the snapshot put on the master, the master started, then the replicas, which resync
 * from it).
 */
import { ScriptRun, runBackupScript } from "./backup";
import { Location, loadCluster, startNode, status, stopService, waitHealthy } from "./cluster";

export interface NodeRun extends ScriptRun {
  node: string;
}

/** `madbase-backup <args>` on every node, in node order (one at a time, as the timers never overlap). */
export async function backupOnEveryNode(loc: Location, args: string[]): Promise<NodeRun[]> {
  const { state } = loadCluster(loc);
  const out: NodeRun[] = [];
  for (const n of state.nodes) out.push({ node: n.name, ...(await runBackupScript(state, n.name, args)) });
  return out;
}

/**
 * Restores a Redis snapshot (the newest when `name` is absent) on the current master and restarts
 * Redis everywhere; throws with the script's output when the restore fails (Redis is then started
 * again as it was).
 */
export async function restoreRedis(
  loc: Location,
  name = "latest",
  onProgress: (line: string) => void = () => undefined,
): Promise<ScriptRun> {
  const { state, secrets, health } = await status(loc);
  const master = health.redisMaster ?? state.nodes[0].name;
  const replicas = state.nodes.map((n) => n.name).filter((n) => n !== master);
  onProgress(`stopping Redis on ${[...replicas, master].join(", ")} (replicas first)`);
  for (const n of [...replicas, master]) await stopService(n, "redis", loc);
  const result = await runBackupScript(state, master, ["redis-restore", name]);
  onProgress(result.output.trim());
  onProgress(`starting Redis on ${master}, then on ${replicas.join(", ")}`);
  await startNode(master, loc);
  for (const n of replicas) await startNode(n, loc);
  await waitHealthy(loadCluster(loc).state, secrets, { timeoutMs: 120_000 });
  if (result.code !== 0)
    throw new Error(
      `the Redis restore on ${master} failed (exit ${result.code}); Redis runs with its old data:\n${result.output}`,
    );
  return result;
}
