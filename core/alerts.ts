/**
 * Prometheus alert rules for one cluster, rendered from the stack like prometheus.yml (which
 * loads them through `rule_files`): every threshold that depends on the stack comes from it — the
 * plan's max_connections, the failover profile's timings, Patroni's maximum_lag_on_failover, the
 * backup schedule, the WAL archive queue sized from the volume. Pure, like the rest of the core:
 * the Pulumi program exports the file (`alertRules`), `npm run render` writes it beside
 * prometheus.yml, tests/daemons/alerts.test.ts runs every rule through `promtool test rules`, and
 * tests/local/alerts.test.ts loads it into a real Prometheus scraping booted nodes.
 *
 * Every rule names only metrics the Debian exporters, Patroni, HAProxy and etcd really export (or
 * the textfiles of the backup and certificate jobs, core/backup.ts BACKUP_METRICS and core/tls.ts
 * TLS_METRICS), with the labels the rendered prometheus.yml
 * gives them: `cluster`, `node`, and the job `<cluster>-<job>`.
 */
import * as yaml from "js-yaml";
import {
  BACKUP_GRACE_HOURS,
  BACKUP_METRICS,
  BACKUP_METRICS_FILE,
  BACKUP_METRICS_INTERVAL_SECONDS,
  BACKUP_SCHEDULE,
  DEFAULT_VOLUME_GB,
  archivePushQueueMaxMb,
  archivesWal,
} from "./backup";
import { ARCHIVE_TIMEOUT_SECONDS, MAXIMUM_LAG_ON_FAILOVER } from "./patroni";
import { ConfigError } from "./errors";
import type { ClusterOptions } from "./model";
import { CONFIG_NAMESPACE, StackSettings } from "./settings";
import { NodePaths, serverPaths } from "./paths";
import {
  CA_CERT_ALERT_DAYS,
  CERT_CRITICAL_DAYS,
  NODE_CERT_ALERT_DAYS,
  NODE_EARLY_RENEWAL_HOURS,
  TLS_METRICS,
  TLS_METRICS_FILE,
  TLS_METRICS_INTERVAL_SECONDS,
} from "./tls";
import { Topology } from "./topology";
import { UPDATE_WAIT_ALERT_DAYS, UPDATES_METRICS, UPDATES_METRICS_FILE } from "./maintenance";

export type Severity = "critical" | "warning" | "info";

export interface AlertRule {
  alert: string;
  /** Which group of the file (one per daemon family). */
  group: "postgres" | "pgbouncer" | "backup" | "disk" | "etcd" | "redis" | "haproxy" | "tls" | "updates" | "exporters";
  expr: string;
  forSeconds: number;
  severity: Severity;
  /** Names the node (`{{ $labels.node }}`) or the cluster, and what to do first. Only `$labels` templates. */
  summary: string;
  /** Labels besides severity (the cluster, for expressions that carry none). */
  labels?: Record<string, string>;
}

export interface AlertOptions {
  /** Prometheus' scrape interval (prometheus.yml's), which bounds how short a window can be. */
  scrapeIntervalSeconds?: number;
  paths?: NodePaths;
}

/** A scale step (config-refresh) pauses Patroni for at most its waits: 60 s to pause, 120 s to run again, 60 s to resume. */
export const SCALE_STEP_PAUSE_SECONDS = 60 + 120 + 60;
/** The share of max_connections (the plan's) past which the connections alert fires. */
export const CONNECTIONS_ALERT_RATIO = 0.8;
/**
 * How long the longest-waiting client of a PgBouncer pool may wait for a server connection before
 * the pool counts as too small: a transaction pool serves a queue in milliseconds when it is not
 * saturated.
 */
export const POOL_WAIT_ALERT_SECONDS = 1;
/** Redis memory against maxmemory (noeviction: writes are refused past it). */
export const REDIS_MEMORY_ALERT_RATIO = 0.9;
/** etcd's database against its quota (past the quota etcd refuses writes, Patroni loses its DCS). */
export const ETCD_QUOTA_ALERT_RATIO = 0.8;
/** How far ahead the disk alerts look, and over what history they fit the trend. */
export const DISK_PREDICT_SECONDS = 24 * 3600;
export const DISK_TREND_WINDOW = "6h";

