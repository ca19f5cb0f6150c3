/**
 * A one-node dev stack converges too: there is no other node to hand anything to, so a change
 * that needs a restart restarts its PostgreSQL in place (a short outage, which the output says),
 * and the node comes back with the new settings.
 */
import { PLANS, PORTS, PROFILES } from "../../core";
import { apply } from "../../local/apply";
import { UpResult, down, localMemoryMb, up } from "../../local/cluster";
import { finish, nodeSql, testLocation } from "./harness";

const loc = testLocation(13);
let cluster: UpResult;

beforeAll(async () => {
  await down(loc);
  cluster = await up({ ...loc, stack: "dev", nodes: 1, timeoutMs: 180_000 });
}, 300_000);

afterAll(async () => {
  await finish(loc);
}, 120_000);

test("apply --plan cx31 --profile fast on one node: PostgreSQL restarts in place with the new memory, Patroni takes the new timings", async () => {
  const { state } = cluster;
  const node = state.nodes[0];
  expect(nodeSql(state, node.name, "SHOW shared_buffers")).toBe(`${localMemoryMb(PLANS.cx21) / 4}MB`);

  const result = await apply({ ...loc, plan: "cx31", profile: "fast" });

  const lines = result.changes.flatMap((c) => c.lines);
  expect(lines).toContain("patroni: a single node; PostgreSQL is down until this node is back");
  expect(lines).toContain("postgres: restarted with the new parameters");
  expect(nodeSql(state, node.name, "SHOW shared_buffers")).toBe(`${localMemoryMb(PLANS.cx31) / 4}MB`);
  expect(nodeSql(state, node.name, "SHOW max_connections")).toBe(String(PLANS.cx31.maxConnections));
  const config = (await (await fetch(`http://${node.address}:${PORTS.patroni}/config`)).json()) as {
    loop_wait: number;
  };
  expect(config.loop_wait).toBe(PROFILES.fast.patroni.loopWait);
  expect(result.health.healthy).toBe(true);
}, 300_000);
