/**
 * The alert rules through Prometheus' own tools: `promtool check rules` on the rendered file, and
 * `promtool test rules` with input series for EVERY rule — each fires on its condition (with the
 * labels and the summary it promises) and stays silent on a healthy series. The promtool test file
 * is generated from the rules and the cases below, so a rule without a case fails this test, and
 * so does a case whose rule is gone.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  ALERT_RULES_FILE,
  AlertRule,
  BACKUP_METRICS,
  SCALE_STEP_PAUSE_SECONDS,
  TLS_METRICS,
  UPDATES_METRICS,
  alertRules,
  alertThresholds,
  archivingDecision,
  describeCluster,
  parseSettings,
  renderAlertRules,
  renderPrometheusConfig,
  serverPaths,
} from "../../core";
import { mapLimit, run } from "../support/proc";

type Labels = Record<string, string>;
interface Scenario {
  /** Input series: `metric{labels}` → promtool's expanding notation. */
  series: [string, string][];
  /** Seconds from the start at which the rule is evaluated. */
  at: number;
  /** Seconds between input samples (15 unless said). */
  interval?: number;
}
interface Case {
  fire: Scenario & { alerts: Labels[] };
  /** Silent on this one; a string says why a rule has none. */
  healthy: Scenario | string;
}
interface Ctx {
  C: string;
  n: string[];
  t: ReturnType<typeof alertThresholds>;
  /** Labels of a series of `job` on node `node`, as prometheus.yml labels it. */
  L: (job: string, node: string, extra?: Labels) => Labels;
}

const ser = (metric: string, labels: Labels) =>
  `${metric}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(", ")}}`;
/** `v` for `count` samples (promtool's `vxk` gives k+1). */
const flat = (v: number | string, count: number) => `${v}x${Math.max(0, Math.ceil(count) - 1)}`;
/** `a` until sample `k`, then `b`, `count` samples in all. */
const step = (a: number | string, b: number | string, k: number, count: number) =>
  `${flat(a, k)} ${flat(b, Math.ceil(count) - k)}`;
/** A counter or clock rising by `by` a sample from `from`. */
const rising = (from: number, by: number, count: number) => `${from}+${by}x${Math.ceil(count) - 1}`;