/** Every threshold the rules use, worked out from the stack: the tests build their series from these. */
export function alertThresholds(topology: Topology, options: ClusterOptions, opts: AlertOptions = {}) {
  const scrape = opts.scrapeIntervalSeconds ?? 15;
  const { ttl, loopWait } = options.profile.patroni;
  const { downAfterMs, failoverTimeoutMs } = options.profile.sentinel;
  const hours = (h: number) => h * 3600;
  return {
    scrape,
    /** Long enough to skip a switchover's blink, short enough to see a failover happen. */
    quick: Math.max(2, 2 * loopWait),
    /** Patroni's own time to give up on a member: its key lives ttl seconds. */
    memberGone: ttl,
    /** A failover after a power cut: the key expires (ttl), the next loop promotes. */
    failover: ttl + loopWait,
    /** Sentinel's down-after plus its failover timeout: a Redis failover that is still in time. */
    redisFailover: Math.ceil((downAfterMs + failoverTimeoutMs) / 1000),
    maxConnections: options.plan.maxConnections,
    connectionsAlert: Math.floor(options.plan.maxConnections * CONNECTIONS_ALERT_RATIO),
    maximumLag: MAXIMUM_LAG_ON_FAILOVER,
    replicas: topology.nodeCount - 1,
    archiveTimeout: ARCHIVE_TIMEOUT_SECONDS,
    /** PostgreSQL's archiver retries a failed segment 3 times, then every 60 s: a window that sees each round. */
    archiveFailWindow: Math.max(90, 6 * scrape),
    archiveQueueMaxBytes: archivePushQueueMaxMb(options.volumeSizeGb ?? DEFAULT_VOLUME_GB) * 1024 * 1024,
    fullBackupMaxAge: hours(BACKUP_SCHEDULE.full.periodHours + BACKUP_GRACE_HOURS),
    diffBackupMaxAge: hours(BACKUP_SCHEDULE.diff.periodHours + BACKUP_GRACE_HOURS),
    metricsStale: 3 * BACKUP_METRICS_INTERVAL_SECONDS,
    nodeCertLeft: NODE_CERT_ALERT_DAYS * 86400,
    caCertLeft: CA_CERT_ALERT_DAYS * 86400,
    certCriticalLeft: CERT_CRITICAL_DAYS * 86400,
    tlsMetricsStale: 3 * TLS_METRICS_INTERVAL_SECONDS,
    /** A security update, or a reboot, waiting longer than this (core/maintenance.ts). */
    updateWait: UPDATE_WAIT_ALERT_DAYS * 86400,
    paused: SCALE_STEP_PAUSE_SECONDS + 60,
    exporterDown: Math.max(60, 4 * scrape),
    poolWait: POOL_WAIT_ALERT_SECONDS,
    /** Longer than a burst of new clients, shorter than a pool that stays too small. */
    poolWaitFor: Math.max(120, 4 * scrape),
  };
}

const dur = (s: number) => `${s}s`;

