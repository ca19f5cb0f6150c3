/**
 * Stateful nodes are never replaced by a count or template change: what Pulumi sees for a node
 * that stays (resource names, inputs, options) is the same whatever nodeCount says, and the
 * options that guard servers and volumes are there and follow protectNodes.
 */
import { writtenFiles } from "../../core";
import { Declared, ProgramRun, T, ofType, runProgram, stackFileConfig } from "./harness";

const NODE_TYPES: string[] = [T.server, T.volume, T.volumeAttachment];

/**
 * What Pulumi diffs for a resource: its inputs and the options that decide replace/delete.
 * A server's user data is left out on purpose: it is in ignoreChanges (asserted below), because
 * node i's cloud-init lists the cluster as it was when the node was created and is never
 * re-applied; a grown node list reaches running nodes over SSH, not through this input.
 */
function diffable(r: Declared) {
  const inputs = { ...r.inputs };
  if (r.type === T.server) delete inputs.userData;
  const { dependencies: _ignored, ...options } = r.options;
  return { type: r.type, name: r.name, parent: r.options.parent, inputs, options };
}

function index(run: ProgramRun): Map<string, ReturnType<typeof diffable>> {
  return new Map(run.resources.map((r) => [`${r.type}::${r.name}`, diffable(r)]));
}

async function prodWith(nodeCount: number, extra: Record<string, string> = {}): Promise<ProgramRun> {
  const run = await runProgram({
    stack: "prod",
    config: {
      ...stackFileConfig("prod"),
      nodeCount: String(nodeCount),
      sshPublicKeys: '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey admin@host"]',
      ...extra,
    },
  });
  expect(run.error).toBeUndefined();
  return run;
}

describe("3 → 5 → 3", () => {
  let three: ProgramRun;
  let five: ProgramRun;
  beforeAll(async () => {
    three = await prodWith(3);
    five = await prodWith(5);
  });

  test("every resource of the 3-node stack is declared again, with the same name and inputs, at 5 nodes", () => {
    const before = index(three);
    const after = index(five);
    for (const [key, resource] of before) {
      expect(after.get(key)).toEqual(resource);
    }
  });

  test("the first three nodes' servers, volumes and attachments are among them", () => {
    const names = three.resources
      .filter((r) => NODE_TYPES.includes(r.type))
      .map((r) => r.name)
      .sort();
    expect(names).toEqual(
      [1, 2, 3]
        .flatMap((i) => [`madbase-prod-${i}`, `madbase-prod-${i}-data`, `madbase-prod-${i}-data-attachment`])
        .sort(),
    );
    // The inputs that would replace or move a server if they changed, spelled out.
    for (const server of ofType(three, T.server)) {
      const again = ofType(five, T.server).find((s) => s.name === server.name)!;
      for (const key of [
        "name",
        "serverType",
        "image",
        "location",
        "networks",
        "labels",
        "firewallIds",
        "placementGroupId",
        "publicNets",
        "sshKeys",
      ]) {
        expect([key, again.inputs[key]]).toEqual([key, server.inputs[key]]);
      }
    }
  });

  test("growing only adds resources for the new nodes", () => {
    const before = new Set(three.resources.map((r) => `${r.type}::${r.name}`));
    const added = five.resources.filter((r) => !before.has(`${r.type}::${r.name}`)).map((r) => r.name);
    // Per new node: component, server, volume, attachment; its key, certificate request and certificate.
    expect(
      added.every((name) =>
        /^madbase-prod-(tls-)?madbase-prod-[45]-(key|csr|cert)$|^madbase-prod-[45](-data(-attachment)?)?$/.test(name),
      ),
    ).toBe(true);
    expect(added).toHaveLength(2 * 7);
  });

  test("shrinking back to 3 declares exactly the 3-node stack again", async () => {
    const again = await prodWith(3);
    expect(index(again)).toEqual(index(three));
  });

  test("the new nodes' cloud-init knows all five members; the old nodes keep theirs (ignored input)", () => {
    const server4 = ofType(five, T.server).find((s) => s.name === "madbase-prod-4")!;
    const etcd = writtenFiles(server4.inputs.userData as string).find((f) => f.path === "/etc/default/etcd")!.content;
    const members = etcd.match(/^ETCD_INITIAL_CLUSTER=(.*)$/m)![1].split(",");
    expect(members.map((m) => m.replace(/^.*\/\/|:\d+$/g, ""))).toEqual([
      "10.42.1.10",
      "10.42.1.11",
      "10.42.1.12",
      "10.42.1.13",
      "10.42.1.14",
    ]);
    for (const server of ofType(five, T.server)) expect(server.options.ignoreChanges).toContain("userData");
  });
});

