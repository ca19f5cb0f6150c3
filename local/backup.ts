/**
 * Backups on a local cluster, run the way they run on a Hetzner server: every node carries the
 * `madbase-backup` script, its environment file and pgBackRest's configuration from its own user
 * data (core's serverPaths() layout), and the runner only starts the script on the node, over SSH
 * as Pulumi reaches a server, as the user its systemd unit runs it as (`runuser -u postgres` /
 * `-u redis`).
 *
 * `restoreCluster` recreates PostgreSQL from the backups on a running, healthy cluster with the
 * operator's procedure from the README ("Restore PostgreSQL"): stop Patroni everywhere, remove the
 * cluster from etcd, `pg-restore` on one node, start Patroni there, then replicas on the others.
 */
import { ClusterSecrets, PORTS, serverPaths } from "../core";
import { clusterHealth } from "./health";
import { ClusterHealth } from "./judge";
import { sleep } from "./machine";
import { sshIdentity, sshScript } from "./ssh";
import { LocalClusterState, findNode } from "./state";
import { waitHealthy } from "./cluster";
import { PatroniClientTls } from "./probes";
import { operatorTls, tlsRequest } from "./tls";

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

/** What to restore: the newest state in the repository, or the state at a moment (PITR). */
export type RestoreTarget = { type: "latest" } | { type: "time"; target: string };

async function mustRun(what: string, run: Promise<ScriptRun>, log: (line: string) => void): Promise<ScriptRun> {
  const r = await run;
  for (const line of r.output.trim().split("\n").filter(Boolean)) log(`  ${line}`);
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.output}`);
  return r;
}

async function patroniPrimary(address: string, tls: PatroniClientTls): Promise<number | undefined> {
  try {
    return (await tlsRequest(`https://${address}:${PORTS.patroni}/primary`, { ...tls, timeoutMs: 3000 })).status;
  } catch {
    return undefined;
  }
}

/**
 * Recreates PostgreSQL from the backups on a running, healthy cluster, by the README's procedure:
 *  1. no backup job runs (they are stopped), then Patroni stops on every node (replicas first);
 *  2. `patronictl remove <cluster>` on the restoring node (its confirmations on stdin);
 *  3. `madbase-backup pg-restore latest|time T` there (the old data directory is kept beside it);
 *  4. Patroni starts there; wait for /primary 200;
 *  5. after a point-in-time restore, a full backup of the restored cluster (else the replicas
 *     would restore a newer backup from past the fork); then on every other node
 *     `madbase-backup pg-restore replica` and Patroni starts (a replica from the repository, else
 *     pg_basebackup).
 * Then waits for a healthy cluster and returns its health. The leader restores (any node could).
 */