/** The rules for one cluster (only those that apply: no replica rules for one node, no sync rule without synchronous mode). */
export function alertRules(topology: Topology, options: ClusterOptions, opts: AlertOptions = {}): AlertRule[] {
  const t = alertThresholds(topology, options, opts);
  const paths = opts.paths ?? serverPaths();
  const C = topology.clusterName;
  const sel = (job: string, extra = "") => `{cluster="${C}", job="${C}-${job}"${extra ? `, ${extra}` : ""}}`;
  const patroni = sel("patroni");
  const pg = sel("postgres");
  const redis = sel("redis");
  const node = sel("node");
  const onNode = "on (cluster, node)";
  const primary = `${onNode} (patroni_primary${patroni} == 1)`;
  const patronictl = `patronictl -c ${paths.config["patroni.yml"]} list`;
  const ha = topology.nodeCount > 1;
  const archiving = archivesWal(options.backup);
  const stanzaLog = `${paths.pgbackrestLogDir}/${C}-archive-push-async.log`;
  const rules: AlertRule[] = [];
  const add = (r: AlertRule) => rules.push(r);

  // ---- PostgreSQL and Patroni
  add({
    alert: "PostgresNoLeader",
    group: "postgres",
    expr: `absent(patroni_primary${patroni} == 1)`,
    forSeconds: t.quick,
    severity: "critical",
    labels: { cluster: C },
    summary: `No PostgreSQL leader in ${C}: writes fail. A failover should end this within ${t.failover} s; if not, run \`${patronictl}\` on any node and read \`journalctl -u patroni\` there.`,
  });
  add({
    alert: "PostgresMultiplePrimaries",
    group: "postgres",
    expr: `count by (cluster) (patroni_primary${patroni} == 1) > 1`,
    forSeconds: t.quick,
    severity: "critical",
    summary: `More than one PostgreSQL primary in ${C}: writes may diverge. Run \`${patronictl}\`, stop Patroni on the member that does not hold the leader key.`,
  });
  add({
    alert: "PatroniMemberDown",
    group: "postgres",
    expr: `up${patroni} == 0 or patroni_postgres_running${patroni} == 0`,
    forSeconds: t.memberGone,
    severity: "critical",
    summary: `Patroni or PostgreSQL on {{ $labels.node }} is down: one more failure may stop ${C}. On {{ $labels.node }}: \`systemctl status patroni\`, \`journalctl -u patroni\`.`,
  });
  if (ha) {
    add({
      alert: "PostgresReplicationBroken",
      group: "postgres",
      expr: `sum by (cluster) (patroni_postgres_streaming${patroni}) < ${t.replicas}`,
      forSeconds: t.memberGone,
      severity: "critical",
      summary: `Fewer than ${t.replicas} replicas of ${C} stream from the leader: a failover may lose data. Run \`${patronictl}\` and look at the member that is not streaming.`,
    });
    add({
      alert: "PostgresReplicationLag",
      group: "postgres",
      expr: `pg_stat_replication_pg_wal_lsn_diff${pg} > ${t.maximumLag}`,
      forSeconds: 60,
      severity: "warning",
      summary: `Replica {{ $labels.application_name }} is more than maximum_lag_on_failover (${t.maximumLag} bytes) behind the leader {{ $labels.node }}: Patroni will not promote it. Check its disk and network, and \`journalctl -u patroni\` on it.`,
    });
  }
  if (ha && options.synchronousMode) {
    add({
      alert: "PostgresNoSyncStandby",
      group: "postgres",
      expr: `absent(patroni_sync_standby${patroni} == 1)`,
      forSeconds: 2 * t.memberGone,
      severity: "critical",
      labels: { cluster: C },
      summary: `${C} runs synchronous_mode but no replica is its synchronous standby: commits are acknowledged by the leader alone. Run \`${patronictl}\` and bring a replica back to streaming.`,
    });
  }
  add({
    alert: "PatroniPaused",
    group: "postgres",
    expr: `max by (cluster) (patroni_is_paused${patroni}) == 1`,
    forSeconds: t.paused,
    severity: "warning",
    summary: `Patroni of ${C} has been in maintenance mode longer than a scale step pauses it (${SCALE_STEP_PAUSE_SECONDS} s): no automatic failover. If no one is working on it: \`patronictl -c ${paths.config["patroni.yml"]} resume\`.`,
  });
  add({
    alert: "PatroniFailsafeActive",
    group: "postgres",
    expr: `patroni_failsafe_mode_is_active${patroni} == 1`,
    forSeconds: t.quick,
    severity: "critical",
    summary: `Patroni on {{ $labels.node }} runs in failsafe mode: etcd does not answer, and the primary keeps writing only while every member answers it. Fix etcd first (\`etcdctl endpoint health --cluster\`).`,
  });
  add({
    alert: "PostgresConnectionsNearMax",
    group: "postgres",
    expr: `sum by (cluster, node) (pg_stat_database_numbackends${pg}) > ${t.connectionsAlert}`,
    forSeconds: 300,
    severity: "warning",
    summary: `{{ $labels.node }} has more than ${t.connectionsAlert} of the plan's ${t.maxConnections} connections (max_connections): new clients will be refused. Look for idle clients in pg_stat_activity, or move to a larger plan.`,
  });

  // ---- PgBouncer
  add({
    alert: "PgbouncerClientsWaiting",
    group: "pgbouncer",
    expr: `max by (cluster, node) (pgbouncer_pools_client_maxwait_seconds${sel("pgbouncer")}) > ${t.poolWait}`,
    forSeconds: t.poolWaitFor,
    severity: "warning",
    summary: `Clients of PgBouncer on {{ $labels.node }} wait more than ${t.poolWait} s for a PostgreSQL connection: its pool (max_db_connections) is saturated. Look for long transactions in pg_stat_activity, or move to a larger plan.`,
  });

  // ---- WAL archiving and backups (pgBackRest)
  if (!archiving) {
    add({
      alert: "PostgresArchivingOff",
      group: "backup",
      expr: "vector(1)",
      forSeconds: 0,
      severity: "info",
      labels: { cluster: C },
      summary: `${C} archives no WAL and takes no backup: the stack has no S3 keys. Set ${CONFIG_NAMESPACE}:backupAccessKey and backupSecretKey, then push the archive_command.`,
    });
  } else {
    add({
      alert: "PostgresArchivingFailing",
      group: "backup",
      expr: `increase(pg_stat_archiver_failed_count${pg}[${dur(t.archiveFailWindow)}]) > 0 and pg_stat_archiver_last_archive_age${pg} > ${t.archiveFailWindow}`,
      forSeconds: t.scrape,
      severity: "critical",
      summary: `WAL archiving fails on {{ $labels.node }} and nothing was archived for ${t.archiveFailWindow} s: WAL piles up on its volume until pgBackRest drops it. Check the store, then ${stanzaLog}.`,
    });
    add({
      alert: "PostgresArchiveTooOld",
      group: "backup",
      // Writes between 3 and 2 archive_timeouts ago must have been switched and archived by now.
      expr:
        `pg_stat_archiver_last_archive_age${pg} > ${2 * t.archiveTimeout} and ${onNode} ` +
        `((patroni_xlog_location${patroni} offset ${dur(2 * t.archiveTimeout)}) > (patroni_xlog_location${patroni} offset ${dur(3 * t.archiveTimeout)}))`,
      forSeconds: 60,
      severity: "critical",
      summary: `The newest WAL segment archived from {{ $labels.node }} is older than ${2 * t.archiveTimeout} s though WAL was written (archive_timeout ${t.archiveTimeout} s): archiving is stuck. Check ${stanzaLog} and \`journalctl -u patroni\` there.`,
    });
    add({
      alert: "PostgresArchiveQueueFilling",
      group: "backup",
      expr: `(patroni_xlog_location${patroni} and ${primary}) - ${onNode} ${BACKUP_METRICS.archiveEnd}${node} > ${t.archiveQueueMaxBytes / 2}`,
      forSeconds: 300,
      severity: "warning",
      summary: `{{ $labels.node }} holds more than half of archive-push-queue-max (${t.archiveQueueMaxBytes} bytes) of WAL not yet in the repository: past it pgBackRest drops WAL. Check the store and ${stanzaLog}.`,
    });
    add({
      alert: "PostgresWalDropped",
      group: "backup",
      expr: `${BACKUP_METRICS.walDroppedLast}${node} > on (cluster) group_left max by (cluster) (${BACKUP_METRICS.lastBackup}${node})`,
      forSeconds: 0,
      severity: "critical",
      summary: `pgBackRest on {{ $labels.node }} dropped WAL (archive-push-queue-max) after the newest backup: point-in-time recovery has a gap. Fix archiving, then take a full backup on the leader: \`sudo -u postgres madbase-backup pg full\`.`,
    });
    add({
      alert: "BackupFullTooOld",
      group: "backup",
      expr: `time() - max by (cluster) (${BACKUP_METRICS.lastBackup}${sel("node", 'type="full"')}) > ${t.fullBackupMaxAge}`,
      forSeconds: 300,
      severity: "warning",
      summary: `The newest full backup of ${C} is older than its weekly schedule allows (${t.fullBackupMaxAge / 3600} h). On the leader: \`journalctl -u madbase-pg-backup@full\`, then \`sudo -u postgres madbase-backup pg full\`.`,
    });
    add({
      alert: "BackupDiffTooOld",
      group: "backup",
      expr: `time() - max by (cluster) (${BACKUP_METRICS.lastBackup}${sel("node", 'type=~"full|diff"')}) > ${t.diffBackupMaxAge}`,
      forSeconds: 300,
      severity: "warning",
      summary: `The newest backup of ${C} is older than the daily schedule allows (${t.diffBackupMaxAge / 3600} h). On the leader: \`journalctl -u madbase-pg-backup@diff\`, then \`sudo -u postgres madbase-backup pg diff\`.`,
    });
    add({
      alert: "BackupRepositoryUnreadable",
      group: "backup",
      expr: `${BACKUP_METRICS.success}${node} == 0`,
      forSeconds: t.metricsStale,
      severity: "warning",
      summary: `{{ $labels.node }} cannot read the backup repository, or its stanza is not ok (${BACKUP_METRICS.statusCode}): backups and WAL archiving fail. Check the store and the S3 keys: \`sudo -u postgres pgbackrest --stanza=${C} info\` there.`,
    });
    add({
      alert: "BackupMetricsMissing",
      group: "backup",
      expr: `(up${node} == 1 unless ${onNode} ${BACKUP_METRICS.collected}${node}) or time() - ${BACKUP_METRICS.collected}${node} > ${t.metricsStale}`,
      forSeconds: t.metricsStale,
      severity: "warning",
      summary: `{{ $labels.node }} has not written ${BACKUP_METRICS_FILE} for ${t.metricsStale} s: backup ages are unknown. On it: \`systemctl status madbase-pg-metrics.timer\`, \`journalctl -u madbase-pg-metrics\`.`,
    });
  }

  // ---- Disks: the data volume and the root disk
  for (const [alert, mount, what] of [
    ["DataVolumeFullWithinADay", paths.volumeMount, "data volume"],
    ["RootDiskFullWithinADay", "/", "root disk"],
  ] as const) {
    add({
      alert,
      group: "disk",
      expr: `predict_linear(node_filesystem_avail_bytes${sel("node", `mountpoint="${mount}"`)}[${DISK_TREND_WINDOW}], ${DISK_PREDICT_SECONDS}) < 0`,
      forSeconds: 1800,
      severity: "warning",
      summary: `The ${what} of {{ $labels.node }} (${mount}) fills within a day at the rate of the last ${DISK_TREND_WINDOW}. On it: \`df -h ${mount}\`; ${mount === "/" ? "logs under /var/log" : "WAL in pg_wal (archiving?) or table growth: resize the volume"}.`,
    });
  }

  // ---- etcd (Patroni's DCS)
  add({
    alert: "EtcdNoLeader",
    group: "etcd",
    expr: `etcd_server_has_leader${sel("etcd")} == 0`,
    forSeconds: t.quick,
    severity: "critical",
    summary: `etcd on {{ $labels.node }} has no leader: Patroni there cannot renew its key. Run \`etcdctl endpoint status --cluster -w table\` on it.`,
  });
  add({
    alert: "EtcdMemberDown",
    group: "etcd",
    expr: `up${sel("etcd")} == 0`,
    forSeconds: t.memberGone,
    severity: "critical",
    summary: `etcd on {{ $labels.node }} does not answer: one more lost member may cost ${C} its quorum. On it: \`systemctl status etcd\`, \`journalctl -u etcd\`.`,
  });
  add({
    alert: "EtcdDatabaseNearQuota",
    group: "etcd",
    expr: `etcd_mvcc_db_total_size_in_bytes${sel("etcd")} / etcd_server_quota_backend_bytes${sel("etcd")} > ${ETCD_QUOTA_ALERT_RATIO}`,
    forSeconds: 600,
    severity: "warning",
    summary: `etcd's database on {{ $labels.node }} is past ${ETCD_QUOTA_ALERT_RATIO * 100} % of its quota: at the quota etcd refuses writes and Patroni loses its leader key. Compact and defragment: \`etcdctl defrag\` there.`,
  });

  // ---- Redis and Sentinel
  add({
    alert: "RedisNoMaster",
    group: "redis",
    expr: `absent(redis_instance_info${sel("redis", 'role="master"')})`,
    forSeconds: t.redisFailover,
    severity: "critical",
    labels: { cluster: C },
    summary: `No Redis master in ${C} for longer than a Sentinel failover takes (${t.redisFailover} s): writes fail. Ask a Sentinel: \`REDISCLI_AUTH=$SENTINEL_AUTH redis-cli -p 26379 sentinel masters\` on any node.`,
  });
  add({
    alert: "RedisMultipleMasters",
    group: "redis",
    expr: `count by (cluster) (redis_instance_info${sel("redis", 'role="master"')}) > 1`,
    forSeconds: t.redisFailover,
    severity: "critical",
    summary: `More than one Redis master in ${C}: writes go to different masters. Find the one the Sentinels name (\`REDISCLI_AUTH=$SENTINEL_AUTH redis-cli -p 26379 sentinel get-master-addr-by-name ${C}\`) and make the other a replica.`,
  });
  if (ha) {
    add({
      alert: "RedisReplicaDisconnected",
      group: "redis",
      expr: `redis_connected_slaves${redis} < ${t.replicas} and ${onNode} redis_instance_info${sel("redis", 'role="master"')}`,
      forSeconds: t.redisFailover,
      severity: "warning",
      summary: `The Redis master {{ $labels.node }} has fewer than ${t.replicas} replicas connected. On the missing node: \`systemctl status redis-server\`, \`journalctl -u redis-server\`.`,
    });
  }
  add({
    alert: "RedisMemoryNearMax",
    group: "redis",
    expr: `redis_memory_used_bytes${redis} > ${REDIS_MEMORY_ALERT_RATIO} * redis_memory_max_bytes${redis} and redis_memory_max_bytes${redis} > 0`,
    forSeconds: 300,
    severity: "warning",
    summary: `Redis on {{ $labels.node }} uses more than ${REDIS_MEMORY_ALERT_RATIO * 100} % of maxmemory (noeviction: writes will be refused). Look for big keys (\`redis-cli --bigkeys\`), or move to a larger plan.`,
  });
  add({
    alert: "RedisRejectedConnections",
    group: "redis",
    expr: `increase(redis_rejected_connections_total{cluster="${C}", job=~"${C}-(redis|sentinel)"}[5m]) > 0`,
    forSeconds: 0,
    severity: "warning",
    summary: `{{ $labels.job }} on {{ $labels.node }} refused connections (maxclients) in the last 5 minutes. On it: \`redis-cli --user admin info clients\` (REDISCLI_AUTH from /etc/madbase/backup.env), and look for clients that leak connections.`,
  });
  add({
    alert: "SentinelFailover",
    group: "redis",
    expr: `count by (cluster) (count by (cluster, master_address) (last_over_time(redis_sentinel_master_status${sel("sentinel")}[15m]))) > 1`,
    forSeconds: 0,
    severity: "warning",
    summary: `Sentinel moved the Redis master of ${C} in the last 15 minutes. Find why the old master failed: \`journalctl -u redis-server\` on it, \`REDISCLI_AUTH=$SENTINEL_AUTH redis-cli -p 26379 sentinel masters\`.`,
  });

  // ---- HAProxy
  const backends = ha
    ? "postgres_primary|postgres_direct|postgres_replicas|redis_master"
    : "postgres_primary|postgres_direct|redis_master";
  add({
    alert: "HaproxyBackendWithoutServer",
    group: "haproxy",
    expr: `haproxy_backend_active_servers${sel("haproxy", `proxy=~"${backends}"`)} < 1`,
    forSeconds: 2 * t.failover,
    severity: "critical",
    summary: `HAProxy on {{ $labels.node }} has no server UP in {{ $labels.proxy }}: clients of that port are refused. Check the stats page (:7000) and the daemons behind it.`,
  });

  // ---- TLS certificates (madbase-tls-metrics' textfile, core/tls.ts TLS_METRICS)
  const certEnd = (cert: string) => `${TLS_METRICS.notAfter}${sel("node", cert ? `certificate="${cert}"` : "")}`;
  add({
    alert: "TlsNodeCertificateExpiring",
    group: "tls",
    expr: `${certEnd("node")} - time() < ${t.nodeCertLeft}`,
    forSeconds: 3600,
    severity: "warning",
    summary: `The TLS certificate of {{ $labels.node }} ends in less than ${NODE_CERT_ALERT_DAYS} days: a \`pulumi up\` renews a node's certificate in its last ${NODE_EARLY_RENEWAL_HOURS / 24} days, and none has run since. Run \`pulumi up\` (config-refresh installs the new one, one node at a time).`,
  });
  add({
    alert: "TlsCaCertificateExpiring",
    group: "tls",
    expr: `min by (cluster) (${certEnd("ca")}) - time() < ${t.caCertLeft}`,
    forSeconds: 3600,
    severity: "warning",
    summary: `The CA of ${C} ends in less than ${CA_CERT_ALERT_DAYS} days, and it is not renewed in place: plan a new stack and restore into it (README, Rotation).`,
  });
  add({
    alert: "TlsCertificateEndsThisWeek",
    group: "tls",
    expr: `${certEnd("")} - time() < ${t.certCriticalLeft}`,
    forSeconds: 600,
    severity: "critical",
    summary: `The {{ $labels.certificate }} certificate on {{ $labels.node }} ends within ${CERT_CRITICAL_DAYS} days: then etcd, Patroni, PostgreSQL, PgBouncer and HAProxy refuse it and ${C} stops. Renew it now (README, Rotation).`,
  });
  add({
    alert: "TlsCertificateUnreadable",
    group: "tls",
    expr: `${TLS_METRICS.readable}${node} == 0`,
    forSeconds: 600,
    severity: "warning",
    summary: `{{ $labels.node }} cannot read its {{ $labels.certificate }} certificate: its end is unknown, and the daemons may fail to start. On it: \`openssl x509 -noout -enddate -in\` the file (${paths.tls.caCert}, ${paths.tls.cert}).`,
  });
  add({
    alert: "TlsMetricsMissing",
    group: "tls",
    expr: `(up${node} == 1 unless ${onNode} ${TLS_METRICS.collected}${node}) or time() - ${TLS_METRICS.collected}${node} > ${t.tlsMetricsStale}`,
    forSeconds: t.tlsMetricsStale,
    severity: "warning",
    summary: `{{ $labels.node }} has not written ${TLS_METRICS_FILE} for ${t.tlsMetricsStale} s: its certificate ends are unknown. On it: \`systemctl status madbase-tls-metrics.timer\`, \`journalctl -u madbase-tls-metrics\`.`,
  });

  // ---- Package updates (madbase-updates' textfile, core/maintenance.ts UPDATES_METRICS)
  add({
    alert: "SecurityUpdateWaiting",
    group: "updates",
    expr: `time() - min by (cluster, node) (${UPDATES_METRICS.pendingSince}${sel("node", 'security="1"')}) > ${t.updateWait}`,
    forSeconds: 3600,
    severity: "warning",
    summary: `{{ $labels.node }} has had a security update waiting more than ${UPDATE_WAIT_ALERT_DAYS} days (a held data package, or one unattended-upgrades did not install). Run a rolling maintenance: \`npm run ops -- maintenance --stack S --packages all\` (or a new maintenanceRevision); on the node, ${UPDATES_METRICS_FILE} lists the packages.`,
  });
  add({
    alert: "RebootWaiting",
    group: "updates",
    expr: `time() - ${UPDATES_METRICS.rebootRequiredSince}${node} > ${t.updateWait}`,
    forSeconds: 3600,
    severity: "warning",
    summary: `{{ $labels.node }} has required a reboot for more than ${UPDATE_WAIT_ALERT_DAYS} days (/run/reboot-required: a new kernel or core library). Roll the reboots one node at a time: \`npm run ops -- maintenance --stack S --packages none --reboot auto\`.`,
  });

  // ---- The exporters themselves (Patroni and etcd are members: their own rules above)
  add({
    alert: "ExporterDown",
    group: "exporters",
    expr: `up{cluster="${C}", job=~"${C}-(node|postgres|pgbouncer|redis|sentinel|haproxy)"} == 0`,
    forSeconds: t.exporterDown,
    severity: "warning",
    summary: `Prometheus cannot scrape {{ $labels.job }} on {{ $labels.node }} ({{ $labels.instance }}): its alerts are blind. On it: \`systemctl status\` of the exporter (prometheus-*-exporter, or haproxy).`,
  });
  return rules;
}

