import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import { FirewallRuleSpec } from "../core";

export interface NodeFirewallArgs {
  /** The Hetzner name, e.g. `madbase-prod-nodes`. */
  firewallName: string;
  /** Inbound rules from `nodeFirewallRules`; Hetzner drops every inbound packet no rule allows. */
  rules: FirewallRuleSpec[];
  labels: Record<string, string>;
}

/**
 * The firewall every database node carries from its first boot. It is attached through the
 * servers' `firewallIds` rather than `applyTos`, so no node is ever reachable before its rules are.
 */
export class NodeFirewall extends pulumi.ComponentResource {
  readonly firewall: hcloud.Firewall;
  readonly firewallId: pulumi.Output<number>;

  constructor(name: string, args: NodeFirewallArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:NodeFirewall", name, {}, opts);
    this.firewall = new hcloud.Firewall(
      name,
      // No outbound rules: Hetzner then allows all outbound traffic (apt, S3 backups, NTP), and the
      // firewall is stateful, so replies come back in.
      { name: args.firewallName, labels: args.labels, rules: args.rules },
      { parent: this },
    );
    this.firewallId = this.firewall.id.apply(Number);
    this.registerOutputs({ firewallId: this.firewallId });
  }
}
