/**
 * An operation's reach into a cluster: its target (core/ops.ts) and the SSH identity every node
 * takes as root. Local nodes and Hetzner servers are reached the same way (local/ssh.ts, the
 * client Pulumi's remote commands imitate); after this nothing tells them apart.
 */
import { FailedError } from "../core";
import { OpsTarget, findTargetNode } from "../core/ops";
import { OpsStatus, judgeStatus, nodeStatusScript, parseNodeReport } from "../core/ops-status";
import { BACKUP_SCRIPT_PATH, ScriptRun, shellQuote } from "../local/backup";
import { SshIdentity, sshScript } from "../local/ssh";

export interface OpsSession {
  target: OpsTarget;
  identity: SshIdentity;
  /** Progress, a line at a time. */
  log: (line: string) => void;
}

/**
 * Runs a shell script on a node as root over SSH (stderr merged into stdout on the node). Commands
 * in it must not read standard input: it carries the script.
 */
export async function onNode(
  session: OpsSession,
  nodeName: string,
  script: string,
  opts: { timeoutMs?: number } = {},
): Promise<ScriptRun> {
  const node = findTargetNode(session.target, nodeName, "node");
  const started = Date.now();
  const r = await sshScript(session.identity, node.sshHost, `exec 2>&1\n${script}\n`, {
    timeoutMs: opts.timeoutMs ?? 600_000,
  });
  return { code: r.code, output: `${r.stdout}${r.stderr}`, seconds: (Date.now() - started) / 1000 };
}

/** What each madbase-backup command runs as, like the node's systemd units. */
const RUN_AS: Record<string, string> = {
  pg: "postgres",
  "pg-restore": "postgres",
  redis: "redis",
  "redis-restore": "redis",
};

/** `madbase-backup <args>` on a node as its command's user; never throws for a non-zero exit. */
export function backupScript(
  session: OpsSession,
  nodeName: string,
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<ScriptRun> {
  const user = RUN_AS[args[0]] ?? "root";
  const env = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const argv = ["runuser", "-u", user, "--", ...(env.length ? ["env", ...env] : []), BACKUP_SCRIPT_PATH, ...args];
  // cd /: runuser keeps the working directory, and root's home is not postgres's to read.
  return onNode(session, nodeName, `cd / && ${argv.map(shellQuote).join(" ")} </dev/null`, {
    timeoutMs: opts.timeoutMs,
  });
}

/** Runs `what` and logs its lines; a non-zero exit is a FailedError carrying the output. */
export async function mustRun(session: OpsSession, what: string, run: Promise<ScriptRun>): Promise<ScriptRun> {
  const r = await run;
  for (const line of r.output.trim().split("\n").filter(Boolean)) session.log(`    ${line}`);
  if (r.code !== 0) throw new FailedError(`${what} failed (exit ${r.code}):\n${r.output.trim()}`);
  return r;
}

/** Every node's own account of itself and of its cluster, asked on the nodes at once. */
export async function collectStatus(session: OpsSession): Promise<OpsStatus> {
  const script = nodeStatusScript();
  const reports = await Promise.all(
    session.target.nodes.map(async (n) => {
      const r = await sshScript(session.identity, n.sshHost, `exec 2>&1\n${script}\n`, { timeoutMs: 30_000 });
      return parseNodeReport(n.name, `${r.stdout}${r.stderr}`, r.code);
    }),
  );
  return judgeStatus(session.target, reports);
}

/** Polls the status until `done` holds; a FailedError naming `what` and the last problems otherwise. */
export async function waitStatus(
  session: OpsSession,
  what: string,
  done: (s: OpsStatus) => boolean,
  timeoutMs: number,
): Promise<OpsStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: OpsStatus | undefined;
  let said = "";
  for (;;) {
    last = await collectStatus(session);
    if (done(last)) return last;
    const now = last.problems.join("; ");
    if (now !== said) session.log(`  waiting for ${what}: ${now || "…"}`);
    said = now;
    if (Date.now() > deadline)
      throw new FailedError(
        `timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}; last seen:\n  ${last.problems.join("\n  ")}`,
      );
    await new Promise((r) => setTimeout(r, 2000));
  }
}
