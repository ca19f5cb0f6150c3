/**
 * Package updates on the nodes: what may update on its own and what may not, what a node reports
 * about it, and the rolling maintenance that patches the data layer one node at a time.
 *
 *  - The data layer's packages are held (`apt-mark hold`): every binary package built from one of
 *    DATA_SOURCES that is installed on the node, computed there from the installed packages'
 *    source names (`madbase-updates hold`), so a binary the list does not name (libpq5, built
 *    from postgresql-17; redis-tools, which redis-server pins exactly) is held with its source.
 *  - No maintainer script may start, stop or restart a data daemon: policy-rc.d refuses
 *    DATA_UNITS (exit 101) and lets every other unit through. It is in force at all times once the
 *    first boot ends (unattended runs and rolls alike); madbase's own scripts use systemctl, which
 *    policy-rc.d does not govern.
 *  - Debian's security updates for everything else install daily (unattended-upgrades, which skips
 *    held packages); a daemon left running replaced code by one (a library it maps was replaced)
 *    is reported (`madbase-updates stale`, the textfile metrics), never restarted.
 *  - A rolling maintenance (`npm run ops -- maintenance`, or a new `maintenanceRevision` for
 *    `pulumi up`) takes the held packages (and, with --packages all, everything else) to their
 *    newer versions node by node, replicas first and the leader's node last, each daemon whose code
 *    changed restarted once, and reboots a node when asked or required.
 *
 * Pure: texts of files and scripts, and the rules that judge what nodes report.
 */
import { RefusedError, UsageError } from "./errors";
import { POSTGRES_MAJOR } from "./packages";
import { NODE_EXPORTER_TEXTFILE_DIR, NodePaths } from "./paths";

/**
 * The Debian source packages of the data layer: every binary package built from one of them is
 * held on every node, and only a rolling maintenance upgrades it. The one place this list lives.
 *  - postgresql-17: the server, its client and libpq5 (a new minor release arrives through
 *    Debian's security suite; its postinst would restart PostgreSQL behind Patroni's back).
 *  - postgresql-common: pg_ctlcluster and the client wrappers; its postinst touches the
 *    postgresql service and the cluster configuration layout.
 *  - patroni: a new Patroni must start once, in maintenance mode, without restarting PostgreSQL.
 *  - etcd: etcd-server and etcd-client; a restart of a member costs the quorum a member.
 *  - redis: redis-server, redis-sentinel and redis-tools (redis-server depends on its exact version).
 *  - haproxy: the entry points; a restart cuts every open session on the node.
 *  - pgbouncer: the pooler; a restart cuts every client of the node.
 *  - pgbackrest: the WAL archiver; a version that differs between nodes may not read the
 *    repository the others wrote.
 */
export const DATA_SOURCES = [
  `postgresql-${POSTGRES_MAJOR}`,
  "postgresql-common",
  "patroni",
  "etcd",
  "redis",
  "haproxy",
  "pgbouncer",
  "pgbackrest",
] as const;

/** The units a maintainer script may never start, stop or restart (policy-rc.d exits 101 for them). */
export const DATA_UNITS = [
  "postgresql",
  "patroni",
  "etcd",
  "redis-server",
  "redis-sentinel",
  "haproxy",
  "pgbouncer",
] as const;

/**
 * The data daemons, the unit that runs each and its package. A daemon runs replaced code when its
 * executable or a library it maps was replaced on disk (/proc/PID/exe and maps say "(deleted)":
 * exact, and a re-executed HAProxy master counts as new); Patroni's code is Python, read once and
 * never mapped, so it counts as replaced when its package was installed after it started
 * (`installed`). `postgres` is the postmaster Patroni started (its PID is the first line of
 * postmaster.pid), so a PostgreSQL restart is told apart from Patroni's.
 */
