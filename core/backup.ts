/**
 * The backup side of a node: the scripts that back up and restore PostgreSQL (pgBackRest) and
 * Redis (RDB snapshots), the environment file with their secrets, and the systemd timers that run
 * them on a server. Every node gets the same set; each script decides at run time whether this
 * node is the one that acts (the Patroni leader, the Redis master).
 *
 * Pure, like the rest of the core: the local runner writes the same scripts under each node's
 * directory and the tests run them there.
 */
import * as path from "node:path";
import type { BackupTarget, NodeRenderInput } from "./model";
import { NODE_EXPORTER_TEXTFILE_DIR } from "./paths";
import { REDIS_USERS } from "./secrets";
import { CONFIG_NAMESPACE } from "./settings";
import { template } from "./templates";
import { PORTS } from "./topology";

/**
 * The one script every node carries (in `paths.scriptDir`): `madbase-backup pg|pg-restore|redis|
 * redis-restore ...`. One file rather than four keeps the shared part (settings, logging, the
 * snapshot store) in one place and the cloud-init document small.
 */
export const BACKUP_SCRIPT = "madbase-backup";

/** The backup jobs' systemd units, on every server and every local node alike. */
export const BACKUP_UNITS = [
  "madbase-pg-backup@.service",
  "madbase-pg-backup-first.timer",
  "madbase-pg-backup-full.timer",
  "madbase-pg-backup-diff.timer",
  "madbase-redis-snapshot.service",
  "madbase-redis-snapshot.timer",
  "madbase-pg-metrics.service",
  "madbase-pg-metrics.timer",
] as const;
/**
 * The timers to enable: the first PostgreSQL backup until there is one, weekly full and daily
 * differential ones, hourly Redis snapshots, and the backup metrics every 30 s.
 */
export const BACKUP_TIMERS = BACKUP_UNITS.filter((u) => u.endsWith(".timer"));

/**
 * When the PostgreSQL backups run (systemd OnCalendar, UTC) and how often each comes round: the
 * timers are rendered from this, and the backup-age alerts (core/alerts.ts) allow one period plus
 * BACKUP_GRACE_HOURS before they fire. A differential backup counts for "diff" and a full one for both.
 */
export const BACKUP_SCHEDULE = {
  full: { onCalendar: "Sun *-*-* 01:15:00 UTC", periodHours: 7 * 24 },
  diff: { onCalendar: "Mon..Sat *-*-* 01:15:00 UTC", periodHours: 24 },
} as const;
/**
 * How soon after boot, and how often after that, every node runs `madbase-backup pg first` (a full
 * backup on the leader while the repository holds none). Soon enough that a first backup skipped at
 * first boot (leadership moved, store down) comes within minutes; a run on a cluster that has a
 * backup is one `pgbackrest info`, which pg-metrics runs every 30 s anyway.
 */
export const FIRST_BACKUP_TIMER = { bootDelaySeconds: 60, intervalSeconds: 600 } as const;
/** How late a scheduled backup may finish (it runs, a slow store, a retry the next day for a missed full one). */
export const BACKUP_GRACE_HOURS = 6;

/**
 * Backup metrics for node exporter's textfile collector (Debian's prometheus-node-exporter reads
 * /var/lib/prometheus/node-exporter/*.prom by default): `madbase-backup pg-metrics` writes this
 * file every BACKUP_METRICS_INTERVAL_SECONDS from `pgbackrest info` and pgBackRest's archive log.
 * Debian has no pgBackRest exporter package; this is the same information on a port that is already scraped.
 */
export const BACKUP_METRICS_FILE = `${NODE_EXPORTER_TEXTFILE_DIR}/madbase-pgbackrest.prom`;
export const BACKUP_METRICS_INTERVAL_SECONDS = 30;
/** The metrics that file holds (names used by the alert rules and the dashboard). */
export const BACKUP_METRICS = {
  success: "madbase_pgbackrest_info_success",
  statusCode: "madbase_pgbackrest_status_code",
  collected: "madbase_pgbackrest_metrics_timestamp_seconds",
  lastBackup: "madbase_pgbackrest_backup_last_completion_timestamp_seconds",
  archiveEnd: "madbase_pgbackrest_archive_newest_segment_end_bytes",
  walDropped: "madbase_pgbackrest_wal_dropped_total",
  walDroppedLast: "madbase_pgbackrest_wal_dropped_last_timestamp_seconds",
} as const;

