/**
 * A plan/serverType change resizes one server at a time: servers ignore serverType (the provider
 * would power every one off at once), and each node has a local resize command whose only trigger
 * is the target type, chained from the last node to node 0, after every membership and before the
 * first config refresh. Secrets reach the script through its environment, as secrets.
 */
import {
  Declared,
  ProgramRun,
  T,
  isSecretEnvelope,
  ofType,
  plainStrings,
  runProgram,
  stackFileConfig,
} from "./harness";
import { FIXTURE_SSH_PRIVATE_KEY, FIXTURE_SSH_PUBLIC_KEY } from "../support/fixtures";

const LOCAL = "command:local:Command";
const SSH_KEY = FIXTURE_SSH_PRIVATE_KEY;
const HCLOUD_TOKEN = "hcloud-token-for-the-resize-tests-0123456789abcdefghijklmnopqrstuv";
const BASE = {
  sshPublicKeys: JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@host", FIXTURE_SSH_PUBLIC_KEY]),
  adminCidrs: '["198.51.100.7/32"]',
};

function up(
  config: Record<string, string>,
  secrets: Record<string, string> = { sshPrivateKey: SSH_KEY, "hcloud:token": HCLOUD_TOKEN },
): Promise<ProgramRun> {
  return runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), ...BASE, ...config },
    secretConfig: secrets,
  });
}

const find = (run: ProgramRun, type: string, name: string): Declared => {
  const r = run.resources.find((x) => x.type === type && x.name === name);
  if (!r) throw new Error(`${type} ${name} is not declared`);
  return r;
};
const resize = (run: ProgramRun, n: number) => find(run, LOCAL, `madbase-prod-${n}-resize`);
const dependsOn = (r: Declared) => r.options.dependencies.map((urn) => urn.split("::").pop());

