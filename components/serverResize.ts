import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { local } from "@pulumi/command";
import { NodeSpec } from "../core";

/** The script every resize runs, where Pulumi runs (relative to the project's directory). */
export const RESIZE_SCRIPT = "scripts/hetzner/resize-server.sh";
const PROJECT_DIR = path.resolve(__dirname, "..");

export interface ServerResizeArgs {
  node: NodeSpec;
  /** The type the server must have. */
  serverType: string;
  serverId: pulumi.Input<string>;
  /** Its public IPv4, where SSH is reached. */
  host: pulumi.Input<string>;
  /** Pulumi's SSH key to the node (secret). */
  privateKey: pulumi.Input<string>;
  /** `hcloud:token` (secret); absent, the script uses the HCLOUD_TOKEN Pulumi itself runs with. */
  hcloudToken?: pulumi.Input<string>;
  /** Remote commands (secret: they carry passwords): hand the node's leaderships off; wait until it is back. */
  drain: pulumi.Input<string>;
  settle: pulumi.Input<string>;
  /** Runs after these: the server, every membership, the previous resize of the chain. */
  after: pulumi.Resource[];
}

/**
 * Brings one server to its declared type without the hcloud provider, which would power it off,
 * and every other server with it, at once (DatabaseNode ignores serverType). One local command
 * runs scripts/hetzner/resize-server.sh: drain over SSH, ACPI shutdown, change type (disk kept),
 * power on, wait for SSH, settle over SSH.
 *
 * The only trigger is the target type, so a new type replaces the command and its create runs
 * again; StatePillar chains the nodes' resizes so that no two run at once. The script does nothing
 * on a server that already has the type: the first create on a new server, and the reruns an
 * input change causes (a changed drain script updates the command, which runs create again).
 * Everything reaches the script through its environment, never its command line; no delete step.
 */
export class ServerResize extends pulumi.ComponentResource {
  readonly command: local.Command;

  constructor(name: string, args: ServerResizeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:ServerResize", name, {}, opts);
    const environment: Record<string, pulumi.Input<string>> = {
      SERVER_ID: args.serverId,
      SERVER_TYPE: args.serverType,
      NODE_HOST: args.host,
      NODE_NAME: args.node.name,
      MADBASE_SSH_KEY: pulumi.secret(args.privateKey),
      DRAIN_SCRIPT: pulumi.secret(args.drain),
      SETTLE_SCRIPT: pulumi.secret(args.settle),
    };
    if (args.hcloudToken !== undefined) environment.HCLOUD_TOKEN = pulumi.secret(args.hcloudToken);
    this.command = new local.Command(
      name,
      {
        create: `bash ${RESIZE_SCRIPT}`,
        dir: PROJECT_DIR,
        environment,
        triggers: [args.serverType],
        // The previous run's output would only grow the environment; the script reads the server.
        addPreviousOutputInEnv: false,
      },
      { parent: this, dependsOn: args.after },
    );
    this.registerOutputs({});
  }
}
