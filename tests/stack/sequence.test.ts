/**
 * What the Pulumi program declares is exactly core's sequence of steps. For each kind of change,
 * the program is run under mocks before and after (the previous run's appliedSettings fed back as
 * the stack's own output), and the engine's rules are applied to the two declarations: the
 * resources that are new or whose inputs changed run, in the dependency order of the new
 * declaration; the ones that are gone are deleted after them, in the reverse dependency order of
 * the old one. The node commands that run that way must be core's `changeSequence`, one chain:
 * each depends on the one before it, so no two can run at once.
 */
import { AppliedSettings, Step, changeSequence, describeStep, readAppliedSettings } from "../../core";
import { FIXTURE_SSH_PRIVATE_KEY, FIXTURE_SSH_PUBLIC_KEY } from "../support/fixtures";
import { Declared, ProgramRun, T, runProgram, stackFileConfig } from "./harness";

const REMOTE = "command:remote:Command";
const LOCAL = "command:local:Command";
const BASE = {
  sshPublicKeys: JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@host", FIXTURE_SSH_PUBLIC_KEY]),
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

const key = (r: Declared) => `${r.type}::${r.name}`;
const nameOf = (urn: string) => urn.split("::").pop()!;

/** The resources that are node steps: servers (provision, decommission) and the node commands. */
const stepTypes = new Set<string>([REMOTE, LOCAL, T.server]);

/** What the engine compares: the inputs, less those a resource's ignoreChanges names. */
function comparable(r: Declared): Record<string, unknown> {
  const inputs = { ...r.inputs };
  for (const ignored of r.options.ignoreChanges) delete inputs[ignored];
  return inputs;
}

/** The step a resource's create or update (or, for a membership, delete) is, as core labels it. */
function label(r: Declared, deleted: boolean): string {
  const name = r.name;
  if (r.type === T.server) return `${name}: ${deleted ? "decommission" : "provision"}`;
  const node = name.replace(/-(membership|resize|config)$/, "");
  if (name.endsWith("-membership")) return `${node}: ${deleted ? "leave" : "join"}`;
  if (name.endsWith("-resize")) return `${node}: resize to ${r.inputs.triggers[0]}`;
  const handoff = String(r.inputs.stdin).includes("-leadership-handoff.sh");
  return `${node}: ${handoff ? "leadership-handoff, refresh" : "refresh"}`;
}

/** Every resource a resource depends on, directly or not, by name. */
function ancestors(run: ProgramRun): Map<string, Set<string>> {
  const byName = new Map(run.resources.map((r) => [r.name, r]));
  const memo = new Map<string, Set<string>>();
  const visit = (name: string): Set<string> => {
    const known = memo.get(name);
    if (known) return known;
    const out = new Set<string>();
    memo.set(name, out);
    for (const dep of byName.get(name)?.options.dependencies ?? []) {
      const d = nameOf(dep);
      out.add(d);
      for (const a of visit(d)) out.add(a);
    }
    return out;
  };
  for (const r of run.resources) visit(r.name);
  return memo;
}

/**
 * The steps the engine runs going from `before` to `after`, in its order. The node commands among
 * them must be totally ordered by dependencies (one chain); servers are checked against their
 * commands instead (created before their join, deleted after their leave).
 */
function engineSteps(before: ProgramRun | undefined, after: ProgramRun): { chain: string[]; servers: string[] } {
  const old = new Map((before?.resources ?? []).map((r) => [key(r), r]));
  const now = new Map(after.resources.map((r) => [key(r), r]));
  const runs = after.resources.filter(
    (r) =>
      stepTypes.has(r.type) &&
      (!old.has(key(r)) || JSON.stringify(comparable(old.get(key(r))!)) !== JSON.stringify(comparable(r))),
  );
  const gone = (before?.resources ?? []).filter((r) => stepTypes.has(r.type) && !now.has(key(r)));

  const order = (list: Declared[], graph: Map<string, Set<string>>, reverse: boolean): Declared[] => {
    const sorted = [...list].sort((a, b) => {
      const aFirst = graph.get(b.name)!.has(a.name);
      const bFirst = graph.get(a.name)!.has(b.name);
      // Two commands neither of which follows the other could run at once: never allowed.
      if (!aFirst && !bFirst) throw new Error(`${a.name} and ${b.name} are not ordered: they could run at once`);
      return (aFirst ? -1 : 1) * (reverse ? -1 : 1);
    });
    return sorted;
  };
  const afterGraph = ancestors(after);
  const creates = order(
    runs.filter((r) => r.type !== T.server),
    afterGraph,
    false,
  );
  // Deletes run after every create and update, in the reverse dependency order of the old state.
  const deletes = before
    ? order(
        gone.filter((r) => r.name.endsWith("-membership")),
        ancestors(before),
        true,
      )
    : [];
  // A new server is created before its node's first command; a removed one is deleted after its leave.
  for (const server of runs.filter((r) => r.type === T.server)) {
    const join = creates.find((c) => c.name === `${server.name}-membership`);
    expect(join && afterGraph.get(join.name)!.has(server.name)).toBe(true);
  }
  const beforeGraph = before ? ancestors(before) : new Map<string, Set<string>>();
  for (const server of gone.filter((r) => r.type === T.server))
    expect(beforeGraph.get(`${server.name}-membership`)!.has(server.name)).toBe(true);
  return {
    chain: [...creates.map((r) => label(r, false)), ...deletes.map((r) => label(r, true))],
    servers: [
      ...runs.filter((r) => r.type === T.server).map((r) => label(r, false)),
      ...gone.filter((r) => r.type === T.server).map((r) => label(r, true)),
    ].sort(),
  };
}

/** core's sequence between the two runs' records, split as engineSteps splits the engine's. */
function coreSteps(before: ProgramRun | undefined, after: ProgramRun): { chain: string[]; servers: string[] } {
  const record = (run: ProgramRun) => readAppliedSettings(run.outputs.appliedSettings.value).previous!;
  const running: AppliedSettings | undefined = before ? record(before) : undefined;
  const steps = changeSequence({ stack: "prod", running, wanted: record(after), refresh: true });
  const machine = (s: Step) => s.kind === "provision" || s.kind === "decommission";
  return {
    chain: steps.filter((s) => !machine(s)).map(describeStep),
    servers: steps.filter(machine).map(describeStep).sort(),
  };
}

const cases: [string, Record<string, string>, Record<string, string>][] = [
  ["a first up of 3 nodes", {}, { nodeCount: "3" }],
  ["grow 3 → 5", { nodeCount: "3" }, { nodeCount: "5" }],
  ["shrink 5 → 3", { nodeCount: "5" }, { nodeCount: "3" }],
  ["resize cx31 → cx41 at 3 nodes", { nodeCount: "3" }, { nodeCount: "3", plan: "cx41" }],
  ["failoverProfile fast", { nodeCount: "3" }, { nodeCount: "3", failoverProfile: "fast" }],
  ["synchronousMode false", { nodeCount: "3" }, { nodeCount: "3", synchronousMode: "false" }],
  [
    "sshPublicKeys: one key more",
    { nodeCount: "3" },
    {
      nodeCount: "3",
      sshPublicKeys: JSON.stringify([
        ...JSON.parse(BASE.sshPublicKeys),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINew new@host",
      ]),
    },
  ],
];

describe.each(cases)("%s", (_what, first, second) => {
  let before: ProgramRun | undefined;
  let after: ProgramRun;
  beforeAll(async () => {
    if (_what.startsWith("a first up")) {
      before = undefined;
      after = await up(second);
    } else {
      before = await up(first);
      after = await up(second, before);
    }
  });

  test("the engine runs exactly core's sequence, each node command after the one before it", () => {
    const engine = engineSteps(before, after);
    const core = coreSteps(before, after);
    expect(engine.chain).toEqual(core.chain);
    expect(engine.servers).toEqual(core.servers);
    expect(engine.chain.length).toBeGreaterThan(0);
  });

  test("pulumi up says which node steps it will run, in core's order (on a running stack)", () => {
    const said = after.logs.filter((l) => l.includes("Node steps of this update"));
    if (!before) {
      expect(said).toEqual([]);
      return;
    }
    const { chain, servers } = coreSteps(before, after);
    expect(said).toHaveLength(1);
    const listed = said[0].replace(/^.*one at a time: /, "").split("; ");
    // Every step core gives, machines included, in its order.
    expect(listed.filter((l) => !/: (provision|decommission)$/.test(l))).toEqual(chain);
    expect(listed.filter((l) => /: (provision|decommission)$/.test(l)).sort()).toEqual(servers);
  });

  test("each node command depends directly on the one before it in the sequence, and on nothing later", () => {
    const declared = after.resources.filter((r) => r.type === REMOTE || r.type === LOCAL);
    const chainOrder = changeSequence({
      stack: "prod",
      running: undefined,
      wanted: readAppliedSettings(after.outputs.appliedSettings.value).previous!,
      refresh: true,
    }).filter((s) => s.kind !== "provision");
    const names = chainOrder.map(
      (s) => `${s.node.name}-${{ join: "membership", resize: "resize", refresh: "config" }[s.kind as "join"]}`,
    );
    expect(declared.map((r) => r.name).sort()).toEqual([...names].sort());
    names.forEach((name, i) => {
      const deps = declared.find((r) => r.name === name)!.options.dependencies.map(nameOf);
      const commandDeps = deps.filter((d) => names.includes(d));
      expect([name, commandDeps]).toEqual([name, i === 0 ? [] : [names[i - 1]]]);
    });
  });
});
