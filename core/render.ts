import * as path from "node:path";
import {
  ARCHIVING_OFF_COMMAND,
  archivesWal,
  BACKUP_TIMERS,
  DEFAULT_VOLUME_GB,
  archivePushQueueMaxMb,
  renderBackupFiles,
  renderBackupUnits,
  pgbackrestReplicaCommand,
  pgbackrestRestoreCommand,
  archiveCommand,
} from "./backup";
import { plainScript, template } from "./templates";
import { BundledFile, bundleFiles } from "./userdata";
import { EXPORTER_PACKAGES, NODE_PACKAGES } from "./packages";
import { NODE_FILES, NodeFile, NodePaths } from "./paths";
import { dynamicConfig } from "./patroni";
import { postgresTuning } from "./plans";
import { checkProfile } from "./profiles";
import {
  AUTH_DATABASE,
  AUTH_POOL_SIZE,
  AUTH_QUERY,
  AUTH_ROLE_CONNECTION_LIMIT,
  DEFAULT_POOL_MODE,
  MAX_CLIENT_CONNECTIONS,
  MAX_PREPARED_STATEMENTS,
  PGBOUNCER_LIMIT_NOFILE,
  checkPoolMode,
  poolSize,
  poolerAuthSql,
} from "./pooler";
import { APP_DATABASE, ClusterSecrets, REDIS_USERS, USERS, checkSecrets } from "./secrets";
import { ClusterTls, TLS_METRICS_CERTIFICATES, TLS_METRICS_FILE, TLS_METRICS_INTERVAL_SECONDS, nodeTls } from "./tls";
import { NodeSpec, PORTS, Topology, possibleNodeAddresses } from "./topology";
import { POLICY_RC_D, UPDATES_SCRIPT, renderPolicyRcD, updatesFiles } from "./maintenance";

import type { ClusterOptions, NodeRenderInput, RenderedNode } from "./model";

/** The scripts of a node's first boot and of Redis's start guard (templates/scripts/<name>.sh, plain shell). */
export const FIRST_BOOT_SCRIPT = "madbase-first-boot";
export const REDIS_FOLLOW_SCRIPT = "madbase-redis-follow";
export const MOUNT_VOLUME_SCRIPT = "madbase-mount-volume";
export const TLS_METRICS_SCRIPT = "madbase-tls-metrics";
/** The job that writes TLS_METRICS_FILE, and its timer (every node). */
export const TLS_METRICS_UNITS = ["madbase-tls-metrics.service", "madbase-tls-metrics.timer"] as const;
/** Every timer a node's first boot enables: the backup jobs' (they act only where this node leads) and the certificate ends'. */
export const NODE_TIMERS = [...BACKUP_TIMERS, TLS_METRICS_UNITS[1]] as const;

/** The units a first boot starts only on a node that creates the cluster (node-join starts them otherwise). */
export const CLUSTER_UNITS = ["etcd", "patroni", "redis-server", "redis-sentinel"] as const;
/** The units every node starts at its first boot, joining or not. */
export const EDGE_UNITS = ["haproxy", "pgbouncer", ...EXPORTER_PACKAGES] as const;

/** Hetzner's metadata service (the server's user data, every secret in it): root only on a node. */
export const METADATA_IP = "169.254.169.254";
/** Debian's nftables.service loads this file at boot; the node's only rules are madbase's. */
export const NFTABLES_CONF = "/etc/nftables.conf";
/** The nftables table that guards the metadata address (its counter shows what it dropped). */
export const NFTABLES_TABLE = "madbase_guard";

/** The node's firewall rules (templates/nftables.conf.hbs), the same on every node. */
export function renderNftables(): string {
  return template("nftables.conf")({ metadataIp: METADATA_IP });
}

/** How long a first boot waits for PostgreSQL, Redis and the other units before it fails. */
export const FIRST_BOOT_WAIT_SECONDS = 300;