/** Every rule's case, by alert name. Counts of samples are for a 15 s interval unless the scenario says. */
const CASES: Record<string, (c: Ctx) => Case> = {
  PostgresNoLeader: ({ n, L, t }) => {
    const at = 60 + t.quick + 30;
    const k = 4; // the leader stops being primary after 4 samples (60 s)
    const N = at / 15 + 2;
    return {
      fire: {
        at,
        series: [
          [ser("patroni_primary", L("patroni", n[0])), step(1, 0, k, N)],
          [ser("patroni_primary", L("patroni", n[1])), flat(0, N)],
        ],
        alerts: [{}],
      },
      healthy: {
        at,
        series: [
          [ser("patroni_primary", L("patroni", n[0])), flat(1, N)],
          [ser("patroni_primary", L("patroni", n[1])), flat(0, N)],
        ],
      },
    };
  },
  PostgresMultiplePrimaries: ({ n, L, C, t }) => {
    const at = t.quick + 60;
    return {
      fire: {
        at,
        series: [
          [ser("patroni_primary", L("patroni", n[0])), flat(1, 20)],
          [ser("patroni_primary", L("patroni", n[1])), flat(1, 20)],
        ],
        alerts: [{ cluster: C }],
      },
      healthy: {
        at,
        series: [
          [ser("patroni_primary", L("patroni", n[0])), flat(1, 20)],
          [ser("patroni_primary", L("patroni", n[1])), flat(0, 20)],
        ],
      },
    };
  },
  PatroniMemberDown: ({ n, L, t }) => {
    const at = t.memberGone + 60;
    const N = at / 15 + 2;
    const s = (down: boolean): [string, string][] => [
      [ser("up", L("patroni", n[0])), flat(1, N)],
      [ser("up", L("patroni", n[1])), down ? step(1, 0, 2, N) : flat(1, N)],
      [ser("patroni_postgres_running", L("patroni", n[0])), flat(1, N)],
    ];
    return { fire: { at, series: s(true), alerts: [L("patroni", n[1])] }, healthy: { at, series: s(false) } };
  },
  PostgresReplicationBroken: ({ n, L, C, t }) => {
    const at = t.memberGone + 60;
    const N = at / 15 + 2;
    const s = (broken: boolean): [string, string][] => [
      [ser("patroni_postgres_streaming", L("patroni", n[0])), flat(0, N)],
      // Every replica streams, until the last one stops.
      ...n
        .slice(1)
        .map(
          (x, i, all) =>
            [
              ser("patroni_postgres_streaming", L("patroni", x)),
              broken && i === all.length - 1 ? step(1, 0, 2, N) : flat(1, N),
            ] as [string, string],
        ),
    ];
    return { fire: { at, series: s(true), alerts: [{ cluster: C }] }, healthy: { at, series: s(false) } };
  },
  PostgresReplicationLag: ({ n, L, t }) => {
    const labels = L("postgres", n[0], { application_name: n[1] });
    return {
      fire: {
        at: 150,
        series: [[ser("pg_stat_replication_pg_wal_lsn_diff", labels), flat(t.maximumLag + 1, 12)]],
        alerts: [labels],
      },
      healthy: { at: 150, series: [[ser("pg_stat_replication_pg_wal_lsn_diff", labels), flat(t.maximumLag, 12)]] },
    };
  },
  PostgresNoSyncStandby: ({ n, L, C, t }) => {
    const at = 2 * t.memberGone + 60;
    const N = at / 15 + 2;
    const s = (sync: boolean): [string, string][] => [
      [ser("patroni_sync_standby", L("patroni", n[0])), flat(0, N)],
      [ser("patroni_sync_standby", L("patroni", n[1])), sync ? flat(1, N) : step(1, 0, 2, N)],
    ];
    return { fire: { at, series: s(false), alerts: [{ cluster: C }] }, healthy: { at, series: s(true) } };
  },
  PatroniPaused: ({ n, L, C, t }) => {
    const at = t.paused + 120;
    const N = at / 15 + 2;
    return {
      fire: {
        at,
        series: n.map((x) => [ser("patroni_is_paused", L("patroni", x)), flat(1, N)] as [string, string]),
        alerts: [{ cluster: C }],
      },
      // A scale step's pause: on for as long as config-refresh may hold it, then off.
      healthy: {
        at,
        series: n.map(
          (x) =>
            [ser("patroni_is_paused", L("patroni", x)), step(1, 0, SCALE_STEP_PAUSE_SECONDS / 15, N)] as [
              string,
              string,
            ],
        ),
      },
    };
  },
  PatroniFailsafeActive: ({ n, L, t }) => ({
    fire: {
      at: t.quick + 60,
      series: [[ser("patroni_failsafe_mode_is_active", L("patroni", n[0])), flat(1, 20)]],
      alerts: [L("patroni", n[0])],
    },
    healthy: { at: t.quick + 60, series: [[ser("patroni_failsafe_mode_is_active", L("patroni", n[0])), flat(0, 20)]] },
  }),
  PostgresConnectionsNearMax: ({ n, L, C, t }) => {
    const s = (v: number): [string, string][] => [
      [ser("pg_stat_database_numbackends", L("postgres", n[0], { datname: "madbase" })), flat(v - 3, 30)],
      [ser("pg_stat_database_numbackends", L("postgres", n[0], { datname: "postgres" })), flat(3, 30)],
    ];
    return {
      fire: { at: 400, series: s(t.connectionsAlert + 1), alerts: [{ cluster: C, node: n[0] }] },
      healthy: { at: 400, series: s(t.connectionsAlert) },
    };
  },
  PostgresArchivingFailing: ({ n, L, t }) => {
    const at = t.archiveFailWindow + 120;
    const N = at / 15 + 2;
    return {
      // Every round fails and nothing is archived: the age only grows.
      fire: {
        at,
        series: [
          [ser("pg_stat_archiver_failed_count", L("postgres", n[0])), rising(0, 1, N)],
          [ser("pg_stat_archiver_last_archive_age", L("postgres", n[0])), rising(0, 15, N)],
        ],
        alerts: [L("postgres", n[0])],
      },
      // One failure, then the retry archives: the age stays small.
      healthy: {
        at,
        series: [
          [ser("pg_stat_archiver_failed_count", L("postgres", n[0])), step(0, 1, N - 4, N)],
          [ser("pg_stat_archiver_last_archive_age", L("postgres", n[0])), flat(10, N)],
        ],
      },
    };
  },
  PostgresArchiveTooOld: ({ n, L, t }) => {
    const at = 3 * t.archiveTimeout + 180;
    const N = at / 15 + 2;
    return {
      // Writes all along, and the newest archived segment keeps ageing.
      fire: {
        at,
        series: [
          [ser("pg_stat_archiver_last_archive_age", L("postgres", n[0])), rising(0, 15, N)],
          [ser("patroni_xlog_location", L("patroni", n[0])), rising(1000, 1000, N)],
        ],
        alerts: [L("postgres", n[0])],
      },
      // An idle cluster: nothing to archive, however old the last segment.
      healthy: {
        at,
        series: [
          [ser("pg_stat_archiver_last_archive_age", L("postgres", n[0])), rising(86400, 15, N)],
          [ser("patroni_xlog_location", L("patroni", n[0])), flat(5000, N)],
        ],
      },
    };
  },
  PostgresArchiveQueueFilling: ({ n, L, C, t }) => {
    const xlog = t.archiveQueueMaxBytes;
    const s = (archivedEnd: number): [string, string][] => [
      [ser("patroni_xlog_location", L("patroni", n[0])), flat(xlog, 30)],
      [ser("patroni_primary", L("patroni", n[0])), flat(1, 30)],
      [ser("patroni_xlog_location", L("patroni", n[1])), flat(0, 30)],
      [ser("patroni_primary", L("patroni", n[1])), flat(0, 30)],
      [ser(BACKUP_METRICS.archiveEnd, L("node", n[0])), flat(archivedEnd, 30)],
      [ser(BACKUP_METRICS.archiveEnd, L("node", n[1])), flat(archivedEnd, 30)],
    ];
    return {
      fire: { at: 400, series: s(xlog / 2 - 1), alerts: [{ cluster: C, node: n[0] }] },
      healthy: { at: 400, series: s(xlog - 16 * 1024 * 1024) },
    };
  },
  PostgresWalDropped: ({ n, L }) => {
    const s = (fullAt: number): [string, string][] => [
      [ser(BACKUP_METRICS.walDroppedLast, L("node", n[0])), flat(2000, 10)],
      [ser(BACKUP_METRICS.walDroppedLast, L("node", n[1])), flat(0, 10)],
      ...n
        .slice(0, 2)
        .map(
          (x) => [ser(BACKUP_METRICS.lastBackup, L("node", x, { type: "full" })), flat(fullAt, 10)] as [string, string],
        ),
      ...n
        .slice(0, 2)
        .map((x) => [ser(BACKUP_METRICS.lastBackup, L("node", x, { type: "diff" })), flat(0, 10)] as [string, string]),
    ];
    // A full backup after the drop restores the chain.
    return { fire: { at: 60, series: s(1000), alerts: [L("node", n[0])] }, healthy: { at: 60, series: s(3000) } };
  },
  BackupFullTooOld: ({ n, L, C, t }) => {
    const interval = 300;
    const at = t.fullBackupMaxAge + 3600;
    const N = at / interval + 2;
    const s = (full: number): [string, string][] =>
      n.map((x) => [ser(BACKUP_METRICS.lastBackup, L("node", x, { type: "full" })), flat(full, N)]);
    return {
      fire: { at, interval, series: s(0), alerts: [{ cluster: C }] },
      healthy: { at, interval, series: s(at - 24 * 3600) },
    };
  },
  BackupDiffTooOld: ({ n, L, C, t }) => {
    const interval = 300;
    const at = t.diffBackupMaxAge + 3600;
    const N = at / interval + 2;
    const s = (diff: number): [string, string][] =>
      n.flatMap((x) => [
        [ser(BACKUP_METRICS.lastBackup, L("node", x, { type: "full" })), flat(0, N)] as [string, string],
        [ser(BACKUP_METRICS.lastBackup, L("node", x, { type: "diff" })), flat(diff, N)] as [string, string],
      ]);
    return {
      fire: { at, interval, series: s(0), alerts: [{ cluster: C }] },
      healthy: { at, interval, series: s(at - 2 * 3600) },
    };
  },
  BackupRepositoryUnreadable: ({ n, L, t }) => {
    const at = t.metricsStale + 120;
    const N = at / 15 + 2;
    return {
      fire: { at, series: [[ser(BACKUP_METRICS.success, L("node", n[0])), flat(0, N)]], alerts: [L("node", n[0])] },
      healthy: { at, series: [[ser(BACKUP_METRICS.success, L("node", n[0])), flat(1, N)]] },
    };
  },
  BackupMetricsMissing: ({ n, L, t }) => {
    const at = 2 * t.metricsStale + 120;
    const N = at / 15 + 2;
    const up = n.slice(0, 3).map((x) => [ser("up", L("node", x)), flat(1, N)] as [string, string]);
    return {
      // n[1] never wrote the file; n[2] stopped writing it at the start.
      fire: {
        at,
        series: [
          ...up,
          [ser(BACKUP_METRICS.collected, L("node", n[0])), rising(0, 15, N)],
          [ser(BACKUP_METRICS.collected, L("node", n[2])), flat(0, N)],
        ],
        alerts: [L("node", n[1]), L("node", n[2])],
      },
      healthy: {
        at,
        series: [
          ...up,
          ...n
            .slice(0, 3)
            .map((x) => [ser(BACKUP_METRICS.collected, L("node", x)), rising(0, 15, N)] as [string, string]),
        ],
      },
    };
  },
  DataVolumeFullWithinADay: (c) => diskCase(c, serverPaths().volumeMount),
  RootDiskFullWithinADay: (c) => diskCase(c, "/"),
  EtcdNoLeader: ({ n, L, t }) => ({
    fire: {
      at: t.quick + 60,
      series: [[ser("etcd_server_has_leader", L("etcd", n[0])), flat(0, 20)]],
      alerts: [L("etcd", n[0])],
    },
    healthy: { at: t.quick + 60, series: [[ser("etcd_server_has_leader", L("etcd", n[0])), flat(1, 20)]] },
  }),
  EtcdMemberDown: ({ n, L, t }) => {
    const at = t.memberGone + 60;
    const N = at / 15 + 2;
    return {
      fire: { at, series: [[ser("up", L("etcd", n[1])), step(1, 0, 2, N)]], alerts: [L("etcd", n[1])] },
      healthy: { at, series: [[ser("up", L("etcd", n[1])), flat(1, N)]] },
    };
  },
  EtcdDatabaseNearQuota: ({ n, L }) => {
    const s = (size: number): [string, string][] => [
      [ser("etcd_mvcc_db_total_size_in_bytes", L("etcd", n[0])), flat(size, 50)],
      [ser("etcd_server_quota_backend_bytes", L("etcd", n[0])), flat(2147483648, 50)],
    ];
    return {
      fire: { at: 700, series: s(1900000000), alerts: [L("etcd", n[0])] },
      healthy: { at: 700, series: s(40960) },
    };
  },
  RedisNoMaster: ({ n, L, C, t }) => {
    const at = t.redisFailover + 60;
    const N = at / 15 + 2;
    const s = (master: boolean): [string, string][] => [
      [ser("redis_instance_info", L("redis", n[0], { role: master ? "master" : "slave" })), flat(1, N)],
      [ser("redis_instance_info", L("redis", n[1], { role: "slave" })), flat(1, N)],
    ];
    return {
      fire: { at, series: s(false), alerts: [{ cluster: C, job: `${C}-redis`, role: "master" }] },
      healthy: { at, series: s(true) },
    };
  },
  RedisMultipleMasters: ({ n, L, C, t }) => {
    const at = t.redisFailover + 60;
    const N = at / 15 + 2;
    const s = (second: string): [string, string][] => [
      [ser("redis_instance_info", L("redis", n[0], { role: "master" })), flat(1, N)],
      [ser("redis_instance_info", L("redis", n[1], { role: second })), flat(1, N)],
    ];
    return { fire: { at, series: s("master"), alerts: [{ cluster: C }] }, healthy: { at, series: s("slave") } };
  },
  RedisReplicaDisconnected: ({ n, L, t }) => {
    const at = t.redisFailover + 60;
    const N = at / 15 + 2;
    const s = (replicas: number): [string, string][] => [
      [ser("redis_connected_slaves", L("redis", n[0])), flat(replicas, N)],
      [ser("redis_instance_info", L("redis", n[0], { role: "master" })), flat(1, N)],
      [ser("redis_connected_slaves", L("redis", n[1])), flat(0, N)],
      [ser("redis_instance_info", L("redis", n[1], { role: "slave" })), flat(1, N)],
    ];
    return {
      fire: { at, series: s(t.replicas - 1), alerts: [L("redis", n[0])] },
      healthy: { at, series: s(t.replicas) },
    };
  },
  RedisMemoryNearMax: ({ n, L }) => {
    const s = (used: number): [string, string][] => [
      [ser("redis_memory_used_bytes", L("redis", n[0])), flat(used, 30)],
      [ser("redis_memory_max_bytes", L("redis", n[0])), flat(67108864, 30)],
      // A Redis without maxmemory never counts as full.
      [ser("redis_memory_used_bytes", L("redis", n[1])), flat(67108864, 30)],
      [ser("redis_memory_max_bytes", L("redis", n[1])), flat(0, 30)],
    ];
    return {
      fire: { at: 400, series: s(64000000), alerts: [L("redis", n[0])] },
      healthy: { at: 400, series: s(1148504) },
    };
  },
  RedisRejectedConnections: ({ n, L }) => ({
    fire: {
      at: 120,
      series: [[ser("redis_rejected_connections_total", L("sentinel", n[0])), rising(0, 1, 10)]],
      alerts: [L("sentinel", n[0])],
    },
    healthy: { at: 120, series: [[ser("redis_rejected_connections_total", L("sentinel", n[0])), flat(0, 10)]] },
  }),
  SentinelFailover: ({ n, L, C }) => {
    const status = (addr: string) =>
      ser(
        "redis_sentinel_master_status",
        L("sentinel", n[0], { master_address: addr, master_name: C, master_status: "ok" }),
      );
    return {
      fire: {
        at: 500,
        series: [
          [status("10.42.1.10:6380"), "1x20 _x20"],
          [status("10.42.1.11:6380"), "_x20 1x20"],
        ],
        alerts: [{ cluster: C }],
      },
      healthy: { at: 500, series: [[status("10.42.1.10:6380"), flat(1, 40)]] },
    };
  },
  HaproxyBackendWithoutServer: ({ n, L, t }) => {
    const at = 2 * t.failover + 60;
    const N = at / 15 + 2;
    const labels = L("haproxy", n[0], { proxy: "postgres_primary" });
    return {
      fire: { at, series: [[ser("haproxy_backend_active_servers", labels), flat(0, N)]], alerts: [labels] },
      // A failover: no server for a moment, then the new leader.
      healthy: { at, series: [[ser("haproxy_backend_active_servers", labels), `${flat(1, 2)} 0 0 ${flat(1, N - 4)}`]] },
    };
  },
  PgbouncerClientsWaiting: ({ n, L, t, C }) => {
    const at = t.poolWaitFor + 60;
    const N = at / 15 + 2;
    const pool = L("pgbouncer", n[0], { database: "madbase", user: "madbase" });
    const other = L("pgbouncer", n[0], { database: "madbase", user: "pgbouncer_auth" });
    const s = (wait: string): [string, string][] => [
      [ser("pgbouncer_pools_client_maxwait_seconds", pool), wait],
      [ser("pgbouncer_pools_client_maxwait_seconds", other), flat(0, N)],
    ];
    return {
      fire: { at, series: s(step(0, 3, 2, N)), alerts: [{ cluster: C, node: n[0] }] },
      // A burst: clients wait for a scrape or two, then the queue is gone.
      healthy: { at, series: s(`${flat(0, 2)} 3 2 ${flat(0, N - 4)}`) },
    };
  },
  ExporterDown: ({ n, L, t }) => {
    const at = t.exporterDown + 60;
    const N = at / 15 + 2;
    const labels = L("postgres", n[2], { instance: "10.42.1.12:9187" });
    return {
      fire: { at, series: [[ser("up", labels), step(1, 0, 2, N)]], alerts: [labels] },
      healthy: { at, series: [[ser("up", labels), flat(1, N)]] },
    };
  },
  TlsNodeCertificateExpiring: ({ n, L, t }) => {
    const interval = 300;
    const at = 3600 + 900;
    const N = at / interval + 2;
    const labels = L("node", n[1], { certificate: "node" });
    // A certificate of n[1] one day inside the warning, every other node's well outside it.
    const s = (left: number): [string, string][] => [
      [ser(TLS_METRICS.notAfter, labels), flat(at + left, N)],
      [ser(TLS_METRICS.notAfter, L("node", n[0], { certificate: "node" })), flat(at + t.nodeCertLeft + 86400 * 300, N)],
    ];
    return {
      fire: { at, interval, series: s(t.nodeCertLeft - 86400), alerts: [labels] },
      healthy: { at, interval, series: s(t.nodeCertLeft + 86400) },
    };
  },
  TlsCaCertificateExpiring: ({ n, L, C, t }) => {
    const interval = 300;
    const at = 3600 + 900;
    const N = at / interval + 2;
    const s = (left: number): [string, string][] =>
      n.map((x) => [ser(TLS_METRICS.notAfter, L("node", x, { certificate: "ca" })), flat(at + left, N)]);
    return {
      fire: { at, interval, series: s(t.caCertLeft - 86400), alerts: [{ cluster: C }] },
      healthy: { at, interval, series: s(t.caCertLeft + 86400) },
    };
  },
  TlsCertificateEndsThisWeek: ({ n, L, t }) => {
    const interval = 60;
    const at = 1200;
    const N = at / interval + 2;
    const labels = L("node", n[2], { certificate: "node" });
    return {
      fire: {
        at,
        interval,
        series: [[ser(TLS_METRICS.notAfter, labels), flat(at + t.certCriticalLeft - 3600, N)]],
        alerts: [labels],
      },
      // Inside the warning's 21 days, outside this one's 7.
      healthy: {
        at,
        interval,
        series: [[ser(TLS_METRICS.notAfter, labels), flat(at + t.certCriticalLeft + 86400, N)]],
      },
    };
  },
  TlsCertificateUnreadable: ({ n, L }) => {
    const at = 900;
    const N = at / 15 + 2;
    const labels = L("node", n[0], { certificate: "ca" });
    return {
      fire: { at, series: [[ser(TLS_METRICS.readable, labels), flat(0, N)]], alerts: [labels] },
      healthy: { at, series: [[ser(TLS_METRICS.readable, labels), flat(1, N)]] },
    };
  },
  SecurityUpdateWaiting: ({ C, n, L, t }) => {
    const interval = 60;
    const at = 7200;
    const N = at / interval + 2;
    const pending = (node: string, pkg: string, security: string) =>
      ser(
        UPDATES_METRICS.pendingSince,
        L("node", node, { package: pkg, installed: "1", candidate: "2", held: "1", security }),
      );
    return {
      // A held security update first seen more than 7 days (and the rule's hour) before.
      fire: {
        at,
        interval,
        series: [[pending(n[0], "postgresql-17", "1"), flat(at - t.updateWait - 7200, N)]],
        alerts: [{ cluster: C, node: n[0] }],
      },
      // Six days for a security update; a non-security one may wait for ever.
      healthy: {
        at,
        interval,
        series: [
          [pending(n[0], "postgresql-17", "1"), flat(at - t.updateWait + 86400, N)],
          [pending(n[1], "tzdata", "0"), flat(at - 10 * t.updateWait, N)],
        ],
      },
    };
  },
  RebootWaiting: ({ n, L, t }) => {
    const interval = 60;
    const at = 7200;
    const N = at / interval + 2;
    const labels = L("node", n[1]);
    return {
      fire: {
        at,
        interval,
        series: [[ser(UPDATES_METRICS.rebootRequiredSince, labels), flat(at - t.updateWait - 7200, N)]],
        alerts: [labels],
      },
      healthy: {
        at,
        interval,
        series: [[ser(UPDATES_METRICS.rebootRequiredSince, labels), flat(at - t.updateWait + 86400, N)]],
      },
    };
  },
  TlsMetricsMissing: ({ n, L, t }) => {
    const interval = 60;
    const at = 2 * t.tlsMetricsStale + 600;
    const N = at / interval + 2;
    const up = n.slice(0, 3).map((x) => [ser("up", L("node", x)), flat(1, N)] as [string, string]);
    return {
      // n[1] never wrote the file; n[2] wrote it once, at the start.
      fire: {
        at,
        interval,
        series: [
          ...up,
          [ser(TLS_METRICS.collected, L("node", n[0])), rising(0, interval, N)],
          [ser(TLS_METRICS.collected, L("node", n[2])), flat(0, N)],
        ],
        alerts: [L("node", n[1]), L("node", n[2])],
      },
      healthy: {
        at,
        interval,
        series: [
          ...up,
          ...n
            .slice(0, 3)
            .map((x) => [ser(TLS_METRICS.collected, L("node", x)), rising(0, interval, N)] as [string, string]),
        ],
      },
    };
  },
  PostgresArchivingOff: ({ C }) => ({
    fire: { at: 30, series: [], alerts: [{ cluster: C }] },
    healthy: "the rule exists only on a stack that archives nothing; with S3 keys it is not rendered at all",
  }),
};

