/**
 * core's one sequence of steps: the order of every change, for each kind of change, what it
 * refuses (checkStackChange's refusals, before any step), and properties over every pair of node
 * counts and server types: members only are touched, one node at a time, and the sequence ends
 * with exactly the wanted members.
 */
import {
  AppliedSettings,
  ConfigError,
  Step,
  appliedSettings,
  changeSequence,
  declaredSequence,
  describeStep,
  parseSettings,
} from "../../core";

const record = (overrides: Record<string, unknown> = {}): AppliedSettings =>
  appliedSettings(parseSettings("prod", { nodeCount: 3, plan: "cx31", ...overrides }), { sshPrivateKeySet: true });
const labels = (steps: Step[]) => steps.map(describeStep);
const change = (running: AppliedSettings | undefined, wanted: AppliedSettings, refresh = true) =>
  changeSequence({ stack: "prod", running, wanted, refresh });
const refreshes = (from: number, handoffAt = from) =>
  Array.from({ length: from }, (_, k) => from - k).map(
    (n) => `madbase-prod-${n}: ${n === handoffAt ? "leadership-handoff, refresh" : "refresh"}`,
  );

test("a first up: every machine, then joins in index order, resizes and refreshes from the last node", () => {
  expect(labels(change(undefined, record()))).toEqual([
    "madbase-prod-1: provision",
    "madbase-prod-2: provision",
    "madbase-prod-3: provision",
    "madbase-prod-1: join",
    "madbase-prod-2: join",
    "madbase-prod-3: join",
    "madbase-prod-3: resize to cx43",
    "madbase-prod-2: resize to cx43",
    "madbase-prod-1: resize to cx43",
    ...refreshes(3),
  ]);
  expect(declaredSequence("prod", record())).toEqual(change(undefined, record()));
});

test("grow 3 → 5: the new machines, their joins, their (no-op) resizes, then every node's refresh", () => {
  expect(labels(change(record(), record({ nodeCount: 5 })))).toEqual([
    "madbase-prod-4: provision",
    "madbase-prod-5: provision",
    "madbase-prod-4: join",
    "madbase-prod-5: join",
    "madbase-prod-5: resize to cx43",
    "madbase-prod-4: resize to cx43",
    ...refreshes(5),
  ]);
});

test("shrink 5 → 3: the staying nodes' refreshes led by the hand-off, then leaves from the last node, each before its machine goes", () => {
  expect(labels(change(record({ nodeCount: 5 }), record()))).toEqual([
    ...refreshes(3),
    "madbase-prod-5: leave",
    "madbase-prod-5: decommission",
    "madbase-prod-4: leave",
    "madbase-prod-4: decommission",
  ]);
});

test("1 → 3 with requireHa, and 3 → 1 without it", () => {
  expect(labels(change(record({ nodeCount: 1 }), record({ requireHa: true })))).toEqual([
    "madbase-prod-2: provision",
    "madbase-prod-3: provision",
    "madbase-prod-2: join",
    "madbase-prod-3: join",
    "madbase-prod-3: resize to cx43",
    "madbase-prod-2: resize to cx43",
    ...refreshes(3),
  ]);
  expect(labels(change(record(), record({ nodeCount: 1 })))).toEqual([
    "madbase-prod-1: leadership-handoff, refresh",
    "madbase-prod-3: leave",
    "madbase-prod-3: decommission",
    "madbase-prod-2: leave",
    "madbase-prod-2: decommission",
  ]);
});

test("a new plan: every node resized from the last, draining towards the nodes already resized, then the refreshes", () => {
  const steps = change(record({ nodeCount: 5 }), record({ nodeCount: 5, plan: "cx41" }));
  expect(labels(steps)).toEqual([
    "madbase-prod-5: resize to cx53",
    "madbase-prod-4: resize to cx53",
    "madbase-prod-3: resize to cx53",
    "madbase-prod-2: resize to cx53",
    "madbase-prod-1: resize to cx53",
    ...refreshes(5),
  ]);
  // Towards every node after it, whatever the count (the drain script does not change with it).
  const prefer = steps.flatMap((s) => (s.kind === "resize" ? [[s.node.name, s.prefer]] : []));
  expect(prefer[0]).toEqual(["madbase-prod-5", ["madbase-prod-6", "madbase-prod-7"]]);
  expect(prefer[4]).toEqual(["madbase-prod-1", [2, 3, 4, 5, 6, 7].map((n) => `madbase-prod-${n}`)]);
});