/** Who owns each file on a server, and its mode: secrets readable only by their daemon. */
const FILE_OWNERSHIP: Record<Exclude<NodeFile, "user-data.yaml">, { owner: string; mode: string }> = {
  "patroni.yml": { owner: "postgres:postgres", mode: "0600" },
  "etcd.conf": { owner: "root:root", mode: "0644" },
  "redis.conf": { owner: "redis:redis", mode: "0640" },
  "sentinel.conf": { owner: "redis:redis", mode: "0640" },
  "redis-users.acl": { owner: "redis:redis", mode: "0640" },
  "haproxy.cfg": { owner: "root:haproxy", mode: "0640" },
  "pgbackrest.conf": { owner: "postgres:postgres", mode: "0640" },
  // The exporters run as the `prometheus` user their packages create (written after the packages).
  "node-exporter.env": { owner: "root:root", mode: "0644" },
  "postgres-exporter.env": { owner: "root:prometheus", mode: "0640" },
  "redis-exporter.env": { owner: "root:prometheus", mode: "0640" },
  "redis-exporter-passwords.json": { owner: "root:prometheus", mode: "0640" },
  // PgBouncer and its exporter run as postgres (Debian's units).
  "pgbouncer.ini": { owner: "root:postgres", mode: "0640" },
  "pgbouncer-userlist.txt": { owner: "postgres:postgres", mode: "0600" },
  "pgbouncer-exporter.env": { owner: "root:postgres", mode: "0640" },
};

/**
 * The node's certificate files (NodePaths.tls). The key: root:ssl-cert 0640, which PostgreSQL
 * accepts for a root-owned key; Patroni and PostgreSQL (postgres) and etcd read it through the group.
 */
export function tlsFiles(input: NodeRenderInput): { path: string; owner: string; mode: string; content: string }[] {
  const pem = nodeTls(input.tls, input.node);
  const { tls } = input.paths;
  return [
    { path: tls.caCert, owner: "root:root", mode: "0644", content: pem.caCert },
    { path: tls.cert, owner: "root:root", mode: "0644", content: pem.cert },
    { path: tls.key, owner: "root:ssl-cert", mode: "0640", content: pem.key },
  ];
}

/** The systemd units that report the node's certificate ends (core/tls.ts TLS_METRICS). */
export function renderTlsMetricsUnits(
  input: NodeRenderInput,
): { path: string; owner: string; mode: string; content: string }[] {
  const { tls, scriptDir } = input.paths;
  const files: Record<(typeof TLS_METRICS_CERTIFICATES)[number], string> = { ca: tls.caCert, node: tls.cert };
  const m = {
    nodeName: input.node.name,
    script: path.posix.join(scriptDir, TLS_METRICS_SCRIPT),
    metricsFile: TLS_METRICS_FILE,
    interval: TLS_METRICS_INTERVAL_SECONDS,
    certificates: TLS_METRICS_CERTIFICATES.map((name) => ({ name, file: files[name] })),
  };
  return TLS_METRICS_UNITS.map((unit) => ({
    path: `/etc/systemd/system/${unit}`,
    owner: "root:root",
    mode: "0644",
    content: template(`systemd/${unit}`)(m),
  }));
}

/** The shell variable config-refresh (templates/scripts/config-refresh.sh.hbs) sets when a certificate file changed. */
const TLS_RELOAD_FLAG = "tls_changed";

/**
 * What rereads new certificate files: etcd does at every handshake; Patroni (REST API), HAProxy
 * (the CA) and PgBouncer (client and server TLS, for new connections; open ones keep theirs) on a
 * reload; PostgreSQL on its own reload (a Patroni reload skips it when patroni.yml did not change).
 */
export function tlsReloadCommand(paths: NodePaths): string {
  const psql = `runuser -u postgres -- psql -h ${paths.pgSocketDir} -p ${PORTS.postgres} -d postgres -Atqc 'SELECT pg_reload_conf()' >/dev/null`;
  // The certificate-end metrics follow at once, so an expiry alert clears with the renewal.
  return `svc reload patroni && svc reload haproxy && svc reload pgbouncer && ${psql} && svc restart ${TLS_METRICS_UNITS[0]}`;
}

/** The lag a replica may have and still serve reads through 5434. */
const REPLICA_MAX_LAG = "16MB";

