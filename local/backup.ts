/**
 * Backups on a local cluster: each node gets the same `madbase-backup` script and environment file
 * a server gets (under `<root>/<node>/`), and runs it inside its namespace as the user a server's
 * systemd timer would. Restores go through the same script: `restoreBeforePatroni` is the step
 * `up` runs between starting etcd and starting Patroni to recreate a cluster from its backups.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { BACKUP_SCRIPT, NodeRenderInput, localRedisSnapshotDir, renderBackupFiles } from "../core";
import { localPathsOf } from "./layout";
import { inNamespace } from "./network";
import { LocalClusterState, findNode } from "./state";
import { daemonEnv } from "./supervisor";

function ids(user: string): { uid: number; gid: number } {
  const out = (flag: string) => Number(spawnSync("id", [flag, user], { encoding: "utf8" }).stdout.trim());
  return { uid: out("-u"), gid: out("-g") };
}

function place(file: string, content: string, owner: string, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content, { mode });
  const { uid, gid } = ids(owner);
  fs.chownSync(file, uid, gid);
  fs.chmodSync(file, mode);
}

/**
 * Writes a node's backup script (root, 0755) and its environment file (redis, 0600: the Redis
 * snapshot job runs as redis). With a local directory as the repository, also the directory the
 * Redis snapshots go to.
 */
export function installBackupFiles(input: NodeRenderInput): void {
  const files = renderBackupFiles(input);
  place(files[BACKUP_SCRIPT].path, files[BACKUP_SCRIPT].content, "root", 0o755);
  place(files["backup.env"].path, files["backup.env"].content, "redis", 0o600);
  const repo = input.options.backup.localRepoPath;
  if (repo) {
    const dir = localRedisSnapshotDir(repo);
    fs.mkdirSync(dir, { recursive: true });
    const { uid, gid } = ids("redis");
    fs.chownSync(dir, uid, gid);
    fs.chmodSync(dir, 0o750);
  }
}

export interface ScriptRun {
  code: number | null;
  /** stdout and stderr together, in order of arrival as far as a pipe allows. */
  output: string;
  seconds: number;
}

/** What each command runs as, like the systemd units on a server. */
const RUN_AS: Record<string, string> = { pg: "postgres", "pg-restore": "postgres", redis: "redis", "redis-restore": "redis" };

/**
 * Runs `madbase-backup <command> ...` on a node, in its namespace, as the command's user; never
 * throws for a non-zero exit (the tests assert on it).
 */
export function runBackupScript(state: LocalClusterState, nodeName: string, args: string[], opts: { timeoutMs?: number; env?: Record<string, string> } = {}): ScriptRun {
  const node = findNode(state, nodeName);
  const script = path.join(localPathsOf(state, node).scriptDir, BACKUP_SCRIPT);
  const user = RUN_AS[args[0]] ?? "root";
  const argv = inNamespace(node.namespace, [state.programs.setpriv, `--reuid=${user}`, `--regid=${user}`, "--init-groups", "--", script, ...args]);
  const started = Date.now();
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: "utf8",
    env: daemonEnv(opts.env ?? {}, "/var/lib/postgresql"),
    cwd: "/",
    timeout: opts.timeoutMs ?? 600_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return { code: r.status, output: `${r.stdout ?? ""}${r.stderr ?? ""}`, seconds: (Date.now() - started) / 1000 };
}

/** What to restore: the newest state in the repository, or the state at a moment (PITR). */
export type RestoreTarget = { type: "latest" } | { type: "time"; target: string };

/**
 * Recreates PostgreSQL on one node from the repository (madbase-backup pg-restore), for `up`'s
 * `beforePatroni` step: etcd runs, no Patroni does. Throws with the script's output on failure.
 */
export function restorePostgres(state: LocalClusterState, nodeName: string, target: RestoreTarget, timeoutMs = 600_000): ScriptRun {
  const args = target.type === "latest" ? ["pg-restore", "latest"] : ["pg-restore", "time", target.target];
  const r = runBackupScript(state, nodeName, args, { timeoutMs, env: { PATRONI: state.programs.patroni, RESTORE_TIMEOUT: String(Math.floor(timeoutMs / 1000)) } });
  if (r.code !== 0) throw new Error(`restore on ${nodeName} failed (exit ${r.code}):\n${r.output}`);
  return r;
}
