/**
 * Backups on a local cluster, run the way they run on a Hetzner server: every node carries the
 * `madbase-backup` script, its environment file and pgBackRest's configuration from its own user
 * data (core's serverPaths() layout), and the runner only starts the script on the node, over SSH
 * as Pulumi reaches a server, as the user its systemd unit runs it as (`runuser -u postgres` /
 * `-u redis`).
 *
 * The operator's procedures (restore, switchover, a backup by hand) are `npm run ops`'s (ops/),
 * which reaches local nodes and Hetzner servers alike; these are the local runner's and the
 * tests' own reach into a node.
 */
import { serverPaths } from "../core";
import { sleep } from "./machine";
import { sshIdentity, sshScript } from "./ssh";
import { LocalClusterState, findNode } from "./state";

const SERVER = serverPaths();
/** The script on every node (/usr/local/sbin/madbase-backup). */
export const BACKUP_SCRIPT_PATH = `${SERVER.scriptDir}/madbase-backup`;
/** The pgBackRest jobs of a server (first boot starts `full` once; the timers start both). */
export const PG_BACKUP_UNITS = [
  "madbase-pg-backup@first.service",
  "madbase-pg-backup@full.service",
  "madbase-pg-backup@diff.service",
];

export interface ScriptRun {
  code: number | null;
  /** stdout and stderr together, merged on the node in the order they were written. */
  output: string;
  seconds: number;
}

/** What each command runs as, like the systemd units on a server. */
const RUN_AS: Record<string, string> = {
  pg: "postgres",
  "pg-restore": "postgres",
  redis: "redis",
  "redis-restore": "redis",
};

/** A word for a shell command line. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs a shell script on a node as root over SSH; stderr merged into stdout. Commands in the
 * script must not read standard input (it carries the script): give them `</dev/null` or a here-doc.
 */
export async function onNode(
  state: LocalClusterState,
  nodeName: string,
  script: string,
  opts: { timeoutMs?: number } = {},
): Promise<ScriptRun> {
  const node = findNode(state, nodeName);
  const started = Date.now();
  const r = await sshScript(sshIdentity(state.root), node.address, `exec 2>&1\n${script}\n`, {
    timeoutMs: opts.timeoutMs ?? 600_000,
  });
  return { code: r.code, output: `${r.stdout}${r.stderr}`, seconds: (Date.now() - started) / 1000 };
}

/**
 * Runs `madbase-backup <command> ...` on a node as the command's user; never throws for a non-zero
 * exit (the tests assert on it). `env` is passed to the script (RESTORE_TIMEOUT).
 */
export function runBackupScript(
  state: LocalClusterState,
  nodeName: string,
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<ScriptRun> {
  const user = RUN_AS[args[0]] ?? "root";
  const env = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const argv = [
    "runuser",
    "-u",
    user,
    "--",
    ...(env.length > 0 ? ["env", ...env] : []),
    BACKUP_SCRIPT_PATH,
    ...args,
  ].map(shellQuote);
  // cd /: runuser keeps the working directory, and root's home is not postgres's to read.
  return onNode(state, nodeName, `cd / && ${argv.join(" ")} </dev/null`, { timeoutMs: opts.timeoutMs });
}

/** pgBackRest on a node as postgres with the node's configuration (`info`, `check`, ...). */
export function pgbackrest(
  state: LocalClusterState,
  nodeName: string,
  args: string[],
  opts: { timeoutMs?: number } = {},
): Promise<ScriptRun> {
  const argv = [
    "runuser",
    "-u",
    "postgres",
    "--",
    "pgbackrest",
    `--config=${SERVER.config["pgbackrest.conf"]}`,
    `--stanza=${state.clusterName}`,
    ...args,
  ];
  return onNode(state, nodeName, `cd / && ${argv.map(shellQuote).join(" ")} </dev/null`, {
    timeoutMs: opts.timeoutMs ?? 180_000,
  });
}

/** Which of a node's pgBackRest jobs (the units first boot and the timers start) are running. */
export async function runningBackupJobs(state: LocalClusterState, nodeName: string): Promise<string[]> {
  const r = await onNode(
    state,
    nodeName,
    `for u in ${PG_BACKUP_UNITS.join(" ")}; do s=$(systemctl is-active "$u" </dev/null); case "$s" in active|activating|deactivating) echo "$u";; esac; done`,
    {
      timeoutMs: 30_000,
    },
  );
  if (r.code !== 0)
    throw new Error(`${nodeName}: cannot ask systemd about the backup jobs (exit ${r.code}): ${r.output.trim()}`);
  return r.output
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
}

/**
 * Waits until no node runs a pgBackRest job (first boot's full backup runs in the background
 * after `up`); throws with the jobs still running at the deadline.
 */
export async function waitBackupJobs(state: LocalClusterState, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const running = (
      await Promise.all(
        state.nodes.map(async (n) => (await runningBackupJobs(state, n.name)).map((u) => `${n.name}: ${u}`)),
      )
    ).flat();
    if (running.length === 0) return;
    if (Date.now() > deadline)
      throw new Error(`backup jobs still running after ${timeoutMs / 1000} s: ${running.join(", ")}`);
    await sleep(2000);
  }
}

/** What to restore (core/ops.ts); the restore itself is ops/restore.ts, over SSH on any target. */
export type { RestoreTarget } from "../core/ops";

/** How Patroni last created the replica on a node (`pgbackrest`, `basebackup`), from its journal. */
export async function replicaMethod(state: LocalClusterState, nodeName: string): Promise<string> {
  const r = await onNode(
    state,
    nodeName,
    "journalctl -u patroni.service --no-pager -o cat </dev/null | grep -o 'replica has been created using [a-z_]*' | tail -n 1",
    {
      timeoutMs: 30_000,
    },
  );
  return /created using (\w+)/.exec(r.output)?.[1] ?? "unknown";
}
