/**
 * Patroni's dynamic configuration: the settings every member shares, kept in etcd. They are
 * written once into `bootstrap.dcs` (read only when the cluster is created) and, on a running
 * cluster, through Patroni's `PATCH /config` by config-refresh: one source for both, so a new
 * cluster and a converged one carry the same values.
 */
import type { ClusterOptions } from "./model";
import { postgresTuning } from "./plans";

/** A replica further behind than this (bytes) is never promoted; the lag alert uses it too. */
export const MAXIMUM_LAG_ON_FAILOVER = 1048576;

/**
 * PostgreSQL's archive_timeout: a segment is switched (and archived) at most this long after a
 * write, so an idle cluster does not ship a 16 MiB segment a minute; also the archive-age alert's unit.
 */
export const ARCHIVE_TIMEOUT_SECONDS = 300;

/**
 * PostgreSQL parameters whose value on a hot standby must be at least the primary's (PostgreSQL
 * refuses to run recovery otherwise). Lowering one means restarting the primary first.
 */
export const STANDBY_MINIMUM_PARAMETERS = [
  "max_connections",
  "max_worker_processes",
  "max_wal_senders",
  "max_prepared_transactions",
  "max_locks_per_transaction",
] as const;

export interface DynamicConfig {
  ttl: number;
  loop_wait: number;
  retry_timeout: number;
  maximum_lag_on_failover: number;
  failsafe_mode: boolean;
  synchronous_mode: boolean;
  synchronous_mode_strict: boolean;
  postgresql: {
    use_pg_rewind: boolean;
    use_slots: boolean;
    parameters: Record<string, string | number>;
  };
}

/** The cluster-wide settings for these options (memory does not matter: these are not sized from it). */
export function dynamicConfig(options: ClusterOptions): DynamicConfig {
  const { cluster } = postgresTuning(options.plan);
  const { ttl, loopWait, retryTimeout } = options.profile.patroni;
  return {
    ttl,
    loop_wait: loopWait,
    retry_timeout: retryTimeout,
    maximum_lag_on_failover: MAXIMUM_LAG_ON_FAILOVER,
    // Keep the primary writable through a DCS outage while every member still answers it.
    failsafe_mode: true,
    synchronous_mode: options.synchronousMode,
    // Not strict: with every standby gone the primary goes on alone rather than refusing writes.
    synchronous_mode_strict: false,
    postgresql: {
      use_pg_rewind: true,
      use_slots: true,
      // Patroni keeps these in the DCS: they must match on every member.
      parameters: {
        max_connections: cluster.max_connections,
        max_wal_senders: cluster.max_wal_senders,
        max_replication_slots: cluster.max_replication_slots,
        max_worker_processes: cluster.max_worker_processes,
        max_locks_per_transaction: 64,
        max_prepared_transactions: 0,
        wal_level: "replica",
        wal_log_hints: "on",
        hot_standby: "on",
        track_commit_timestamp: "off",
        wal_keep_size: "512MB",
        password_encryption: "scram-sha-256",
        archive_mode: "on",
        archive_timeout: `${ARCHIVE_TIMEOUT_SECONDS}s`,
      },
    },
  };
}