function diskCase({ n, L }: Ctx, mountpoint: string): Case {
  const interval = 60;
  const at = 7 * 3600 + 600;
  const N = at / interval + 2;
  const labels = L("node", n[0], { mountpoint });
  return {
    // 1 GB free, a MB a minute gone: empty in under 17 hours.
    fire: {
      at,
      interval,
      series: [[ser("node_filesystem_avail_bytes", labels), `1000000000-1000000x${N - 1}`]],
      alerts: [labels],
    },
    // Much more free space than the same growth fills in a day.
    healthy: { at, interval, series: [[ser("node_filesystem_avail_bytes", labels), `9000000000-1000000x${N - 1}`]] },
  };
}

/** Prometheus' `{{ $labels.x }}`, for the summaries (the only template they use). */
function expand(text: string, labels: Labels): string {
  return text.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, k: string) => labels[k] ?? "");
}

const STACKS = [
  { name: "prod (3 nodes, norm, synchronous)", stack: "prod", overrides: { synchronousMode: true }, archiving: true },
  {
    name: "prod on the fast profile, 5 nodes",
    stack: "prod",
    overrides: { failoverProfile: "fast", nodeCount: 5, synchronousMode: true },
    archiving: true,
  },
  { name: "dev (1 node) without S3 keys", stack: "dev", overrides: { nodeCount: 1 }, archiving: false },
];

