/**
 * The backup side of a node: the scripts that back up and restore PostgreSQL (pgBackRest) and
 * Redis (RDB snapshots), the environment file with their secrets, and the systemd timers that run
 * them on a server. Every node gets the same set; each script decides at run time whether this
 * node is the one that acts (the Patroni leader, the Redis master).
 *
 * Pure, like the rest of the core: the local runner writes the same scripts under each node's
 * directory and the tests run them there.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import Handlebars from "handlebars";
import type { BackupTarget, NodeRenderInput } from "./render";
import { PORTS } from "./topology";

/**
 * The one script every node carries (in `paths.scriptDir`): `madbase-backup pg|pg-restore|redis|
 * redis-restore ...`. One file rather than four keeps the shared part (settings, logging, the
 * snapshot store) in one place and the cloud-init document small.
 */
export const BACKUP_SCRIPT = "madbase-backup";
/** The parts of the script, one template each (templates/scripts/<name>.sh.hbs). */
const SCRIPT_PARTS = ["store", "pg-backup", "pg-restore", "redis-snapshot", "redis-restore", "pgbackrest-archive-push"] as const;

/** systemd units of a server (the local runner has no systemd; tests run the scripts directly). */
export const BACKUP_UNITS = [
  "madbase-pg-backup@.service",
  "madbase-pg-backup-full.timer",
  "madbase-pg-backup-diff.timer",
  "madbase-redis-snapshot.service",
  "madbase-redis-snapshot.timer",
] as const;
/** The timers to enable: weekly full and daily differential PostgreSQL backups, hourly Redis snapshots. */
export const BACKUP_TIMERS = BACKUP_UNITS.filter((u) => u.endsWith(".timer"));

/** Default days of Redis snapshots kept when a BackupTarget does not say. */
export const DEFAULT_REDIS_RETENTION_DAYS = 7;

/** How long a snapshot waits for Redis's BGSAVE before it reports a failure. */
const BGSAVE_WAIT_SECONDS = 300;

export interface BackupFile {
  /** Where it is installed on the node. */
  path: string;
  owner: string;
  mode: string;
  content: string;
  /** cloud-init's write_files encoding of `content`; plain text when absent. */
  encoding?: "gz+b64";
}

const TEMPLATE_DIR = path.resolve(__dirname, "..", "templates");
const hb = Handlebars.create();
hb.registerHelper("json", (value: unknown) => JSON.stringify(value));
hb.registerHelper("concat", (...args: unknown[]) => args.slice(0, -1).join(""));
for (const part of SCRIPT_PARTS) {
  hb.registerPartial(part, fs.readFileSync(path.join(TEMPLATE_DIR, "scripts", `${part}.sh.hbs`), "utf8"));
}
const compiled = new Map<string, Handlebars.TemplateDelegate>();
function template(name: string): Handlebars.TemplateDelegate {
  let t = compiled.get(name);
  if (!t) {
    t = hb.compile(fs.readFileSync(path.join(TEMPLATE_DIR, `${name}.hbs`), "utf8"), { strict: true, noEscape: true });
    compiled.set(name, t);
  }
  return t;
}

/** Where the Redis snapshots of a cluster go in the bucket: beside pgBackRest's repository, not in it. */
export function redisSnapshotPrefix(clusterName: string): string {
  return `${clusterName}/redis`;
}

/** Where pgBackRest keeps the cluster's repository in the bucket (repo1-path, without the leading /). */
export function pgbackrestPrefix(clusterName: string): string {
  return `${clusterName}/pgbackrest`;
}

/** pgBackRest's restore command for Patroni's `pgbackrest` replica method (see patroni.yml). */
/**
 * Patroni's pgbackrest replica method: a restore from the repository, but only when its stanza is
 * this cluster's (madbase-backup pgbackrest-replica checks the leader's system identifier), else
 * it fails and Patroni clones from the leader instead.
 */
export function pgbackrestReplicaCommand(scriptDir: string): string {
  return `${path.posix.join(scriptDir, BACKUP_SCRIPT)} pgbackrest-replica`;
}

/** restore_command for replicas and for pg_rewind: WAL the leader no longer has, from the archive. */
/** PostgreSQL's archive_command: pgBackRest's archive-push behind a timeline guard (templates/scripts/pgbackrest-archive-push.sh.hbs). */
export function archiveCommand(scriptDir: string): string {
  return `${path.posix.join(scriptDir, BACKUP_SCRIPT)} pgbackrest-archive-push %p`;
}

