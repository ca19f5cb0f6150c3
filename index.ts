/**
 * madbase-state: the MadBase State Pillar on Hetzner Cloud.
 *
 * Reads and validates the stack's `madbase-state:*` config first (a bad value stops the program
 * before any resource is declared, with a message naming the key, the value and what is allowed),
 * then declares the StatePillar. The Hetzner token comes from `hcloud:token` (secret) or
 * HCLOUD_TOKEN, read by the hcloud provider itself.
 */
import * as pulumi from "@pulumi/pulumi";
import { PORTS, USERS, renderAlertRules, renderPrometheusConfig } from "./core";
import { planStack } from "./components/plan";
import { readStackConfig } from "./components/stackConfig";
import { StatePillar } from "./components/statePillar";

const { settings, backupCredentials, sshPrivateKey } = readStackConfig();
const plan = planStack(settings);
for (const warning of plan.warnings) pulumi.log.warn(warning);
if (!sshPrivateKey) {
  pulumi.log.warn(
    "madbase-state:sshPrivateKey is empty: Pulumi cannot log in to the nodes, so a change of nodeCount would add servers that never " +
      "join the cluster and delete servers that never left it. Set it (pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519) before changing nodeCount.",
  );
}

const pillar = new StatePillar(plan.topology.clusterName, { plan, backupCredentials, sshPrivateKey });

/** Connection strings through the entry point (secret): the leader on 5433, replicas on 5434, Redis on 6379. */
export const databaseUrl = pillar.databaseUrl;
export const databaseReadUrl = pillar.databaseReadUrl;
export const redisUrl = pillar.redisUrl;
/** Patroni's scope: also the pgBackRest stanza and the Sentinel master name. */
export const patroniScope = plan.topology.clusterName;
export const nodes = pillar.nodeSummaries();
export const entryPoint = {
  kind: pillar.entryPoint.kind,
  host: pillar.entryPoint.host,
  ports: pillar.entryPoint.ports,
};
/** Where the backups are: bucket, endpoint, pgBackRest's repository path and the Redis snapshots' prefix (no keys). */
export const backupStore = pillar.backup.location;
/** HAProxy's stats page on the first node (every node serves its own on the same port); log in as haproxyStatsUser. */
export const haproxyStatsUrl = `http://${plan.topology.nodes[0].privateIp}:${PORTS.haproxyStats}/`;
export const haproxyStatsUser = USERS.haproxyStats;
export const haproxyStatsPassword = pillar.haproxyStatsPassword;
/**
 * prometheus.yml for a Prometheus server on the private network: every node's exporters, Patroni,
 * HAProxy, Sentinel and etcd. No secret in it (HAProxy's password is read from a file).
 */
export const prometheusConfig = renderPrometheusConfig(plan.topology);
/** alerts.yml, which prometheusConfig loads from beside it (rule_files): thresholds from this stack's plan, profile and backups. */
export const alertRules = renderAlertRules(plan.topology, plan.options);