test("a converging setting refreshes every node; nothing changed, nothing runs", () => {
  expect(labels(change(record(), record({ failoverProfile: "fast" })))).toEqual(refreshes(3));
  expect(change(record(), record(), false)).toEqual([]);
});

test("what the running stack cannot take is refused before any step, naming the key", () => {
  for (const [key, value] of [
    ["location", "hel1"],
    ["subnetCidr", "10.42.9.0/24"],
    ["volumeSizeGb", 10],
  ] as const) {
    let error: unknown;
    try {
      change(record({ volumeSizeGb: 50 }), record({ volumeSizeGb: 50, [key]: value }));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe(`madbase-state:${key}`);
  }
  const keyless = appliedSettings(parseSettings("prod", { nodeCount: 5, plan: "cx31" }), { sshPrivateKeySet: false });
  expect(() => change({ ...record(), sshPrivateKeySet: false }, keyless)).toThrow(/sshPrivateKey first/);
});

describe("over every pair of counts and types", () => {
  const counts = [1, 3, 5, 7];
  const plans = ["cx21", "cx31", "cx41"];
  const cases = counts.flatMap((from) =>
    counts.flatMap((to) => plans.flatMap((a) => plans.map((b) => [from, to, a, b] as const))),
  );

  test.each(cases)("%i → %i nodes, %s → %s", (from, to, planA, planB) => {
    const running = record({ nodeCount: from, plan: planA });
    const wanted = record({ nodeCount: to, plan: planB });
    const steps = change(running, wanted);
    const members = new Set(Array.from({ length: from }, (_, i) => `madbase-prod-${i + 1}`));
    const machines = new Set(members);
    let lastLeaveOrRefresh = -1;
    steps.forEach((step, i) => {
      const name = step.node.name;
      switch (step.kind) {
        case "provision":
          expect(machines.has(name)).toBe(false);
          machines.add(name);
          break;
        case "join":
          expect(machines.has(name) && !members.has(name)).toBe(true);
          members.add(name);
          break;
        case "leave":
          expect(members.has(name)).toBe(true);
          members.delete(name);
          lastLeaveOrRefresh = i;
          break;
        case "decommission":
          // Right after its own leave.
          expect(steps[i - 1]).toEqual({ kind: "leave", node: step.node });
          machines.delete(name);
          break;
        default:
          // resize and refresh touch members only, and the leaves come after every refresh.
          expect(members.has(name)).toBe(true);
          if (step.kind === "refresh") expect(lastLeaveOrRefresh).toBeLessThan(i);
      }
    });
    expect([...members].sort()).toEqual(Array.from({ length: to }, (_, i) => `madbase-prod-${i + 1}`).sort());
    expect(machines).toEqual(members);
    // Every node of the wanted cluster ends at the wanted type: resized, or new and resized (no-op).
    const resized = steps.filter((s) => s.kind === "resize").map((s) => s.node.name);
    const expectResized = Array.from({ length: to }, (_, i) => i)
      .filter((i) => planA !== planB || i >= from)
      .reverse()
      .map((i) => `madbase-prod-${i + 1}`);
    expect(resized).toEqual(expectResized);
    // One refresh round over the wanted nodes, led by exactly one hand-off.
    const rounds = steps.filter((s) => s.kind === "refresh");
    expect(rounds.map((s) => s.node.name)).toEqual(Array.from({ length: to }, (_, i) => `madbase-prod-${to - i}`));
    expect(rounds.filter((s) => s.kind === "refresh" && s.handoff)).toHaveLength(1);
  });
});