export function pgbackrestRestoreCommand(pgbackrestConf: string, stanza: string): string {
  return `pgbackrest --config=${pgbackrestConf} --stanza=${stanza} archive-get %f "%p"`;
}

/**
 * With a local directory as the repository (the local runner: `<dir>/pgbackrest`), Redis snapshots
 * go to `<dir>/redis`: pgBackRest's own directory is readable by postgres only.
 */
export function localRedisSnapshotDir(localRepoPath: string): string {
  return path.posix.join(path.posix.dirname(localRepoPath), "redis");
}

function storeLabel(backup: BackupTarget, clusterName: string): string {
  return backup.localRepoPath ? localRedisSnapshotDir(backup.localRepoPath) : `s3://${backup.bucket}/${redisSnapshotPrefix(clusterName)}/ on ${backup.endpoint}`;
}

function backupModel(input: NodeRenderInput) {
  const { topology, node, paths, secrets } = input;
  const backup = input.options.backup;
  const stanza = topology.clusterName;
  return {
    node,
    stanza,
    paths,
    secrets,
    ports: PORTS,
    backup: { localRepoPath: "", ...backup },
    scriptDir: paths.scriptDir,
    pgbackrestConf: paths.config["pgbackrest.conf"],
    patroniConf: paths.config["patroni.yml"],
    patroniUrl: `http://${node.privateIp}:${PORTS.patroni}`,
    etcdUrl: `http://127.0.0.1:${PORTS.etcdClient}`,
    // Patroni's key for "this cluster exists" (namespace /madbase/, scope = cluster name).
    initializeKey: `/madbase/${stanza}/initialize`,
    logDir: paths.pgbackrestLogDir,
    repoLabel: backup.localRepoPath ? backup.localRepoPath : `s3://${backup.bucket}/${pgbackrestPrefix(stanza)} on ${backup.endpoint}`,
    storeLabel: storeLabel(backup, stanza),
    redisPrefix: redisSnapshotPrefix(stanza),
    redisStoreDir: backup.localRepoPath ? localRedisSnapshotDir(backup.localRepoPath) : "",
    redisDir: paths.redisDir,
    redisRetentionDays: backup.redisRetentionDays ?? DEFAULT_REDIS_RETENTION_DAYS,
    bgsaveWaitSeconds: BGSAVE_WAIT_SECONDS,
    s3Host: backup.port ? `${backup.endpoint}:${backup.port}` : backup.endpoint,
  };
}

/**
 * The script and its environment file, for any node (server or local). The script holds no
 * secret; the environment file (Redis password, S3 keys) is readable by root and redis only.
 */
export function renderBackupFiles(input: NodeRenderInput): Record<typeof BACKUP_SCRIPT | "backup.env", BackupFile> {
  const m = backupModel(input);
  return {
    [BACKUP_SCRIPT]: { path: path.posix.join(m.scriptDir, BACKUP_SCRIPT), owner: "root:root", mode: "0755", content: template("scripts/madbase-backup.sh")(m) },
    "backup.env": { path: input.paths.backupEnvFile, owner: "root:redis", mode: "0640", content: template("scripts/backup.env")(m) },
  };
}

/** The systemd units of a server's backup timers. */
export function renderBackupUnits(input: NodeRenderInput): BackupFile[] {
  const m = backupModel(input);
  return BACKUP_UNITS.map((unit) => ({
    path: `/etc/systemd/system/${unit}`,
    owner: "root:root",
    mode: "0644",
    content: template(`systemd/${unit}`)(m),
  }));
}

/**
 * The files as cloud-init writes them: the script gzipped and base64-encoded (cloud-init unpacks them;
 * Hetzner takes at most 32 KiB of user data), the small environment file and units as text.
 */
export function backupFilesForCloudInit(input: NodeRenderInput): BackupFile[] {
  const scripts = renderBackupFiles(input);
  return [
    ...Object.entries(scripts).map(([name, f]) =>
      name === BACKUP_SCRIPT ? { ...f, encoding: "gz+b64" as const, content: gzipSync(f.content, { level: 9 }).toString("base64") } : f,
    ),
    ...renderBackupUnits(input),
  ];
}