describe("prod at 5 nodes, plan cx31 → cx41", () => {
  let before: ProgramRun;
  let after: ProgramRun;
  beforeAll(async () => {
    [before, after] = [await up({ nodeCount: "5" }), await up({ nodeCount: "5", plan: "cx41" })];
    for (const run of [before, after]) expect(run.error).toBeUndefined();
  });

  test("every server ignores serverType, so no server update can power a node off", () => {
    for (const s of ofType(after, T.server)) expect(s.options.ignoreChanges).toContain("serverType");
    // A new server is still created with the declared type.
    expect(ofType(after, T.server).map((s) => s.inputs.serverType)).toEqual(Array(5).fill("cx53"));
  });

  test("one resize command per node, triggered by exactly the target type", () => {
    expect(
      ofType(after, LOCAL)
        .map((c) => c.name)
        .sort(),
    ).toEqual([1, 2, 3, 4, 5].map((n) => `madbase-prod-${n}-resize`));
    for (const n of [1, 2, 3, 4, 5]) {
      expect(resize(before, n).inputs.triggers).toEqual(["cx43"]);
      expect(resize(after, n).inputs.triggers).toEqual(["cx53"]);
      expect(resize(after, n).inputs.environment).toMatchObject({
        SERVER_TYPE: "cx53",
        NODE_NAME: `madbase-prod-${n}`,
        NODE_HOST: expect.stringMatching(/^203\.0\.113\.\d+$/),
      });
      expect(resize(after, n).inputs.environment.SERVER_ID).toBe(find(after, T.server, `madbase-prod-${n}`).id);
      expect(resize(after, n).inputs.create).toBe("bash scripts/hetzner/resize-server.sh");
    }
  });

  test("chained in reverse index order: the last node first, node 1 (the founding leader) last; no two at once", () => {
    const resizes = (d: Declared) => dependsOn(d).filter((x) => x!.endsWith("-resize"));
    expect(resizes(resize(after, 5))).toEqual([]);
    for (const n of [1, 2, 3, 4]) expect(resizes(resize(after, n))).toEqual([`madbase-prod-${n + 1}-resize`]);
    // After the last membership (which follows every other), on its own server.
    expect(dependsOn(resize(after, 5))).toContain("madbase-prod-5-membership");
    for (const n of [1, 2, 3, 4, 5]) expect(dependsOn(resize(after, n))).toContain(`madbase-prod-${n}`);
  });

  test("each node drains towards the nodes already resized, and settles before the next one goes", () => {
    for (const n of [1, 2, 3, 4, 5]) {
      const env = resize(after, n).inputs.environment;
      // Towards every node after it, whatever the count, so the script does not change with it.
      const prefer = [1, 2, 3, 4, 5, 6, 7]
        .filter((m) => m > n)
        .map((m) => ` "madbase-prod-${m}"`)
        .join("");
      expect(env.DRAIN_SCRIPT).toContain(`# node-drain for madbase-prod-${n} (madbase-prod)`);
      expect(env.DRAIN_SCRIPT).toMatch(new RegExp(`^drain_postgres${prefer}$`, "m"));
      expect(env.DRAIN_SCRIPT).toMatch(/^drain_redis$/m);
      expect(env.SETTLE_SCRIPT).toContain(`# node-settle for madbase-prod-${n} (madbase-prod)`);
      expect(env.SETTLE_SCRIPT).toMatch(/^settle_node$/m);
    }
  });

  test("the config refreshes run after the whole chain, so they render the new plan onto resized servers", () => {
    // The first refresh (refreshes run last node first, too) waits for the end of the chain, node 1's resize.
    expect(dependsOn(find(after, "command:remote:Command", "madbase-prod-5-config"))).toContain(
      "madbase-prod-1-resize",
    );
    expect(find(after, "command:remote:Command", "madbase-prod-1-config").inputs.triggers).not.toEqual(
      find(before, "command:remote:Command", "madbase-prod-1-config").inputs.triggers,
    );
  });

  test("the token, the key and the scripts are secrets in the environment; nothing secret in create or in plain text", () => {
    const secrets = [...after.secretValues, HCLOUD_TOKEN, SSH_KEY];
    for (const c of ofType(after, LOCAL)) {
      for (const key of ["HCLOUD_TOKEN", "MADBASE_SSH_KEY", "DRAIN_SCRIPT", "SETTLE_SCRIPT"]) {
        expect([c.name, key, isSecretEnvelope(c.raw.environment?.[key])]).toEqual([c.name, key, true]);
      }
      // The rest stays readable in a preview.
      for (const key of ["SERVER_TYPE", "NODE_NAME"]) expect(typeof c.raw.environment[key]).toBe("string");
      expect(c.inputs.environment.HCLOUD_TOKEN).toBe(HCLOUD_TOKEN);
      expect(c.inputs.environment.MADBASE_SSH_KEY).toBe(SSH_KEY);
      const plain = plainStrings(c.raw).join("\n");
      expect([c.name, secrets.filter((s) => plain.includes(s))]).toEqual([c.name, []]);
      expect(secrets.filter((s) => String(c.inputs.create).includes(s))).toEqual([]);
    }
  });

  test("only the resize commands change: the servers' inputs stay as they were", () => {
    for (const n of [1, 2, 3, 4, 5]) {
      const a = find(before, T.server, `madbase-prod-${n}`);
      const b = find(after, T.server, `madbase-prod-${n}`);
      const { serverType: _a, userData: _ua, ...restA } = a.inputs;
      const { serverType: _b, userData: _ub, ...restB } = b.inputs;
      expect(restB).toEqual(restA);
    }
  });
});

test("without hcloud:token the environment carries no token: the script uses the HCLOUD_TOKEN Pulumi runs with", async () => {
  const run = await up({}, { sshPrivateKey: SSH_KEY });
  expect(run.error).toBeUndefined();
  for (const c of ofType(run, LOCAL)) expect(c.inputs.environment.HCLOUD_TOKEN).toBeUndefined();
});

test("without sshPrivateKey there is no resize command, and a plan change on a stack with nodes is refused", async () => {
  const first = await up({}, {});
  expect(first.error).toBeUndefined();
  expect(ofType(first, LOCAL)).toEqual([]);
  const run = await runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), ...BASE, plan: "cx41" },
    previousOutputs: { appliedSettings: first.outputs.appliedSettings.value },
  });
  expect(run.error?.message).toMatch(/^madbase-state:plan: "cx41" is not allowed; .*needs sshPrivateKey/);
  expect(run.resources).toEqual([]);
});
