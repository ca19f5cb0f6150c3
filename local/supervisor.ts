/**
 * Starting and stopping daemons by PID. Each daemon runs inside its node's network namespace
 * (`ip netns exec` execs, and so does `setpriv`, so the PID we get is the daemon's own), detached
 * from the caller so it outlives `npm run local -- up`, with its output appended to a log file.
 */
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import { inNamespace } from "./network";

export interface DaemonSpec {
  namespace: string;
  argv: string[];
  /** Run as this user (its own group and supplementary groups). Root when absent. */
  user?: string;
  env: NodeJS.ProcessEnv;
  cwd: string;
  log: string;
}

/** PATH and locale every daemon gets; nothing else leaks in from the caller's environment. */
export function daemonEnv(extra: Record<string, string> = {}, home = "/"): NodeJS.ProcessEnv {
  return {
    PATH: "/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    LANG: "C.UTF-8",
    LC_ALL: "C.UTF-8",
    HOME: home,
    ...extra,
  };
}

function asUser(argv: string[], user: string | undefined, setpriv: string): string[] {
  return user ? [setpriv, `--reuid=${user}`, `--regid=${user}`, "--init-groups", "--", ...argv] : argv;
}

/** Runs a command to completion inside a namespace; throws with its output when it fails. */
export function runIn(namespace: string, argv: string[], opts: { user?: string; setpriv?: string; timeoutMs?: number } = {}): string {
  const full = inNamespace(namespace, asUser(argv, opts.user, opts.setpriv ?? "/usr/bin/setpriv"));
  return execFileSync(full[0], full.slice(1), { encoding: "utf8", env: daemonEnv(), timeout: opts.timeoutMs ?? 60_000, stdio: ["ignore", "pipe", "pipe"] });
}

export function startDaemon(spec: DaemonSpec, setpriv = "/usr/bin/setpriv"): number {
  const argv = inNamespace(spec.namespace, asUser(spec.argv, spec.user, setpriv));
  const out = fs.openSync(spec.log, "a");
  try {
    const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ["ignore", out, out], env: spec.env, cwd: spec.cwd });
    if (child.pid === undefined) throw new Error(`could not start ${spec.argv[0]} in ${spec.namespace}`);
    // Reap it if it dies while we are still running; never keep the caller alive for it.
    child.on("error", () => undefined);
    child.unref();
    return child.pid;
  } finally {
    fs.closeSync(out);
  }
}

/** Alive means present and not a zombie (exited children are reaped late on this machine). */
export function isAlive(pid: number | undefined | null): pid is number {
  if (!pid) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // The state follows the command name, which is in parentheses and may itself hold spaces.
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** The postmaster's PID (first line of postmaster.pid), when it is running. */
export function postmasterPid(pgDataDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(`${pgDataDir}/postmaster.pid`, "utf8").split("\n")[0]);
    return isAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Every process inside a namespace (catches what our daemons forked: backends, workers). */
export function namespacePids(namespace: string): number[] {
  try {
    return execFileSync("ip", ["netns", "pids", namespace], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")
      .map(Number)
      .filter((n) => n > 0);
  } catch {
    return [];
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** kill -9, then wait until each is gone (bounded), so the caller can rely on them being dead. */
export async function killNow(pids: number[], timeoutMs = 5000): Promise<void> {
  for (const pid of pids) signal(pid, "SIGKILL");
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL whatever is left. Returns the PIDs that needed it. */
export async function stopGracefully(pids: number[], graceMs: number): Promise<number[]> {
  const live = pids.filter(isAlive);
  for (const pid of live) signal(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (live.some(isAlive) && Date.now() < deadline) await sleep(100);
  const stubborn = live.filter(isAlive);
  await killNow(stubborn);
  return stubborn;
}
