/**
 * A new maintenanceRevision under mocks: the program declares core's maintenance steps
 * (`changeSequence`'s `maintain`, node N to node 1) as one chain after the refreshes, each
 * depending on the one before it; between two runs only those steps change (so only they run),
 * and no server or volume is replaced or changed. A revision that stays the same runs nothing.
 */
import { AppliedSettings, changeSequence, readAppliedSettings, stepResource } from "../../core";
import { FIXTURE_SSH_PRIVATE_KEY, FIXTURE_SSH_PUBLIC_KEY } from "../support/fixtures";
import { Declared, ProgramRun, T, runProgram, stackFileConfig } from "./harness";

const REMOTE = "command:remote:Command";
const LOCAL = "command:local:Command";
const BASE = {
  nodeCount: "3",
  sshPublicKeys: JSON.stringify([FIXTURE_SSH_PUBLIC_KEY]),
  adminCidrs: '["198.51.100.7/32"]',
};
const SECRETS = {
  sshPrivateKey: FIXTURE_SSH_PRIVATE_KEY,
  "hcloud:token": "hcloud-token-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcd",
};

async function up(config: Record<string, string>, previous?: ProgramRun): Promise<ProgramRun> {
  const run = await runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), ...BASE, ...config },
    secretConfig: SECRETS,
    previousOutputs: previous ? { appliedSettings: previous.outputs.appliedSettings.value } : undefined,
  });
  expect(run.error).toBeUndefined();
  return run;
}

const record = (run: ProgramRun): AppliedSettings => readAppliedSettings(run.outputs.appliedSettings.value).previous!;
const key = (r: Declared) => `${r.type}::${r.name}`;
const nameOf = (urn: string) => urn.split("::").pop()!;
/** What the engine compares: the inputs, less those a resource's ignoreChanges names. */
function comparable(r: Declared): string {
  const inputs = { ...r.inputs };
  for (const ignored of r.options.ignoreChanges) delete inputs[ignored];
  return JSON.stringify(inputs);
}
/** The resources of `after` that are new or whose compared inputs changed since `before`. */
function changed(before: ProgramRun, after: ProgramRun): Declared[] {
  const old = new Map(before.resources.map((r) => [key(r), r]));
  return after.resources.filter(
    (r) => r.custom && (!old.has(key(r)) || comparable(old.get(key(r))!) !== comparable(r)),
  );
}

let plain: ProgramRun;
let first: ProgramRun;
let again: ProgramRun;
let second: ProgramRun;
beforeAll(async () => {
  plain = await up({});
  first = await up({ maintenanceRevision: "1" }, plain);
  again = await up({ maintenanceRevision: "1" }, first);
  second = await up({ maintenanceRevision: "2" }, again);
}, 600_000);

test("a stack without maintenanceRevision declares no maintenance step", () => {
  expect(plain.resources.filter((r) => r.name.endsWith("-maintenance"))).toEqual([]);
  expect(record(plain).maintenanceRevision).toBeUndefined();
});

test("a new revision: core's maintain steps, node 3 to node 1, after the refreshes, one chain", () => {
  const steps = changeSequence({ stack: "prod", running: record(plain), wanted: record(first), refresh: false });
  expect(steps.map((s) => `${s.node.name}: ${s.kind}`)).toEqual([
    "madbase-prod-3: maintain",
    "madbase-prod-2: maintain",
    "madbase-prod-1: maintain",
  ]);
  const names = steps.map(stepResource);
  const commands = first.resources.filter((r) => r.type === LOCAL || r.type === REMOTE);
  const maintenance = commands.filter((r) => r.name.endsWith("-maintenance"));
  expect(maintenance.map((r) => r.name).sort()).toEqual([...names].sort());
  // Each depends on the step before it: the first on the last refresh (node 1's), the others on the previous maintenance.
  names.forEach((name, i) => {
    const deps = maintenance
      .find((r) => r.name === name)!
      .options.dependencies.map(nameOf)
      .filter((d) => commands.some((c) => c.name === d));
    expect([name, deps]).toEqual([name, [i === 0 ? "madbase-prod-1-config" : names[i - 1]]]);
  });
  for (const r of maintenance) {
    expect(r.type).toBe(LOCAL);
    expect(r.inputs.create).toBe("bash scripts/hetzner/maintain-server.sh");
    // An update runs the same script, which acts only on a revision its previous output does not
    // show done (tests/stack/maintain-script.test.ts); nothing is ignored, so a new revision runs
    // with the current key and scripts.
    expect(r.inputs.update).toBe(r.inputs.create);
    expect(r.inputs.addPreviousOutputInEnv).toBe(true);
    expect(r.inputs.environment.MAINTENANCE_REVISION).toBe("1");
    expect(r.inputs.triggers).toEqual([1]);
    expect(r.options.ignoreChanges).toEqual([]);
    // node-maintain carries no secret; its settle does (a secret environment value).
    expect(r.inputs.environment.MAINTAIN_SCRIPT).toContain(
      "# ================================================================ node-maintain",
    );
    expect(r.inputs.environment.MAINTAIN_SCRIPT).toContain('readonly PACKAGES="all" REBOOT="auto"');
  }
});

test("the engine runs only the maintenance steps, in the chain's order, and replaces no server or volume", () => {
  const runs = changed(plain, first);
  expect(runs.map((r) => r.name).sort()).toEqual(
    ["madbase-prod-1-maintenance", "madbase-prod-2-maintenance", "madbase-prod-3-maintenance"].sort(),
  );
  for (const type of [T.server, T.volume, T.volumeAttachment]) {
    const before = plain.resources.filter((r) => r.type === type);
    const after = first.resources.filter((r) => r.type === type);
    expect(after.map(key)).toEqual(before.map(key));
    after.forEach((r, i) => expect(comparable(r)).toBe(comparable(before[i])));
  }
});

test("the same revision again runs nothing; a new one runs the three steps again", () => {
  expect(changed(first, again).map((r) => r.name)).toEqual([]);
  expect(changeSequence({ stack: "prod", running: record(first), wanted: record(again), refresh: false })).toEqual([]);
  const runs = changed(again, second);
  expect(runs.map((r) => r.name).sort()).toEqual(
    ["madbase-prod-1-maintenance", "madbase-prod-2-maintenance", "madbase-prod-3-maintenance"].sort(),
  );
  for (const r of runs) expect(r.inputs.triggers).toEqual([2]);
  expect(
    changeSequence({ stack: "prod", running: record(again), wanted: record(second), refresh: false }).map(
      (s) => `${s.node.name}: ${s.kind}`,
    ),
  ).toEqual(["madbase-prod-3: maintain", "madbase-prod-2: maintain", "madbase-prod-1: maintain"]);
});
