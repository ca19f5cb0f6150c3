import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import {
  AppliedSettings,
  checkUserDataSize,
  clientUrls,
  databaseNodeSelector,
  declaredSequence,
  describeStep,
  nodeLabels,
  remoteCommand,
  renderNode,
  ScriptContext,
  scriptDigest,
  serverPaths,
  stackLabels,
  StackPlan,
  Step,
  stepResource,
  stepScripts,
} from "../core";
import { BackupBucket } from "./backupBucket";
import { ClusterCertificates } from "./clusterCertificates";
import { ClusterSecrets } from "./clusterSecrets";
import { ConfigRefresh } from "./configRefresh";
import { DatabaseNode } from "./databaseNode";
import { EntryPoint } from "./entryPoint";
import { NodeFirewall } from "./nodeFirewall";
import { NodeMaintenance } from "./nodeMaintenance";
import { NodeMembership } from "./nodeMembership";
import { PrivateNetwork } from "./privateNetwork";
import { ServerResize } from "./serverResize";
import { SshKeys } from "./sshKeys";
import { BackupCredentials } from "./stackConfig";

export interface StatePillarArgs {
  /** From `planStack`: validated settings, topology and everything derived from them. */
  plan: StackPlan;
  /** The settings this deployment records (`appliedSettings`): the sequence of node commands follows them. */
  applied: AppliedSettings;
  backupCredentials?: BackupCredentials;
  /** Pulumi's SSH key to the nodes (secret): without it, no membership or resize commands are declared. */
  sshPrivateKey?: pulumi.Input<string>;
  /** `hcloud:token` (secret) for the resize script; absent, it uses the HCLOUD_TOKEN Pulumi runs with. */
  hcloudToken?: pulumi.Input<string>;
}

export interface NodeSummary {
  name: string;
  privateIp: string;
  publicIpv4: pulumi.Output<string>;
}

/**
 * The whole State Pillar on Hetzner Cloud: private network, firewall, spread placement group, SSH
 * keys, generated secrets, one DatabaseNode per node of the topology and the entry point in front.
 */
export class StatePillar extends pulumi.ComponentResource {
  readonly network: PrivateNetwork;
  readonly firewall: NodeFirewall;
  readonly secrets: ClusterSecrets;
  readonly certificates: ClusterCertificates;
  readonly nodes: DatabaseNode[];
  readonly entryPoint: EntryPoint;
  readonly backup: BackupBucket;
  /** Each node's membership (node-join, node-leave), resize and configuration refresh; none without sshPrivateKey. */
  readonly memberships: NodeMembership[] = [];
  /** In index order (they run in the reverse order). */
  readonly resizes: ServerResize[] = [];
  /** In the order they run (the last node first). */
  readonly refreshes: ConfigRefresh[] = [];

  /** `postgresql://madbase:…@entry:5433/madbase` — the leader's PgBouncer, through HAProxy (secret). */
  readonly databaseUrl: pulumi.Output<string>;
  /** The same user through 5435: the leader's PostgreSQL itself, no pool (LISTEN/NOTIFY, migrations; secret). */
  readonly databaseDirectUrl: pulumi.Output<string>;
  /** The same user through 5434: streaming replicas' PgBouncers, for reads (secret). */
  readonly databaseReadUrl: pulumi.Output<string>;
  /** `redis://app:…@entry:6379/0` — the Redis master, through HAProxy (secret). */
  readonly redisUrl: pulumi.Output<string>;
  /** `rediss://app:…@entry:6381/0` — the same over TLS, the one Redis port `clientCidrs` reach (secret). */
  readonly redisTlsUrl: pulumi.Output<string>;
  readonly haproxyStatsPassword: pulumi.Output<string>;
  /** The cluster CA's certificate (public): clients verify the servers with it (sslmode=verify-full). */
  readonly caCertificate: pulumi.Output<string>;
  /** The operator's client certificate (public) and key (secret), for Prometheus and curl to Patroni's REST API. */
  readonly operatorCertificate: pulumi.Output<string>;
  readonly operatorPrivateKey: pulumi.Output<string>;

