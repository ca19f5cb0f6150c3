/**
 * Membership under mocks: with an SSH key, every node gets a remote command whose create runs
 * node-join and whose delete runs node-leave, chained so that nodes join one at a time and leave
 * in the reverse order, each before its server goes; every node gets a config refresh that reruns
 * when the rendered content changes. A count change (3 → 5 → 3) never changes what Pulumi sees for
 * a node that stays, except its refresh.
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

const COMMAND = "command:remote:Command";
/** A made-up key of the right shape: the mocks never connect. */
const SSH_KEY = FIXTURE_SSH_PRIVATE_KEY;
const PUBLIC_KEY = JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@host", FIXTURE_SSH_PUBLIC_KEY]);

async function stack(name: "prod" | "dev", nodeCount: number, extra: Record<string, string> = {}): Promise<ProgramRun> {
  return runProgram({
    stack: name,
    config: {
      ...stackFileConfig(name),
      nodeCount: String(nodeCount),
      sshPublicKeys: PUBLIC_KEY,
      adminCidrs: '["198.51.100.7/32"]',
      ...extra,
    },
    secretConfig: { sshPrivateKey: SSH_KEY },
  });
}

const find = (run: ProgramRun, type: string, name: string): Declared => {
  const r = run.resources.find((x) => x.type === type && x.name === name);
  if (!r) throw new Error(`${type} ${name} is not declared`);
  return r;
};
const membership = (run: ProgramRun, n: number) => find(run, COMMAND, `madbase-prod-${n}-membership`);
const refresh = (run: ProgramRun, n: number) => find(run, COMMAND, `madbase-prod-${n}-config`);
const resize = (run: ProgramRun, n: number) => find(run, "command:local:Command", `madbase-prod-${n}-resize`);
/** The resources' dependencies, by name. */
const dependsOn = (r: Declared) => r.options.dependencies.map((urn) => urn.split("::").pop());

/** What Pulumi diffs: inputs and the options that decide replace/delete (userData is ignored, see scaling.test.ts). */
function diffable(r: Declared) {
  const inputs = { ...r.inputs };
  if (r.type === T.server) delete inputs.userData;
  const { dependencies: _d, ...options } = r.options;
  return { inputs, options };
}

