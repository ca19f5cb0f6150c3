/**
 * PostgreSQL recreated in place from the backups: README "Restore PostgreSQL", its seven steps in
 * the order core/ops.ts restoreSteps gives, each run on its node over SSH. `npm run ops -- restore`
 * and `npm run local -- up --restore` both run this.
 */
import { FailedError, RefusedError, serverPaths } from "../core";
import { RestoreTarget, RiskFacts, restoreSteps } from "../core/ops";
import { OpsStatus } from "../core/ops-status";
import { PG_BACKUP_UNITS, shellQuote } from "../local/backup";
import { OpsSession, backupScript, collectStatus, mustRun, onNode, waitStatus } from "./session";

const SERVER = serverPaths();

/** Refuses (nothing touched) when a node does not answer over SSH: every node takes part. */
export function requireEveryNode(status: OpsStatus, what: string): void {
  const gone = status.nodes.filter((n) => !n.reachable).map((n) => n.name);
  if (gone.length > 0)
    throw new RefusedError(
      `${what} needs every node, and ${gone.join(", ")} did not answer over SSH; nothing was touched:\n  ${status.problems.join("\n  ")}`,
    );
}

/** `systemctl start patroni`; a failure carries systemd's and the journal's last word. */
export async function startPatroni(session: OpsSession, node: string): Promise<void> {
  await mustRun(
    session,
    `${node}: systemctl start patroni`,
    onNode(
      session,
      node,
      "systemctl start patroni.service </dev/null && exit 0\nrc=$?\nsystemctl status patroni.service --no-pager -n 0 </dev/null\njournalctl -b --no-pager -n 25 -o short-monotonic </dev/null | cut -c1-400\nexit $rc",
      { timeoutMs: 120_000 },
    ),
  );
}

/** Waits on the node itself until its Patroni's /primary answers 200. */
function waitPrimaryScript(seconds: number): string {
  const p = SERVER.tls;
  return [
    `. ${SERVER.nodeEnvFile}`,
    `deadline=$((SECONDS + ${seconds}))`,
    `until [ "$(curl -s -o /dev/null --max-time 3 -w '%{http_code}' --cacert ${p.caCert} --cert ${p.cert} --key ${p.key} "https://$NODE_IP:$PATRONI_PORT/primary")" = 200 ]; do`,
    `  [ $SECONDS -lt $deadline ] || { echo "Patroni's /primary did not answer 200 within ${seconds} s"; exit 1; }`,
    "  sleep 1",
    "done",
    'echo "Patroni on $NODE_NAME answers /primary 200"',
  ].join("\n");
}

/**
 * Recreates PostgreSQL from the backups; returns the status of the restored cluster. Refused
 * before anything is touched when a node does not answer. The leader restores (any node could),
 * the others become its replicas. `announce` hears what the restore risks before the first step.
 */
export async function restorePostgres(
  session: OpsSession,
  target: RestoreTarget,
  opts: { timeoutMs?: number; announce?: (facts: RiskFacts) => void } = {},
): Promise<OpsStatus> {
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 900_000;
  const remaining = () => Math.max(60_000, timeoutMs - (Date.now() - started));
  const { target: cluster } = session;
  const say = (line: string) =>
    session.log(`[restore ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
  const before = await collectStatus(session);
  requireEveryNode(before, "a restore");
  const nodes = cluster.nodes.map((n) => n.name);
  const restorer = before.leader ?? nodes[0];
  opts.announce?.({ clusterName: cluster.clusterName, synchronousMode: before.synchronousMode });
  const steps = restoreSteps(cluster.clusterName, nodes, restorer, target);
  say(
    `recreating PostgreSQL of ${cluster.clusterName} (${cluster.description}) from its backups (${target.type === "latest" ? "the latest state" : `the state at ${target.target}`}) on ${restorer}; ${steps.length} steps`,
  );

  let final: OpsStatus | undefined;
  for (const step of steps) {
    say(`step ${step.readme}/7${step.node ? ` ${step.node}` : ""}: ${step.text}`);
    const node = step.node ?? restorer;
    switch (step.kind) {
      case "stop-backup-jobs":
        await mustRun(
          session,
          `${node}: stopping the backup jobs`,
          onNode(
            session,
            node,
            `for u in ${PG_BACKUP_UNITS.join(" ")}; do case "$(systemctl is-active "$u" </dev/null)" in active|activating|deactivating) echo "stopping $u"; systemctl stop "$u" </dev/null || exit 1;; esac; done`,
            { timeoutMs: 120_000 },
          ),
        );
        break;
      case "stop-patroni":
        await mustRun(
          session,
          `${node}: systemctl stop patroni`,
          onNode(session, node, "systemctl stop patroni.service </dev/null", { timeoutMs: 180_000 }),
        );
        break;
      case "remove-cluster-state": {
        // patronictl asks for the cluster's name, then for "Yes I am aware".
        const conf = SERVER.config["patroni.yml"];
        const name = cluster.clusterName;
        await mustRun(
          session,
          `${node}: patronictl remove`,
          onNode(
            session,
            node,
            `patronictl -c ${shellQuote(conf)} remove ${shellQuote(name)} <<'EOF'\n${name}\nYes I am aware\nEOF`,
            { timeoutMs: 60_000 },
          ),
        );
        break;
      }
      case "pg-restore": {
        const args = target.type === "latest" ? ["pg-restore", "latest"] : ["pg-restore", "time", target.target];
        await mustRun(
          session,
          `${node}: madbase-backup ${args.join(" ")}`,
          backupScript(session, node, args, {
            timeoutMs: remaining(),
            env: { RESTORE_TIMEOUT: String(Math.floor(remaining() / 1000)) },
          }),
        );
        break;
      }
      case "start-leader":
        await startPatroni(session, node);
        await mustRun(
          session,
          `${node}: waiting for /primary`,
          onNode(session, node, waitPrimaryScript(180), { timeoutMs: 200_000 }),
        );
        break;
      case "full-backup": {
        const r = await mustRun(
          session,
          `${node}: madbase-backup pg full`,
          backupScript(session, node, ["pg", "full"], { timeoutMs: remaining() }),
        );
        if (!/full backup of \S+ done/.test(r.output))
          throw new FailedError(`${node}: madbase-backup pg full took no backup:\n${r.output.trim()}`);
        break;
      }
      case "rebuild-replica":
        await mustRun(
          session,
          `${node}: madbase-backup pg-restore replica`,
          backupScript(session, node, ["pg-restore", "replica"], { timeoutMs: 120_000 }),
        );
        await startPatroni(session, node);
        break;
      case "check":
        final = await waitStatus(
          session,
          "every node to stream from the restored leader",
          (s) => s.postgresProblems.length === 0 && s.leader === restorer,
          remaining(),
        );
        break;
    }
  }
  const leaderRow = final!.nodes.find((n) => n.name === final!.leader);
  say(
    `restored: ${final!.leader} leads on timeline ${leaderRow?.timeline ?? "?"}, ${nodes.length - 1} replica(s) stream`,
  );
  return final!;
}
