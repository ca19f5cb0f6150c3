/**
 * madbase-state: the MadBase State Pillar on Hetzner Cloud.
 *
 * Before any resource is declared, the program
 *  1. reads and validates the stack's `madbase-state:*` config (a bad value stops it with a message
 *     naming the key, the value and what is allowed);
 *  2. reads the settings the last deployment was made with (its own `appliedSettings` output,
 *     through a StackReference to this very stack) and refuses a change the running stack cannot
 *     take in place (core/stack-change.ts), naming the key, the old and the new value.
 * Only then does it declare the StatePillar. The Hetzner token comes from `hcloud:token` (secret)
 * or HCLOUD_TOKEN, read by the hcloud provider itself.
 *
 * The program is an async function (Pulumi awaits it); what it returns are the stack's outputs.
 */
import * as pulumi from "@pulumi/pulumi";
import {
  AppliedSettings,
  appliedSettings as recordSettings,
  archivingDecision,
  patroniClientCertificates,
  changeSequence,
  describeStep,
  planStack,
  PORTS,
  readAppliedSettings,
  renderAlertRules,
  renderPrometheusConfig,
  USERS,
} from "./core";
import { readStackConfig } from "./components/stackConfig";
import { StatePillar } from "./components/statePillar";

/** The stack output the next `up` compares itself with. */
const APPLIED_SETTINGS_OUTPUT = "appliedSettings";

/**
 * The last deployment's appliedSettings, or undefined (first `up`, or a deployment by a version
 * that did not record them): then nothing is refused, and the log says why.
 */
async function previousSettings(): Promise<AppliedSettings | undefined> {
  const self = new pulumi.StackReference(`${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`);
  const details = await self.getOutputDetails(APPLIED_SETTINGS_OUTPUT);
  // An older CLI marks every output secret when any is; the record itself holds no secret.
  const { previous, reason } = readAppliedSettings(details.value ?? details.secretValue);
  if (!previous) pulumi.log.info(`Nothing to compare this update with (${reason}): no setting change is refused.`);
  return previous;
}

export = async () => {
  const { settings, backupCredentials, sshPrivateKey } = readStackConfig();
  const plan = planStack(settings);
  // Without real S3 keys the nodes archive nothing (and every up says so); a protected stack refuses.
  const archiving = archivingDecision(settings, backupCredentials !== undefined);
  plan.options.backup.archiving = archiving.archiving;
  const previous = await previousSettings();
  // A stack from before Patroni asked for client certificates gets them in two updates (the first prepares).
  const clientCertificates = patroniClientCertificates(previous);
  plan.options.patroniClientCertificates = clientCertificates.mode;
  const applied = recordSettings(settings, {
    sshPrivateKeySet: sshPrivateKey !== undefined,
    patroniClientCertificates: clientCertificates.mode,
  });
  // Refuses what the running stack cannot take (checkStackChange), before anything is declared,
  // and says which node commands this update runs, in order (when the rendered configuration
  // changed; the engine skips a refresh whose script is as before).
  const steps = changeSequence({ stack: settings.stack, running: previous, wanted: applied, refresh: true });
  if (previous && sshPrivateKey)
    pulumi.log.info(`Node steps of this update, one at a time: ${steps.map(describeStep).join("; ") || "none"}`);

  for (const warning of [...plan.warnings, ...archiving.warnings, ...clientCertificates.warnings])
    pulumi.log.warn(warning);
  if (!sshPrivateKey && !previous) {
    // On a running stack, a change that needs SSH is refused by checkStackChange; before the first
    // up the operator can still set the key cheaply.
    pulumi.log.warn(
      "madbase-state:sshPrivateKey is empty: Pulumi cannot log in to the nodes, so a later change of nodeCount or plan will be refused: it would add servers " +
        "that never join the cluster and delete servers that never left it. Set it (pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519) before the first pulumi up.",
    );
  }

  // The resize script talks to the Hetzner API itself; without hcloud:token it uses HCLOUD_TOKEN.
  const hcloudToken = new pulumi.Config("hcloud").getSecret("token");
  const pillar = new StatePillar(plan.topology.clusterName, {
    plan,
    applied,
    backupCredentials,
    sshPrivateKey,
    hcloudToken,
  });

  return {
    /**
     * Connection strings through the entry point (secret): the leader's PgBouncer on 5433, its
     * PostgreSQL directly on 5435, replicas' PgBouncers on 5434, Redis on 6379 and, over TLS, 6381.
     */
    databaseUrl: pillar.databaseUrl,
    databaseDirectUrl: pillar.databaseDirectUrl,
    databaseReadUrl: pillar.databaseReadUrl,
    redisUrl: pillar.redisUrl,
    redisTlsUrl: pillar.redisTlsUrl,
    /** Patroni's scope: also the pgBackRest stanza and the Sentinel master name. */
    patroniScope: plan.topology.clusterName,
    nodes: pillar.nodeSummaries(),
    entryPoint: {
      kind: pillar.entryPoint.kind,
      host: pillar.entryPoint.host,
      ports: pillar.entryPoint.ports,
    },
    /** Where the backups are: bucket, endpoint, pgBackRest's repository path and the Redis snapshots' prefix (no keys). */
    backupStore: pillar.backup.location,
    /** HAProxy's stats page on the first node (every node serves its own on the same port); log in as haproxyStatsUser. */
    haproxyStatsUrl: `http://${plan.topology.nodes[0].privateIp}:${PORTS.haproxyStats}/`,
    haproxyStatsUser: USERS.haproxyStats,
    haproxyStatsPassword: pillar.haproxyStatsPassword,
    /** The cluster CA's certificate (PEM, public): sslmode=verify-full against the entry point (README, TLS). */
    caCertificate: pillar.caCertificate,
    /**
     * The operator's client certificate (public) and key (secret): Patroni's REST API answers only
     * callers with a certificate of the cluster CA. Prometheus reads them from the files
     * prometheusConfig names; `curl --cert … --key …` for a look by hand (README, TLS).
     */
    operatorCertificate: pillar.operatorCertificate,
    operatorPrivateKey: pillar.operatorPrivateKey,
    /**
     * prometheus.yml for a Prometheus server on the private network: every node's exporters, Patroni,
     * HAProxy, Sentinel and etcd. No secret in it (HAProxy's password is read from a file).
     */
    prometheusConfig: renderPrometheusConfig(plan.topology),
    /** alerts.yml, which prometheusConfig loads from beside it (rule_files): thresholds from this stack's plan, profile and backups. */
    alertRules: renderAlertRules(plan.topology, plan.options),
    /**
     * The settings this deployment was made with (plain, no secret): the next `up` is checked
     * against them. Recorded only once every node's config refresh has run: Pulumi keeps a failed
     * update's outputs that did resolve, so a plain record would say "prepared" (and the next `up`
     * require Patroni client certificates) while a node's HAProxy still checks without one.
     */
    [APPLIED_SETTINGS_OUTPUT]: pulumi.all(pillar.refreshes.map((r) => r.command.id)).apply(() => applied),
  };
};
