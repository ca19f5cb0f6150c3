/**
 * The "State Pillar Performance" Grafana dashboard, as code: `npm run dashboard` writes it to
 * dashboards/state-pillar-performance.json, and the tests check that file is exactly this output,
 * that every query parses, and that every metric it names is exported by a running cluster.
 *
 * Queries only name metrics the Debian exporters (node 1.5, postgres 0.11, redis 1.45), HAProxy
 * 2.6's built-in exporter and Patroni 3.0.2's /metrics really export, labelled as the rendered
 * prometheus.yml labels them: `cluster` and `node`.
 */

export const DASHBOARD_UID = "madbase-state-pillar";
export const DASHBOARD_TITLE = "State Pillar Performance";

const DS = { type: "prometheus", uid: "${datasource}" } as const;
const C = 'cluster="$cluster"';

interface Query {
  expr: string;
  legend?: string;
}

interface PanelSpec {
  title: string;
  description: string;
  kind: "timeseries" | "stat";
  unit: string;
  queries: Query[];
  /** Width in grid columns (of 24). */
  w?: number;
  min?: number;
  max?: number;
  decimals?: number;
}

interface RowSpec {
  title: string;
  panels: PanelSpec[];
}

const ROWS: RowSpec[] = [
  {
    title: "PostgreSQL",
    panels: [
      {
        title: "PostgreSQL TPS",
        description: "Transactions committed and rolled back per second, per node (the leader takes the writes).",
        kind: "timeseries",
        unit: "ops",
        queries: [
          {
            expr: `sum by (node) (rate(pg_stat_database_xact_commit{${C}}[$__rate_interval]) + rate(pg_stat_database_xact_rollback{${C}}[$__rate_interval]))`,
            legend: "{{node}}",
          },
        ],
      },
      {
        title: "Connections vs max_connections",
        description:
          "Backends connected per node, against max_connections, which the plan sets (cx21 100, cx31 200, cx41 500).",
        kind: "timeseries",
        unit: "short",
        min: 0,
        queries: [
          { expr: `sum by (node) (pg_stat_database_numbackends{${C}})`, legend: "{{node}}" },
          { expr: `max(pg_settings_max_connections{${C}})`, legend: "max_connections (plan)" },
        ],
      },
      {
        title: "Replication lag per replica",
        description:
          "WAL bytes each replica is behind the leader, as the leader's pg_stat_replication reports it. HAProxy stops sending reads (5434) to a replica past 16 MB.",
        kind: "timeseries",
        unit: "bytes",
        min: 0,
        queries: [
          {
            expr: `max by (application_name) (pg_stat_replication_pg_wal_lsn_diff{${C}})`,
            legend: "{{application_name}}",
          },
        ],
      },
    ],
  },
  {
    title: "PgBouncer",
    panels: [
      {
        title: "PgBouncer clients waiting",
        description:
          "Clients each node's PgBouncer holds in its queue for a PostgreSQL connection (every pool: the application database's, its lookups', the admin console's), and the longest wait. " +
          "A wait that stays above a second means the pool (max_db_connections, from the plan's max_connections) is saturated.",
        kind: "timeseries",
        unit: "short",
        min: 0,
        queries: [
          { expr: `sum by (node) (pgbouncer_pools_client_waiting_connections{${C}})`, legend: "{{node}} waiting" },
          { expr: `max by (node) (pgbouncer_pools_client_maxwait_seconds{${C}})`, legend: "{{node}} longest wait (s)" },
        ],
      },
      {
        title: "PgBouncer pool use",
        description:
          "Client connections PgBouncer serves against the PostgreSQL connections it uses for them (active: in a transaction; idle: kept for the next one), per node. " +
          "Thousands of clients share a pool of a few dozen server connections in transaction mode.",
        kind: "timeseries",
        unit: "short",
        min: 0,
        queries: [
          { expr: `sum by (node) (pgbouncer_pools_client_active_connections{${C}})`, legend: "{{node}} clients" },
          { expr: `sum by (node) (pgbouncer_pools_server_active_connections{${C}})`, legend: "{{node}} server active" },
          { expr: `sum by (node) (pgbouncer_pools_server_idle_connections{${C}})`, legend: "{{node}} server idle" },
        ],
      },
    ],
  },
  {
    title: "Patroni",
    panels: [
      {
        title: "Patroni leader",
        description: "1 while a node holds the leader lock and runs as primary.",
        kind: "timeseries",
        unit: "short",
        min: 0,
        max: 1,
        queries: [{ expr: `max by (node) (patroni_primary{${C}})`, legend: "{{node}}" }],
      },
      {
        title: "Patroni leader changes",
        description:
          "Failovers and switchovers in the selected time range: each promotion starts a new PostgreSQL timeline.",
        kind: "stat",
        unit: "short",
        decimals: 0,
        w: 6,
        queries: [
          {
            expr: `max(max_over_time(patroni_postgres_timeline{${C}}[$__range])) - min(min_over_time(patroni_postgres_timeline{${C}}[$__range]))`,
          },
        ],
      },
      {
        title: "PostgreSQL timeline",
        description: "The timeline each member is on; a member left behind after a failover shows the old one.",
        kind: "timeseries",
        unit: "short",
        decimals: 0,
        w: 10,
        queries: [{ expr: `max by (node) (patroni_postgres_timeline{${C}})`, legend: "{{node}}" }],
      },
    ],
  },
  {
    title: "Redis and Sentinel",
    panels: [
      {
        title: "Redis ops/s",
        description: "Commands processed per second, per node (writes go to the master; replicas apply its stream).",
        kind: "timeseries",
        unit: "ops",
        queries: [
          { expr: `sum by (node) (rate(redis_commands_processed_total{${C}}[$__rate_interval]))`, legend: "{{node}}" },
        ],
      },
      {
        title: "Redis memory",
        description: "Memory used per node, against maxmemory (noeviction: writes are refused past it).",
        kind: "timeseries",
        unit: "bytes",
        min: 0,
        queries: [
          { expr: `max by (node) (redis_memory_used_bytes{${C}})`, legend: "{{node}} used" },
          { expr: `max(redis_memory_max_bytes{${C}})`, legend: "maxmemory" },
        ],
      },
      {
        title: "Redis hit ratio",
        description: "Share of key lookups that found their key, over every node.",
        kind: "timeseries",
        unit: "percentunit",
        min: 0,
        max: 1,
        queries: [
          {
            expr: `sum(rate(redis_keyspace_hits_total{${C}}[$__rate_interval])) / (sum(rate(redis_keyspace_hits_total{${C}}[$__rate_interval])) + sum(rate(redis_keyspace_misses_total{${C}}[$__rate_interval])))`,
            legend: "hit ratio",
          },
        ],
      },
      {
        title: "Sentinel: Redis master",
        description: "The master address the Sentinels name, over time: a new line is a failover.",
        kind: "timeseries",
        unit: "short",
        min: 0,
        queries: [
          { expr: `count by (master_address) (redis_sentinel_master_status{${C}} == 1)`, legend: "{{master_address}}" },
        ],
      },
      {
        title: "Sentinel master changes",
        description: "Masters the Sentinels named in the selected time range, minus one: 0 means no failover.",
        kind: "stat",
        unit: "short",
        decimals: 0,
        w: 6,
        queries: [
          {
            expr: `count(count by (master_address) (count_over_time(redis_sentinel_master_status{${C}}[$__range]))) - 1`,
          },
        ],
      },
      {
        title: "Sentinels agreeing",
        description:
          "The fewest Sentinels any Sentinel sees as reachable for the master (a failover needs the quorum).",
        kind: "stat",
        unit: "short",
        decimals: 0,
        w: 6,
        queries: [{ expr: `min(redis_sentinel_master_ok_sentinels{${C}})` }],
      },
    ],
  },
  {
    title: "HAProxy",
    panels: [
      {
        title: "HAProxy sessions",
        description:
          "Sessions open through each entry port, over every node's HAProxy: postgres_primary 5433 (pooled), postgres_direct 5435, postgres_replicas 5434 (pooled), redis_master 6379.",
        kind: "timeseries",
        unit: "short",
        min: 0,
        queries: [
          {
            expr: `sum by (proxy) (haproxy_backend_current_sessions{${C}, proxy=~"postgres_primary|postgres_direct|postgres_replicas|redis_master"})`,
            legend: "{{proxy}}",
          },
        ],
      },
      {
        title: "HAProxy backend servers UP",
        description:
          "Servers each node's HAProxy routes to, per backend: 1 for postgres_primary, postgres_direct and redis_master, the streaming replicas for postgres_replicas.",
        kind: "timeseries",
        unit: "short",
        min: 0,
        queries: [
          {
            expr: `sum by (node, proxy) (haproxy_server_status{${C}, state="UP", proxy=~"postgres_primary|postgres_direct|postgres_replicas|redis_master"})`,
            legend: "{{node}} {{proxy}}",
          },
        ],
      },
      {
        title: "HAProxy backends down",
        description: "Backends with no server UP on some node's HAProxy: clients on that node get refused.",
        kind: "stat",
        unit: "short",
        decimals: 0,
        queries: [
          {
            expr: `count(haproxy_backend_status{${C}, state="UP", proxy=~"postgres_primary|postgres_direct|postgres_replicas|redis_master"} == 0) or vector(0)`,
          },
        ],
      },
    ],
  },
  {
    title: "Nodes",
    panels: [
      {
        title: "CPU used",
        description: "Share of CPU time not idle, per node.",
        kind: "timeseries",
        unit: "percentunit",
        min: 0,
        max: 1,
        queries: [
          {
            expr: `1 - avg by (node) (rate(node_cpu_seconds_total{${C}, mode="idle"}[$__rate_interval]))`,
            legend: "{{node}}",
          },
        ],
      },
      {
        title: "Memory used",
        description: "Share of memory not available to new work, per node.",
        kind: "timeseries",
        unit: "percentunit",
        min: 0,
        max: 1,
        queries: [
          {
            expr: `1 - max by (node) (node_memory_MemAvailable_bytes{${C}}) / max by (node) (node_memory_MemTotal_bytes{${C}})`,
            legend: "{{node}}",
          },
        ],
      },
      {
        title: "Disk used",
        description: "Share of each file system used, per node and mount point (the data volume holds PostgreSQL).",
        kind: "timeseries",
        unit: "percentunit",
        min: 0,
        max: 1,
        queries: [
          {
            expr: `1 - max by (node, mountpoint) (node_filesystem_avail_bytes{${C}, fstype!~"tmpfs|ramfs|overlay|squashfs"}) / max by (node, mountpoint) (node_filesystem_size_bytes{${C}, fstype!~"tmpfs|ramfs|overlay|squashfs"})`,
            legend: "{{node}} {{mountpoint}}",
          },
        ],
      },
    ],
  },
  {
    // The signals of the alert rules that guard the data (core/alerts.ts): archiving, backups, disks.
    title: "Archiving, backups and disks",
    panels: [
      {
        title: "WAL archiver (leader)",
        description:
          "Seconds since the leader last archived a WAL segment, and archive_command failures. An idle cluster archives at least every archive_timeout (300 s) after a write; failures that go on fire PostgresArchivingFailing.",
        kind: "timeseries",
        unit: "s",
        min: 0,
        queries: [
          {
            expr: `max by (node) (pg_stat_archiver_last_archive_age{${C}} and on (cluster, node) patroni_primary{${C}} == 1)`,
            legend: "{{node}} last archive age",
          },
          {
            expr: `sum by (node) (increase(pg_stat_archiver_failed_count{${C}}[$__rate_interval]))`,
            legend: "{{node}} failures",
          },
        ],
      },
      {
        title: "WAL not yet in the repository",
        description:
          "Bytes between the leader's WAL position and the end of the newest segment in the pgBackRest repository. Past archive-push-queue-max (a fifth of the volume) pgBackRest drops WAL.",
        kind: "timeseries",
        unit: "bytes",
        min: 0,
        queries: [
          {
            expr: `max(patroni_xlog_location{${C}} and on (cluster, node) patroni_primary{${C}} == 1) - max(madbase_pgbackrest_archive_newest_segment_end_bytes{${C}})`,
            legend: "unarchived WAL",
          },
        ],
      },
      {
        title: "Backup age",
        description:
          "Time since the newest full, differential and incremental backup finished (pgBackRest info, through node exporter's textfile). Full backups run weekly, differential ones daily.",
        kind: "timeseries",
        unit: "s",
        min: 0,
        queries: [
          {
            expr: `time() - max by (type) (madbase_pgbackrest_backup_last_completion_timestamp_seconds{${C}} > 0)`,
            legend: "{{type}}",
          },
        ],
      },
      {
        title: "Disk space in 24 h (prediction)",
        description:
          "Free space each node's data volume and root disk will have in a day at the rate of the last 6 hours; below zero fires DataVolumeFullWithinADay or RootDiskFullWithinADay.",
        kind: "timeseries",
        unit: "bytes",
        queries: [
          {
            expr: `predict_linear(node_filesystem_avail_bytes{${C}, mountpoint=~"/|/var/lib/postgresql"}[6h], 86400)`,
            legend: "{{node}} {{mountpoint}}",
          },
        ],
      },
    ],
  },
];