/** The rules file (Prometheus 2 format), one group per daemon family. */
export function renderAlertRules(topology: Topology, options: ClusterOptions, opts: AlertOptions = {}): string {
  const rules = alertRules(topology, options, opts);
  const groups = [...new Set(rules.map((r) => r.group))].map((g) => ({
    name: `${topology.clusterName}-${g}`,
    rules: rules
      .filter((r) => r.group === g)
      .map((r) => ({
        alert: r.alert,
        expr: r.expr,
        ...(r.forSeconds > 0 ? { for: dur(r.forSeconds) } : {}),
        labels: { severity: r.severity, ...(r.labels ?? {}) },
        annotations: { summary: r.summary },
      })),
  }));
  const head =
    `# Prometheus alert rules for ${topology.clusterName} (${topology.nodeCount} node(s), profile ${options.profile.name}, plan ${options.plan.name}).\n` +
    `# Rendered by madbase-state (core/alerts.ts) with prometheus.yml, which loads it (rule_files); do not edit by hand.\n`;
  return head + yaml.dump({ groups }, { lineWidth: -1, noRefs: true });
}

/** Where prometheus.yml expects the rules file: beside it. */
export const ALERT_RULES_FILE = "alerts.yml";

export interface ArchivingDecision {
  /** Whether the nodes archive WAL (BackupTarget.archiving). */
  archiving: boolean;
  /** What `pulumi up` must say (pulumi.log.warn), on every run. */
  warnings: string[];
}

