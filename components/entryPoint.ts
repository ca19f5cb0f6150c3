import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import { ENTRY_PORTS, EntrySpec, LOAD_BALANCER_TYPE, PORTS } from "../core";

export interface EntryPointArgs {
  entry: EntrySpec;
  /** Hetzner name of the load balancer, e.g. `madbase-prod-entry`. */
  loadBalancerName: string;
  location: string;
  networkId: pulumi.Input<number>;
  /** The load balancer's private address lies in this subnet; attach only once it exists. */
  subnet: pulumi.Resource;
  /** Selects every database node of the stack, whatever the node count. */
  nodeSelector: string;
  labels: Record<string, string>;
}

/**
 * Hetzner's load balancer checks each target's port by TCP connect. Every node's HAProxy accepts
 * on every entry port and forwards to the current leader or master, so a target only has to
 * be alive; these figures take a dead node out of rotation in about 10 s.
 */
export const ENTRY_HEALTH_CHECK = { intervalSeconds: 3, timeoutSeconds: 2, retries: 3 } as const;

/**
 * The one address applications use. With 3+ nodes it is a private Hetzner load balancer in front of
 * every node's HAProxy, so it survives the loss of any node; a single dev node is its own entry.
 */
export class EntryPoint extends pulumi.ComponentResource {
  readonly kind: EntrySpec["kind"];
  /** The private address applications connect to. */
  readonly host: string;
  readonly ports = {
    postgresPrimary: PORTS.postgresPrimary,
    postgresReplicas: PORTS.postgresReplicas,
    postgresDirect: PORTS.postgresDirect,
    redisMaster: PORTS.redisMaster,
    redisMasterTls: PORTS.redisMasterTls,
  };
  readonly loadBalancer?: hcloud.LoadBalancer;

  constructor(name: string, args: EntryPointArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:EntryPoint", name, {}, opts);
    this.kind = args.entry.kind;
    this.host = args.entry.host;
    if (args.entry.kind === "load-balancer") {
      const lb = new hcloud.LoadBalancer(
        `${name}-lb`,
        {
          name: args.loadBalancerName,
          loadBalancerType: LOAD_BALANCER_TYPE,
          location: args.location,
          labels: args.labels,
        },
        { parent: this },
      );
      const lbId = lb.id.apply(Number);
      const attachment = new hcloud.LoadBalancerNetwork(
        `${name}-lb-network`,
        {
          loadBalancerId: lbId,
          networkId: args.networkId,
          ip: args.entry.host,
          // The entry carries database and Redis traffic: it has no public face at all. Clients
          // outside the private network use the nodes directly, through `clientCidrs`.
          enablePublicInterface: false,
        },
        { parent: this, dependsOn: [args.subnet] },
      );
      // Targets by label, so nodes added or removed by a count change join and leave the load
      // balancer without touching this resource; the private address keeps traffic off the Internet.
      new hcloud.LoadBalancerTarget(
        `${name}-lb-targets`,
        { loadBalancerId: lbId, type: "label_selector", labelSelector: args.nodeSelector, usePrivateIp: true },
        { parent: this, dependsOn: [attachment] },
      );
      for (const port of ENTRY_PORTS) {
        new hcloud.LoadBalancerService(
          `${name}-lb-${port}`,
          {
            loadBalancerId: lb.id,
            protocol: "tcp",
            listenPort: port,
            destinationPort: port,
            healthCheck: {
              protocol: "tcp",
              port,
              interval: ENTRY_HEALTH_CHECK.intervalSeconds,
              timeout: ENTRY_HEALTH_CHECK.timeoutSeconds,
              retries: ENTRY_HEALTH_CHECK.retries,
            },
          },
          { parent: this, dependsOn: [attachment] },
        );
      }
      this.loadBalancer = lb;
    }
    this.registerOutputs({ kind: this.kind, host: this.host });
  }
}
