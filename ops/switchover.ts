/**
 * A planned move of PostgreSQL's leadership: Patroni's switchover, asked with patronictl on the
 * leader's node (it calls the REST API with the node's certificate and the REST login of its own
 * configuration). The old leader stops cleanly and rejoins as a replica; in synchronous mode only
 * the synchronous standby may take over, so no acknowledged commit is lost.
 */
import { RefusedError, serverPaths } from "../core";
import { RiskFacts, findTargetNode } from "../core/ops";
import { OpsStatus } from "../core/ops-status";
import { shellQuote } from "../local/backup";
import { OpsSession, collectStatus, mustRun, onNode, waitStatus } from "./session";

export interface SwitchoverResult {
  from: string;
  to: string;
  seconds: number;
  status: OpsStatus;
}

export async function switchover(
  session: OpsSession,
  to: string | undefined,
  opts: { timeoutMs?: number; announce?: (facts: RiskFacts) => void } = {},
): Promise<SwitchoverResult> {
  const started = Date.now();
  const { target } = session;
  if (to !== undefined) findTargetNode(target, to, "--to");
  const before = await collectStatus(session);
  const from = before.leader;
  if (!from)
    throw new RefusedError(
      `there is no Patroni leader to switch over from; nothing was touched:\n  ${before.problems.join("\n  ")}`,
    );
  if (to === from) throw new RefusedError(`--to ${to}: ${to} already leads ${target.clusterName}; nothing to do`);
  const candidates = before.nodes.filter((n) => n.name !== from && n.state === "streaming");
  const sync = before.nodes.find((n) => n.role === "sync_standby");
  if (to !== undefined) {
    const row = before.nodes.find((n) => n.name === to)!;
    if (row.state !== "streaming")
      throw new RefusedError(
        `--to ${to}: it is ${row.role ?? "not a member"} ${row.state ?? ""}, not a streaming replica; nothing was touched`.replace(
          / +;/,
          ";",
        ),
      );
    if (before.synchronousMode && row.role !== "sync_standby")
      throw new RefusedError(
        `--to ${to}: synchronous_mode is on, and Patroni hands over only to the synchronous standby, ${sync?.name ?? "(none now)"}: say --to ${sync?.name ?? "<it>"} or leave --to out; nothing was touched`,
      );
  } else if (candidates.length === 0)
    throw new RefusedError(`no replica streams from ${from}: nobody could take over; nothing was touched`);
  opts.announce?.({ clusterName: target.clusterName, synchronousMode: before.synchronousMode });
  session.log(`switching over ${target.clusterName} from ${from}${to ? ` to ${to}` : ""} (patronictl on ${from})`);
  const args = [
    "patronictl",
    "-c",
    serverPaths().config["patroni.yml"],
    "switchover",
    target.clusterName,
    "--leader",
    from,
    ...(to ? ["--candidate", to] : []),
    "--force",
  ];
  await mustRun(
    session,
    `${from}: patronictl switchover`,
    onNode(session, from, `${args.map(shellQuote).join(" ")} </dev/null`, { timeoutMs: 120_000 }),
  );
  const status = await waitStatus(
    session,
    `${to ?? "another node"} to lead with every other node streaming`,
    (s) =>
      s.leader !== undefined &&
      s.leader !== from &&
      (to === undefined || s.leader === to) &&
      s.postgresProblems.length === 0,
    opts.timeoutMs ?? 180_000,
  );
  return { from, to: status.leader!, seconds: (Date.now() - started) / 1000, status };
}
