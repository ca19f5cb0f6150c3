/**
 * The versions of the daemons a node runs, as the node's own binaries report them (`status --json`
 * shows them: one value per daemon when every node agrees, as a Debian 13 cluster should).
 */
import { serverPaths } from "../core";
import { MachineRecord, machineExec } from "./machine";

export const VERSIONED = ["postgres", "patroni", "etcd", "redis", "haproxy", "pgbackrest"] as const;
export type Versioned = (typeof VERSIONED)[number];

/** One shell line per daemon, each printing `<name> <its version output>`. */
function versionScript(): string {
  const pgBin = serverPaths().pgBinDir;
  return [
    `echo "postgres $(${pgBin}/postgres --version 2>&1 | head -n1)"`,
    'echo "patroni $(patroni --version 2>&1 | head -n1)"',
    'echo "etcd $(etcd --version 2>&1 | head -n1)"',
    'echo "redis $(redis-server --version 2>&1 | head -n1)"',
    'echo "haproxy $(haproxy -v 2>&1 | head -n1)"',
    'echo "pgbackrest $(pgbackrest version 2>&1 | head -n1)"',
  ].join("\n");
}

/** The version number in each line: "postgres (PostgreSQL) 17.6" → "17.6", "Redis server v=8.0.2 ..." → "8.0.2". */
export function parseVersions(output: string): Partial<Record<Versioned, string>> {
  const out: Partial<Record<Versioned, string>> = {};
  for (const line of output.split("\n")) {
    const [name, ...rest] = line.trim().split(" ");
    if (!(VERSIONED as readonly string[]).includes(name)) continue;
    const text = rest.join(" ");
    const m = name === "redis" ? /v=(\d+(?:\.\d+)+)/.exec(text) : /(\d+\.\d+(?:\.\d+)*)/.exec(text);
    if (m) out[name as Versioned] = m[1];
  }
  return out;
}

export function nodeVersions(m: MachineRecord): Partial<Record<Versioned, string>> {
  const r = machineExec(m, ["bash", "-s"], { input: versionScript(), timeoutMs: 30_000 });
  return r.code === 0 ? parseVersions(r.stdout) : {};
}

/** One value per daemon: the nodes' common version, or every distinct one joined by " / ". */
export function clusterVersions(perNode: Partial<Record<Versioned, string>>[]): Record<Versioned, string | null> {
  return Object.fromEntries(
    VERSIONED.map((v) => {
      const seen = [...new Set(perNode.map((n) => n[v]).filter((x): x is string => Boolean(x)))];
      return [v, seen.length === 0 ? null : seen.join(" / ")];
    }),
  ) as Record<Versioned, string | null>;
}