const GRID_WIDTH = 24;
const PANEL_HEIGHT = 8;

function panelJson(
  spec: PanelSpec,
  id: number,
  gridPos: { x: number; y: number; w: number; h: number },
): Record<string, unknown> {
  const targets = spec.queries.map((q, i) => ({
    refId: String.fromCharCode(65 + i),
    datasource: DS,
    expr: q.expr,
    legendFormat: q.legend ?? "__auto",
    range: true,
    instant: false,
  }));
  const defaults: Record<string, unknown> = { unit: spec.unit };
  if (spec.min !== undefined) defaults.min = spec.min;
  if (spec.max !== undefined) defaults.max = spec.max;
  if (spec.decimals !== undefined) defaults.decimals = spec.decimals;
  const options =
    spec.kind === "timeseries"
      ? {
          legend: { displayMode: "list", placement: "bottom", showLegend: true },
          tooltip: { mode: "multi", sort: "desc" },
        }
      : {
          reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
          colorMode: "value",
          graphMode: "none",
          justifyMode: "auto",
          orientation: "auto",
          textMode: "auto",
        };
  return {
    id,
    type: spec.kind,
    title: spec.title,
    description: spec.description,
    datasource: DS,
    gridPos,
    fieldConfig: { defaults, overrides: [] },
    options,
    targets,
  };
}

