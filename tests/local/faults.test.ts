/**
 * Faults inside one node's PostgreSQL stack, on the run's shared cluster (prod: synchronous_mode,
 * fast profile), each under writers that record every acknowledged write:
 *  - the leader's postmaster killed alone (kill -9; Patroni and the node stay): PostgreSQL comes
 *    back on the same node as the leader, on the same timeline, and nothing acknowledged is lost;
 *  - a backend of the leader killed as the OOM killer kills (SIGKILL to the biggest process, here
 *    the writer's own backend): the same;
 *  - Patroni frozen on the leader (SIGSTOP, PostgreSQL running, clients connected to it) past the
 *    ttl: a replica takes over; the old leader's PostgreSQL, which nobody demoted, acknowledges no
 *    write after the new leader's first (its synchronous standby was the one promoted, so its
 *    commits wait forever), never two nodes at once; once Patroni wakes it demotes and rejoins, and
 *    every acknowledged write is on the new leader.
 * Each prints what it cost: the write gap through the entry point, and writes lost (always 0 here).
 */
import { PORTS, USERS, getProfile } from "../../core";
import { machineExec } from "../../local/machine";
import { findNode } from "../../local/state";
import { Ack, AckWriter, missingIds } from "../../local/writer";
import { SHARED_CLUSTER } from "../support/run-dir";
import { address, health, nodeSql, sharedCluster, sleep, waitFor } from "./harness";

const loc = SHARED_CLUSTER;
const writers: AckWriter[] = [];
const cluster = sharedCluster({ breaks: true, cleanup: () => Promise.all(writers.map((w) => w.stop())) });

/** A writer through a node's HAProxy 5433 (not the leader's own), every 20 ms. */
function entryWriter(entryName: string, firstId: number): AckWriter {
  const { state, secrets } = cluster();
  const w = new AckWriter({
    host: address(state, entryName),
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId,
    intervalMs: 20,
  }).start();
  writers.push(w);
  return w;
}

/** The longest time between two acknowledgements from `since` on (ms). */
function longestGap(acks: Ack[], since: number): number {
  const times = acks.map((a) => a.at).filter((t) => t >= since - 10_000);
  let most = 0;
  for (let i = 1; i < times.length; i++) most = Math.max(most, times[i] - times[i - 1]);
  return most;
}

/** Every id `writer` had acknowledged, read back through a node's 5433: the ones missing. */
async function lostWrites(writer: AckWriter, entryName: string): Promise<number[]> {
  const { state, secrets } = cluster();
  return missingIds(
    { host: address(state, entryName), port: PORTS.postgresPrimary, password: secrets.app },
    writer.ackedIds,
  );
}

/** Runs a shell command inside a node; fails the test with its output when it fails. */
function onNode(name: string, script: string): string {
  const r = machineExec(findNode(cluster().state, name).machine, ["sh", "-c", script], { timeoutMs: 20_000 });
  expect({ script, code: r.code, stderr: r.stderr.trim() }).toEqual({ script, code: 0, stderr: "" });
  return r.stdout.trim();
}

/**
 * Kills something of the leader's PostgreSQL under a writer, then waits until the cluster is healthy
 * again: the same leader on the same timeline, writes through the entry point again, none lost.
 */
async function leaderSurvives(what: string, kill: (leader: string) => void, firstId: number): Promise<void> {
  const before = await health(loc);
  const leader = before.leader!;
  const timeline = before.nodes.find((n) => n.name === leader)!.timeline;
  expect(timeline).not.toBeNull();
  const entry = cluster().state.nodes.find((n) => n.name !== leader)!.name;
  const writer = entryWriter(entry, firstId);
  await writer.waitForAcks(20, 30_000);

  const killedAt = Date.now();
  kill(leader);
  const after = await waitFor(
    loc,
    "PostgreSQL back on the leader's node",
    (h) => h.healthy && h.nodes.find((n) => n.name === leader)!.pids.postgres !== null,
    120_000,
  );
  await writer.waitForAcks(20, 60_000);
  await writer.stop();
  const gap = longestGap(writer.acks, killedAt);
  const lost = await lostWrites(writer, entry);
  console.log(
    `${what}: leader ${leader} kept, timeline ${timeline} → ${after.nodes.find((n) => n.name === leader)!.timeline}; ` +
      `longest write gap through 5433 ${(gap / 1000).toFixed(1)} s; ${writer.acks.length} acknowledged, ${lost.length} lost`,
  );
  expect(after.leader).toBe(leader);
  expect(after.nodes.find((n) => n.name === leader)!.timeline).toBe(timeline);
  expect(lost).toEqual([]);
}

test("the leader's postmaster killed alone: PostgreSQL comes back on the same node, on the same timeline, and nothing acknowledged is lost", async () => {
  const { health: atStart } = cluster();
  let killed = 0;
  await leaderSurvives(
    "postmaster killed",
    (leader) => {
      killed = atStart.nodes.find((n) => n.name === leader)!.pids.postgres ?? 0;
      expect(killed).toBeGreaterThan(1);
      onNode(leader, `kill -KILL ${killed}`);
    },
    1_000_000,
  );
  // It was the postmaster that died: the one running now is another process.
  const now = await health(loc);
  expect(now.nodes.find((n) => n.name === now.leader)!.pids.postgres).not.toBe(killed);
}, 300_000);

