import { ConfigError, buildTopology, hostAddress } from "../../core";

const topo = (nodeCount: unknown, subnetCidr = "10.42.1.0/24", stack = "prod") =>
  buildTopology({ stack, nodeCount, subnetCidr });

describe("topology", () => {
  it.each([1, 3, 5, 7])("%i nodes get distinct fixed IPs inside the subnet, in index order", (n) => {
    const t = topo(n);
    expect(t.nodes).toHaveLength(n);
    expect(t.nodes.map((x) => x.privateIp)).toEqual(Array.from({ length: n }, (_, i) => `10.42.1.${10 + i}`));
    expect(new Set(t.nodes.map((x) => x.name)).size).toBe(n);
    expect(t.quorum).toBe(Math.floor(n / 2) + 1);
    expect(t.highlyAvailable).toBe(n >= 3);
  });

  it("keeps existing nodes' names and addresses when the cluster grows", () => {
    const three = topo(3).nodes;
    const five = topo(5).nodes;
    expect(five.slice(0, 3)).toEqual(three);
  });

  it("lists every member in etcd's initial cluster with its peer URL", () => {
    expect(topo(3).etcdInitialCluster).toBe(
      "madbase-prod-1=https://10.42.1.10:2380,madbase-prod-2=https://10.42.1.11:2380,madbase-prod-3=https://10.42.1.12:2380",
    );
  });

  it("names the Patroni scope after the stack", () => {
    expect(topo(1, "10.42.1.0/24", "dev").clusterName).toBe("madbase-dev");
  });

  it("places the load balancer outside the node range", () => {
    const t = topo(7);
    expect(t.nodes.map((n) => n.privateIp)).not.toContain(t.loadBalancerIp);
  });

  it("computes addresses across octet boundaries", () => {
    expect(hostAddress("10.0.0.0/16", 300)).toBe("10.0.1.44");
  });

  it.each([[0], [2], [4], [9], [3.5], ["3"], [null], [undefined], [-1]])(
    "rejects node count %p, naming the field and the allowed counts",
    (n) => {
      expect(() => topo(n)).toThrow(ConfigError);
      expect(() => topo(n)).toThrow(/^nodeCount: .* is not allowed; use one of 1, 3, 5, 7 /);
    },
  );

  it("rejects a subnet too small for the nodes, saying what size works", () => {
    expect(() => topo(3, "10.42.1.0/28")).toThrow(/^subnetCidr: "10.42.1.0\/28" is not allowed; .*use \/27 or larger/);
    expect(() => topo(3, "10.42.1.0/27")).not.toThrow();
  });

  it.each([["10.42.1.0/33"], ["nonsense"], ["10.42.1.5/24"], ["8.8.8.0/24"]])("rejects subnet %p", (cidr) => {
    expect(() => topo(3, cidr)).toThrow(/^subnetCidr: /);
  });

  it("rejects a stack name that cannot be a host name", () => {
    expect(() => topo(3, "10.42.1.0/24", "Prod_1")).toThrow(/^stack: "Prod_1" is not allowed/);
  });
});