/** The dashboard model Grafana imports (schema version 39). */
export function buildDashboard(): Record<string, unknown> {
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const row of ROWS) {
    panels.push({
      id: id++,
      type: "row",
      title: row.title,
      collapsed: false,
      gridPos: { x: 0, y, w: GRID_WIDTH, h: 1 },
      panels: [],
    });
    y += 1;
    let x = 0;
    for (const spec of row.panels) {
      const w = spec.w ?? 8;
      if (x + w > GRID_WIDTH) {
        x = 0;
        y += PANEL_HEIGHT;
      }
      panels.push(panelJson(spec, id++, { x, y, w, h: PANEL_HEIGHT }));
      x += w;
    }
    y += PANEL_HEIGHT;
  }
  return {
    uid: DASHBOARD_UID,
    title: DASHBOARD_TITLE,
    description:
      "MadBase State Pillar: PostgreSQL/Patroni, Redis/Sentinel, HAProxy and the nodes, from the rendered prometheus.yml's jobs.",
    tags: ["madbase", "postgresql", "patroni", "redis", "haproxy"],
    editable: true,
    graphTooltip: 1,
    timezone: "browser",
    schemaVersion: 39,
    version: 1,
    refresh: "30s",
    time: { from: "now-6h", to: "now" },
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: "grafana", uid: "-- Grafana --" },
          enable: true,
          hide: true,
          iconColor: "rgba(0, 211, 255, 1)",
          name: "Annotations & Alerts",
          type: "dashboard",
        },
      ],
    },
    templating: {
      list: [
        {
          name: "datasource",
          label: "Prometheus",
          type: "datasource",
          query: "prometheus",
          current: {},
          hide: 0,
          refresh: 1,
          options: [],
        },
        {
          name: "cluster",
          label: "Cluster",
          type: "query",
          datasource: DS,
          query: { query: "label_values(patroni_version, cluster)", refId: "cluster" },
          definition: "label_values(patroni_version, cluster)",
          current: {},
          hide: 0,
          refresh: 2,
          sort: 1,
          options: [],
        },
      ],
    },
    panels,
  };
}

/** The file's text: stable key order, two-space indent, final newline. */
export function dashboardJson(): string {
  return JSON.stringify(buildDashboard(), null, 2) + "\n";
}