  constructor(name: string, args: StatePillarArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:StatePillar", name, {}, opts);
    const { settings, topology, options } = args.plan;
    const stack = settings.stack;
    // Hetzner names: every stack's objects start with its cluster name (madbase-<stack>).
    const baseName = topology.clusterName;
    const labels = stackLabels(stack);
    const protect = settings.protectNodes;

    this.network = new PrivateNetwork(
      `${name}-net`,
      {
        baseName,
        networkCidr: settings.networkCidr,
        subnetCidr: settings.subnetCidr,
        networkZone: args.plan.networkZone,
        labels,
        protect,
      },
      { parent: this },
    );

    this.firewall = new NodeFirewall(
      `${name}-firewall`,
      { firewallName: `${baseName}-nodes`, rules: args.plan.firewallRules, labels },
      { parent: this },
    );

    // A spread group puts each node on a different physical host, so one host failure costs one
    // node. Its inputs do not depend on the node count (Hetzner allows up to 10 servers in one).
    const placementGroup = new hcloud.PlacementGroup(
      `${name}-spread`,
      { name: `${baseName}-spread`, type: "spread", labels },
      { parent: this },
    );
    const placementGroupId = placementGroup.id.apply(Number);

    const sshKeys = new SshKeys(
      `${name}-ssh`,
      { baseName, publicKeys: settings.sshPublicKeys, labels },
      { parent: this },
    );

    // The backups' bucket, declared (and kept when the stack is destroyed) or an existing one.
    this.backup = new BackupBucket(
      `${name}-backup`,
      {
        bucket: settings.backupBucket,
        endpoint: settings.backupEndpoint,
        region: settings.backupRegion,
        clusterName: topology.clusterName,
        create: settings.backupCreateBucket,
        redisRetentionDays: settings.backupRedisRetentionDays,
        credentials: args.backupCredentials,
      },
      { parent: this },
    );

    this.secrets = new ClusterSecrets(
      `${name}-secrets`,
      { backupCredentials: args.backupCredentials, protect },
      { parent: this },
    );

    this.certificates = new ClusterCertificates(`${name}-tls`, { topology, protect }, { parent: this });
    const certs = this.certificates.values;

    this.nodes = topology.nodes.map((node) => {
      // Node i's cloud-init is rendered from the cluster as it is now. It is used once, when the
      // server is created; DatabaseNode ignores later changes to it (a grown node list, a new
      // template), so this value may change with the count without touching a running node.
      const userData = pulumi.secret(
        pulumi
          .all([this.secrets.values, certs])
          .apply(([secrets, tls]) =>
            checkUserDataSize(
              node,
              renderNode({ topology, node, options, secrets, tls, paths: serverPaths() })["user-data.yaml"],
            ),
          ),
      );
      return new DatabaseNode(
        node.name,
        {
          node,
          serverType: args.plan.serverType,
          location: settings.location,
          networkId: this.network.networkId,
          subnet: this.network.subnet,
          firewallId: this.firewall.firewallId,
          placementGroupId,
          sshKeyIds: sshKeys.ids,
          userData,
          volumeSizeGb: settings.volumeSizeGb,
          labels: nodeLabels(stack, node),
          protect,
        },
        { parent: this },
      );
    });

    if (args.sshPrivateKey)
      this.declareMembership(args.plan, args.applied, args.sshPrivateKey, protect, args.hcloudToken);

    this.entryPoint = new EntryPoint(
      `${name}-entry`,
      {
        entry: args.plan.entry,
        loadBalancerName: `${baseName}-entry`,
        location: settings.location,
        networkId: this.network.networkId,
        subnet: this.network.subnet,
        nodeSelector: databaseNodeSelector(stack),
        labels,
      },
      { parent: this },
    );

    const host = this.entryPoint.host;
    const pw = this.secrets.passwords;
    const urls = pulumi.all([pw.app.result, pw.redis.result]).apply(([app, redis]) => clientUrls({ app, redis }, host));
    this.databaseUrl = pulumi.secret(urls.databaseUrl);
    this.databaseDirectUrl = pulumi.secret(urls.databaseDirectUrl);
    this.databaseReadUrl = pulumi.secret(urls.databaseReadUrl);
    this.redisUrl = pulumi.secret(urls.redisUrl);
    this.redisTlsUrl = pulumi.secret(urls.redisTlsUrl);
    this.haproxyStatsPassword = pulumi.secret(pw.haproxyStats.result);
    this.caCertificate = this.certificates.caCertPem;
    this.operatorCertificate = this.certificates.operatorCertPem;
    this.operatorPrivateKey = this.certificates.operatorKeyPem;

    this.registerOutputs({
      databaseUrl: this.databaseUrl,
      databaseDirectUrl: this.databaseDirectUrl,
      databaseReadUrl: this.databaseReadUrl,
      redisUrl: this.redisUrl,
      redisTlsUrl: this.redisTlsUrl,
      patroniScope: topology.clusterName,
    });
  }