function stackRules(s: (typeof STACKS)[number]) {
  const settings = parseSettings(s.stack, s.overrides);
  const { topology, options } = describeCluster(settings);
  options.backup.archiving = archivingDecision(settings, s.archiving).archiving;
  return { topology, options, rules: alertRules(topology, options), text: renderAlertRules(topology, options) };
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-alerts-"));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
/** Each stack's directory: its alerts.yml and the promtool test files that load it. */
function stackDir(s: (typeof STACKS)[number]): string {
  const dir = path.join(work, s.name.replace(/\W+/g, "-"));
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, ALERT_RULES_FILE), stackRules(s).text);
  }
  return dir;
}

/** Writes the promtool test files of a stack beside its rules file: one per sample interval. */
function promtoolFiles(s: (typeof STACKS)[number], dir: string): string[] {
  const { topology, options, rules } = stackRules(s);
  const ctx: Ctx = {
    C: topology.clusterName,
    n: topology.nodes
      .map((x) => x.name)
      .concat(["spare-1", "spare-2"])
      .slice(0, Math.max(3, topology.nodeCount)),
    t: alertThresholds(topology, options),
    L: (job, node, extra = {}) => ({
      cluster: topology.clusterName,
      job: `${topology.clusterName}-${job}`,
      node,
      ...extra,
    }),
  };
  // One promtool file per sample interval, evaluated at that interval: days of backup history
  // at 5 min, a disk's trend at 1 min, the rest at 15 s (each test evaluates every rule).
  const files = new Map<number, unknown[]>();
  for (const rule of rules) {
    if (!CASES[rule.alert]) continue; // "... and a case below" fails for it
    const c = CASES[rule.alert](ctx);
    const expected = (labels: Labels) => {
      const all = { ...labels, severity: rule.severity, ...(rule.labels ?? {}) };
      return { exp_labels: all, exp_annotations: { summary: expand(rule.summary, all) } };
    };
    const scenario = (sc: Scenario, alerts: Labels[]) => {
      const interval = sc.interval ?? 15;
      if (!files.has(interval)) files.set(interval, []);
      files.get(interval)!.push({
        name: `${rule.alert} ${alerts.length ? "fires" : "stays silent"}`,
        interval: `${interval}s`,
        input_series: sc.series.map(([series, values]) => ({ series, values })),
        alert_rule_test: [{ eval_time: `${sc.at}s`, alertname: rule.alert, exp_alerts: alerts.map(expected) }],
      });
    };
    scenario(c.fire, c.fire.alerts);
    if (typeof c.healthy !== "string") scenario(c.healthy, []);
    else if (rule.alert !== "PostgresArchivingOff")
      throw new Error(`${rule.alert}: every rule but PostgresArchivingOff needs a healthy series`);
  }
  return [...files].map(([interval, tests]) => {
    const f = path.join(dir, `alerts-${interval}s.test.yml`);
    fs.writeFileSync(
      f,
      yaml.dump(
        { rule_files: [ALERT_RULES_FILE], evaluation_interval: `${interval}s`, tests },
        { lineWidth: -1, noRefs: true },
      ),
    );
    return f;
  });
}

