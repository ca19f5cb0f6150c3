/**
 * The Prometheus exporters of a node (Debian's units, started by the node itself), and the probe
 * `status` uses to see them: a scrape of each at the node's private address.
 */
import { PORTS } from "../core";
import { Sample, parseMetrics, sampleValue } from "./metrics";

export const EXPORTER_SERVICES = [
  "node_exporter",
  "postgres_exporter",
  "redis_exporter",
  "pgbouncer_exporter",
] as const;
export type ExporterService = (typeof EXPORTER_SERVICES)[number];

/** Short names, as `status` shows them. */
export const EXPORTERS = ["node", "postgres", "redis", "pgbouncer"] as const;
export type Exporter = (typeof EXPORTERS)[number];

const SERVICE_OF: Record<Exporter, ExporterService> = {
  node: "node_exporter",
  postgres: "postgres_exporter",
  redis: "redis_exporter",
  pgbouncer: "pgbouncer_exporter",
};
export const EXPORTER_PORTS: Record<Exporter, number> = {
  node: PORTS.nodeExporter,
  postgres: PORTS.postgresExporter,
  redis: PORTS.redisExporter,
  pgbouncer: PORTS.pgbouncerExporter,
};
/** The sample each exporter sets to 1 when it reached its daemon. */
const TARGET_UP: Record<Exclude<Exporter, "node">, string> = {
  postgres: "pg_up",
  redis: "redis_up",
  pgbouncer: "pgbouncer_up",
};

export function isExporterService(service: string): service is ExporterService {
  return (EXPORTER_SERVICES as readonly string[]).includes(service);
}

/**
 * What an exporter answered: `up` when it served metrics and reached its daemon, `target-down`
 * when it served metrics but could not reach (or log in to) PostgreSQL or Redis, `down` when it
 * did not answer at all.
 */
export type ExporterStatus = "up" | "target-down" | "down";

export interface ExporterProbe {
  status: Record<Exporter, ExporterStatus>;
  /** Samples of each exporter that answered. */
  samples: Partial<Record<Exporter, Sample[]>>;
}

/**
 * An exporter gathers its samples when asked (node exporter reads /proc and /sys, the postgres
 * exporter runs its queries): under load that takes seconds, and every node's four are asked at
 * once. Prometheus gives a scrape 10 s (core/monitoring.ts); half of that here keeps a poll short.
 */
const TIMEOUT_MS = 5000;

async function scrape(url: string): Promise<Sample[] | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    return res.ok ? parseMetrics(await res.text()) : undefined;
  } catch {
    return undefined;
  }
}

/** Scrapes a node's exporters at its private address. */
export async function probeExporters(address: string): Promise<ExporterProbe> {
  const results = await Promise.all(EXPORTERS.map((e) => scrape(`http://${address}:${EXPORTER_PORTS[e]}/metrics`)));
  const status = {} as Record<Exporter, ExporterStatus>;
  const samples: ExporterProbe["samples"] = {};
  EXPORTERS.forEach((e, i) => {
    const s = results[i];
    if (!s) {
      status[e] = "down";
      return;
    }
    samples[e] = s;
    const targetUp = e === "node" ? 1 : sampleValue(s, TARGET_UP[e]);
    status[e] = targetUp === 1 ? "up" : "target-down";
  });
  return { status, samples };
}

export function exporterService(e: Exporter): ExporterService {
  return SERVICE_OF[e];
}