export const DATA_DAEMONS = [
  { daemon: "postgres", unit: "patroni", package: `postgresql-${POSTGRES_MAJOR}`, check: "mapped" },
  { daemon: "patroni", unit: "patroni", package: "patroni", check: "installed" },
  { daemon: "etcd", unit: "etcd", package: "etcd-server", check: "mapped" },
  { daemon: "redis", unit: "redis-server", package: "redis-server", check: "mapped" },
  { daemon: "sentinel", unit: "redis-sentinel", package: "redis-sentinel", check: "mapped" },
  { daemon: "haproxy", unit: "haproxy", package: "haproxy", check: "mapped" },
  { daemon: "pgbouncer", unit: "pgbouncer", package: "pgbouncer", check: "mapped" },
] as const;
export type DataDaemon = (typeof DATA_DAEMONS)[number]["daemon"];

/** The script that holds, reports and upgrades packages on a node (templates/scripts/updates.sh). */
export const UPDATES_SCRIPT = "madbase-updates";
/** Its values (rendered here): the lists above and where it writes. */
export const UPDATES_ENV_FILE = "/etc/madbase/updates.env";
/** Where a node records since when each pending update has waited (package → first seen). */
export const UPDATES_SEEN_FILE = "/var/lib/madbase/updates-seen";
/** The node exporter textfile of madbase-updates metrics. */
export const UPDATES_METRICS_FILE = `${NODE_EXPORTER_TEXTFILE_DIR}/madbase-updates.prom`;
/** How often the metrics are written (and the apt lists they read are the daily apt-daily run's). */
export const UPDATES_METRICS_INTERVAL_SECONDS = 900;
export const UPDATES_METRICS_UNITS = ["madbase-updates-metrics.service", "madbase-updates-metrics.timer"] as const;
/** An update (security) or a reboot that waits longer than this raises an alert. */
export const UPDATE_WAIT_ALERT_DAYS = 7;

/** The metrics madbase-updates writes. */
export const UPDATES_METRICS = {
  /** One series per package with a newer version: labels package, installed, candidate, held, security; value: first seen. */
  pendingSince: "madbase_updates_pending_since_timestamp_seconds",
  /** Held (data) packages with a newer version; and of those, the ones a security suite ships. */
  heldUpgradable: "madbase_updates_held_upgradable",
  heldSecurity: "madbase_updates_held_security",
  /** Security updates of packages that are not held (unattended-upgrades' to install). */
  securityPending: "madbase_updates_security_pending",
  /** 1 per data daemon running code older than what is installed (label daemon). */
  replacedCode: "madbase_updates_daemon_replaced_code",
  rebootRequired: "madbase_reboot_required",
  rebootRequiredSince: "madbase_reboot_required_since_timestamp_seconds",
  collected: "madbase_updates_metrics_timestamp_seconds",
} as const;

/** Where Debian (and unattended-upgrades) says a reboot is due. */
export const REBOOT_REQUIRED_FILE = "/run/reboot-required";

/**
 * policy-rc.d: maintainer scripts (invoke-rc.d, deb-systemd-invoke) ask it before they act on a
 * unit; 101 means "not allowed". Data units are refused, everything else is allowed, so a security
 * update of sshd or cron still restarts its own service.
 */
export function renderPolicyRcD(): string {
  return [
    "#!/bin/sh",
    "# madbase (core/maintenance.ts): no maintainer script starts, stops or restarts a data daemon;",
    "# a rolling maintenance restarts them itself, one node at a time. Everything else may act.",
    'for arg in "$@"; do',
    '  case "$arg" in --*) continue ;; esac',
    "  unit=${arg%.service}; unit=${unit%%@*}",
    '  case "$unit" in',
    `    ${DATA_UNITS.join("|")}) exit 101 ;;`,
    "  esac",
    "  break",
    "done",
    "exit 0",
    "",
  ].join("\n");
}