/**
 * pgBackRest's archive-push-queue-max: the most WAL waiting to be archived before pgBackRest drops
 * it (tells PostgreSQL it was archived, logs `dropped WAL file`), so a store that is down for days
 * can never fill the data volume and stop PostgreSQL. A fifth of the volume: the rest holds the
 * data, wal_keep_size and max_wal_size. Past it, point-in-time recovery has a gap until the next
 * backup (the PostgresWalDropped alert says so).
 */
export const ARCHIVE_QUEUE_FRACTION = 0.2;
/** The stack's default volume (settings' volumeSizeGb default). */
export const DEFAULT_VOLUME_GB = 40;
/** archive_command of a stack that archives nothing (no S3 keys): every segment counts as archived. */
export const ARCHIVING_OFF_COMMAND = "/bin/true";

/** Whether the nodes archive WAL and take backups: on unless the stack has no S3 keys (archivingDecision). */
export function archivesWal(backup: Pick<BackupTarget, "archiving">): boolean {
  return backup.archiving !== false;
}
export function archivePushQueueMaxMb(volumeSizeGb: number): number {
  if (!Number.isInteger(volumeSizeGb) || volumeSizeGb < 1)
    throw new RangeError(`volume size must be a whole number of GB, got ${volumeSizeGb}`);
  return Math.floor(volumeSizeGb * 1024 * ARCHIVE_QUEUE_FRACTION);
}

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
  return backup.localRepoPath
    ? localRedisSnapshotDir(backup.localRepoPath)
    : `s3://${backup.bucket}/${redisSnapshotPrefix(clusterName)}/ on ${backup.endpoint}`;
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
    redisUsers: REDIS_USERS,
    backup: { localRepoPath: "", ...backup },
    // Off on a stack without S3 keys (archivingDecision): the backup jobs then say so and touch no store.
    archiving: archivesWal(backup),
    configNamespace: CONFIG_NAMESPACE,
    scriptDir: paths.scriptDir,
    pgbackrestConf: paths.config["pgbackrest.conf"],
    patroniConf: paths.config["patroni.yml"],
    patroniUrl: `https://${node.privateIp}:${PORTS.patroni}`,
    tlsCa: paths.tls.caCert,
    tlsCert: paths.tls.cert,
    tlsKey: paths.tls.key,
    etcdUrl: `https://127.0.0.1:${PORTS.etcdClient}`,
    // Patroni's key for "this cluster exists" (namespace /madbase/, scope = cluster name).
    initializeKey: `/madbase/${stanza}/initialize`,
    logDir: paths.pgbackrestLogDir,
    repoLabel: backup.localRepoPath
      ? backup.localRepoPath
      : `s3://${backup.bucket}/${pgbackrestPrefix(stanza)} on ${backup.endpoint}`,
    storeLabel: storeLabel(backup, stanza),
    redisPrefix: redisSnapshotPrefix(stanza),
    redisStoreDir: backup.localRepoPath ? localRedisSnapshotDir(backup.localRepoPath) : "",
    redisDir: paths.redisDir,
    redisRetentionDays: backup.redisRetentionDays ?? DEFAULT_REDIS_RETENTION_DAYS,
    bgsaveWaitSeconds: BGSAVE_WAIT_SECONDS,
    s3Host: backup.port ? `${backup.endpoint}:${backup.port}` : backup.endpoint,
    schedule: BACKUP_SCHEDULE,
    firstBackup: FIRST_BACKUP_TIMER,
    metricsFile: BACKUP_METRICS_FILE,
    metricsInterval: BACKUP_METRICS_INTERVAL_SECONDS,
    metrics: BACKUP_METRICS,
  };
}

/**
 * The script and its environment file, for any node (server or local). The script holds no
 * secret; the environment file (Redis password, S3 keys) is readable by root and redis only.
 */
export function renderBackupFiles(input: NodeRenderInput): Record<typeof BACKUP_SCRIPT | "backup.env", BackupFile> {
  const m = backupModel(input);
  return {
    [BACKUP_SCRIPT]: {
      path: path.posix.join(m.scriptDir, BACKUP_SCRIPT),
      owner: "root:root",
      mode: "0755",
      content: template("scripts/madbase-backup.sh")(m),
    },
    "backup.env": {
      path: input.paths.backupEnvFile,
      owner: "root:redis",
      mode: "0640",
      content: template("scripts/backup.env")(m),
    },
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