export async function restoreCluster(
  state: LocalClusterState,
  secrets: ClusterSecrets,
  target: RestoreTarget,
  log: (line: string) => void = () => undefined,
  opts: { timeoutMs?: number } = {},
): Promise<ClusterHealth> {
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 900_000;
  const say = (line: string) => log(`[restore ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
  const before = await clusterHealth(state, secrets);
  const restorer = before.leader ?? state.nodes[0].name;
  const others = state.nodes.map((n) => n.name).filter((n) => n !== restorer);
  const what = target.type === "latest" ? "the latest state" : `the state at ${target.target}`;
  say(
    `recreating PostgreSQL of ${state.clusterName} from its backups (${what}) on ${restorer}, then replicas on ${others.join(", ") || "no other node"}`,
  );

  // 1. A backup running now would fail half-way once PostgreSQL stops: stop it first.
  for (const n of state.nodes.map((x) => x.name)) {
    const jobs = await runningBackupJobs(state, n);
    if (jobs.length > 0) {
      say(`${n}: stopping the running backup job(s) ${jobs.join(", ")}`);
      await mustRun(
        `${n}: systemctl stop`,
        onNode(state, n, `systemctl stop ${jobs.join(" ")} </dev/null`, { timeoutMs: 120_000 }),
        say,
      );
    }
  }
  for (const n of [...others, restorer]) {
    say(`${n}: systemctl stop patroni`);
    await mustRun(
      `${n}: systemctl stop patroni`,
      onNode(state, n, "systemctl stop patroni.service </dev/null", { timeoutMs: 180_000 }),
      say,
    );
  }

  // 2. The cluster's state leaves etcd (patronictl asks for the name, then for "Yes I am aware").
  const conf = SERVER.config["patroni.yml"];
  say(`${restorer}: patronictl -c ${conf} remove ${state.clusterName}`);
  await mustRun(
    `${restorer}: patronictl remove`,
    onNode(
      state,
      restorer,
      `patronictl -c ${shellQuote(conf)} remove ${shellQuote(state.clusterName)} <<'EOF'\n${state.clusterName}\nYes I am aware\nEOF`,
      {
        timeoutMs: 60_000,
      },
    ),
    say,
  );

  // 3. The restore, through a one-off Patroni bootstrap on the node.
  const args = target.type === "latest" ? ["pg-restore", "latest"] : ["pg-restore", "time", target.target];
  say(`${restorer}: madbase-backup ${args.join(" ")}`);
  const remaining = () => Math.max(60_000, timeoutMs - (Date.now() - started));
  await mustRun(
    `${restorer}: madbase-backup ${args.join(" ")}`,
    runBackupScript(state, restorer, args, {
      timeoutMs: remaining(),
      env: { RESTORE_TIMEOUT: String(Math.floor(remaining() / 1000)) },
    }),
    say,
  );

  // 4. Patroni leads the restored database.
  say(`${restorer}: systemctl start patroni; waiting for /primary 200`);
  await startPatroni(state, restorer, say);
  const address = findNode(state, restorer).address;
  const deadline = Date.now() + 180_000;
  const patroniTls = operatorTls(state.root);
  while ((await patroniPrimary(address, patroniTls)) !== 200) {
    if (Date.now() > deadline)
      throw new Error(`${restorer}: Patroni's /primary did not answer 200 within 180 s after the restore`);
    await sleep(1000);
  }
  say(`${restorer} leads the restored cluster`);

  // After a point-in-time restore the repository's newest backup may lie past the new timeline's
  // fork: a replica restored from it would never stream. A full backup of the restored cluster
  // first (the README's step 6, taken before the replicas) gives them one on the new timeline.
  if (target.type === "time") {
    say(`${restorer}: madbase-backup pg full (the replicas restore from a backup of the new timeline)`);
    await mustRun(
      `${restorer}: madbase-backup pg full`,
      runBackupScript(state, restorer, ["pg", "full"], { timeoutMs: remaining() }),
      say,
    );
  }

  // 5. The others become replicas of it.
  for (const n of others) {
    say(`${n}: madbase-backup pg-restore replica; systemctl start patroni`);
    await mustRun(
      `${n}: madbase-backup pg-restore replica`,
      runBackupScript(state, n, ["pg-restore", "replica"], { timeoutMs: 120_000 }),
      say,
    );
    await startPatroni(state, n, say);
  }
  const health = await waitHealthy(state, secrets, { timeoutMs: remaining(), onProgress: say });
  say(
    `restored: ${health.leader} leads (timeline ${health.nodes.find((x) => x.name === health.leader)?.timeline ?? "?"}), ${others.length} replica(s) stream`,
  );
  return health;
}

/** `systemctl start patroni` on a node; a failure carries systemd's and the journal's last word. */
async function startPatroni(state: LocalClusterState, nodeName: string, log: (line: string) => void): Promise<void> {
  const r = await onNode(
    state,
    nodeName,
    "systemctl start patroni.service </dev/null && exit 0\nrc=$?\nsystemctl status patroni.service --no-pager -n 0 </dev/null\njournalctl -b --no-pager -n 25 -o short-monotonic </dev/null | cut -c1-400\nexit $rc",
    { timeoutMs: 120_000 },
  );
  if (r.code !== 0) throw new Error(`${nodeName}: systemctl start patroni failed (exit ${r.code}):\n${r.output}`);
  log(`${nodeName}: Patroni started`);
}

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