/** Debian's security suite as unattended-upgrades' default origin patterns name it. */
export const SECURITY_ORIGIN = { origin: "Debian", label: "Debian-Security", codename: "trixie-security" } as const;

/**
 * unattended-upgrades' settings: Debian's security updates only, every day; never a reboot
 * (a reboot is a rolling maintenance's); held packages stay as they are (unattended-upgrades skips
 * them; the blacklist by source says so again).
 */
export function renderUnattendedUpgrades(): string {
  return [
    "// madbase (core/maintenance.ts): Debian's security updates install daily; the data layer's packages",
    "// are held and only a rolling maintenance (npm run ops -- maintenance) upgrades them.",
    "Unattended-Upgrade::Origins-Pattern {",
    `  "origin=${SECURITY_ORIGIN.origin},codename=\${distro_codename}-security,label=${SECURITY_ORIGIN.label}";`,
    "};",
    "Unattended-Upgrade::Package-Blacklist {",
    ...DATA_SOURCES.map((s) => `  "${s.replace(/[.+]/g, "\\$&")}";`),
    "};",
    'Unattended-Upgrade::Automatic-Reboot "false";',
    'Unattended-Upgrade::Remove-Unused-Dependencies "false";',
    'APT::Periodic::Update-Package-Lists "1";',
    'APT::Periodic::Unattended-Upgrade "1";',
    "",
  ].join("\n");
}

/** needrestart (when installed) lists what runs old code and restarts nothing. */
export function renderNeedrestartConf(): string {
  return ["# madbase (core/maintenance.ts): report, never restart.", "$nrconf{restart} = 'l';", ""].join("\n");
}

/** The values madbase-updates reads. */
export function renderUpdatesEnv(paths: NodePaths): string {
  return [
    "# madbase-updates' values (core/maintenance.ts), rendered by madbase-state.",
    `DATA_SOURCES="${DATA_SOURCES.join(" ")}"`,
    `DATA_UNITS="${DATA_UNITS.join(" ")}"`,
    `DATA_DAEMONS="${DATA_DAEMONS.map((d) => `${d.daemon}:${d.unit}:${d.package}:${d.check}`).join(" ")}"`,
    `PG_DATA_DIR="${paths.pgDataDir}"`,
    `METRICS_FILE="${UPDATES_METRICS_FILE}"`,
    `SEEN_FILE="${UPDATES_SEEN_FILE}"`,
    `REBOOT_REQUIRED_FILE="${REBOOT_REQUIRED_FILE}"`,
    "",
  ].join("\n");
}

/** A file of the updates setup, with where it lives and who owns it. */
export interface UpdatesFile {
  path: string;
  owner: string;
  mode: string;
  content: string;
}

export const POLICY_RC_D = "/usr/sbin/policy-rc.d";
export const UNATTENDED_UPGRADES_CONF = "/etc/apt/apt.conf.d/52madbase-unattended-upgrades";
export const NEEDRESTART_CONF = "/etc/needrestart/conf.d/madbase.conf";

/**
 * The files of the updates setup on a node: in the user data's bundle (after the packages) and
 * kept by config-refresh on a running node. The policy-rc.d written before the packages install
 * refuses every unit; this one, which replaces it at the end of the first boot, only the data units.
 */
export function updatesFiles(paths: NodePaths, scriptDir = paths.scriptDir): UpdatesFile[] {
  const metricsUnits = renderUpdatesMetricsUnits(scriptDir);
  return [
    { path: UPDATES_ENV_FILE, owner: "root:root", mode: "0644", content: renderUpdatesEnv(paths) },
    { path: UNATTENDED_UPGRADES_CONF, owner: "root:root", mode: "0644", content: renderUnattendedUpgrades() },
    { path: NEEDRESTART_CONF, owner: "root:root", mode: "0644", content: renderNeedrestartConf() },
    ...metricsUnits,
  ];
}

