/**
 * A config value the stack cannot use stops the program before any resource is declared, with a
 * message naming the key, the value given and what is allowed. Values arrive as Pulumi passes
 * them: strings, with lists as JSON text.
 */
import { rawSettings } from "../../components/stackConfig";
import { FIXTURE_SSH_PRIVATE_KEY, FIXTURE_SSH_PUBLIC_KEY } from "../support/fixtures";
import { T, isSecretEnvelope, ofType, runProgram, stackFileConfig } from "./harness";

const NODE_COUNT_RULE = "use one of 1, 3, 5, 7";
const CIDR_RULE = 'in CIDR form, such as ["203.0.113.4/32"]';
const SSH_RULE = 'use a list of OpenSSH public keys, such as ["ssh-ed25519 AAAA... you@laptop"]';

const cases: [string, Record<string, string>, string][] = [
  ["nodeCount 0", { nodeCount: "0" }, `madbase-state:nodeCount: "0" is not allowed; ${NODE_COUNT_RULE}`],
  ["nodeCount 2", { nodeCount: "2" }, `madbase-state:nodeCount: "2" is not allowed; ${NODE_COUNT_RULE}`],
  ["nodeCount 4", { nodeCount: "4" }, `madbase-state:nodeCount: "4" is not allowed; ${NODE_COUNT_RULE}`],
  ["nodeCount 9", { nodeCount: "9" }, `madbase-state:nodeCount: "9" is not allowed; ${NODE_COUNT_RULE}`],
  ["nodeCount abc", { nodeCount: "abc" }, `madbase-state:nodeCount: "abc" is not allowed; ${NODE_COUNT_RULE}`],
  ["nodeCount 3.5", { nodeCount: "3.5" }, `madbase-state:nodeCount: "3.5" is not allowed; ${NODE_COUNT_RULE}`],
  [
    "nodeCount 1 on a stack that requires HA",
    { nodeCount: "1" },
    "madbase-state:nodeCount: 1 is not allowed; this stack requires HA",
  ],
  ["unknown plan", { plan: "cx99" }, 'madbase-state:plan: "cx99" is not allowed; use one of cx21, cx31, cx41'],
  [
    "bad server type",
    { serverType: "CX 33" },
    'madbase-state:serverType: "CX 33" is not allowed; use a Hetzner server type name',
  ],
  [
    "bad admin CIDR",
    { adminCidrs: '["10.0.0.300/32"]' },
    `madbase-state:adminCidrs.0: "10.0.0.300/32" is not allowed; use a list of admin networks allowed to SSH in ${CIDR_RULE}`,
  ],
  [
    "admin CIDRs not a list",
    { adminCidrs: "198.51.100.0/24" },
    'madbase-state:adminCidrs: "198.51.100.0/24" is not allowed; use a list of admin networks',
  ],
  [
    "bad client CIDR",
    { clientCidrs: '["203.0.113.0/24", "example.com"]' },
    'madbase-state:clientCidrs.1: "example.com" is not allowed; use a list of client networks',
  ],
  [
    "client CIDR open to the world",
    { clientCidrs: '["0.0.0.0/0"]' },
    'madbase-state:clientCidrs.0: "0.0.0.0/0" is not allowed; the database and Redis entry ports must not face the whole Internet',
  ],
  [
    "network CIDR not a CIDR",
    { networkCidr: "banana" },
    'madbase-state:networkCidr: "banana" is not allowed; use an IPv4 network in CIDR form',
  ],
  [
    "public network range",
    { networkCidr: "8.8.0.0/16", subnetCidr: "8.8.1.0/24" },
    'madbase-state:networkCidr: "8.8.0.0/16" is not allowed; use a private range',
  ],
  [
    "subnet outside the network",
    { subnetCidr: "10.43.1.0/24" },
    'madbase-state:subnetCidr: "10.43.1.0/24" is not allowed; use a subnet inside networkCidr 10.42.0.0/16',
  ],
  [
    "subnet too small for 7 nodes",
    { subnetCidr: "10.42.1.0/29" },
    'subnetCidr: "10.42.1.0/29" is not allowed; the subnet must hold host numbers up to 16',
  ],
  [
    "bad location",
    { location: "fra1" },
    'madbase-state:location: "fra1" is not allowed; use one of fsn1, nbg1, hel1, ash, hil, sin',
  ],
  ["bad boolean", { protectNodes: "yes" }, 'madbase-state:protectNodes: "yes" is not allowed; use true or false'],
  [
    "bad boolean (synchronousMode)",
    { synchronousMode: "1" },
    'madbase-state:synchronousMode: "1" is not allowed; use true or false',
  ],
  [
    "unknown key",
    { nodecount: "3" },
    'madbase-state (unknown key): "nodecount" is not allowed; known keys are nodeCount, plan',
  ],
  [
    "bad ssh key",
    { sshPublicKeys: '["ssh-dss AAAAB3NzaC1kc3M old@host"]' },
    `madbase-state:sshPublicKeys.0: "ssh-dss AAAAB3NzaC1kc3M old@host" is not allowed; ${SSH_RULE}`,
  ],
  [
    "ssh key not in a list",
    { sshPublicKeys: "ssh-ed25519 AAAAC3Nza me@host" },
    `madbase-state:sshPublicKeys: "ssh-ed25519 AAAAC3Nza me@host" is not allowed; ${SSH_RULE}`,
  ],
  [
    "volume too small",
    { volumeSizeGb: "5" },
    'madbase-state:volumeSizeGb: "5" is not allowed; use a whole number of GB from 10 to 10240',
  ],
  [
    "unknown failover profile",
    { failoverProfile: "turbo" },
    'madbase-state:failoverProfile: "turbo" is not allowed; use one of fast, norm, safe',
  ],
];

