/**
 * Cutting the leader's network (its processes keep running): it demotes itself, the others elect
 * a new leader, no write is acknowledged by two primaries, and after healing it rejoins as a
 * replica. One writer goes through a surviving node's HAProxy; another sits on the cut-off node
 * and writes straight to its PostgreSQL, so anything the old primary acknowledges is counted.
 * Then a node whose systemd hangs: the health check blames that node alone.
 */
import { PORTS } from "../../core";
import { heal, partition, waitHealthy } from "../../local/cluster";
import { clusterHealth } from "../../local/health";
import { initPid } from "../../local/machine";
import { findNode } from "../../local/state";
import { AckWriter, missingIds } from "../../local/writer";
import { address, namespaceWriter, nodeSql, sharedCluster, sleep, waitFor } from "./harness";
import { SHARED_CLUSTER } from "../support/run-dir";

const loc = SHARED_CLUSTER;
const stops: (() => Promise<void>)[] = [];
const cluster = sharedCluster({ breaks: true, cleanup: () => Promise.all(stops.map((s) => s())) });

/**
 * Whether a node's PostgreSQL takes writes, asked over its Unix socket inside its namespace (so
 * it works while the node is cut off). A demoted node answers read-only, or is stopped while
 * Patroni waits for the DCS.
 */
function acceptsWrites(name: string): boolean {
  return nodeSql(cluster().state, name, "SELECT pg_is_in_recovery()") === "f";
}

test("a partitioned leader demotes itself, no write is acknowledged by two primaries, and it rejoins after healing", async () => {
  const { state, secrets } = cluster();
  const oldLeader = cluster().health.leader!;
  const cut = findNode(state, oldLeader);
  const survivor = state.nodes.find((n) => n.name !== oldLeader)!;

  const outside = new AckWriter({
    host: survivor.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 1_000_000,
    intervalMs: 20,
  }).start();
  stops.push(() => outside.stop());
  const inside = namespaceWriter(cut.namespace, {
    host: "127.0.0.1",
    port: PORTS.postgres,
    password: secrets.app,
    firstId: 2_000_000,
  });
  stops.push(() => inside.stop());
  await outside.waitForAcks(20, 30_000);
  while (inside.acks.length < 20) await sleep(100);
  expect(acceptsWrites(oldLeader)).toBe(true);

  const cutAt = Date.now();
  partition(oldLeader, loc);
  // The majority side elects a new leader and takes writes through its HAProxy.
  const h = await waitFor(loc, "a new leader on the majority side", (x) => x.leader !== null && x.leader !== oldLeader);
  const newLeaderAt = Date.now();
  await outside.waitForAcks(20, 60_000);
  // The cut-off primary demotes itself once it can neither reach etcd nor every member.
  const deadline = Date.now() + 60_000;
  while (acceptsWrites(oldLeader) && Date.now() < deadline) await sleep(500);
  expect(acceptsWrites(oldLeader)).toBe(false);
  // Acknowledgements by the old primary once the new one was serving: two primaries at once.
  const insideAcksAfterElection = inside.acks.filter((a) => a.at >= newLeaderAt);
  const insideAcksWhileCut = inside.acks.filter((a) => a.at >= cutAt).length;

  heal(oldLeader, loc);
  const healed = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  expect(healed.leader).toBe(h.leader);
  const old = healed.nodes.find((n) => n.name === oldLeader)!;
  expect(["replica", "sync_standby"]).toContain(old.role);
  expect(old.streaming).toBe(true);

  await outside.stop();
  await inside.stop();
  // Whatever either side acknowledged is on the one leader: nothing was acknowledged by a
  // primary whose history was then thrown away. (With synchronous_mode the cut-off primary
  // cannot acknowledge at all: its synchronous standby is on the other side.)
  const acked = [...outside.ackedIds, ...inside.acks.map((a) => a.id)];
  expect(
    await missingIds(
      { host: address(state, healed.leader!), port: PORTS.postgresPrimary, password: secrets.app },
      acked,
    ),
  ).toEqual([]);
  expect(insideAcksAfterElection).toEqual([]);
  console.log(
    `partition: ${outside.ackedIds.length} writes acknowledged through the majority, ${inside.acks.length} by the cut-off node (${insideAcksWhileCut} after the cut)`,
  );
}, 600_000);

test("a node whose systemd hangs is the only node the health check finds fault with", async () => {
  const { state, secrets } = cluster();
  await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  // The second node: the first node's probes are in flight while the hung node's are made. A probe
  // that blocked this process (as a synchronous exec once did) ran them past their timeouts, and
  // a healthy first node read as "down" everywhere.
  const hung = state.nodes[1];
  const init = initPid(hung.machine)!;
  process.kill(init, "SIGSTOP");
  let problems: string[];
  try {
    problems = (await clusterHealth(state, secrets)).problems;
  } finally {
    process.kill(init, "SIGCONT");
  }
  // Its daemons still run; only what asks its systemd (each unit's state) has no answer.
  expect(problems.filter((p) => p.includes(hung.name)).length).toBeGreaterThan(0);
  expect(problems.filter((p) => !p.includes(hung.name))).toEqual([]);
  await waitHealthy(state, secrets, { timeoutMs: 60_000 });
}, 300_000);

cluster.handBack();