/** The timer that writes the textfile metrics, and its service. */
export function renderUpdatesMetricsUnits(scriptDir: string): UpdatesFile[] {
  const [service, timer] = UPDATES_METRICS_UNITS;
  return [
    {
      path: `/etc/systemd/system/${service}`,
      owner: "root:root",
      mode: "0644",
      content: [
        "[Unit]",
        "Description=Pending updates, held packages and daemons on replaced code, for node exporter",
        "After=apt-daily.service apt-daily-upgrade.service",
        "",
        "[Service]",
        "Type=oneshot",
        `ExecStart=${scriptDir}/${UPDATES_SCRIPT} metrics`,
        "",
      ].join("\n"),
    },
    {
      path: `/etc/systemd/system/${timer}`,
      owner: "root:root",
      mode: "0644",
      content: [
        "[Unit]",
        `Description=Pending updates every ${UPDATES_METRICS_INTERVAL_SECONDS} s`,
        "",
        "[Timer]",
        "OnBootSec=60s",
        `OnUnitActiveSec=${UPDATES_METRICS_INTERVAL_SECONDS}s`,
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
      ].join("\n"),
    },
  ];
}

// ---------------------------------------------------------------- what a node reports

export interface PendingUpdate {
  package: string;
  installed: string;
  candidate: string;
  held: boolean;
  security: boolean;
  /** When the node first saw a newer version (seconds since the epoch). */
  since: number;
}

export interface NodeUpdates {
  pending: PendingUpdate[];
  /** Data daemons running code older than what is installed. */
  replacedCode: string[];
  /** Since when a reboot is required (seconds since the epoch); undefined: none. */
  rebootRequiredSince?: number;
  /** When the file was written. */
  collected?: number;
  /** The data packages' installed versions (package → version), when the node said. */
  versions: Record<string, string>;
}

const unescapeLabel = (v: string) => v.replace(/\\"/g, '"').replace(/\\\\/g, "\\");

/** Reads madbase-updates' textfile (and its `versions` lines) back. */
export function parseUpdatesMetrics(text: string): NodeUpdates {
  const out: NodeUpdates = { pending: [], replacedCode: [], versions: {} };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) {
      const v = /^version\s+(\S+)\s+(\S+)$/.exec(line);
      if (v) out.versions[v[1]] = v[2];
      continue;
    }
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]] = unescapeLabel(l[2]);
    const value = Number(m[4]);
    switch (m[1]) {
      case UPDATES_METRICS.pendingSince:
        out.pending.push({
          package: labels.package,
          installed: labels.installed,
          candidate: labels.candidate,
          held: labels.held === "1",
          security: labels.security === "1",
          since: value,
        });
        break;
      case UPDATES_METRICS.replacedCode:
        if (value === 1) out.replacedCode.push(labels.daemon);
        break;
      case UPDATES_METRICS.rebootRequiredSince:
        out.rebootRequiredSince = value;
        break;
      case UPDATES_METRICS.collected:
        out.collected = value;
        break;
    }
  }
  return out;
}

/** One line about a node's updates, for status. */
export function describeUpdates(u: NodeUpdates, now = Date.now() / 1000): string {
  const held = u.pending.filter((p) => p.held);
  const heldSecurity = held.filter((p) => p.security);
  const security = u.pending.filter((p) => !p.held && p.security);
  const days = (since: number) => `${Math.max(0, Math.floor((now - since) / 86400))} d`;
  const parts = [
    `held with newer versions: ${held.length}${heldSecurity.length ? ` (${heldSecurity.length} security)` : ""}`,
    `security updates pending: ${security.length}`,
    `daemons on replaced code: ${u.replacedCode.length ? u.replacedCode.join(", ") : "none"}`,
    u.rebootRequiredSince !== undefined ? `reboot required for ${days(u.rebootRequiredSince)}` : "no reboot required",
  ];
  const pg = u.versions[DATA_DAEMONS[0].package];
  if (pg) parts.unshift(`postgresql ${pg}`);
  return parts.join("; ");
}

