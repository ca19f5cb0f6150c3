/**
 * npm run bench:idle [-- --nodes 5 --profile norm --seconds 30 --keep]
 *
 * What an idle cluster costs: CPU per daemon while nothing but the cluster's own work runs
 * (Patroni's loop, HAProxy's checks, etcd's heartbeats, Sentinel's pings, and the Patroni REST
 * calls those checks make). Boots a dev cluster, waits until it is healthy, then reads the CPU time
 * of every process of each node (systemd-nspawn and below) from /proc twice, `--seconds` apart,
 * without probing the cluster in between. Prints, per command, the share of one core summed over the nodes, and per
 * node. HAProxy's checks grow with the square of the node count (each HAProxy checks every node),
 * which is why 5 nodes is the size to look at.
 */
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { down, up } from "../local/cluster";
import { CLOCK_TICKS_PER_SECOND, machineProcesses, processStat } from "../local/processes";

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

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      nodes: { type: "string", default: "5" },
      profile: { type: "string", default: "norm" },
      seconds: { type: "string", default: "30" },
      keep: { type: "boolean", default: false },
    },
  });
  const seconds = Number(values.seconds);
  await down(LOC);
  const { state } = await up({
    ...LOC,
    stack: "dev",
    nodes: Number(values.nodes),
    profile: values.profile,
    timeoutMs: 300_000,
  });
  try {
    const nodes = state.nodes.map((n) => ({ name: n.name, nspawnPid: n.machine.nspawnPid }));
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
    const rows = [...share.entries()]
      .map(([comm, perNode]) => ({ comm, total: perNode.reduce((a, b) => a + b, 0), perNode }))
      .filter((r) => r.total >= 0.5)
      .sort((a, b) => b.total - a.total);
    console.log(
      `idle ${state.nodes.length}-node dev cluster, profile ${values.profile}, ${elapsed.toFixed(0)} s on ${os.cpus().length} cores: % of one core`,
    );
    console.log(
      `${"command".padEnd(18)}${"all nodes".padStart(10)}  ${nodes.map((n) => n.name.padStart(14)).join("")}`,
    );
    for (const r of rows)
      console.log(
        `${r.comm.padEnd(18)}${r.total.toFixed(1).padStart(10)}  ${r.perNode.map((v) => v.toFixed(1).padStart(14)).join("")}`,
      );
    const all = rows.reduce((a, r) => a + r.total, 0);
    console.log(`${"every process".padEnd(18)}${all.toFixed(1).padStart(10)}`);
  } finally {
    if (!values.keep) await down(LOC);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
