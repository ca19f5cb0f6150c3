/**
 * The host's view of a machine's processes: every descendant of its systemd-nspawn process, found
 * through /proc (for the power cut's report and the benchmark's memory figures).
 */
import * as fs from "node:fs";

/** What /proc/<pid>/stat says of a process: its command, state, parent and CPU time (user + system, in clock ticks). */
export interface ProcessStat {
  comm: string;
  state: string;
  ppid: number;
  cpuTicks: number;
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
