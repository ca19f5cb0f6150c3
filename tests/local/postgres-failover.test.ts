/**
 * Losing the leader's whole node (kill -9 of Patroni, the postmaster and everything else on it):
 * writes through a surviving node's HAProxy resume on a new leader, the old node restarted rejoins
 * as a replica, and with synchronous_mode not one acknowledged write is lost over repeated kills.
 */
import { PORTS } from "../../core";
import { killNode, startNode, waitHealthy } from "../../local/cluster";
import { isRunning as isAlive } from "../../local/machine";
import { AckWriter, missingIds } from "../../local/writer";
import { address, cli, health, sharedCluster, waitFor, writeEntryServer } from "./harness";
import { SHARED_CLUSTER } from "../support/run-dir";

const loc = SHARED_CLUSTER;
const KILLS = 2;
const writers: AckWriter[] = [];
const cluster = sharedCluster({ breaks: true, cleanup: () => Promise.all(writers.map((w) => w.stop())) });

test(`kill -9 of the leader node, ${KILLS} times: writes resume on a new leader, the old one rejoins, no acknowledged write is lost`, async () => {
  const { state, secrets } = cluster();
  expect(state.applied.synchronousMode).toBe(true);
  let leader = cluster().health.leader!;
  for (let round = 0; round < KILLS; round++) {
    // A writer through a node that survives this round; each round has its own id range.
    const entry = state.nodes.find((n) => n.name !== leader)!;
    const writer = new AckWriter({
      host: entry.address,
      port: PORTS.postgresPrimary,
      password: secrets.app,
      firstId: (round + 1) * 1_000_000,
    }).start();
    writers.push(writer);
    await writer.waitForAcks(20, 30_000);

    const pids = await killNode(leader, loc);
    expect(pids.length).toBeGreaterThanOrEqual(6);
    expect(pids.filter(isAlive)).toEqual([]);
    if (round === 0) {
      // The cluster is degraded now, and status says so with its exit code.
      const st = cli(["status"], { loc });
      expect(st.code).toBe(1);
      expect(st.stdout).toContain("degraded");
    }

    // Writes resume through the survivor's HAProxy, on a new leader.
    await writer.waitForAcks(20, 60_000);
    const h = await waitFor(loc, "a new leader", (x) => x.leader !== null && x.leader !== leader);
    const row = await writeEntryServer(state, secrets.app, entry.address);
    expect(row).toEqual({ server: address(state, h.leader!), recovery: false });

    // The old leader, restarted, rejoins as a replica (pg_rewind onto the new timeline).
    await startNode(leader, loc);
    const healed = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
    const old = healed.nodes.find((n) => n.name === leader)!;
    expect(["replica", "sync_standby"]).toContain(old.role);
    expect(old.streaming).toBe(true);
    await writer.stop();
    leader = healed.leader!;
  }

  // Every acknowledged write is on the leader, and on every replica.
  const acked = writers.flatMap((w) => w.ackedIds);
  expect(acked.length).toBeGreaterThan(KILLS * 40);
  const h = await health(loc);
  expect(
    await missingIds({ host: address(state, h.leader!), port: PORTS.postgresPrimary, password: secrets.app }, acked),
  ).toEqual([]);
  for (const node of state.nodes) {
    await waitForReplica(node.address, acked);
  }

  async function waitForReplica(host: string, ids: number[]) {
    let missing: number[] = ids;
    for (let i = 0; i < 40 && missing.length > 0; i++) {
      missing = await missingIds({ host, port: PORTS.postgres, password: secrets.app }, ids);
      if (missing.length > 0) await new Promise((r) => setTimeout(r, 250));
    }
    expect({ host, missing }).toEqual({ host, missing: [] });
  }
}, 600_000);

cluster.handBack();