function model(input: NodeRenderInput) {
  const { topology, node, options, secrets, paths } = input;
  const memoryMb = nodeMemoryMb(options);
  const redisMasterIp = input.redisMasterIp ?? topology.nodes[0].privateIp;
  const { interMs } = options.profile.haproxy;
  return {
    topology,
    node,
    secrets,
    paths,
    users: USERS,
    redisUsers: REDIS_USERS,
    ports: PORTS,
    profile: options.profile,
    synchronousMode: options.synchronousMode,
    dcs: dynamicConfig(options),
    backup: { port: 0, localRepoPath: "", ...options.backup },
    tuning: postgresTuning(options.plan, memoryMb),
    memoryMb,
    redisMaxMemoryMb: redisMaxMemoryMb(memoryMb),
    redisMinReplicasToWrite: redisMinReplicasToWrite(topology),
    redisMasterIp,
    redisReplicaOf: node.privateIp === redisMasterIp ? "" : redisMasterIp,
    // Every other node's Redis replicates from the master: Sentinel is told so from the start
    // rather than left to learn it from the master's INFO, which it reads only every 10 s (a
    // fresh cluster could fail over only once its Sentinels knew the replicas).
    sentinelKnownReplicas: topology.nodes.map((n) => n.privateIp).filter((ip) => ip !== redisMasterIp),
    etcdInitialClusterState: input.etcdInitialClusterState ?? "new",
    etcdInitialCluster: topology.etcdInitialCluster,
    checkTimeoutMs: Math.max(1000, interMs),
    fastInterMs: Math.max(250, Math.floor(interMs / 2)),
    replicaMaxLag: REPLICA_MAX_LAG,
    appDatabase: APP_DATABASE,
    authDatabase: AUTH_DATABASE,
    authQuery: AUTH_QUERY,
    pooler: {
      poolMode: checkPoolMode(options.poolMode ?? DEFAULT_POOL_MODE),
      poolSize: poolSize(options.plan.maxConnections),
      maxClientConn: MAX_CLIENT_CONNECTIONS,
      maxPreparedStatements: MAX_PREPARED_STATEMENTS,
      limitNofile: PGBOUNCER_LIMIT_NOFILE,
      authPoolSize: AUTH_POOL_SIZE,
    },
    archiveCommand: archivesWal(options.backup) ? archiveCommand(paths.scriptDir) : ARCHIVING_OFF_COMMAND,
    archivePushQueueMaxMb: archivePushQueueMaxMb(options.volumeSizeGb ?? DEFAULT_VOLUME_GB),
    restoreCommand: pgbackrestRestoreCommand(paths.config["pgbackrest.conf"], topology.clusterName),
    pgbackrestReplicaCommand: pgbackrestReplicaCommand(paths.scriptDir),
    // Patroni's etcd endpoints: every member. (Patroni 3.0.2 needed only the other nodes' members
    // and use_proxies, or a partitioned node overwrote the new leader's key; fixed in 3.0.3.)
    etcdHosts: topology.nodes,
    // Who may make unsafe REST calls: loopback and every address a node of the stack can have
    // (count-independent, so a joining node is in every running node's list already).
    patroniAllowlist: ["127.0.0.1", ...possibleNodeAddresses(topology.subnetCidr)],
    requireClientCertificates: options.patroniClientCertificates !== "prepared",
    // Patroni appends the connection string; psql reads the SQL (passwords included) from a file.
    postBootstrap: `psql -v ON_ERROR_STOP=1 -f ${paths.postBootstrapSql} -d`,
    pgHba: [
      `local all ${USERS.postgresSuperuser} peer`,
      "local all all scram-sha-256",
      "host all all 127.0.0.1/32 scram-sha-256",
      `host replication ${USERS.replication} 127.0.0.1/32 scram-sha-256`,
      // Remote logins, replication included, only over TLS; any plain-text remote login is refused.
      `hostssl replication ${USERS.replication} ${topology.subnetCidr} scram-sha-256`,
      `hostssl all all ${topology.subnetCidr} scram-sha-256`,
      "hostnossl replication all 0.0.0.0/0 reject",
      "hostnossl all all 0.0.0.0/0 reject",
    ],
  };
}