describe.each(cases)("%s", (_label, override, message) => {
  test("fails with its message and declares nothing", async () => {
    const run = await runProgram({ stack: "prod", config: { ...stackFileConfig("prod"), ...override } });
    expect(run.error?.name).toBe("ConfigError");
    // The message begins with key, value and rule (the rule's explanation may go on after it).
    expect(run.error?.message.slice(0, message.length)).toBe(message);
    expect(run.resources).toHaveLength(0);
    expect(run.outputs).toEqual({});
  });
});

test("the same stack with valid values declares resources (the cases above fail for their value alone)", async () => {
  const run = await runProgram({
    stack: "prod",
    config: {
      ...stackFileConfig("prod"),
      nodeCount: "5",
      plan: "cx41",
      serverType: "ccx33",
      adminCidrs: '["10.0.0.30/32"]',
      clientCidrs: '["203.0.113.0/24"]',
      location: "hel1",
      protectNodes: "false",
      sshPublicKeys: '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey me@host"]',
      volumeSizeGb: "100",
      failoverProfile: "fast",
    },
  });
  expect(run.error).toBeUndefined();
  expect(run.resources.length).toBeGreaterThan(10);
});

test("a stack name the topology cannot use is refused too", async () => {
  const run = await runProgram({ stack: "Prod_EU", config: stackFileConfig("prod") });
  expect(run.error?.message).toMatch(/^stack: "Prod_EU" is not allowed; use lower-case letters, digits and dashes/);
  expect(run.resources).toHaveLength(0);
});

describe("secret keys", () => {
  const SECRETS = {
    backupAccessKey: "HZ1ACCESSKEYEXAMPLE0",
    backupSecretKey: "hZ2secretKeyExampleValue0123456789abcdef",
    sshPrivateKey: FIXTURE_SSH_PRIVATE_KEY,
  };

  test("all three set as Pulumi secrets: read as before, none taken for a setting", async () => {
    const run = await runProgram({
      stack: "prod",
      config: { ...stackFileConfig("prod"), sshPublicKeys: JSON.stringify([FIXTURE_SSH_PUBLIC_KEY]) },
      secretConfig: SECRETS,
    });
    expect(run.error).toBeUndefined();
    // sshPrivateKey: the membership commands; the S3 keys: the bucket's provider, as secrets.
    expect(ofType(run, "command:remote:Command").map((c) => c.name)).toContain("madbase-prod-1-membership");
    const [provider] = ofType(run, "pulumi:providers:aws");
    expect(isSecretEnvelope(provider.raw.accessKey)).toBe(true);
    expect(isSecretEnvelope(provider.raw.secretKey)).toBe(true);
    expect(ofType(run, T.server)).toHaveLength(3);
  });

  test("a misspelt secret key is refused as unknown, naming the key and the secret keys, never the value", async () => {
    const run = await runProgram({
      stack: "prod",
      config: stackFileConfig("prod"),
      secretConfig: {
        backupAccessKey: SECRETS.backupAccessKey,
        backupSecretKey: SECRETS.backupSecretKey,
        sshPrivatekey: SECRETS.sshPrivateKey,
      },
    });
    expect(run.error?.message).toMatch(
      /^madbase-state \(unknown key\): "sshPrivatekey" is not allowed; known keys are nodeCount, .*and the secrets backupAccessKey, backupSecretKey, sshPrivateKey/,
    );
    expect(run.error?.message).not.toContain("PRIVATE KEY");
    expect(run.resources).toHaveLength(0);
  });

  test("rawSettings leaves the secret keys out and parses lists, as Pulumi passes them", () => {
    expect(
      rawSettings({
        "madbase-state:nodeCount": "5",
        "madbase-state:adminCidrs": '["203.0.113.4/32"]',
        "madbase-state:backupAccessKey": SECRETS.backupAccessKey,
        "madbase-state:backupSecretKey": SECRETS.backupSecretKey,
        "madbase-state:sshPrivateKey": SECRETS.sshPrivateKey,
        "hcloud:token": "not-ours",
      }),
    ).toEqual({ nodeCount: "5", adminCidrs: ["203.0.113.4/32"] });
  });
});