/**
 * Whether a stack archives WAL: only with real S3 keys. Without them the nodes would archive into
 * a store they cannot write, and WAL would pile up until pgBackRest drops it; so they archive
 * nothing and every `pulumi up` says so. A protected stack (protectNodes: prod) refuses to start
 * without keys. The local runner never asks: it always has a repository (a directory or a test S3 store).
 */
export function archivingDecision(
  settings: Pick<StackSettings, "stack" | "protectNodes" | "backupBucket">,
  hasKeys: boolean,
): ArchivingDecision {
  if (hasKeys) return { archiving: true, warnings: [] };
  if (settings.protectNodes) {
    throw new ConfigError(
      `${CONFIG_NAMESPACE}:backupAccessKey`,
      "(not set)",
      `stack ${settings.stack} is protected (protectNodes: true) and must back up: set ${CONFIG_NAMESPACE}:backupAccessKey and backupSecretKey with --secret before pulumi up`,
    );
  }
  return {
    archiving: false,
    warnings: [
      `${CONFIG_NAMESPACE}:backupAccessKey/backupSecretKey are not set: WAL archiving is OFF on stack ${settings.stack} (archive_command /bin/true) and no backup reaches ${settings.backupBucket}; ` +
        `a lost node set cannot be restored. Set both keys with --secret to turn it on.`,
    ],
  };
}