describe("3 → 5 → 3 with membership commands", () => {
  let three: ProgramRun;
  let five: ProgramRun;
  let threeAgain: ProgramRun;
  beforeAll(async () => {
    [three, five, threeAgain] = [await stack("prod", 3), await stack("prod", 5), await stack("prod", 3)];
    for (const run of [three, five, threeAgain]) expect(run.error).toBeUndefined();
  });

  test("nodes that stay keep their server, volume, attachment and membership exactly as they were", () => {
    const staying = (run: ProgramRun) =>
      run.resources
        .filter(
          (r) =>
            r.custom &&
            ([T.server, T.volume, T.volumeAttachment].includes(r.type as never) || r.name.endsWith("-membership")),
        )
        .filter((r) => /^madbase-prod-[123](-|$)/.test(r.name))
        .map((r) => ({ key: `${r.type}::${r.name}`, ...diffable(r) }))
        .sort((a, b) => a.key.localeCompare(b.key));
    expect(staying(three)).toHaveLength(3 * 4);
    expect(staying(five)).toEqual(staying(three));
    expect(staying(threeAgain)).toEqual(staying(three));
  });

  test("each node's membership runs node-join when created and node-leave when deleted, on its own server as root", () => {
    const hosts = new Set<string>();
    for (const n of [1, 2, 3, 4, 5]) {
      const m = membership(five, n);
      hosts.add(m.inputs.connection.host);
      // Both scripts on standard input; the exec strings (a node's process list shows them) name the action.
      expect([m.inputs.create, m.inputs.delete]).toEqual(["bash -s -- join", "bash -s -- leave"]);
      const [join, leave] = m.inputs.stdin.split("\nleave) ");
      expect(join).toMatch(/^case "\$\{1:-\}" in\njoin\) /);
      expect(join).toContain(`# node-join for madbase-prod-${n} (madbase-prod)`);
      expect(leave).toContain(`# node-leave for madbase-prod-${n} (madbase-prod)`);
      expect(leave).not.toContain("# node-join");
      // The server's public address (the mocks hand out 203.0.113.x).
      expect(m.inputs.connection).toMatchObject({ user: "root", host: expect.stringMatching(/^203\.0\.113\.\d+$/) });
      expect(m.options.dependencies.some((urn) => urn.endsWith(`hcloud:index/server:Server::madbase-prod-${n}`))).toBe(
        true,
      );
    }
    expect(hosts.size).toBe(5);
  });

  test("nodes join one at a time in index order, so they leave in the reverse order", () => {
    expect(dependsOn(membership(five, 1)).filter((d) => d!.endsWith("-membership"))).toEqual([]);
    for (const n of [2, 3, 4, 5]) expect(dependsOn(membership(five, n))).toContain(`madbase-prod-${n - 1}-membership`);
  });

  test("a membership is never replaced by a later change: identity triggers, ignored connection, deleted before any replacement", () => {
    for (const n of [1, 2, 3]) {
      const m = membership(five, n);
      expect(m.inputs.triggers).toEqual([`madbase-prod-${n}`, `10.42.1.${9 + n}`]);
      expect(m.options.ignoreChanges).toEqual(["connection"]);
      expect(m.options.deleteBeforeReplace).toBe(true);
      // prod protects its nodes; a protected node's membership is not dropped either.
      expect(m.options.protect).toBe(true);
    }
  });

  test("every node's config refresh runs after all memberships (through the resize chain), one node at a time from the last node, the first led by the hand-off", () => {
    // The chain: membership 5 (the last join) → resizes 5..1 → refreshes 5..1 (tests/stack/sequence.test.ts has it whole).
    expect(dependsOn(resize(five, 5))).toContain("madbase-prod-5-membership");
    expect(dependsOn(refresh(five, 5))).toContain("madbase-prod-1-resize");
    for (const n of [1, 2, 3, 4]) {
      expect(dependsOn(refresh(five, n))).toContain(`madbase-prod-${n + 1}-config`);
      expect(dependsOn(refresh(five, n)).filter((d) => d!.endsWith("-config") || d!.endsWith("-membership"))).toEqual([
        `madbase-prod-${n + 1}-config`,
      ]);
    }
    expect(refresh(five, 5).inputs.stdin).toMatch(/1-leadership-handoff\.sh[\s\S]*2-config-refresh\.sh/);
    for (const n of [1, 2, 3, 4]) expect(refresh(five, n).inputs.stdin).not.toContain("leadership-handoff");
    // It has nothing to undo: replacing or deleting it runs nothing on the node.
    for (const n of [1, 2, 3, 4, 5]) expect(refresh(five, n).inputs.delete).toBeUndefined();
  });

  test("a refresh reruns exactly when what it installs changes: the count changes it, the same count does not", () => {
    for (const n of [1, 2, 3]) {
      expect(refresh(five, n).inputs.triggers).not.toEqual(refresh(three, n).inputs.triggers);
      expect(refresh(threeAgain, n).inputs.triggers).toEqual(refresh(three, n).inputs.triggers);
      expect(refresh(five, n).inputs.stdin).toContain("server madbase-prod-5 10.42.1.14:5432");
      expect(refresh(three, n).inputs.stdin).not.toContain("madbase-prod-5");
    }
  });

  test("scripts and the SSH key are sent as secrets, and no secret shows in plain text", () => {
    const secrets = [...five.secretValues];
    for (const c of ofType(five, COMMAND)) {
      // The scripts are secret and travel on standard input; the exec strings hold none of them.
      expect(isSecretEnvelope(c.raw.stdin)).toBe(true);
      expect([c.name, c.raw.create]).toEqual([c.name, c.name.endsWith("-membership") ? "bash -s -- join" : "bash -s"]);
      expect(isSecretEnvelope(c.raw.connection?.privateKey) || isSecretEnvelope(c.raw.connection)).toBe(true);
      expect([c.name, secrets.filter((s) => plainStrings(c.raw).join("\n").includes(s))]).toEqual([c.name, []]);
    }
    expect(five.logs.join("\n")).not.toContain("PRIVATE KEY");
  });
});

test("1 → 3 is allowed (a dev node becomes an HA cluster), and the first node's membership stays as it was", async () => {
  const one = await stack("dev", 1);
  const three = await stack("dev", 3);
  expect(one.error).toBeUndefined();
  expect(three.error).toBeUndefined();
  const name = "madbase-dev-1-membership";
  expect(diffable(find(three, COMMAND, name))).toEqual(diffable(find(one, COMMAND, name)));
  expect(
    ofType(three, COMMAND)
      .map((c) => c.name)
      .sort(),
  ).toEqual([1, 2, 3].flatMap((n) => [`madbase-dev-${n}-config`, `madbase-dev-${n}-membership`]).sort());
});

test("3 → 1 with HA required is refused before anything is declared", async () => {
  const run = await stack("prod", 1);
  expect(run.error?.message).toMatch(
    /^madbase-state:nodeCount: 1 is not allowed; this stack requires HA \(requireHa: true\)/,
  );
  expect(run.resources).toHaveLength(0);
});

test("a malformed SSH key stops the program without showing it", async () => {
  const run = await runProgram({
    stack: "prod",
    config: stackFileConfig("prod"),
    secretConfig: { sshPrivateKey: "not-a-key-abcdef" },
  });
  expect(run.error?.message).toMatch(
    /^madbase-state:sshPrivateKey: "\(hidden\)" is not allowed; use the whole private key file/,
  );
  expect(run.error?.message).not.toContain("not-a-key-abcdef");
  expect(run.resources).toHaveLength(0);
});

test("without an SSH key no command is declared, and the operator is told what a count change would do", async () => {
  const run = await runProgram({ stack: "prod", config: stackFileConfig("prod") });
  expect(run.error).toBeUndefined();
  expect(ofType(run, COMMAND)).toEqual([]);
  expect(run.logs.join("\n")).toMatch(
    /sshPrivateKey is empty: .*add servers that never join the cluster and delete servers that never left it/,
  );
});
