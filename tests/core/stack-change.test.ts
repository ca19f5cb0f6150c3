/**
 * What a `pulumi up` may change on a deployed stack: every refusal names the key, the new value,
 * the old one and what to do instead; a first deployment and changes Hetzner makes in place pass.
 */
import {
  AppliedSettings,
  ConfigError,
  appliedSettings,
  checkStackChange,
  parseSettings,
  readAppliedSettings,
} from "../../core";

const applied = (raw: Record<string, unknown> = {}, sshPrivateKeySet = true, stack = "prod"): AppliedSettings =>
  appliedSettings(parseSettings(stack, { nodeCount: 3, ...raw }), { sshPrivateKeySet });

const previous = applied();

function refusal(next: AppliedSettings, prev: AppliedSettings = previous): ConfigError {
  try {
    checkStackChange(prev, next);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("the change was accepted");
}

test("appliedSettings records the resolved server type and nothing secret", () => {
  expect(applied({ plan: "cx31" })).toEqual({
    format: 1,
    nodeCount: 3,
    plan: "cx31",
    serverType: "cx43",
    serverTypeOverride: false,
    location: "fsn1",
    networkCidr: "10.42.0.0/16",
    subnetCidr: "10.42.1.0/24",
    failoverProfile: "norm",
    synchronousMode: false,
    volumeSizeGb: 40,
    backupBucket: "madbase-state-prod",
    backupEndpoint: "fsn1.your-objectstorage.com",
    backupRegion: "fsn1",
    sshPrivateKeySet: true,
    patroniClientCertificates: "required",
  });
  expect(applied({ serverType: "ccx23" })).toMatchObject({ serverType: "ccx23", serverTypeOverride: true });
});

describe("refused on a stack with nodes", () => {
  test.each([
    ["location", "nbg1"],
    ["networkCidr", "10.43.0.0/16"],
    ["subnetCidr", "10.42.2.0/24"],
  ])("a changed %s: Hetzner would replace servers; create a new stack and restore from backup", (field, value) => {
    const subnet = field === "networkCidr" ? { subnetCidr: "10.43.1.0/24" } : {};
    const e = refusal(applied({ [field]: value, ...subnet }));
    expect(e.field).toBe(`madbase-state:${field}`);
    expect(e.value).toBe(value);
    expect(e.message).toContain(`"${value}" is not allowed`);
    expect(e.message).toContain(JSON.stringify((previous as unknown as Record<string, unknown>)[field]));
    expect(e.message).toMatch(
      /replace .*create a new stack with the new value and restore it from this stack's backups/,
    );
  });

  test("a smaller volume: Hetzner volumes cannot shrink", () => {
    const e = refusal(applied({ volumeSizeGb: 20 }));
    expect(e.message).toBe(
      "madbase-state:volumeSizeGb: 20 is not allowed; this stack's 3 node(s) have 40 GB volumes and Hetzner volumes cannot shrink: use 40 or more (a bigger size grows them online)",
    );
  });

  test.each([
    ["backupBucket", "madbase-state-prod-2"],
    ["backupEndpoint", "nbg1.your-objectstorage.com"],
    ["backupRegion", "eu-central"],
  ])("a changed %s: a new repository; keep the old one, there is no migration yet", (field, value) => {
    const e = refusal(applied({ [field]: value }));
    expect(e.field).toBe(`madbase-state:${field}`);
    expect(e.value).toBe(value);
    expect(e.message).toMatch(/new pgBackRest stanza and a full backup/);
    expect(e.message).toMatch(/WAL would be archived to two repositories/);
    expect(e.message).toContain(
      `Keep ${field} ${JSON.stringify((previous as unknown as Record<string, unknown>)[field])}`,
    );
    expect(e.message).toMatch(/no in-place migration of the backups yet/);
  });

  test("the default endpoint follows location, so a location change is named as that, not as the endpoint", () => {
    expect(refusal(applied({ location: "hel1" })).field).toBe("madbase-state:location");
  });

  test("a nodeCount change without sshPrivateKey: servers would never join or leave", () => {
    const e = refusal(applied({ nodeCount: 5 }, false), applied({}, false));
    expect(e.field).toBe("madbase-state:nodeCount");
    expect(e.message).toMatch(
      /^madbase-state:nodeCount: 5 is not allowed; this stack has 3 node\(s\) and no sshPrivateKey/,
    );
    expect(e.message).toMatch(
      /never join the cluster.*without leaving etcd.*Set sshPrivateKey first.*or keep nodeCount 3/,
    );
  });

  test("a plan or serverType change without sshPrivateKey: the resize chain needs SSH", () => {
    const plan = refusal(applied({ plan: "cx41" }, false), applied({ plan: "cx31" }, false));
    expect(plan.field).toBe("madbase-state:plan");
    expect(plan.message).toMatch(
      /^madbase-state:plan: "cx41" is not allowed; this stack's 3 node\(s\) run "cx31" on "cx43"; .*one node at a time.*or keep plan "cx31"/,
    );
    const type = refusal(applied({ serverType: "ccx23" }, false), applied({}, false));
    expect(type.field).toBe("madbase-state:serverType");
    expect(type.message).toMatch(/or keep serverType "cx33"/);
  });

  test("dropping sshPrivateKey: the membership commands' deletion would run node-leave", () => {
    const e = refusal(applied({}, false));
    expect(e.field).toBe("madbase-state:sshPrivateKey");
    expect(e.message).toMatch(/deleting one runs node-leave on its node\. Set it again/);
  });
});

describe("accepted", () => {
  test("a first deployment, whatever it says", () => {
    expect(() =>
      checkStackChange(undefined, applied({ location: "sin", volumeSizeGb: 10, nodeCount: 7 }, false)),
    ).not.toThrow();
  });

  test("the same values", () => {
    expect(() => checkStackChange(previous, applied())).not.toThrow();
    expect(() => checkStackChange(applied({}, false), applied({}, false))).not.toThrow();
  });

  test("a bigger volume, a new count or plan with the key, a key added later", () => {
    expect(() => checkStackChange(previous, applied({ volumeSizeGb: 80 }))).not.toThrow();
    expect(() => checkStackChange(previous, applied({ nodeCount: 5 }))).not.toThrow();
    expect(() => checkStackChange(previous, applied({ plan: "cx41" }))).not.toThrow();
    expect(() => checkStackChange(applied({}, false), applied({ nodeCount: 5 }, true))).not.toThrow();
  });

  test("settings that converge in place are not compared", () => {
    const next = applied({
      failoverProfile: "fast",
      synchronousMode: true,
      adminCidrs: ["203.0.113.4/32"],
      backupRetentionFull: 8,
      protectNodes: true,
    });
    expect(() => checkStackChange(previous, next)).not.toThrow();
  });
});

describe("reading the previous deployment's record", () => {
  test("a record round-trips through JSON", () => {
    expect(readAppliedSettings(JSON.parse(JSON.stringify(previous)))).toEqual({ previous });
  });

  test("a record from before patroniClientCertificates is still compared (the field is optional)", () => {
    const { patroniClientCertificates, ...older } = previous;
    expect(patroniClientCertificates).toBe("required");
    expect(readAppliedSettings(older)).toEqual({ previous: older });
  });

  test("no record (first up, or an older version) or another format is not compared, with a reason", () => {
    for (const value of [
      undefined,
      null,
      "x",
      [],
      {},
      { ...previous, format: 2 },
      { ...previous, location: 3 },
      { ...previous, patroniClientCertificates: "sometimes" },
    ]) {
      const read = readAppliedSettings(value);
      expect(read.previous).toBeUndefined();
      expect(read.reason).toEqual(expect.any(String));
    }
  });
});
