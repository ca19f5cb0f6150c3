import * as crypto from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import { types as commandTypes } from "@pulumi/command";
import { NodeSpec } from "../core";

export interface SshKeysArgs {
  /** Prefix of the Hetzner names, e.g. `madbase-prod`. */
  baseName: string;
  publicKeys: string[];
  labels: Record<string, string>;
}

/** A node a stack command runs on over SSH: ConfigRefresh's and NodeMembership's common arguments. */
export interface NodeSshTarget {
  node: NodeSpec;
  /** The node's server: the command runs on it (and depends on it). */
  server: pulumi.Resource;
  /** The server's public IPv4 address, where SSH is reached (the firewall admits adminCidrs). */
  host: pulumi.Input<string>;
  /** The private key of one of sshPublicKeys (secret). */
  privateKey: pulumi.Input<string>;
}

/**
 * How the stack's remote commands reach a node: root over SSH at its public address, with one of
 * these keys. A new server answers SSH a little after it exists, so keep trying for a few minutes.
 */
export function nodeConnection(
  host: pulumi.Input<string>,
  privateKey: pulumi.Input<string>,
): commandTypes.input.remote.ConnectionArgs {
  return { host, user: "root", privateKey, dialErrorLimit: 30, perDialTimeout: 10 };
}

/**
 * A short, stable tag for a public key: the same key always gets the same resource name, wherever
 * it sits in the list, so reordering or removing another key never touches it.
 */
export function keyTag(publicKey: string): string {
  const body = publicKey.trim().split(/\s+/)[1] ?? publicKey;
  return crypto.createHash("sha256").update(body).digest("hex").slice(0, 12);
}

/** The SSH keys Hetzner installs for root on new servers. */
export class SshKeys extends pulumi.ComponentResource {
  readonly keys: hcloud.SshKey[];
  readonly ids: pulumi.Output<string>[];

  constructor(name: string, args: SshKeysArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:SshKeys", name, {}, opts);
    const seen = new Set<string>();
    this.keys = [];
    for (const publicKey of args.publicKeys) {
      const tag = keyTag(publicKey);
      // Hetzner refuses the same key twice in a project; a repeated entry is one key.
      if (seen.has(tag)) continue;
      seen.add(tag);
      this.keys.push(
        new hcloud.SshKey(
          `${name}-${tag}`,
          { name: `${args.baseName}-${tag}`, publicKey: publicKey.trim(), labels: args.labels },
          { parent: this },
        ),
      );
    }
    this.ids = this.keys.map((k) => k.id);
    this.registerOutputs({ ids: this.ids });
  }
}
