/**
 * Every converging key changes only the resources that apply it: a new failover profile, say,
 * changes the nodes' config-refresh commands and nothing else (no server, volume, membership or
 * resize), so `pulumi up` runs exactly those, one node at a time.
 */
import { Declared, ProgramRun, T, runProgram, stackFileConfig } from "./harness";
import { FIXTURE_SSH_PRIVATE_KEY, FIXTURE_SSH_PUBLIC_KEY } from "../support/fixtures";

const SSH_KEY = FIXTURE_SSH_PRIVATE_KEY;
const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyA admin@host";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyB other@host";
const BASE = {
  nodeCount: "3",
  sshPublicKeys: JSON.stringify([KEY_A, FIXTURE_SSH_PUBLIC_KEY]),
  adminCidrs: '["198.51.100.7/32"]',
};

function up(config: Record<string, string> = {}, previousOutputs?: Record<string, unknown>): Promise<ProgramRun> {
  return runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), ...BASE, ...config },
    secretConfig: { sshPrivateKey: SSH_KEY },
    previousOutputs,
  });
}

/** What Pulumi diffs for a resource: its inputs without the ones it ignores, and its options. */
function diffable(r: Declared) {
  const inputs = { ...r.inputs };
  for (const key of r.options.ignoreChanges) delete inputs[key];
  const { dependencies: _dependencies, ...options } = r.options;
  return JSON.stringify({ inputs, options });
}

/** The resources (type and name) whose diffable state differs between two runs, sorted. */
function changed(a: ProgramRun, b: ProgramRun): string[] {
  const key = (r: Declared) => `${r.type} ${r.name}`;
  const before = new Map(a.resources.map((r) => [key(r), diffable(r)]));
  const after = new Map(b.resources.map((r) => [key(r), diffable(r)]));
  const names = new Set([...before.keys(), ...after.keys()]);
  return [...names].filter((n) => before.get(n) !== after.get(n)).sort();
}

const COMMAND = "command:remote:Command";
const configs = [1, 2, 3].map((n) => `${COMMAND} madbase-prod-${n}-config`);

let base: ProgramRun;
beforeAll(async () => {
  base = await up();
  expect(base.error).toBeUndefined();
});

test.each([
  ["failoverProfile", { failoverProfile: "fast" }],
  ["synchronousMode", { synchronousMode: "false" }],
  ["backupRetentionFull", { backupRetentionFull: "8" }],
])("%s changes the nodes' config refreshes and nothing else", async (_key, change) => {
  const run = await up(change);
  expect(run.error).toBeUndefined();
  expect(changed(base, run)).toEqual(configs);
});

test("sshPublicKeys changes the refreshes (root's keys) and Hetzner's key objects, never a server", async () => {
  const run = await up({ sshPublicKeys: JSON.stringify([KEY_A, FIXTURE_SSH_PUBLIC_KEY, KEY_B]) });
  expect(run.error).toBeUndefined();
  const names = changed(base, run);
  expect(names.filter((n) => !n.startsWith(T.sshKey))).toEqual(configs);
  expect(names.some((n) => n.startsWith(T.sshKey))).toBe(true);
  const refresh = run.resources.find((r) => r.type === COMMAND && r.name === "madbase-prod-1-config")!;
  expect(refresh.inputs.stdin).toContain(
    Buffer.from(`${KEY_A}\n${FIXTURE_SSH_PUBLIC_KEY}\n${KEY_B}\n`).toString("base64"),
  );
});

test("plan changes the resize chain's target and the refreshes (memory, max_connections), never a server", async () => {
  const run = await up({ plan: "cx41" });
  expect(run.error).toBeUndefined();
  expect(changed(base, run)).toEqual(
    [...[1, 2, 3].map((n) => `command:local:Command madbase-prod-${n}-resize`), ...configs].sort(),
  );
});

test("adminCidrs changes the firewall only", async () => {
  const run = await up({ adminCidrs: '["198.51.100.8/32"]' });
  expect(run.error).toBeUndefined();
  expect(changed(base, run)).toEqual([`${T.firewall} madbase-prod-firewall`]);
});

test("a stack from before Patroni asked for client certificates: the next up prepares and says so, the one after requires, both through the refreshes only", async () => {
  const refreshes = (run: ProgramRun) =>
    run.resources.filter((r) => r.type === COMMAND && r.name.endsWith("-config")).map((r) => String(r.inputs.stdin));
  // A new stack requires them from the first boot, and its refreshes keep it so.
  expect(base.outputs.appliedSettings.value).toMatchObject({ patroniClientCertificates: "required" });
  for (const script of refreshes(base)) expect(script).toMatch(/^ {2}verify_client: required$/m);

  const { patroniClientCertificates: _mode, ...older } = base.outputs.appliedSettings.value as Record<string, unknown>;
  const prepared = await up({}, { appliedSettings: older });
  expect(prepared.error).toBeUndefined();
  expect(prepared.outputs.appliedSettings.value).toMatchObject({ patroniClientCertificates: "prepared" });
  expect(prepared.logs.join("\n")).toMatch(/warn: .*Run `pulumi up` again after this one/);
  for (const script of refreshes(prepared)) {
    expect(script).not.toMatch(/verify_client/);
    expect(script).toMatch(/crt "@node\/node"/);
  }
  expect(changed(base, prepared)).toEqual(configs);

  const required = await up({}, { appliedSettings: prepared.outputs.appliedSettings.value });
  expect(required.error).toBeUndefined();
  expect(required.outputs.appliedSettings.value).toMatchObject({ patroniClientCertificates: "required" });
  expect(required.logs.join("\n")).not.toMatch(/Run `pulumi up` again/);
  for (const script of refreshes(required)) expect(script).toMatch(/^ {2}verify_client: required$/m);
  expect(changed(prepared, required)).toEqual(configs);
});

test("appliedSettings waits for every node's config refresh: unknown while they are (a preview), so a failed refresh leaves the last record", async () => {
  // Pulumi keeps the outputs of a failed update that resolved: a record made before the refreshes
  // ran would say "prepared" for a node whose HAProxy never got the node's pair.
  const preview = await runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), ...BASE },
    secretConfig: { sshPrivateKey: SSH_KEY },
    preview: true,
  });
  expect(preview.error).toBeUndefined();
  expect(preview.resources.filter((r) => r.type === COMMAND && r.name.endsWith("-config"))).toHaveLength(3);
  expect(preview.outputs.appliedSettings.known).toBe(false);
  // Once they have run, it is the plain record.
  expect(base.outputs.appliedSettings).toMatchObject({ known: true, secret: false });
});
