/**
 * The Debian programs the local runner starts, found before anything is created so that a missing
 * package is one clear message instead of a half-built cluster.
 */
import * as fs from "node:fs";
import * as path from "node:path";

export const SETUP_SCRIPT = "scripts/setup-debian.sh";

/** Patroni's bin_dir in the rendered patroni.yml. */
export const PG_BIN_DIR = "/usr/lib/postgresql/15/bin";

/** Programs looked up on PATH, with the Debian package that brings each. */
const ON_PATH = {
  etcd: "etcd-server",
  redisServer: "redis-server",
  redisSentinel: "redis-sentinel",
  haproxy: "haproxy",
  pgbackrest: "pgbackrest",
  psql: "postgresql-client-15",
  ip: "iproute2",
  setpriv: "util-linux",
  nodeExporter: "prometheus-node-exporter",
  postgresExporter: "prometheus-postgres-exporter",
  redisExporter: "prometheus-redis-exporter",
} as const;
const COMMAND_NAMES: Record<keyof typeof ON_PATH, string> = {
  etcd: "etcd",
  redisServer: "redis-server",
  redisSentinel: "redis-sentinel",
  haproxy: "haproxy",
  pgbackrest: "pgbackrest",
  psql: "psql",
  ip: "ip",
  setpriv: "setpriv",
  nodeExporter: "prometheus-node-exporter",
  postgresExporter: "prometheus-postgres-exporter",
  redisExporter: "prometheus-redis-exporter",
};

/**
 * Programs at fixed places: Debian's Patroni needs Debian's python3 (a pip install first on PATH
 * lacks its modules), and the rendered patroni.yml names PostgreSQL's bin_dir.
 */
const FIXED = {
  patroni: { file: "/usr/bin/patroni", pkg: "patroni" },
  pgCtl: { file: path.join(PG_BIN_DIR, "pg_ctl"), pkg: "postgresql-15" },
} as const;

export type Programs = Record<keyof typeof ON_PATH | keyof typeof FIXED, string>;

export class MissingPackagesError extends Error {
  constructor(readonly missing: { program: string; pkg: string }[]) {
    const pkgs = [...new Set(missing.map((m) => m.pkg))];
    super(
      `missing programs: ${missing.map((m) => m.program).join(", ")} (Debian packages ${pkgs.join(", ")}). ` +
        `Install them with: sudo bash ${SETUP_SCRIPT}`,
    );
    this.name = "MissingPackagesError";
  }
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function which(command: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(":")) {
    if (dir && isExecutable(path.join(dir, command))) return path.join(dir, command);
  }
  return undefined;
}

/** Absolute paths of every program the runner starts; throws MissingPackagesError naming what to install. */
export function findPrograms(searchPath = process.env.PATH ?? ""): Programs {
  const found: Partial<Programs> = {};
  const missing: { program: string; pkg: string }[] = [];
  for (const [key, pkg] of Object.entries(ON_PATH) as [keyof typeof ON_PATH, string][]) {
    const file = which(COMMAND_NAMES[key], searchPath);
    if (file) found[key] = file;
    else missing.push({ program: COMMAND_NAMES[key], pkg });
  }
  for (const [key, { file, pkg }] of Object.entries(FIXED) as [keyof typeof FIXED, { file: string; pkg: string }][]) {
    if (isExecutable(file)) found[key] = file;
    else missing.push({ program: file, pkg });
  }
  if (missing.length > 0) throw new MissingPackagesError(missing);
  return found as Programs;
}