/**
 * Patroni runs this SQL once (post_bootstrap), after it creates the cluster: from
 * initdb, or from a backup (madbase-pg-restore), so it must do the right thing both ways. Each role
 * is created, or (restored from a backup) given this stack's password, which may be new; the
 * database is created only when it is missing. (Patroni itself creates or resets the superuser,
 * replication and rewind roles and grants pg_rewind what it needs.) Last, in the application
 * database, PgBouncer's auth_query function (core/pooler.ts).
 */
export function postBootstrapSql(secrets: ClusterSecrets): string {
  const sql = [
    roleSql(USERS.app, `LOGIN PASSWORD '${secrets.app}'`),
    // The metrics exporter's read-only role: pg_monitor (statistics and settings, no table data).
    roleSql(USERS.monitoring, `LOGIN CONNECTION LIMIT 5 PASSWORD '${secrets.monitoring}'`, "pg_monitor"),
    `SELECT 'CREATE DATABASE ${APP_DATABASE} OWNER ${USERS.app}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${APP_DATABASE}') \\gexec`,
    poolerSetupSql(secrets),
  ];
  return sql.join("\n") + "\n";
}

/** A role created, or (it exists: a restored backup, a second run) given these options. */
function roleSql(name: string, options: string, inRole?: string): string {
  return (
    `DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '${name}') THEN ALTER ROLE ${name} ${options}; ` +
    `ELSE CREATE ROLE ${name} ${options}${inRole ? ` IN ROLE ${inRole}` : ""}; END IF; END$$;`
  );
}

/**
 * PgBouncer's lookup role (it logs in and calls pgbouncer.get_auth, nothing else) and, in the
 * application database, that function: psql input run as the superuser from the postgres
 * database, once at the cluster's creation and by config-refresh on the leader. Idempotent.
 */
export function poolerSetupSql(secrets: ClusterSecrets): string {
  const role = roleSql(
    USERS.pgbouncerAuth,
    `LOGIN CONNECTION LIMIT ${AUTH_ROLE_CONNECTION_LIMIT} PASSWORD '${secrets.pgbouncerAuth}'`,
  );
  return [role, `\\connect ${AUTH_DATABASE}`, poolerAuthSql()].join("\n") + "\n";
}

/**
 * The node's environment file (paths.nodeEnvFile): what madbase-first-boot and madbase-redis-follow
 * need to know. Whether the node joins a running cluster is decided here, when rendering: the
 * Pulumi program (and the local runner) render a node added by scaling with
 * `etcdInitialClusterState: "existing"`.
 */
export function renderNodeEnv(input: NodeRenderInput): string {
  const m = model(input);
  return template("scripts/node.env")({
    ...m,
    joining: m.etcdInitialClusterState === "existing" ? 1 : 0,
    candidateIps: possibleNodeAddresses(input.topology.subnetCidr).join(" "),
    pgVersionDir: path.posix.dirname(input.paths.pgDataDir),
    waitSeconds: FIRST_BOOT_WAIT_SECONDS,
    clusterUnits: CLUSTER_UNITS.join(" "),
    edgeUnits: EDGE_UNITS.join(" "),
    nodeTimers: NODE_TIMERS.join(" "),
    archiving: archivesWal(input.options.backup),
  });
}

/** The node's own scripts (no rendered value in them): the volume mount, the first boot, Redis's start guard. */
function nodeScripts(paths: NodePaths): { path: string; content: string }[] {
  return [
    [MOUNT_VOLUME_SCRIPT, plainScript("mount-volume.sh")],
    [FIRST_BOOT_SCRIPT, plainScript("first-boot.sh")],
    [REDIS_FOLLOW_SCRIPT, plainScript("redis-follow.sh")],
    [TLS_METRICS_SCRIPT, plainScript("tls-metrics.sh")],
  ].map(([name, content]) => ({ path: path.posix.join(paths.scriptDir, name), content }));
}

