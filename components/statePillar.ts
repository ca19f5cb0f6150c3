import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import {
  checkUserDataSize,
  databaseNodeSelector,
  drainScript,
  clientUrls,
  handoffScript,
  joinScript,
  leaveScript,
  nodeLabels,
  refreshOrder,
  refreshScript,
  remoteCommand,
  renderNode,
  ScriptContext,
  scriptDigest,
  serverPaths,
  settleScript,
  stackLabels,
  StackPlan,
  systemdControl,
} from "../core";
import { BackupBucket } from "./backupBucket";
import { ClusterCertificates } from "./clusterCertificates";
import { ClusterSecrets } from "./clusterSecrets";
import { ConfigRefresh } from "./configRefresh";
import { DatabaseNode } from "./databaseNode";
import { EntryPoint } from "./entryPoint";
import { NodeFirewall } from "./nodeFirewall";
import { NodeMembership } from "./nodeMembership";
import { PrivateNetwork } from "./privateNetwork";
import { ServerResize } from "./serverResize";
import { SshKeys } from "./sshKeys";
import { BackupCredentials } from "./stackConfig";

export interface StatePillarArgs {
  /** From `planStack`: validated settings, topology and everything derived from them. */
  plan: StackPlan;
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

    if (args.sshPrivateKey) this.declareMembership(args.plan, args.sshPrivateKey, protect, args.hcloudToken);

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
   * Membership over SSH (NodeMembership, ServerResize, ConfigRefresh; the scripts are
   * core/scale.ts's, with systemd behind `svc`): node-join on each node, one at a time in index
   * order, and node-leave before a removed node's server goes; then the resize chain, one node at
   * a time from the last node to node 0 (usually the founding leader, so leadership moves once,
   * onto a node that already has the new type); then config-refresh on every node, one at a time,
   * led by the leadership hand-off, so a shrink moves leadership off the leaving nodes before
   * anything else, and a refresh renders the per-node parameters of the new plan onto a server
   * that already has it. Refreshes, too, run from the last node to node 0 (refreshOrder). Pulumi deletes last, so removed nodes leave after the nodes that stay
   * are refreshed.
   */
  private declareMembership(
    plan: StackPlan,
    privateKey: pulumi.Input<string>,
    protect: boolean,
    hcloudToken?: pulumi.Input<string>,
  ): void {
    const { topology, options } = plan;
    const command = (scripts: (ctx: ScriptContext) => { name: string; text: string }[]) =>
      pulumi.secret(
        pulumi
          .all([this.secrets.values, this.certificates.values])
          .apply(([secrets, tls]) =>
            remoteCommand(
              scripts({ options, secrets, tls, paths: () => serverPaths(), control: () => systemdControl() }),
            ),
          ),
      );
    let previous: pulumi.Resource | undefined;
    topology.nodes.forEach((node, i) => {
      const membership = new NodeMembership(
        `${node.name}-membership`,
        {
          node,
          server: this.nodes[i].server,
          host: this.nodes[i].publicIpv4,
          privateKey,
          join: command((ctx) => [{ name: "node-join", text: joinScript(topology, node, ctx) }]),
          leave: command((ctx) => [{ name: "node-leave", text: leaveScript(topology, node, ctx) }]),
          after: previous,
          protect,
        },
        { parent: this },
      );
      previous = membership.command;
      this.memberships.push(membership);
    });
    const memberships: pulumi.Resource[] = this.memberships.map((m) => m.command);
    // The resize chain, from the last node down: node i drains towards the nodes already resized.
    let chain: pulumi.Resource[] = memberships;
    const resizes: ServerResize[] = [];
    for (let i = topology.nodes.length - 1; i >= 0; i--) {
      const node = topology.nodes[i];
      const resize = new ServerResize(
        `${node.name}-resize`,
        {
          node,
          serverType: plan.serverType,
          serverId: this.nodes[i].server.id,
          host: this.nodes[i].publicIpv4,
          privateKey,
          hcloudToken,
          drain: command((ctx) => [
            { name: "node-drain", text: drainScript(topology, node, ctx, { prefer: topology.nodes.slice(i + 1) }) },
          ]),
          settle: command((ctx) => [{ name: "node-settle", text: settleScript(topology, node, ctx) }]),
          after: [this.nodes[i].server, ...chain],
        },
        { parent: this },
      );
      chain = [resize.command];
      resizes.unshift(resize);
    }
    this.resizes.push(...resizes);
    let after: pulumi.Resource[] = [...memberships, ...chain];
    // One node at a time, last node first (refreshOrder): a refresh that restarts PostgreSQL
    // restarts the replicas before the founding node, which usually leads.
    refreshOrder(topology).forEach((node, k) => {
      const i = node.index;
      const script = command((ctx) => [
        ...(k === 0 ? [{ name: "leadership-handoff", text: handoffScript(topology, node, ctx) }] : []),
        {
          name: "config-refresh",
          text: refreshScript(topology, node, { ...ctx, authorizedKeys: authorizedKeys(plan) }),
        },
      ]);
      const refresh = new ConfigRefresh(
        `${node.name}-config`,
        {
          node,
          server: this.nodes[i].server,
          host: this.nodes[i].publicIpv4,
          privateKey,
          script,
          digest: script.apply(scriptDigest),
          after,
        },
        { parent: this },
      );
      after = [refresh.command];
      this.refreshes.push(refresh);
    });
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
