/**
 * Secrets: generated with @pulumi/random, carried as Pulumi secrets into user data and the
 * connection-string outputs, and never visible in a plain output, a snapshot or a log line.
 */
import { PASSWORD_LENGTH } from "../../components/clusterSecrets";
import { GENERATED_SECRET_NAMES, expandUserData } from "../../core";
import {
  ProgramRun,
  T,
  isSecretEnvelope,
  maskSecrets,
  ofType,
  plainStrings,
  runProgram,
  stackFileConfig,
} from "./harness";

const SECRET_OUTPUTS = ["databaseUrl", "databaseReadUrl", "redisUrl", "haproxyStatsPassword", "operatorPrivateKey"];
const S3 = { backupAccessKey: "HZ1ACCESSKEYEXAMPLE0", backupSecretKey: "hZ2secretKeyExampleValue0123456789abcdef" };

function leaks(text: string, secrets: string[]): string[] {
  return secrets.filter((s) => text.includes(s));
}

// A protected stack refuses to start without S3 keys: "without" is an unprotected prod-shaped stack.
describe.each([
  ["without S3 keys (unprotected)", {}, { protectNodes: "false" }],
  ["with S3 keys", S3, {}],
])("prod %s", (_label, secretConfig: Record<string, string>, extra: Record<string, string>) => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram({
      stack: "prod",
      config: { ...stackFileConfig("prod"), nodeCount: "3", ...extra },
      secretConfig,
    });
    expect(run.error).toBeUndefined();
  });

  test("every generated secret is a RandomPassword of 32+ letters and digits", () => {
    const passwords = ofType(run, T.password);
    expect(passwords).toHaveLength(GENERATED_SECRET_NAMES.length);
    for (const p of passwords) expect(p.inputs).toMatchObject({ special: false, length: PASSWORD_LENGTH });
    expect(PASSWORD_LENGTH).toBeGreaterThanOrEqual(32);
    // The harness saw every generated value (and the S3 keys, when set), and a private key per
    // node, the CA's and the operator's.
    expect(run.secretValues.length).toBe(GENERATED_SECRET_NAMES.length + Object.keys(secretConfig).length + 3 + 1 + 1);
  });

  test("connection strings, the stats password and the operator's key are secret outputs", () => {
    for (const key of SECRET_OUTPUTS) {
      expect([key, run.outputs[key].secret]).toEqual([key, true]);
      expect(run.outputs[key].known).toBe(true);
    }
  });

  test("no plain output holds a secret value", () => {
    const plain = Object.entries(run.outputs).filter(([, o]) => !o.secret);
    expect(plain.map(([k]) => k).sort()).toEqual([
      "alertRules",
      "appliedSettings",
      "backupStore",
      "caCertificate",
      "entryPoint",
      "haproxyStatsUrl",
      "haproxyStatsUser",
      "nodes",
      "operatorCertificate",
      "patroniScope",
      "prometheusConfig",
    ]);
    expect(leaks(JSON.stringify(Object.fromEntries(plain.map(([k, o]) => [k, o.value]))), run.secretValues)).toEqual(
      [],
    );
    expect(run.outputs.haproxyStatsUrl.value).not.toMatch(/@/);
  });

  test("each server's user data is sent as a secret, and it does hold the secrets", () => {
    for (const s of ofType(run, T.server)) {
      expect(isSecretEnvelope(s.raw.userData)).toBe(true);
      // Unpacked: most files travel compressed.
      const userData = expandUserData(s.inputs.userData as string);
      // Not a vacuous check: the cloud-init really carries the generated passwords.
      expect(leaks(userData, run.secretValues).length).toBeGreaterThanOrEqual(GENERATED_SECRET_NAMES.length);
    }
  });

  test("no resource input carries a secret value outside a secret envelope", () => {
    for (const r of run.resources) {
      expect([r.type, r.name, leaks(plainStrings(r.raw).join("\n"), run.secretValues)]).toEqual([r.type, r.name, []]);
    }
  });

  test("nothing logged holds a secret value", () => {
    expect(leaks(run.logs.join("\n"), run.secretValues)).toEqual([]);
  });
});

test("the declared prod stack, as a snapshot, holds no secret value", async () => {
  const run = await runProgram({ stack: "prod", config: stackFileConfig("prod"), secretConfig: S3 });
  // Every resource with its inputs as the engine gets them, secrets shown only as [secret], and
  // the options that guard it: a reviewable inventory of what `pulumi up` declares.
  const inventory = run.resources
    .map((r) => ({
      resource: `${r.type}::${r.name}`,
      inputs: maskSecrets(r.raw),
      options: {
        protect: r.options.protect ?? false,
        ignoreChanges: r.options.ignoreChanges,
        retainOnDelete: r.options.retainOnDelete ?? false,
      },
    }))
    .sort((a, b) => a.resource.localeCompare(b.resource));
  expect(run.secretValues.length).toBeGreaterThan(0);
  expect(leaks(JSON.stringify(inventory), run.secretValues)).toEqual([]);
  expect(inventory).toMatchSnapshot();
});

test("without S3 keys a dev stack's nodes get named placeholders, archive nothing, and the operator is warned", async () => {
  const run = await runProgram({ stack: "dev", config: stackFileConfig("dev") });
  expect(run.error).toBeUndefined();
  const userData = expandUserData(ofType(run, T.server)[0].inputs.userData as string);
  expect(userData).toContain("PLACEHOLDER-s3AccessKey-not-a-secret");
  expect(userData).toContain('archive_command: "/bin/true"');
  expect(run.logs.join("\n")).toMatch(
    /backupAccessKey\/backupSecretKey are not set: WAL archiving is OFF on stack dev/,
  );
});

test("a protected stack refuses to start without S3 keys, before any resource", async () => {
  const run = await runProgram({ stack: "prod", config: stackFileConfig("prod"), withoutBackupKeys: true });
  expect(run.error?.message).toMatch(
    /^madbase-state:backupAccessKey: .*stack prod is protected \(protectNodes: true\) and must back up/,
  );
  expect(run.resources).toHaveLength(0);
});

test("with S3 keys the nodes get them (as secrets) and nobody is warned", async () => {
  const run = await runProgram({ stack: "prod", config: stackFileConfig("prod"), secretConfig: S3 });
  const server = ofType(run, T.server)[0];
  expect(expandUserData(server.inputs.userData)).toContain(S3.backupSecretKey);
  expect(expandUserData(server.inputs.userData)).not.toContain("PLACEHOLDER");
  expect(run.logs.join("\n")).not.toMatch(/not set/);
});

describe("S3 keys that cannot be used stop the program, without showing them", () => {
  test("only one of the two keys", async () => {
    const run = await runProgram({
      stack: "prod",
      config: stackFileConfig("prod"),
      secretConfig: { backupAccessKey: S3.backupAccessKey },
    });
    expect(run.error?.message).toMatch(/^madbase-state:backupSecretKey: \(missing\) is not allowed; set both S3 keys/);
    expect(run.resources).toHaveLength(0);
  });

  test("a key with characters the rendered files cannot carry", async () => {
    const bad = "abc/def+ghi==jklmnop";
    const run = await runProgram({
      stack: "prod",
      config: stackFileConfig("prod"),
      secretConfig: { ...S3, backupSecretKey: bad },
    });
    expect(run.error?.message).toMatch(
      /^madbase-state:backupSecretKey: "\(hidden\)" is not allowed; use 8-128 characters/,
    );
    expect(run.error?.message).not.toContain(bad);
    expect(run.logs.join("\n")).not.toContain(bad);
    expect(run.resources).toHaveLength(0);
  });
});
