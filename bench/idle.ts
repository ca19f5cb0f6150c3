/**
 * npm run bench:idle [-- --stack prod --nodes 3 --profile norm --seconds 20 --runs 3 --keep]
 *
 * What an idle cluster costs: CPU per daemon while nothing but the cluster's own work runs
 * (Patroni's loop, HAProxy's checks, etcd's heartbeats, Sentinel's pings, and the Patroni REST
 * calls those checks make). Boots the cluster `npm run local -- up` boots (prod, 3 nodes), waits
 * until it is healthy and 10 s more, then reads the CPU time of every process of each node
 * (systemd-nspawn and below) from /proc at the ends of `--runs` back-to-back windows of
 * `--seconds`, without probing the cluster in between. Prints, per command, the share of one core
 * summed over the nodes as the median of the windows with their spread, and per node, each
 * window's machine load beside it. HAProxy's checks grow with the square of the node count (each
 * HAProxy checks every node): `--nodes 5` shows it. To compare two commits, run this in each, in
 * turn, more than once: the machine's other work moves every figure.
 */
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { down, up } from "../local/cluster";
import { CLOCK_TICKS_PER_SECOND, machineProcesses, processStat } from "../local/processes";
import { median } from "./round-trips";

const LOC = { root: path.join(os.tmpdir(), "madbase-bench-idle"), networkId: "bidle", subnetCidr: "10.42.202.0/24" };

/** CPU ticks (user + system, all threads) of each process of a machine, by command and PID. */
function ticksByCommand(nspawnPid: number | undefined): Map<string, Map<number, number>> {
  const out = new Map<string, Map<number, number>>();
  for (const pid of machineProcesses(nspawnPid)) {
    const stat = processStat(pid);
    if (!stat) continue;
    if (!out.has(stat.comm)) out.set(stat.comm, new Map());
    out.get(stat.comm)!.set(pid, stat.cpuTicks);
  }
  return out;
}

/** CPU per command (% of one core, summed over the nodes, and per node) over one window of `seconds`. */
async function sample(
  nodes: { name: string; nspawnPid: number | undefined }[],
  seconds: number,
): Promise<{ share: Map<string, number[]>; elapsed: number; load: number }> {
  const before = nodes.map((n) => ticksByCommand(n.nspawnPid));
  const startedAt = Date.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const elapsed = (Date.now() - startedAt) / 1000;
  const after = nodes.map((n) => ticksByCommand(n.nspawnPid));
  // Per command and node: ticks spent by processes alive at both reads (a process born in
  // between counts from zero).
  const share = new Map<string, number[]>();
  after.forEach((commands, i) => {
    for (const [comm, pids] of commands) {
      let spent = 0;
      for (const [pid, ticks] of pids) spent += ticks - (before[i].get(comm)?.get(pid) ?? 0);
      if (!share.has(comm))
        share.set(
          comm,
          nodes.map(() => 0),
        );
      share.get(comm)![i] = (100 * spent) / CLOCK_TICKS_PER_SECOND / elapsed;
    }
  });
  return { share, elapsed, load: os.loadavg()[0] };
}

const fmt = (xs: number[]) =>
  `${median(xs).toFixed(1).padStart(7)} ${`(${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`.padEnd(14)}`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      stack: { type: "string", default: "prod" },
      nodes: { type: "string", default: "3" },
      profile: { type: "string", default: "norm" },
      seconds: { type: "string", default: "20" },
      runs: { type: "string", default: "3" },
      keep: { type: "boolean", default: false },
    },
  });
  const seconds = Number(values.seconds);
  const runs = Math.max(1, Number(values.runs));
  await down(LOC);
  const { state } = await up({
    ...LOC,
    stack: values.stack,
    nodes: Number(values.nodes),
    profile: values.profile,
    timeoutMs: 300_000,
  });
  try {
    const nodes = state.nodes.map((n) => ({ name: n.name, nspawnPid: n.machine.nspawnPid }));
    // A healthy cluster has just finished its first boots (the first backup may still run): settle first.
    await new Promise((r) => setTimeout(r, 10_000));
    const samples: Awaited<ReturnType<typeof sample>>[] = [];
    for (let r = 0; r < runs; r++) {
      const s = await sample(nodes, seconds);
      const total = [...s.share.values()].reduce((a, v) => a + v.reduce((x, y) => x + y, 0), 0);
      console.log(
        `window ${r + 1}/${runs}: every process ${total.toFixed(1)} % of one core (load ${s.load.toFixed(2)})`,
      );
      samples.push(s);
    }
    const comms = new Set(samples.flatMap((s) => [...s.share.keys()]));
    const rows = [...comms]
      .map((comm) => {
        const totals = samples.map((s) => (s.share.get(comm) ?? []).reduce((a, b) => a + b, 0));
        const perNode = nodes.map((_, i) => median(samples.map((s) => s.share.get(comm)?.[i] ?? 0)));
        return { comm, totals, perNode };
      })
      .filter((r) => median(r.totals) >= 0.3)
      .sort((a, b) => median(b.totals) - median(a.totals));
    const all = samples.map((s) => [...s.share.values()].reduce((a, v) => a + v.reduce((x, y) => x + y, 0), 0));
    console.log(
      `\nidle ${state.nodes.length}-node ${values.stack} cluster, profile ${values.profile}, ${runs} windows of ${seconds} s ` +
        `on ${os.cpus().length} cores (load ${samples.map((s) => s.load.toFixed(1)).join(", ")}): ` +
        "% of one core, median of the windows (spread)",
    );
    console.log(
      `${"command".padEnd(18)}${"all nodes".padStart(7)} ${"(spread)".padEnd(14)}${nodes.map((n) => n.name.padStart(16)).join("")}`,
    );
    for (const r of rows)
      console.log(`${r.comm.padEnd(18)}${fmt(r.totals)}${r.perNode.map((v) => v.toFixed(1).padStart(16)).join("")}`);
    console.log(`${"every process".padEnd(18)}${fmt(all)}`);
  } finally {
    if (!values.keep) await down(LOC);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