/**
 * promtool runs of every stack, two at a time (one file per process): days of backup history
 * at 5 min, a disk's trend at 1 min, the rest at 15 s; each test evaluates every rule.
 */
const promtoolRuns = new Map<string, Promise<{ file: string; code: number | null; output: string }[]>>();
beforeAll(() => {
  const jobs = STACKS.flatMap((s) => promtoolFiles(s, stackDir(s)).map((file) => ({ s, file })));
  const all = mapLimit(jobs, 2, async ({ s, file }) => {
    const r = await run(["promtool", "test", "rules", file], { timeoutMs: 240_000, cwd: stackDir(s) });
    return { name: s.name, file: path.basename(file), code: r.code, output: r.stdout + r.stderr };
  });
  for (const s of STACKS)
    promtoolRuns.set(
      s.name,
      all.then((rs) => rs.filter((r) => r.name === s.name)),
    );
  return all.then(() => undefined);
}, 300_000);

describe.each(STACKS)("$name", (s) => {
  const { topology, rules } = stackRules(s);
  const rulesFile = path.join(stackDir(s), ALERT_RULES_FILE);

  test("promtool check rules accepts the file", async () => {
    const r = await run(["promtool", "check", "rules", rulesFile], { timeoutMs: 60_000 });
    expect([r.code, r.stdout + r.stderr]).toEqual([0, expect.stringContaining(`SUCCESS: ${rules.length} rules found`)]);
  });

  test("every rule has a severity, a summary that says what to do, and a case below", () => {
    expect(rules.filter((r) => !CASES[r.alert]).map((r) => r.alert)).toEqual([]);
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
    for (const r of rules) {
      expect([r.alert, ["critical", "warning", "info"].includes(r.severity)]).toEqual([r.alert, true]);
      // Names the node, or (for a cluster-wide condition) the cluster.
      expect([r.alert, /\{\{ \$labels\.node \}\}/.test(r.summary) || r.summary.includes(topology.clusterName)]).toEqual(
        [r.alert, true],
      );
      expect([r.alert, r.summary.length > 60]).toEqual([r.alert, true]);
    }
  });

  test("promtool test rules: each rule fires on its condition and stays silent on a healthy series", async () => {
    for (const r of await promtoolRuns.get(s.name)!)
      expect([r.file, r.code, r.output]).toEqual([r.file, 0, expect.not.stringContaining("FAILED")]);
  });

  test("prometheus.yml loads the rules file from beside it", () => {
    const doc = yaml.load(renderPrometheusConfig(topology)) as { rule_files: string[] };
    expect(doc.rule_files).toEqual([ALERT_RULES_FILE]);
  });
});

