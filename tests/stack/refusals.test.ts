/**
 * Refusals before any resource changes: the program records the settings it deployed with as a
 * plain output, reads the last deployment's copy back through a StackReference to its own stack,
 * and a change the running stack cannot take fails the program, naming the key, the old and the
 * new value, before a single resource is declared. A first `up`, a stack deployed by an older
 * version (no such output) and changes that converge in place declare as before.
 */
import { ORGANIZATION, PROJECT, ProgramRun, T, ofType, runProgram, stackFileConfig } from "./harness";
import { FIXTURE_SSH_PRIVATE_KEY, FIXTURE_SSH_PUBLIC_KEY } from "../support/fixtures";

const SSH_KEY = FIXTURE_SSH_PRIVATE_KEY;
const BASE = {
  sshPublicKeys: JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@host", FIXTURE_SSH_PUBLIC_KEY]),
  adminCidrs: '["198.51.100.7/32"]',
};

interface Deploy {
  config?: Record<string, string>;
  key?: boolean;
  after?: ProgramRun;
  preview?: boolean;
}

/** One `up` of prod; `after` hands it the outputs of an earlier run as its previous deployment. */
function deploy({ config = {}, key = true, after, preview }: Deploy): Promise<ProgramRun> {
  const previous = after && {
    previousOutputs: Object.fromEntries(Object.entries(after.outputs).map(([k, v]) => [k, v.value])),
    secretOutputs: Object.entries(after.outputs)
      .filter(([, v]) => v.secret)
      .map(([k]) => k),
  };
  return runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), ...BASE, ...config },
    secretConfig: key ? { sshPrivateKey: SSH_KEY } : {},
    preview,
    ...previous,
  });
}

let first: ProgramRun;
let firstNoKey: ProgramRun;
beforeAll(async () => {
  [first, firstNoKey] = [await deploy({}), await deploy({ key: false })];
  for (const run of [first, firstNoKey]) expect(run.error).toBeUndefined();
});

test("the program reads its own stack's previous outputs, and records appliedSettings as a plain output", () => {
  expect(first.stackReferences).toEqual([`${ORGANIZATION}/${PROJECT}/prod`]);
  expect(first.outputs.appliedSettings).toEqual({
    known: true,
    secret: false,
    value: expect.objectContaining({
      format: 1,
      nodeCount: 3,
      plan: "cx31",
      serverType: "cx43",
      location: "fsn1",
      volumeSizeGb: 40,
      sshPrivateKeySet: true,
    }),
  });
  expect(firstNoKey.outputs.appliedSettings.value).toMatchObject({ sshPrivateKeySet: false });
  // No secret inside it either.
  const text = JSON.stringify(first.outputs.appliedSettings.value);
  for (const s of first.secretValues) expect(text).not.toContain(s);
  // A first up says why nothing was compared.
  expect(first.logs.join("\n")).toMatch(
    /Nothing to compare this update with \(no previous deployment recorded appliedSettings\)/,
  );
});

const refused: [string, Partial<Deploy>, RegExp][] = [
  [
    "location",
    { config: { location: "nbg1" } },
    /^madbase-state:location: "nbg1" is not allowed; .*"fsn1".*create a new stack with the new value and restore it from this stack's backups/,
  ],
  [
    "networkCidr",
    { config: { networkCidr: "10.50.0.0/16", subnetCidr: "10.50.1.0/24" } },
    /^madbase-state:networkCidr: "10\.50\.0\.0\/16" is not allowed; .*"10\.42\.0\.0\/16".*create a new stack/,
  ],
  [
    "subnetCidr",
    { config: { subnetCidr: "10.42.2.0/24" } },
    /^madbase-state:subnetCidr: "10\.42\.2\.0\/24" is not allowed; .*"10\.42\.1\.0\/24"/,
  ],
  [
    "a smaller volume",
    { config: { volumeSizeGb: "20" } },
    /^madbase-state:volumeSizeGb: 20 is not allowed; .*40 GB volumes and Hetzner volumes cannot shrink/,
  ],
  [
    "backupBucket",
    { config: { backupBucket: "another-bucket" } },
    /^madbase-state:backupBucket: "another-bucket" is not allowed; .*"madbase-state-prod".*new pgBackRest stanza.*no in-place migration/,
  ],
  [
    "backupEndpoint",
    { config: { backupEndpoint: "s3.example.com" } },
    /^madbase-state:backupEndpoint: "s3\.example\.com" is not allowed; .*WAL would be archived to two repositories/,
  ],
  ["a dropped sshPrivateKey", { key: false }, /^madbase-state:sshPrivateKey: \(missing\) is not allowed; .*node-leave/],
];

