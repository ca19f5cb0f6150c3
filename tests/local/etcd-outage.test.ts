/**
 * Losing a majority of etcd (the DCS): with failsafe_mode the primary, which still reaches every
 * member, keeps accepting writes through HAProxy well past the leader key's TTL; once etcd is back
 * the cluster is healthy with the same leader and every acknowledged write.
 */
import { PORTS } from "../../core";
import { startNode, stopService, waitHealthy } from "../../local/cluster";
import { AckWriter, missingIds } from "../../local/writer";
import { address, health, sharedCluster, sleep, writeEntryServer } from "./harness";
import { SHARED_CLUSTER } from "../support/run-dir";
import { getProfile } from "../../core";

const loc = SHARED_CLUSTER;
let writer: AckWriter | undefined;
const cluster = sharedCluster({ breaks: true, cleanup: () => writer?.stop() ?? Promise.resolve() });

test("with a majority of etcd stopped, the primary keeps accepting writes (failsafe_mode)", async () => {
  const { state, secrets } = cluster();
  const leader = cluster().health.leader!;
  const ttlMs = getProfile(state.applied.failoverProfile).patroni.ttl * 1000;
  // The leader's own member and one other: the one left cannot form a quorum.
  const stopped = [leader, state.nodes.find((n) => n.name !== leader)!.name];
  const entry = state.nodes.find((n) => n.name !== leader)!;

  writer = new AckWriter({
    host: entry.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 1,
    intervalMs: 20,
  }).start();
  await writer.waitForAcks(20, 30_000);

  for (const name of stopped) await stopService(name, "etcd", { ...loc, graceMs: 0 });
  const outageAt = Date.now();
  const h = await health(loc);
  expect(h.nodes.filter((n) => n.etcdHealthy)).toHaveLength(0); // no quorum: no member is healthy

  // Three TTLs without a DCS: without failsafe_mode the leader would have demoted after one.
  await sleep(3 * ttlMs);
  const lateAcks = writer.acks.filter((a) => a.at >= outageAt + 2 * ttlMs);
  expect(lateAcks.length).toBeGreaterThan(0);
  const row = await writeEntryServer(state, secrets.app, entry.address);
  expect(row).toEqual({ server: address(state, leader), recovery: false });

  for (const name of stopped) await startNode(name, loc);
  const healed = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  expect(healed.leader).toBe(leader);
  await writer.waitForAcks(20, 30_000);
  await writer.stop();
  expect(
    await missingIds(
      { host: address(state, leader), port: PORTS.postgresPrimary, password: secrets.app },
      writer.ackedIds,
    ),
  ).toEqual([]);
}, 400_000);

cluster.handBack();