test("a backend of the leader killed as the OOM killer kills (SIGKILL): PostgreSQL recovers on the same node, same timeline, nothing acknowledged lost", async () => {
  await leaderSurvives(
    "backend killed (OOM)",
    (leader) => {
      // The writer's own backend: a client backend of the application user, mid-transaction.
      const pid = nodeSql(
        cluster().state,
        leader,
        `SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '${USERS.app}' ORDER BY backend_start LIMIT 1`,
      );
      expect(Number(pid)).toBeGreaterThan(1);
      onNode(leader, `kill -KILL ${pid}`);
    },
    2_000_000,
  );
}, 300_000);

test("Patroni frozen on the leader past its ttl: a replica takes over, the old leader acknowledges nothing after it, never two at once; it rejoins, nothing acknowledged lost", async () => {
  const { state, secrets } = cluster();
  const before = await health(loc);
  const leader = before.leader!;
  const { ttl, loopWait } = getProfile(state.applied.failoverProfile).patroni;
  expect(state.applied.synchronousMode).toBe(true);
  // Clients connected straight to every node's PostgreSQL (5432), as an application that kept its
  // sessions would be, and one through a replica's entry point.
  const direct = state.nodes.map((n, i) => {
    const w = new AckWriter({
      host: n.address,
      port: PORTS.postgres,
      password: secrets.app,
      firstId: 3_000_000 + i * 100_000,
      intervalMs: 20,
      retryMs: 200,
    }).start();
    writers.push(w);
    return { node: n.name, writer: w };
  });
  const entry = state.nodes.find((n) => n.name !== leader)!.name;
  const viaEntry = entryWriter(entry, 4_000_000);
  await direct.find((d) => d.node === leader)!.writer.waitForAcks(20, 30_000);
  await viaEntry.waitForAcks(20, 30_000);

  const patroni = onNode(leader, "systemctl show --property MainPID --value patroni");
  expect(Number(patroni)).toBeGreaterThan(1);
  onNode(leader, `kill -STOP ${patroni}`);
  const frozenAt = Date.now();
  try {
    const taken = await waitFor(
      loc,
      "a new leader while Patroni is frozen",
      (h) => h.leader !== null && h.leader !== leader,
      (ttl + loopWait) * 1000 * 3,
    );
    const newLeader = taken.leader!;
    // Writes go on through the entry point on the new leader; the old PostgreSQL stays up, unwatched.
    await viaEntry.waitForAcks(50, 60_000);
    await sleep(5000);
    expect(nodeSql(state, leader, "SELECT pg_is_in_recovery()")).toBe("f");
    expect(newLeader).not.toBe(leader);
  } finally {
    onNode(leader, `kill -CONT ${patroni}`);
  }
  const resumedAt = Date.now();
  const healed = await waitFor(
    loc,
    "the old leader demoted and streaming again",
    (h) => h.healthy && h.nodes.find((n) => n.name === leader)!.streaming,
    180_000,
  );
  const newLeader = healed.leader!;
  await Promise.all([...direct.map((d) => d.writer.stop()), viaEntry.stop()]);

  const acks = direct.flatMap((d) => d.writer.acks.map((a) => ({ ...a, node: d.node })));
  const oldAcks = acks.filter((a) => a.node === leader && a.at < resumedAt);
  const newAcks = acks.filter((a) => a.node === newLeader);
  const lastOld = Math.max(...oldAcks.map((a) => a.at));
  const firstNew = Math.min(...newAcks.map((a) => a.at));
  // Every acknowledgement in time order: which node gave it. Never two nodes inside one 100 ms.
  const buckets = new Map<number, Set<string>>();
  for (const a of acks) {
    const b = Math.floor(a.at / 100);
    if (!buckets.has(b)) buckets.set(b, new Set());
    buckets.get(b)!.add(a.node);
  }
  const doubled = [...buckets.entries()].filter(([, nodes]) => nodes.size > 1);
  const lost = [
    ...(await lostWrites(viaEntry, entry)),
    ...(await Promise.all(direct.map((d) => lostWrites(d.writer, entry)))).flat(),
  ];
  console.log(
    `Patroni frozen on ${leader} (ttl ${ttl} s, loop_wait ${loopWait} s): its PostgreSQL acknowledged its last write ` +
      `${((lastOld - frozenAt) / 1000).toFixed(1)} s after the freeze; ${newLeader} its first ${((firstNew - frozenAt) / 1000).toFixed(1)} s after; ` +
      `longest gap through 5433 ${(longestGap(viaEntry.acks, frozenAt) / 1000).toFixed(1)} s; ` +
      `${acks.length + viaEntry.acks.length} acknowledged, ${lost.length} lost`,
  );
  expect(newLeader).not.toBe(leader);
  expect(lastOld).toBeLessThan(firstNew);
  expect(doubled).toEqual([]);
  // The old leader stops acknowledging once its synchronous standby is promoted: within the time
  // the leader key takes to expire and a replica's loop to notice.
  expect(lastOld - frozenAt).toBeLessThan((ttl + 2 * loopWait + 2) * 1000);
  expect(acks.filter((a) => a.node === leader && a.at >= firstNew && a.at < resumedAt)).toEqual([]);
  expect(lost).toEqual([]);
}, 600_000);

cluster.handBack();