describe.each(refused)("refused: %s", (_what, change, message) => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await deploy({ ...change, after: first });
  });
  test("fails the program with its message and declares nothing", () => {
    expect(run.error?.message).toMatch(message);
    expect(run.resources).toEqual([]);
  });
});

describe("refused without sshPrivateKey on a stack with nodes", () => {
  test.each([
    [
      "nodeCount",
      { nodeCount: "5" },
      /^madbase-state:nodeCount: 5 is not allowed; this stack has 3 node\(s\) and no sshPrivateKey/,
    ],
    ["plan", { plan: "cx41" }, /^madbase-state:plan: "cx41" is not allowed; .*one node at a time.*or keep plan "cx31"/],
    [
      "serverType",
      { serverType: "ccx33" },
      /^madbase-state:serverType: "ccx33" is not allowed; .*or keep serverType "cx43"/,
    ],
  ])("%s", async (_what, config, message) => {
    const run = await deploy({ config, key: false, after: firstNoKey });
    expect(run.error?.message).toMatch(message);
    expect(run.resources).toEqual([]);
    // The first-deployment warning is not repeated on a running stack: the refusal says it.
    expect(run.logs.join("\n")).not.toMatch(/sshPrivateKey is empty/);
  });
});

test("a refusal stops a preview too, before anything is declared", async () => {
  const run = await deploy({ config: { location: "hel1" }, after: first, preview: true });
  expect(run.error?.message).toMatch(/^madbase-state:location: "hel1" is not allowed/);
  expect(run.resources).toEqual([]);
});

describe("accepted", () => {
  test.each([
    ["the same settings", {}],
    ["a bigger volume", { volumeSizeGb: "80" }],
    [
      "settings that converge in place",
      { failoverProfile: "fast", backupRetentionFull: "8", clientCidrs: '["10.9.0.0/16"]' },
    ],
    ["a new count, with the key", { nodeCount: "5" }],
  ])("%s: declares the stack", async (_what, config) => {
    const run = await deploy({ config, after: first });
    expect(run.error).toBeUndefined();
    expect(ofType(run, T.server).length).toBeGreaterThanOrEqual(3);
  });

  test("a stack deployed by an older version (no appliedSettings output) is not refused", async () => {
    const older = {
      ...first,
      outputs: Object.fromEntries(Object.entries(first.outputs).filter(([k]) => k !== "appliedSettings")),
    };
    const run = await deploy({ config: { location: "nbg1" }, after: older });
    expect(run.error).toBeUndefined();
    expect(ofType(run, T.server)).toHaveLength(3);
    expect(run.logs.join("\n")).toMatch(/Nothing to compare this update with/);
  });

  test("a first deployment without the key still warns about what will be refused later", () => {
    expect(firstNoKey.logs.join("\n")).toMatch(/sshPrivateKey is empty: .*will be refused/);
  });
});

test("sshPublicKeys without sshPrivateKey's own public key is refused: Pulumi would lock itself out of every node", async () => {
  const run = await runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), sshPublicKeys: '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@host"]' },
    secretConfig: { sshPrivateKey: SSH_KEY },
  });
  expect(run.error?.message).toMatch(
    /^madbase-state:sshPublicKeys: .*none of them sshPrivateKey's .* is not allowed; keep the public key of sshPrivateKey in the list/,
  );
  expect(run.resources).toHaveLength(0);
  expect(run.error?.message).not.toContain("PRIVATE KEY");
});