// ---------------------------------------------------------------- rolling maintenance

export const MAINTENANCE_PACKAGES = ["data", "all", "none"] as const;
export type MaintenancePackages = (typeof MAINTENANCE_PACKAGES)[number];
export const MAINTENANCE_REBOOT = ["auto", "always", "never"] as const;
export type MaintenanceReboot = (typeof MAINTENANCE_REBOOT)[number];

/** What a roll does on each node. */
export interface MaintenanceOptions {
  /** data: the held packages only; all: every upgrade (security and the rest); none: no package. */
  packages: MaintenancePackages;
  /** auto: when the node requires one; always: every node (a rolling reboot); never. */
  reboot: MaintenanceReboot;
}

/** What `pulumi up` rolls when maintenanceRevision changes: everything, rebooting where required. */
export const STACK_MAINTENANCE: MaintenanceOptions = { packages: "all", reboot: "auto" };

export function parseMaintenanceOptions(packages: string | undefined, reboot: string | undefined): MaintenanceOptions {
  const p = packages ?? "data";
  const r = reboot ?? "auto";
  if (!(MAINTENANCE_PACKAGES as readonly string[]).includes(p))
    throw new UsageError(`--packages takes ${MAINTENANCE_PACKAGES.join(", ")}, not ${JSON.stringify(p)}`);
  if (!(MAINTENANCE_REBOOT as readonly string[]).includes(r))
    throw new UsageError(`--reboot takes ${MAINTENANCE_REBOOT.join(", ")}, not ${JSON.stringify(r)}`);
  if (p === "none" && r === "never")
    throw new UsageError("--packages none --reboot never does nothing: say what to roll");
  return { packages: p as MaintenancePackages, reboot: r as MaintenanceReboot };
}

/** The PostgreSQL major of a Debian version of postgresql-NN (17.12-0+deb13u1 → 17). */
export function postgresMajor(version: string): number {
  const m = /^(?:\d+:)?(\d+)\./.exec(version);
  if (!m) throw new Error(`not a PostgreSQL package version: ${version}`);
  return Number(m[1]);
}

/**
 * Refuses a roll over nodes whose PostgreSQL majors differ (or would, after it): a minor release
 * rolls node by node (replicas stream from a leader of another minor), a major does not (a
 * replica of another major cannot stream; it takes pg_upgrade, which this roll does not do).
 * `versions`: each node's installed PostgreSQL server version, and optionally the candidate.
 */
export function checkPostgresMajors(nodes: { name: string; installed: string; candidate?: string }[]): void {
  const majors = new Map<number, string[]>();
  for (const n of nodes) {
    for (const v of [n.installed, ...(n.candidate ? [n.candidate] : [])]) {
      const major = postgresMajor(v);
      majors.set(major, [...(majors.get(major) ?? []), `${n.name} ${v}`]);
    }
  }
  if (majors.size > 1)
    throw new RefusedError(
      `mixed PostgreSQL majors: ${[...majors.entries()].map(([m, who]) => `${m} (${[...new Set(who)].join(", ")})`).join("; ")}. ` +
        "A rolling maintenance takes minor releases only; a major upgrade needs pg_upgrade (a new stack restored from this one's backups). Nothing was touched",
    );
}

/**
 * Which node a roll takes next: among the nodes not done, a node that does not lead (the one
 * with the highest index first, as every other roll goes), and the leader's node only when it
 * is the last. Asked again before each node, since the leadership can move during a roll.
 */
export function nextMaintenanceNode(remaining: string[], leader: string | undefined): string | undefined {
  const others = remaining.filter((n) => n !== leader);
  return others.length > 0 ? others[others.length - 1] : remaining[0];
}

/** What a node's maintenance printed: the marker line says a reboot is due (and why). */
export const MAINTENANCE_REBOOT_MARK = "madbase-maintain: reboot";
