import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import { NODE_IMAGE, NodeSpec } from "../core";

export interface DatabaseNodeArgs {
  node: NodeSpec;
  serverType: string;
  location: string;
  networkId: pulumi.Input<number>;
  /** The subnet the node's fixed address lies in; the server must not be created before it. */
  subnet: pulumi.Resource;
  firewallId: pulumi.Input<number>;
  placementGroupId: pulumi.Input<number>;
  sshKeyIds: pulumi.Input<string>[];
  /** The node's cloud-init document (secret: it carries every password). */
  userData: pulumi.Input<string>;
  volumeSizeGb: number;
  labels: Record<string, string>;
  /** Pulumi `protect` plus Hetzner delete/rebuild protection on the server and its data. */
  protect: boolean;
}

/**
 * One database node: a Debian 13 server at a fixed private address, and the Hetzner volume that
 * holds its PostgreSQL data.
 *
 * A node is stateful, and its identity is its name: every Pulumi name here comes from the node's
 * name and every input from the node itself or from stack-wide values that do not depend on the
 * node count, so growing or shrinking the cluster never changes what Pulumi sees for this node.
 */
export class DatabaseNode extends pulumi.ComponentResource {
  readonly server: hcloud.Server;
  readonly volume: hcloud.Volume;
  readonly attachment: hcloud.VolumeAttachment;
  readonly name: string;
  readonly privateIp: string;
  readonly publicIpv4: pulumi.Output<string>;

  constructor(name: string, args: DatabaseNodeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:DatabaseNode", name, {}, opts);
    const { node } = args;
    this.name = node.name;
    this.privateIp = node.privateIp;

    // The volume exists before the server and the server depends on it, so Pulumi deletes in the
    // opposite order: the server (shut down cleanly, which detaches the volume) before the volume.
    this.volume = new hcloud.Volume(
      `${node.name}-data`,
      {
        name: `${node.name}-data`,
        size: args.volumeSizeGb,
        location: args.location,
        // The node's mount script formats the volume only when it holds no file system and mounts
        // it by UUID; Hetzner's own automount and format would race it.
        automount: false,
        labels: args.labels,
        // Hetzner-side protection guards against deletion from the Console or CLI, which Pulumi's
        // `protect` cannot see.
        deleteProtection: args.protect,
      },
      {
        parent: this,
        // PostgreSQL's data: `pulumi up` must fail rather than delete or replace it.
        protect: args.protect,
        // Even after an operator unprotects a node and removes it, a protected stack leaves the
        // volume in the Hetzner project (detached) for a human to delete once its data is not
        // needed. Unprotected (dev) stacks clean up after themselves.
        retainOnDelete: args.protect,
      },
    );

    this.server = new hcloud.Server(
      node.name,
      {
        name: node.name,
        serverType: args.serverType,
        image: NODE_IMAGE,
        location: args.location,
        labels: args.labels,
        // The fixed address every other node's configuration names; it is known before the
        // server exists. `aliasIps: []` keeps the provider from re-attaching the network on every
        // update.
        networks: [{ networkId: args.networkId, ip: node.privateIp, aliasIps: [] }],
        // A public address for package installs and backups to S3; the firewall guards it.
        publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
        // Set at creation: the server is never up without its firewall or outside the spread group.
        firewallIds: [args.firewallId],
        placementGroupId: args.placementGroupId,
        sshKeys: args.sshKeyIds,
        userData: args.userData,
        // Resizing to a bigger type keeps the root disk's size, so the node can be sized down
        // again; PostgreSQL's data is on the volume, not the root disk.
        keepDisk: true,
        // Stop PostgreSQL, Patroni and etcd cleanly (ACPI shutdown) before a deletion.
        shutdownBeforeDeletion: true,
        deleteProtection: args.protect,
        // Hetzner requires rebuild protection to match delete protection.
        rebuildProtection: args.protect,
      },
      {
        parent: this,
        dependsOn: [args.subnet, this.volume],
        protect: args.protect,
        // Each of these replaces an hcloud server when it changes, and a database node must never
        // be replaced by a later render:
        //  - userData: cloud-init runs once, at first boot. Templates, secrets and the node list
        //    (which grows with nodeCount) change later; those changes reach running nodes over SSH,
        //    never by rebuilding them.
        //  - sshKeys: read only at creation; keys added later are installed over SSH.
        //  - image: the image only matters at creation; a new debian-13 build must not rebuild a
        //    running node.
        //  - serverType: the provider changes a type by powering the server off, and Pulumi would
        //    update every server in parallel, so every node would lose power at once. The type
        //    changes through the resize chain instead (ServerResize: drain, shutdown, change type,
        //    power on, settle), one node at a time; it is only read here when a server is created.
        ignoreChanges: ["userData", "sshKeys", "image", "serverType"],
        // If some change still forces a replacement, Pulumi would create the new server first; the
        // name and private address are still taken by the running one, so the replacement fails
        // before anything is deleted, instead of deleting a database node and hoping.
        deleteBeforeReplace: false,
      },
    );

    this.attachment = new hcloud.VolumeAttachment(
      `${node.name}-data-attachment`,
      { serverId: this.server.id.apply(Number), volumeId: this.volume.id.apply(Number), automount: false },
      {
        parent: this,
        // Detaching the volume from a running node would pull the disk out from under PostgreSQL.
        protect: args.protect,
        // When the server goes, Hetzner detaches the volume itself after the clean shutdown; an
        // explicit detach first would yank the disk from a running database.
        deletedWith: this.server,
      },
    );

    this.publicIpv4 = this.server.ipv4Address;
    this.registerOutputs({ name: this.name, privateIp: this.privateIp, publicIpv4: this.publicIpv4 });
  }
}
