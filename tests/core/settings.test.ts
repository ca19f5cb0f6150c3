import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { ConfigError, describeCluster, parseSettings, serverTypeFor, settingsFromStackFile } from "../../core";

const root = path.resolve(__dirname, "..", "..");
const stackFile = (stack: string) =>
  settingsFromStackFile(yaml.load(fs.readFileSync(path.join(root, `Pulumi.${stack}.yaml`), "utf8")));

describe("stack settings", () => {
  it("reads the dev stack as one cx21 node without HA", () => {
    const s = parseSettings("dev", stackFile("dev"));
    expect(s).toMatchObject({ nodeCount: 1, plan: "cx21", synchronousMode: false, protectNodes: false });
    expect(describeCluster(s).topology.highlyAvailable).toBe(false);
  });

  it("reads the prod stack as three protected cx31 nodes with synchronous replication", () => {
    const s = parseSettings("prod", stackFile("prod"));
    expect(s).toMatchObject({ nodeCount: 3, plan: "cx31", synchronousMode: true, protectNodes: true });
    expect(serverTypeFor(s)).toBe("cx43");
  });

  it("fills defaults for every optional key", () => {
    const s = parseSettings("dev", {});
    expect(s).toMatchObject({
      nodeCount: 3,
      plan: "cx21",
      location: "fsn1",
      networkCidr: "10.42.0.0/16",
      subnetCidr: "10.42.1.0/24",
      sshPublicKeys: [],
      adminCidrs: [],
      clientCidrs: [],
      failoverProfile: "norm",
      backupBucket: "madbase-state-dev",
      backupEndpoint: "fsn1.your-objectstorage.com",
      backupRegion: "fsn1",
    });
  });

  it("accepts values as Pulumi stores them: strings and JSON lists", () => {
    const s = parseSettings("prod", {
      nodeCount: "5",
      synchronousMode: "true",
      adminCidrs: '["203.0.113.4/32"]',
      volumeSizeGb: "80",
    });
    expect(s).toMatchObject({ nodeCount: 5, synchronousMode: true, adminCidrs: ["203.0.113.4/32"], volumeSizeGb: 80 });
  });

  it("lets serverType override the plan's type", () => {
    expect(serverTypeFor(parseSettings("prod", { plan: "cx31", serverType: "ccx23" }))).toBe("ccx23");
  });

  it.each<[Record<string, unknown>, RegExp]>([
    [{ nodeCount: 0 }, /^madbase-state:nodeCount: 0 is not allowed; use one of 1, 3, 5, 7/],
    [{ nodeCount: 2 }, /^madbase-state:nodeCount: 2 is not allowed; use one of 1, 3, 5, 7/],
    [{ nodeCount: 4 }, /^madbase-state:nodeCount: 4 is not allowed/],
    [{ nodeCount: 9 }, /^madbase-state:nodeCount: 9 is not allowed/],
    [{ nodeCount: 3.5 }, /^madbase-state:nodeCount: 3.5 is not allowed/],
    [{ nodeCount: "three" }, /^madbase-state:nodeCount: "three" is not allowed/],
    [{ plan: "cx51" }, /^madbase-state:plan: "cx51" is not allowed; use one of cx21, cx31, cx41$/],
    [{ location: "mars1" }, /^madbase-state:location: "mars1" is not allowed; use one of fsn1, nbg1/],
    [
      { failoverProfile: "turbo" },
      /^madbase-state:failoverProfile: "turbo" is not allowed; use one of fast, norm, safe$/,
    ],
    [{ synchronousMode: "yes" }, /^madbase-state:synchronousMode: "yes" is not allowed; use true or false$/],
    [
      { poolMode: "statement" },
      /^madbase-state:poolMode: "statement" is not allowed; use one of transaction, session$/,
    ],
    [{ volumeSizeGb: 5 }, /^madbase-state:volumeSizeGb: 5 is not allowed; use a whole number of GB from 10 to 10240/],
    [
      { adminCidrs: ["203.0.113.4/32", "everyone"] },
      /^madbase-state:adminCidrs.1: "everyone" is not allowed; use a list of .* CIDR form/,
    ],
    [{ adminCidrs: '["203.0.113.4/32","0.0.0.0/99"]' }, /^madbase-state:adminCidrs.1: "0.0.0.0\/99" is not allowed/],
    [
      { sshPublicKeys: ["hunter2"] },
      /^madbase-state:sshPublicKeys.0: "hunter2" is not allowed; use a list of OpenSSH public keys/,
    ],
    [
      { subnetCidr: "10.43.1.0/24" },
      /^madbase-state:subnetCidr: "10.43.1.0\/24" is not allowed; use a subnet inside networkCidr 10.42.0.0\/16$/,
    ],
    [
      { networkCidr: "1.2.3.0/24", subnetCidr: "1.2.3.0/24" },
      /^madbase-state:networkCidr: "1.2.3.0\/24" is not allowed; use a private range/,
    ],
    [{ serverType: "CX 33" }, /^madbase-state:serverType: "CX 33" is not allowed; use a Hetzner server type name/],
    [{ requireHa: true, nodeCount: 1 }, /^madbase-state:nodeCount: 1 is not allowed; this stack requires HA/],
    [{ nodecount: 3 }, /^madbase-state \(unknown key\): "nodecount" is not allowed; known keys are nodeCount, /],
  ])("rejects %p with a message naming key, value and what is allowed", (raw, message) => {
    let error: unknown;
    try {
      parseSettings("prod", raw);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
  });
});
