/**
 * What `pulumi up` declares for the committed stacks and for larger counts: servers at fixed
 * private addresses with their firewall, placement group, volume and cloud-init; the entry point.
 */
import * as ipaddr from "ipaddr.js";
import * as yaml from "js-yaml";
import { writtenFiles } from "../../core";
import { Declared, ProgramRun, T, ofType, runProgram, stackFileConfig } from "./harness";

const USER_DATA_LIMIT = 32 * 1024;

function byName(run: ProgramRun, type: string, name: string): Declared {
  const found = run.resources.find((r) => r.type === type && r.name === name);
  if (!found)
    throw new Error(
      `no ${type} named ${name}; declared: ${run.resources.map((r) => `${r.type} ${r.name}`).join(", ")}`,
    );
  return found;
}

describe("committed stacks", () => {
  let dev: ProgramRun;
  let prod: ProgramRun;
  beforeAll(async () => {
    dev = await runProgram({ stack: "dev", config: stackFileConfig("dev") });
    prod = await runProgram({ stack: "prod", config: stackFileConfig("prod") });
  });

  test("dev declares one server and no load balancer; its entry point is the node", () => {
    expect(dev.error).toBeUndefined();
    expect(ofType(dev, T.server).map((s) => s.name)).toEqual(["madbase-dev-1"]);
    expect(ofType(dev, T.loadBalancer)).toHaveLength(0);
    expect(dev.outputs.entryPoint.value).toMatchObject({ kind: "node", host: "10.42.1.10" });
  });

  test("prod declares three servers behind a private load balancer", () => {
    expect(prod.error).toBeUndefined();
    expect(ofType(prod, T.server).map((s) => s.name)).toEqual(["madbase-prod-1", "madbase-prod-2", "madbase-prod-3"]);
    expect(ofType(prod, T.loadBalancer)).toHaveLength(1);
    expect(prod.outputs.entryPoint.value).toMatchObject({ kind: "load-balancer", host: "10.42.1.5" });
  });

  test("servers run Debian 12 of the plan's type in the stack's location", () => {
    // prod's plan cx31 maps to Hetzner cx43, dev's cx21 to cx33 (core/plans.ts).
    for (const s of ofType(prod, T.server))
      expect(s.inputs).toMatchObject({ image: "debian-13", serverType: "cx43", location: "fsn1" });
    for (const s of ofType(dev, T.server))
      expect(s.inputs).toMatchObject({ image: "debian-13", serverType: "cx33", location: "fsn1" });
  });

  test("the private network and its subnet follow the config, in the location's network zone", () => {
    expect(ofType(prod, T.network)[0].inputs).toMatchObject({ ipRange: "10.42.0.0/16", name: "madbase-prod" });
    expect(ofType(prod, T.subnet)[0].inputs).toMatchObject({
      ipRange: "10.42.1.0/24",
      type: "cloud",
      networkZone: "eu-central",
    });
  });

  test("outputs name every node with its private and public address", () => {
    expect(prod.outputs.nodes.value).toEqual([
      { name: "madbase-prod-1", privateIp: "10.42.1.10", publicIpv4: expect.stringMatching(/^203\.0\.113\.\d+$/) },
      { name: "madbase-prod-2", privateIp: "10.42.1.11", publicIpv4: expect.stringMatching(/^203\.0\.113\.\d+$/) },
      { name: "madbase-prod-3", privateIp: "10.42.1.12", publicIpv4: expect.stringMatching(/^203\.0\.113\.\d+$/) },
    ]);
    expect(prod.outputs.patroniScope.value).toBe("madbase-prod");
    expect(prod.outputs.haproxyStatsUrl.value).toBe("http://10.42.1.10:7000/");
  });

  test("connection strings have the seed's shapes through the entry point", () => {
    expect(prod.outputs.databaseUrl.value).toMatch(
      /^postgresql:\/\/madbase:[A-Za-z0-9]{32}@10\.42\.1\.5:5433\/madbase\?sslmode=require$/,
    );
    expect(prod.outputs.redisUrl.value).toMatch(/^redis:\/\/app:[A-Za-z0-9]{32}@10\.42\.1\.5:6379\/0$/);
    expect(prod.outputs.redisTlsUrl.value).toMatch(/^rediss:\/\/app:[A-Za-z0-9]{32}@10\.42\.1\.5:6381\/0$/);
    expect(dev.outputs.databaseUrl.value).toMatch(/@10\.42\.1\.10:5433\/madbase\?sslmode=require$/);
    // Pooled (5433, the leader's PgBouncer), direct (5435) and pooled reads (5434): one password, secret.
    expect(prod.outputs.databaseDirectUrl.value).toBe(
      String(prod.outputs.databaseUrl.value).replace(":5433/", ":5435/"),
    );
    expect(prod.outputs.databaseReadUrl.value).toBe(String(prod.outputs.databaseUrl.value).replace(":5433/", ":5434/"));
    expect(prod.outputs.databaseDirectUrl.secret).toBe(true);
    expect(prod.outputs.redisTlsUrl.secret).toBe(true);
  });
});