  /**
   * The chain of node commands over SSH, declared exactly as core's sequence orders it
   * (`declaredSequence`, core/sequence.ts): each step is its resource (NodeMembership for join and
   * leave, ServerResize, ConfigRefresh), depending on the step before it, and nothing else orders
   * them. The engine runs the steps whose inputs changed (`changeSequence`), and runs a leaving
   * node's leave as the delete of its membership, after every create and update.
   */
  private declareMembership(
    plan: StackPlan,
    applied: AppliedSettings,
    privateKey: pulumi.Input<string>,
    protect: boolean,
    hcloudToken?: pulumi.Input<string>,
  ): void {
    const { topology, options } = plan;
    const command = (step: Step, extra: Partial<ScriptContext> = {}) =>
      pulumi.secret(
        pulumi
          .all([this.secrets.values, this.certificates.values])
          .apply(([secrets, tls]) => stepScripts(step, topology, { options, secrets, tls, ...extra })),
      );
    let previous: pulumi.Resource | undefined;
    for (const step of declaredSequence(plan.settings.stack, applied)) {
      const { node } = step;
      const i = node.index;
      const target = { node, server: this.nodes[i].server, host: this.nodes[i].publicIpv4, privateKey };
      const after = previous ? [previous] : [];
      const name = stepResource(step);
      switch (step.kind) {
        case "provision":
          // The servers themselves (DatabaseNode), created together before the chain.
          continue;
        case "join": {
          const scripts = command(step);
          const membership = new NodeMembership(
            name,
            {
              ...target,
              join: scripts.apply(remoteCommand),
              // node-leave depends only on the node: the delete runs the one stored at join time.
              leave: command({ kind: "leave", node }).apply(remoteCommand),
              after: previous,
              protect,
            },
            { parent: this },
          );
          previous = membership.command;
          this.memberships.push(membership);
          break;
        }
        case "resize": {
          const [drain, settle] = [0, 1].map((k) => command(step).apply((s) => remoteCommand([s[k]])));
          const resize = new ServerResize(
            name,
            {
              node,
              serverType: step.serverType,
              serverId: this.nodes[i].server.id,
              host: this.nodes[i].publicIpv4,
              privateKey,
              hcloudToken,
              drain,
              settle,
              after: [this.nodes[i].server, ...after],
            },
            { parent: this },
          );
          previous = resize.command;
          this.resizes.unshift(resize);
          break;
        }
        case "refresh": {
          const script = command(step, { authorizedKeys: authorizedKeys(plan) }).apply(remoteCommand);
          const refresh = new ConfigRefresh(
            name,
            { ...target, script, digest: script.apply(scriptDigest), after },
            { parent: this },
          );
          previous = refresh.command;
          this.refreshes.push(refresh);
          break;
        }
        case "maintain": {
          const [maintain, settle] = [0, 1].map((k) => command(step).apply((s) => remoteCommand([s[k]])));
          const maintenance = new NodeMaintenance(
            name,
            {
              node,
              revision: step.revision,
              host: this.nodes[i].publicIpv4,
              privateKey,
              maintain,
              settle,
              after: [this.nodes[i].server, ...after],
            },
            { parent: this },
          );
          previous = maintenance.command;
          break;
        }
        case "leave":
        case "decommission":
          // Never declared: the engine runs them as deletes (ENGINE_DELETE_RULE).
          throw new Error(`${describeStep(step)}: a declared sequence has no ${step.kind}`);
      }
    }
  }

  /** Name, private address and public IPv4 of each node, in index order. */
  nodeSummaries(): NodeSummary[] {
    return this.nodes.map((n) => ({ name: n.name, privateIp: n.privateIp, publicIpv4: n.publicIpv4 }));
  }
}

/**
 * root's keys on every node: the stack's sshPublicKeys. With none set, Hetzner e-mailed a root
 * password and the nodes' key file is left alone (emptying it would lock Pulumi out).
 */
function authorizedKeys(plan: StackPlan): string[] | undefined {
  return plan.settings.sshPublicKeys.length > 0 ? plan.settings.sshPublicKeys : undefined;
}