/** A file config-refresh keeps at its rendered content on a running node, and what follows a change. */
export interface RefreshedFile {
  path: string;
  owner: string;
  mode: string;
  content: string;
  /** A command to run when the file changed (`svc ...`: a unit that reads it only when it starts). */
  after?: string;
}

/** Which exporter (a service of `svc`) reads each environment file at its start. */
const EXPORTER_SERVICES: Partial<Record<NodeFile, string>> = {
  "node-exporter.env": "node_exporter",
  "postgres-exporter.env": "postgres_exporter",
  "redis-exporter.env": "redis_exporter",
  "redis-exporter-passwords.json": "redis_exporter",
  "pgbouncer-exporter.env": "pgbouncer_exporter",
};

/**
 * The files of a running node that config-refresh replaces when their rendered content changed.
 * Not here: haproxy.cfg and patroni.yml (config-refresh checks and reloads them itself);
 * redis.conf and sentinel.conf (the daemons rewrite them; they change through their APIs, while
 * redis-users.acl, which no daemon rewrites, is here);
 * etcd.conf (only the first start reads its initial cluster); the first boot's own files.
 */
export function refreshedFiles(input: NodeRenderInput, files: RenderedNode): RefreshedFile[] {
  const own = (name: keyof typeof FILE_OWNERSHIP, after?: string): RefreshedFile => ({
    path: input.paths.config[name],
    ...FILE_OWNERSHIP[name],
    content: files[name],
    ...(after ? { after } : {}),
  });
  const backup = renderBackupFiles(input);
  return [
    // pgBackRest reads its file at every command: nothing to restart.
    own("pgbackrest.conf"),
    // Redis's users: nothing rewrites this file, so it is kept as rendered and loaded at once.
    own("redis-users.acl", '[ "$(redis_at "$NODE_IP" ACL LOAD)" = OK ] || die "redis: ACL LOAD refused"'),
    // PgBouncer rereads both on SIGHUP: clients and server connections stay.
    own("pgbouncer.ini", "svc reload pgbouncer"),
    own("pgbouncer-userlist.txt", "svc reload pgbouncer"),
    ...(Object.keys(EXPORTER_SERVICES) as (keyof typeof FILE_OWNERSHIP)[]).map((name) =>
      own(name, `svc try-restart ${EXPORTER_SERVICES[name]}`),
    ),
    ...Object.values(backup),
    ...renderBackupUnits(input).map(refreshedUnit),
    ...nodeScripts(input.paths)
      .filter((f) => !f.path.endsWith(FIRST_BOOT_SCRIPT))
      .map((f) => ({ ...f, owner: "root:root", mode: "0755" })),
    // After the scripts: a timer started on a node booted long ago may fire at once.
    ...renderTlsMetricsUnits(input).map(refreshedUnit),
    // Package updates (core/maintenance.ts), here only: the user data has no room for them (Hetzner's
    // 32 KiB), and every node is refreshed after its join, before it serves. The install-time
    // policy-rc.d (refusing every unit) stays until this data-units-only one replaces it; the holds
    // are set by config-refresh itself, every run (madbase-updates hold), after these files.
    {
      path: `${input.paths.scriptDir}/${UPDATES_SCRIPT}`,
      owner: "root:root",
      mode: "0755",
      content: plainScript("updates.sh"),
    },
    ...updatesFiles(input.paths).map((f) => (f.path.startsWith("/etc/systemd/") ? refreshedUnit(f) : f)),
    { path: POLICY_RC_D, owner: "root:root", mode: "0755", content: renderPolicyRcD() },
    // A renewed certificate (README, Rotation): config-refresh reloads once all three are in place
    // (TLS_RELOAD_FLAG), so no daemon ever loads a certificate with the other key.
    ...tlsFiles(input).map((f) => ({ ...f, after: `${TLS_RELOAD_FLAG}=1` })),
    // A node booted before the guard existed gets it too, loaded at once and at every boot.
    {
      path: NFTABLES_CONF,
      owner: "root:root",
      mode: "0644",
      content: renderNftables(),
      after: "svc start nftables && svc reload nftables",
    },
  ];
}

