import * as pulumi from "@pulumi/pulumi";
import { remote } from "@pulumi/command";
import { MEMBERSHIP_ACTIONS, REMOTE_EXEC, membershipStdin } from "../core";
import { NodeSshTarget, nodeConnection } from "./sshKeys";

/** The command is deleted (the node leaves) before the server is. */
export interface NodeMembershipArgs extends NodeSshTarget {
  /** node-join, as one remote command (secret: it carries passwords). */
  join: pulumi.Input<string>;
  /** node-leave, as one remote command (secret). */
  leave: pulumi.Input<string>;
  /** The previous node's membership: nodes join one at a time, and leave in the reverse order. */
  after?: pulumi.Resource;
  /** Like the server's: a protected node's membership is not dropped by a count change either. */
  protect: boolean;
}

/**
 * A node's membership of the cluster, as one remote command: creating it runs node-join on the
 * server, deleting it runs node-leave. Pulumi deletes dependents first, so when a count change
 * removes a node, its node-leave runs before its server is deleted; and the chain of `after`
 * makes nodes join one at a time, in index order, and leave in the reverse order.
 *
 * The scripts depend only on the node, so a count change never touches this resource for a node
 * that stays. A changed template updates it (it never replaces it): Pulumi then runs node-join
 * again, which finds the node already a member and changes nothing, and keeps the new node-leave
 * for the day the node goes.
 */
export class NodeMembership extends pulumi.ComponentResource {
  readonly command: remote.Command;

  constructor(name: string, args: NodeMembershipArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:NodeMembership", name, {}, opts);
    this.command = new remote.Command(
      name,
      {
        connection: nodeConnection(args.host, args.privateKey),
        // Both scripts travel on standard input (the provider sends the stored one to the delete
        // too); the exec strings, which the node's process list shows, carry no secret.
        create: `${REMOTE_EXEC} -- ${MEMBERSHIP_ACTIONS[0]}`,
        delete: `${REMOTE_EXEC} -- ${MEMBERSHIP_ACTIONS[1]}`,
        stdin: pulumi.secret(
          pulumi.all([args.join, args.leave]).apply(([join, leave]) => membershipStdin({ join, leave })),
        ),
        // Replacing this command would run node-leave and node-join on a node that stays: only
        // the node's identity, which never changes for a given resource, may force it.
        triggers: [args.node.name, args.node.privateIp],
      },
      {
        parent: this,
        dependsOn: [args.server, ...(args.after ? [args.after] : [])],
        protect: args.protect,
        // A changed connection (a rotated key) would replace the command, and so run node-leave
        // on a running node. The stored connection is kept; a rotated key must still be accepted
        // by the server when the node leaves.
        ignoreChanges: ["connection"],
        // Never create a second membership of the same node before the first is gone.
        deleteBeforeReplace: true,
      },
    );
    this.registerOutputs({});
  }
}
