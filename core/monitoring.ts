/**
 * What Prometheus scrapes on every node, and the scrape configuration for it, rendered from the
 * topology. Pure, like the rest of the core: the Pulumi program exports it, `npm run render`
 * writes it, and the local runner's tests scrape exactly these endpoints.
 */
import { ALERT_RULES_FILE } from "./alerts";
import { template } from "./templates";
import { USERS } from "./secrets";
import { PORTS, Topology } from "./topology";

export interface ScrapeJob {
  /** Suffix of the job name (`<cluster>-<job>`). */
  job: "node" | "postgres" | "pgbouncer" | "redis" | "sentinel" | "patroni" | "haproxy" | "etcd";
  purpose: string;
  port: number;
  path: string;
  /** The redis exporter's multi-target endpoint: which instance it should scrape instead. */
  target?: string;
  /** HAProxy's stats listener wants its login for /metrics too. */
  basicAuth?: boolean;
  /** Served over HTTPS with the node's certificate: verified with the cluster CA (caCertificate). */
  tls?: boolean;
}

/** Every endpoint with metrics on a node, each listening on the node's private address. */
export const SCRAPE_JOBS: readonly ScrapeJob[] = [
  {
    job: "node",
    purpose: "CPU, memory, disk and network of the server (prometheus-node-exporter)",
    port: PORTS.nodeExporter,
    path: "/metrics",
  },
  {
    job: "postgres",
    purpose: "PostgreSQL statistics, as the pg_monitor role (prometheus-postgres-exporter)",
    port: PORTS.postgresExporter,
    path: "/metrics",
  },
  {
    job: "pgbouncer",
    purpose: "PgBouncer's pools: clients waiting and active, server connections (prometheus-pgbouncer-exporter)",
    port: PORTS.pgbouncerExporter,
    path: "/metrics",
  },
  {
    job: "redis",
    purpose: "the node's Redis (prometheus-redis-exporter)",
    port: PORTS.redisExporter,
    path: "/metrics",
  },
  {
    job: "sentinel",
    purpose: "the node's Sentinel, through the same Redis exporter's multi-target endpoint",
    port: PORTS.redisExporter,
    path: "/scrape",
    target: `redis://127.0.0.1:${PORTS.sentinel}`,
  },
  {
    job: "patroni",
    purpose: "Patroni's own metrics: role, timeline, WAL positions",
    port: PORTS.patroni,
    path: "/metrics",
    tls: true,
  },
  {
    job: "haproxy",
    purpose: "HAProxy's built-in exporter on the stats listener (login required)",
    port: PORTS.haproxyStats,
    path: "/metrics",
    basicAuth: true,
  },
  { job: "etcd", purpose: "etcd, Patroni's DCS", port: PORTS.etcdMetrics, path: "/metrics" },
];

export interface PrometheusConfigOptions {
  /** Where the Prometheus server keeps HAProxy's stats password (one line, the password only). */
  haproxyPasswordFile?: string;
  /** Where the Prometheus server keeps the cluster CA's certificate (the caCertificate output). */
  caFile?: string;
  /** Where it keeps the operator's certificate and key (operatorCertificate, operatorPrivateKey): Patroni asks for them. */
  clientCertFile?: string;
  clientKeyFile?: string;
  scrapeIntervalSeconds?: number;
  /** Rule files Prometheus loads, relative to prometheus.yml: the rendered alerts.yml beside it (core/alerts.ts). */
  ruleFiles?: string[];
}

export function defaultHaproxyPasswordFile(topology: Pick<Topology, "clusterName">): string {
  return `/etc/prometheus/${topology.clusterName}-haproxy-stats.password`;
}

export function defaultCaFile(topology: Pick<Topology, "clusterName">): string {
  return `/etc/prometheus/${topology.clusterName}-ca.crt`;
}

export function defaultClientCertFiles(topology: Pick<Topology, "clusterName">): { cert: string; key: string } {
  return {
    cert: `/etc/prometheus/${topology.clusterName}-operator.crt`,
    key: `/etc/prometheus/${topology.clusterName}-operator.key`,
  };
}

/** prometheus.yml for one cluster: a job per endpoint, every node a target labelled with its name. */
export function renderPrometheusConfig(topology: Topology, opts: PrometheusConfigOptions = {}): string {
  const interval = opts.scrapeIntervalSeconds ?? 15;
  if (!Number.isInteger(interval) || interval < 1)
    throw new RangeError(`scrape interval must be a whole number of seconds, got ${interval}`);
  return template("prometheus.yml")({
    topology,
    users: USERS,
    haproxyPasswordFile: opts.haproxyPasswordFile ?? defaultHaproxyPasswordFile(topology),
    caFile: opts.caFile ?? defaultCaFile(topology),
    clientCertFile: opts.clientCertFile ?? defaultClientCertFiles(topology).cert,
    clientKeyFile: opts.clientKeyFile ?? defaultClientCertFiles(topology).key,
    scrapeInterval: `${interval}s`,
    // Prometheus wants the timeout no longer than the interval.
    scrapeTimeout: `${Math.min(10, interval)}s`,
    ruleFiles: opts.ruleFiles ?? [ALERT_RULES_FILE],
    jobs: SCRAPE_JOBS.map((j) => ({
      target: "",
      basicAuth: false,
      tls: false,
      ...j,
      name: `${topology.clusterName}-${j.job}`,
    })),
  });
}

/**
 * KEY=VALUE lines of an environment file the way systemd's EnvironmentFile= (and a shell) reads
 * the rendered ones: comments skipped, one pair of surrounding quotes removed.
 */
export function readEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const v = m[2];
    env[m[1]] = v.length >= 2 && (v[0] === "'" || v[0] === '"') && v[v.length - 1] === v[0] ? v.slice(1, -1) : v;
  }
  return env;
}