test("no case is left for a rule that no longer exists", () => {
  const all = new Set(STACKS.flatMap((s) => stackRules(s).rules.map((r: AlertRule) => r.alert)));
  expect(Object.keys(CASES).filter((a) => !all.has(a))).toEqual([]);
});

test("thresholds follow the stack: the plan's max_connections, the profile's timings, the volume's queue", () => {
  const rules = (overrides: Record<string, unknown>) => {
    const { topology, options } = describeCluster(parseSettings("prod", overrides));
    return Object.fromEntries(alertRules(topology, options).map((r) => [r.alert, r]));
  };
  expect(rules({ plan: "cx21" }).PostgresConnectionsNearMax.expr).toMatch(/> 80$/);
  expect(rules({ plan: "cx41" }).PostgresConnectionsNearMax.expr).toMatch(/> 400$/);
  expect(rules({ failoverProfile: "fast" }).PostgresNoLeader.forSeconds).toBe(2);
  expect(rules({ failoverProfile: "safe" }).PostgresNoLeader.forSeconds).toBe(20);
  expect(rules({ failoverProfile: "safe" }).PatroniMemberDown.forSeconds).toBe(30);
  expect(rules({ volumeSizeGb: 100 }).PostgresArchiveQueueFilling.expr).toContain(
    `> ${(100 * 1024 * 0.2 * 1024 * 1024) / 2}`,
  );
  expect(rules({}).PostgresReplicationLag.expr).toMatch(/> 1048576$/);
  expect(rules({ nodeCount: 1, requireHa: false }).PostgresReplicationLag).toBeUndefined();
});