describe("nodeCount 5", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram({
      stack: "prod",
      config: { ...stackFileConfig("prod"), nodeCount: "5", adminCidrs: '["198.51.100.0/24"]' },
    });
  });

  test("declares five servers, each at a distinct fixed address inside the subnet", () => {
    const servers = ofType(run, T.server);
    expect(servers).toHaveLength(5);
    const subnet = ipaddr.IPv4.parseCIDR("10.42.1.0/24");
    const ips = servers.map((s) => {
      expect(s.inputs.networks).toHaveLength(1);
      return s.inputs.networks[0].ip as string;
    });
    expect(new Set(ips).size).toBe(5);
    for (const ip of ips) {
      const address = ipaddr.IPv4.parse(ip);
      expect(address.match(subnet)).toBe(true);
      // Neither the subnet's network address nor Hetzner's gateway (.1) nor the load balancer (.5).
      expect(["10.42.1.0", "10.42.1.1", "10.42.1.5", "10.42.1.255"]).not.toContain(ip);
    }
    expect(ips).toEqual(["10.42.1.10", "10.42.1.11", "10.42.1.12", "10.42.1.13", "10.42.1.14"]);
  });

  test("every server joins the private network by id, after its subnet exists", () => {
    const network = ofType(run, T.network)[0];
    const subnet = ofType(run, T.subnet)[0];
    expect(subnet.inputs.networkId).toBe(Number(network.id));
    for (const s of ofType(run, T.server)) {
      expect(s.inputs.networks[0].networkId).toBe(Number(network.id));
      expect(s.options.dependencies.some((urn) => urn.endsWith(`::${subnet.name}`))).toBe(true);
    }
  });

  test("the firewall and the spread placement group are set when each server is created", () => {
    const firewall = ofType(run, T.firewall);
    const groups = ofType(run, T.placementGroup);
    expect(firewall).toHaveLength(1);
    expect(groups).toHaveLength(1);
    expect(groups[0].inputs.type).toBe("spread");
    for (const s of ofType(run, T.server)) {
      // Inputs of the server's own create call (numeric ids, as hcloud takes them), not a later
      // attachment resource.
      expect(s.inputs.firewallIds).toEqual([Number(firewall[0].id)]);
      expect(s.inputs.placementGroupId).toBe(Number(groups[0].id));
    }
    // No separate attachment resource that would apply the firewall after the server exists.
    expect(run.resources.filter((r) => r.type === "hcloud:index/firewallAttachment:FirewallAttachment")).toHaveLength(
      0,
    );
  });

  test("each node's user data is a cloud-config for that node, under Hetzner's 32 KiB", () => {
    for (const s of ofType(run, T.server)) {
      const userData = s.inputs.userData as string;
      expect(typeof userData).toBe("string");
      expect(Buffer.byteLength(userData, "utf8")).toBeLessThan(USER_DATA_LIMIT);
      expect(userData.startsWith("#cloud-config\n")).toBe(true);
      const doc = yaml.load(userData) as { hostname: string };
      expect(doc.hostname).toBe(s.name);
      const patroni = writtenFiles(userData).find((f) => f.path === "/etc/patroni/config.yml");
      expect(patroni?.content).toContain(`${s.inputs.networks[0].ip}:8008`);
    }
  });

  test("each server carries its labels, and a volume of the configured size is attached to it", () => {
    for (const s of ofType(run, T.server)) {
      expect(s.inputs.labels).toEqual({
        "madbase-state/stack": "prod",
        "madbase-state/node": s.name,
        "madbase-state/role": "database",
      });
      const volume = byName(run, T.volume, `${s.name}-data`);
      expect(volume.inputs).toMatchObject({ size: 40, location: "fsn1", automount: false });
      const attachment = byName(run, T.volumeAttachment, `${s.name}-data-attachment`);
      expect(attachment.options.dependencies.some((urn) => urn.endsWith(`::${s.name}`))).toBe(true);
      expect(attachment.options.dependencies.some((urn) => urn.endsWith(`::${volume.name}`))).toBe(true);
      expect(attachment.inputs.serverId).toBe(Number(s.id));
      expect(attachment.inputs.volumeId).toBe(Number(volume.id));
    }
  });

  test("the load balancer is private, at the topology's address, and targets every node by label", () => {
    const lbNetwork = ofType(run, T.loadBalancerNetwork)[0];
    expect(lbNetwork.inputs).toMatchObject({ ip: "10.42.1.5", enablePublicInterface: false });
    const target = ofType(run, T.loadBalancerTarget)[0];
    expect(target.inputs).toMatchObject({ type: "label_selector", usePrivateIp: true });
    // The selector matches every server's labels.
    const selector = Object.fromEntries((target.inputs.labelSelector as string).split(",").map((kv) => kv.split("=")));
    for (const s of ofType(run, T.server)) {
      for (const [k, v] of Object.entries(selector)) expect(s.inputs.labels[k]).toBe(v);
    }
    // Private targets need the load balancer in the network first.
    expect(target.options.dependencies.some((urn) => urn.endsWith(`::${lbNetwork.name}`))).toBe(true);
  });

  test("the load balancer serves 5433, 5434, 5435, 6379 and 6381 over TCP with TCP health checks", () => {
    const services = ofType(run, T.loadBalancerService);
    expect(services.map((s) => s.inputs.listenPort).sort()).toEqual([5433, 5434, 5435, 6379, 6381]);
    for (const s of services) {
      expect(s.inputs).toMatchObject({ protocol: "tcp", destinationPort: s.inputs.listenPort });
      expect(s.inputs.healthCheck).toMatchObject({ protocol: "tcp", port: s.inputs.listenPort });
      expect(s.inputs.healthCheck.interval).toBeGreaterThan(0);
      expect(s.inputs.healthCheck.timeout).toBeLessThan(s.inputs.healthCheck.interval);
    }
  });

  test("ssh keys from config become hcloud keys given to every server", async () => {
    const keys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdmin admin@laptop",
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@ci",
    ];
    const withKeys = await runProgram({
      stack: "prod",
      config: { ...stackFileConfig("prod"), sshPublicKeys: JSON.stringify(keys) },
    });
    const declared = ofType(withKeys, T.sshKey);
    expect(declared.map((k) => k.inputs.publicKey)).toEqual(keys);
    for (const s of ofType(withKeys, T.server)) expect(s.inputs.sshKeys).toHaveLength(2);
  });
});
