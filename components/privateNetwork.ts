import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";

export interface PrivateNetworkArgs {
  /** Prefix of the Hetzner names, e.g. `madbase-prod`. */
  baseName: string;
  networkCidr: string;
  subnetCidr: string;
  /** The network zone of the servers' location (eu-central for fsn1, nbg1 and hel1). */
  networkZone: string;
  labels: Record<string, string>;
  /**
   * Protect the network and subnet from deletion and replacement. A new network would give every
   * node a new private interface and address, which the running cluster cannot survive.
   */
  protect: boolean;
}

/** The private network the nodes talk over, and the one cloud subnet their fixed addresses come from. */
export class PrivateNetwork extends pulumi.ComponentResource {
  readonly network: hcloud.Network;
  readonly subnet: hcloud.NetworkSubnet;
  /** The network's numeric id, as hcloud's other resources take it. */
  readonly networkId: pulumi.Output<number>;

  constructor(name: string, args: PrivateNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:PrivateNetwork", name, {}, opts);
    this.network = new hcloud.Network(
      `${name}-network`,
      { name: args.baseName, ipRange: args.networkCidr, labels: args.labels, deleteProtection: args.protect },
      { parent: this, protect: args.protect },
    );
    this.networkId = this.network.id.apply(Number);
    this.subnet = new hcloud.NetworkSubnet(
      `${name}-subnet`,
      { networkId: this.networkId, type: "cloud", networkZone: args.networkZone, ipRange: args.subnetCidr },
      { parent: this, protect: args.protect },
    );
    this.registerOutputs({ networkId: this.networkId, subnetId: this.subnet.id });
  }
}
