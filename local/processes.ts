/**
 * The host's view of a machine's processes: every descendant of its systemd-nspawn process, found
 * through /proc (for the power cut's report and the benchmark's memory figures).
 */
import * as fs from "node:fs";

/** Clock ticks a second in /proc's CPU times (USER_HZ, 100 on Linux wherever this runs). */
export const CLOCK_TICKS_PER_SECOND = 100;

/** What /proc/<pid>/stat says of a process: its command, state, parent and CPU time (user + system, in clock ticks). */
export interface ProcessStat {
  comm: string;
  state: string;
  ppid: number;
  cpuTicks: number;
  /** The CPU time of its children that ended and were reaped by it (with theirs), in clock ticks. */
  reapedTicks: number;
}

/** A process's /proc/<pid>/stat, or undefined once it is gone. */
export function processStat(pid: number): ProcessStat | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name may hold spaces and parentheses: fields start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return {
    comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
    state: fields[0],
    ppid: Number(fields[1]),
    cpuTicks: Number(fields[11]) + Number(fields[12]),
    reapedTicks: Number(fields[13]) + Number(fields[14]),
  };
}

/** PID → parent PID for every process on the host. */
function parents(): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = processStat(Number(entry));
    if (stat && stat.state !== "Z") out.set(Number(entry), stat.ppid);
  }
  return out;
}

/** `root` and every live process below it. */
export function machineProcesses(root: number | undefined): number[] {
  if (!root) return [];
  const ppid = parents();
  if (!ppid.has(root)) return [];
  const children = new Map<number, number[]>();
  for (const [pid, parent] of ppid) children.set(parent, [...(children.get(parent) ?? []), pid]);
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * The CPU time a machine has spent so far, in clock ticks: every live process's own time plus what
 * it reaped of children that ended (systemd, a postmaster and their like reap theirs), so a
 * short-lived process, a PostgreSQL backend of one connection, still counts once it is gone.
 * Only differences between two reads mean anything: processes that ended before the first read
 * are in it too.
 */
export function machineCpuTicks(root: number | undefined): number {
  let ticks = 0;
  for (const pid of machineProcesses(root)) {
    const stat = processStat(pid);
    if (stat) ticks += stat.cpuTicks + stat.reapedTicks;
  }
  return ticks;
}