/**
 * A unit file config-refresh keeps: systemd rereads it; a changed timer restarts so its schedule
 * counts, and a timer new to a running node (one its first boot did not know) is enabled and
 * started, as first boot enables every one.
 */
function refreshedUnit(u: { path: string; owner: string; mode: string; content: string }): RefreshedFile {
  const unit = path.posix.basename(u.path);
  return {
    ...u,
    after: unit.endsWith(".timer")
      ? `svc daemon-reload units && svc start ${unit} && svc try-restart ${unit}`
      : "svc daemon-reload units",
  };
}

/** Redis shares the node with PostgreSQL: an eighth of memory, at least 64 MB. */
export function redisMaxMemoryMb(memoryMb: number): number {
  return Math.max(64, Math.floor(memoryMb / 8));
}

/** A master with no replica to reach stops taking writes; a lone node has none to wait for. */
export function redisMinReplicasToWrite(topology: Topology): number {
  return topology.nodeCount >= 3 ? 1 : 0;
}

/** The memory a node's PostgreSQL and Redis are sized for. */
export function nodeMemoryMb(options: ClusterOptions): number {
  return options.memoryMb ?? options.plan.memoryGb * 1024;
}

/**
 * What the file bundle of the user data holds: node.env, the node's scripts, the backup scripts, secrets and
 * units, the rendered configuration and the post-bootstrap SQL. They land after the packages are
 * installed (the owners, postgres above all, exist by then) and before the first-boot script runs.
 */
function bundledFiles(input: NodeRenderInput, files: RenderedNode): BundledFile[] {
  return [
    { path: input.paths.nodeEnvFile, owner: "root:root", mode: "0644", content: renderNodeEnv(input) },
    ...nodeScripts(input.paths).map((f) => ({ ...f, owner: "root:root", mode: "0755" })),
    ...Object.values(renderBackupFiles(input)),
    ...renderBackupUnits(input),
    ...renderTlsMetricsUnits(input),
    ...Object.entries(FILE_OWNERSHIP).map(([name, own]) => ({
      path: input.paths.config[name as keyof typeof FILE_OWNERSHIP],
      ...own,
      content: files[name as NodeFile],
    })),
    // The node's certificate files (the key root:ssl-cert: the group exists once the packages are in).
    ...tlsFiles(input),
    {
      path: input.paths.postBootstrapSql,
      owner: "postgres:postgres",
      mode: "0600",
      content: postBootstrapSql(input.secrets),
    },
    // After the packages, so a package's own default never replaces it.
    { path: NFTABLES_CONF, owner: "root:root", mode: "0644", content: renderNftables() },
  ];
}

/** Renders the files one node runs. Pure: the same input always gives the same files. */
export function renderNode(input: NodeRenderInput): RenderedNode {
  checkProfile(input.options.profile);
  checkSecrets(input.secrets);
  const m = model(input);
  const files = {} as RenderedNode;
  for (const name of NODE_FILES) {
    if (name !== "user-data.yaml") files[name] = template(name)(m);
  }
  files["user-data.yaml"] = template("user-data.yaml")({
    ...m,
    packages: NODE_PACKAGES,
    retriedUnits: [...CLUSTER_UNITS.filter((u) => u !== "patroni"), ...EDGE_UNITS].map((unit) => ({
      unit,
      // PgBouncer holds a descriptor per client and per server connection (Debian's unit keeps 1024).
      limitNofile: unit === "pgbouncer" ? PGBOUNCER_LIMIT_NOFILE : 0,
    })),
    // Everything else the node needs, in one compressed archive: Hetzner takes 32 KiB of user data.
    fileBundle: bundleFiles(bundledFiles(input, files)),
  });
  return files;
}

/** Renders every node of a topology. */
export function renderCluster(
  topology: Topology,
  options: ClusterOptions,
  secrets: ClusterSecrets,
  tls: ClusterTls,
  pathsFor: (node: NodeSpec) => NodePaths,
): Record<string, RenderedNode> {
  return Object.fromEntries(
    topology.nodes.map((node) => [
      node.name,
      renderNode({ topology, node, options, secrets, tls, paths: pathsFor(node) }),
    ]),
  );
}
