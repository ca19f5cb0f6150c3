import * as pulumi from "@pulumi/pulumi";
import { remote } from "@pulumi/command";
import { REMOTE_EXEC } from "../core";
import { NodeSshTarget, nodeConnection } from "./sshKeys";

export interface ConfigRefreshArgs extends NodeSshTarget {
  /**
   * config-refresh for the cluster as it is declared (on the first node, led by
   * leadership-handoff), as one remote command (secret).
   */
  script: pulumi.Input<string>;
  /** Its sha256: the trigger that reruns the refresh exactly when the rendered content changes. */
  digest: pulumi.Input<string>;
  /** Runs after these: every node's membership, and the previous node's refresh. */
  after: pulumi.Resource[];
}

/**
 * Brings a node's running daemons to the declared cluster: HAProxy's backends, Patroni's etcd
 * hosts, Redis's and Sentinel's values. It reruns whenever the rendered content changes (a new
 * count, a changed template): the trigger replaces it, and its create runs again. It has no delete
 * step, so replacing or removing it does nothing on the node.
 */
export class ConfigRefresh extends pulumi.ComponentResource {
  readonly command: remote.Command;

  constructor(name: string, args: ConfigRefreshArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:ConfigRefresh", name, {}, opts);
    this.command = new remote.Command(
      name,
      {
        connection: nodeConnection(args.host, args.privateKey),
        // The script travels on standard input, never in the exec string the process list shows.
        create: REMOTE_EXEC,
        stdin: args.script,
        triggers: [args.digest],
      },
      { parent: this, dependsOn: [args.server, ...args.after] },
    );
    this.registerOutputs({});
  }
}