test("1 → 3 keeps the first node exactly as it was", async () => {
  const one = await prodWith(1, { requireHa: "false" });
  const three = await prodWith(3, { requireHa: "false" });
  const after = index(three);
  for (const r of one.resources.filter((r) => NODE_TYPES.includes(r.type))) {
    expect(after.get(`${r.type}::${r.name}`)).toEqual(diffable(r));
  }
});

describe("options that keep stateful nodes", () => {
  let prod: ProgramRun;
  let dev: ProgramRun;
  beforeAll(async () => {
    prod = await runProgram({ stack: "prod", config: stackFileConfig("prod") });
    dev = await runProgram({ stack: "dev", config: stackFileConfig("dev") });
  });

  test("servers ignore changes to user data, SSH keys and image, and are never deleted before a replacement", () => {
    for (const run of [prod, dev]) {
      for (const s of ofType(run, T.server)) {
        expect(s.options.ignoreChanges).toEqual(expect.arrayContaining(["userData", "sshKeys", "image"]));
        expect(s.options.deleteBeforeReplaceDefined).toBe(true);
        expect(s.options.deleteBeforeReplace).toBe(false);
        // Shut down cleanly before a deletion.
        expect(s.inputs.shutdownBeforeDeletion).toBe(true);
      }
    }
  });

  test("protect follows protectNodes: prod (true) protects servers, volumes, attachments, secrets and the network", () => {
    const guarded = [T.server, T.volume, T.volumeAttachment, T.password, T.network, T.subnet];
    for (const type of guarded) {
      const resources = ofType(prod, type);
      expect(resources.length).toBeGreaterThan(0);
      for (const r of resources) expect([type, r.name, r.options.protect]).toEqual([type, r.name, true]);
    }
    for (const s of ofType(prod, T.server))
      expect(s.inputs).toMatchObject({ deleteProtection: true, rebuildProtection: true });
    for (const v of ofType(prod, T.volume)) {
      expect(v.inputs.deleteProtection).toBe(true);
      // A protected stack keeps a removed node's data volume for a human to delete.
      expect(v.options.retainOnDelete).toBe(true);
    }
  });

  test("protect follows protectNodes: dev (false) protects nothing and cleans up its volumes", () => {
    for (const r of dev.resources)
      expect([r.type, r.name, r.options.protect ?? false]).toEqual([r.type, r.name, false]);
    for (const s of ofType(dev, T.server))
      expect(s.inputs).toMatchObject({ deleteProtection: false, rebuildProtection: false });
    for (const v of ofType(dev, T.volume)) expect(v.options.retainOnDelete ?? false).toBe(false);
  });

  test("overriding protectNodes on prod turns protection off", async () => {
    const run = await runProgram({ stack: "prod", config: { ...stackFileConfig("prod"), protectNodes: "false" } });
    for (const s of ofType(run, T.server)) expect(s.options.protect ?? false).toBe(false);
  });

  test("a volume attachment is deleted with its server, never detached from a running one first", () => {
    for (const a of ofType(prod, T.volumeAttachment)) {
      const server = a.name.replace(/-data-attachment$/, "");
      expect(a.options.deletedWith).toMatch(new RegExp(`hcloud:index/server:Server::${server}$`));
    }
  });

  test("a server depends on its volume, so the server goes first when both are deleted", () => {
    for (const s of ofType(prod, T.server)) {
      expect(s.options.dependencies.some((urn) => urn.endsWith(`::${s.name}-data`))).toBe(true);
    }
  });

  test("the placement group and every stack-wide resource are the same whatever the count", async () => {
    const five = await prodWith(5);
    const stackWide = (run: ProgramRun) =>
      run.resources
        .filter((r) => ![...NODE_TYPES, "madbase-state:index:DatabaseNode"].includes(r.type))
        // A node's own key and certificate come and go with it (tests/stack/certificates.test.ts).
        .filter((r) => !/-tls-madbase-prod-\d+-(key|csr|cert)$/.test(r.name))
        .map(diffable)
        .sort((a, b) => `${a.type}::${a.name}`.localeCompare(`${b.type}::${b.name}`));
    expect(stackWide(five)).toEqual(stackWide(await prodWith(3)));
  });
});
