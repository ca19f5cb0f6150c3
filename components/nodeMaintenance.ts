import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { local } from "@pulumi/command";
import { NodeSpec } from "../core";

/** The script every maintenance step runs, where Pulumi runs (relative to the project's directory). */
export const MAINTAIN_SCRIPT = "scripts/hetzner/maintain-server.sh";
const PROJECT_DIR = path.resolve(__dirname, "..");

export interface NodeMaintenanceArgs {
  node: NodeSpec;
  /** The stack's maintenanceRevision: the only trigger, so a new value runs the step once more. */
  revision: number;
  /** Its public IPv4, where SSH is reached. */
  host: pulumi.Input<string>;
  /** Pulumi's SSH key to the node (secret). */
  privateKey: pulumi.Input<string>;
  /** Remote commands: node-maintain (no secret in it), and node-settle (secret) after a reboot. */
  maintain: pulumi.Input<string>;
  settle: pulumi.Input<string>;
  /** Runs after these: the server and the step before it in the chain. */
  after: pulumi.Resource[];
}

/**
 * One node's part of a rolling maintenance (core/maintenance.ts, core/sequence.ts's `maintain`):
 * one local command runs scripts/hetzner/maintain-server.sh, which runs node-maintain over SSH
 * and, when it asks for a reboot (leaderships moved off already), reboots the server cleanly,
 * waits for SSH on the new boot and runs node-settle.
 *
 * Only a new revision maintains the node again. Any change of the inputs is an update that runs
 * the same script (`update`), which finds in its previous output (`addPreviousOutputInEnv`)
 * whether this revision was carried out already, and then touches nothing. Not `ignoreChanges`
 * on the environment: the engine would then keep the ignored values from the state even when the
 * revision changes, and run a new revision with an old SSH key, old scripts and old secrets.
 */
export class NodeMaintenance extends pulumi.ComponentResource {
  readonly command: local.Command;

  constructor(name: string, args: NodeMaintenanceArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:NodeMaintenance", name, {}, opts);
    this.command = new local.Command(
      name,
      {
        create: `bash ${MAINTAIN_SCRIPT}`,
        update: `bash ${MAINTAIN_SCRIPT}`,
        dir: PROJECT_DIR,
        environment: {
          NODE_HOST: args.host,
          NODE_NAME: args.node.name,
          MADBASE_SSH_KEY: pulumi.secret(args.privateKey),
          MAINTAIN_SCRIPT: args.maintain,
          SETTLE_SCRIPT: pulumi.secret(args.settle),
          MAINTENANCE_REVISION: String(args.revision),
        },
        triggers: [args.revision],
        // The script's one line of stdout, "maintenance revision N done", read back on an update.
        addPreviousOutputInEnv: true,
      },
      { parent: this, dependsOn: args.after },
    );
    this.registerOutputs({});
  }
}
