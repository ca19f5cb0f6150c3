/**
 * What `npm run ops -- status` asks each node and how it judges the answers. Every question is asked
 * on the node itself, over SSH (an operator's machine cannot reach a Hetzner private network):
 * Patroni's REST API at the node's private address with the node's own certificate, Redis and
 * Sentinel on 127.0.0.1 with the node's own credentials (backup.env). Pure: the text of the script
 * and the parsing of what it printed.
 */
import { MAXIMUM_LAG_ON_FAILOVER } from "./patroni";
import { serverPaths } from "./paths";
import { PORTS } from "./topology";
import { REDIS_USERS } from "./secrets";
import type { OpsTarget } from "./ops";
import { NodeUpdates, UPDATES_METRICS_FILE, UPDATES_SCRIPT, describeUpdates, parseUpdatesMetrics } from "./maintenance";

const MARK = "@@madbase-ops";

/**
 * The lines every ops script on a node starts with: the node's values (node.env: NODE_NAME,
 * NODE_IP, CLUSTER, TLS_*), `patroni_curl PATH` (the node's own Patroni, body then the HTTP code on
 * a line of its own), `redis_cli` (Redis's admin user) and `sentinel_cli` (Sentinel's password),
 * their passwords read from backup.env into the environment, never a command line.
 */
export function opsPrelude(): string {
  const p = serverPaths();
  return [
    "set -uo pipefail",
    `set -a; . ${p.nodeEnvFile}; . ${p.backupEnvFile}; set +a`,
    `patroni_curl() { curl -sS --max-time "\${2:-5}" --cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY" -w '\\n%{http_code}\\n' "https://$NODE_IP:${PORTS.patroni}/$1" 2>&1; }`,
    `redis_cli() { timeout 5 redis-cli --user ${REDIS_USERS.admin} --no-auth-warning -h 127.0.0.1 -p ${PORTS.redis} "$@" </dev/null; }`,
    `sentinel_cli() { REDISCLI_AUTH="$SENTINEL_AUTH" timeout 5 redis-cli --no-auth-warning -h 127.0.0.1 -p ${PORTS.sentinel} "$@" </dev/null; }`,
    "",
  ].join("\n");
}

/** What status runs on each node: sections the parser below reads. */
export function nodeStatusScript(): string {
  const p = serverPaths();
  const section = (name: string, cmd: string) => `echo "${MARK} ${name}"\n${cmd}\necho "${MARK} ${name} exit $?"`;
  return [
    opsPrelude(),
    `echo "${MARK} node $NODE_NAME $NODE_IP $CLUSTER"`,
    section("patroni", "patroni_curl patroni"),
    section("cluster", "patroni_curl cluster"),
    section("config", "patroni_curl config"),
    section("redis", "redis_cli info replication"),
    section("sentinel", 'sentinel_cli --raw sentinel get-master-addr-by-name "$CLUSTER"'),
    // The timer's textfile (pending updates, daemons on replaced code, reboot) and the versions now.
    section(
      "updates",
      `cat ${UPDATES_METRICS_FILE} 2>/dev/null; ${p.scriptDir}/${UPDATES_SCRIPT} versions 2>/dev/null; true`,
    ),
    `echo "${MARK} end"`,
  ].join("\n");
}

export interface PatroniMember {
  name: string;
  role: string;
  state: string;
  host?: string;
  timeline?: number;
  /** Bytes behind the leader; "unknown" when Patroni cannot tell. */
  lag?: number | string;
}

/** What one node said about itself and its cluster. */
export interface NodeReport {
  node: string;
  /** False when SSH did not reach it or the script did not run to its end. */
  reachable: boolean;
  error?: string;
  /** The node's own name, address and cluster, from its node.env. */
  self?: { name: string; ip: string; cluster: string };
  /** This node's Patroni about itself (/patroni): role primary|replica…, state running|streaming…. */
  patroni?: { role: string; state: string; timeline?: number } | { error: string };
  /** The cluster as this node's Patroni sees it (/cluster). */
  members?: PatroniMember[];
  synchronousMode?: boolean;
  redis?: { role: string; masterHost?: string; linkUp?: boolean } | { error: string };
  /** The master's address this node's Sentinel names. */
  sentinelMaster?: string | { error: string };
  /** Package updates as the node's timer last wrote them, and its data packages' versions now. */
  updates?: NodeUpdates;
}

interface Section {
  lines: string[];
  exit: number;
}

function sections(text: string): Map<string, Section> {
  const out = new Map<string, Section>();
  let current: string | undefined;
  let lines: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (!line.startsWith(`${MARK} `)) {
      if (current) lines.push(line);
      continue;
    }
    const words = line.slice(MARK.length + 1).split(" ");
    if (words[1] === "exit" && words[0] === current) {
      out.set(current, { lines, exit: Number(words[2]) });
      current = undefined;
    } else if (words[0] === "node" || words[0] === "end") {
      out.set(words[0], { lines: [words.slice(1).join(" ")], exit: 0 });
    } else {
      current = words[0];
      lines = [];
    }
  }
  return out;
}

/** A patroni_curl section: the JSON body when the HTTP code is 200 (or 503 with a body), else the error. */
function httpJson(s: Section | undefined): { ok: true; body: Record<string, unknown> } | { ok: false; error: string } {
  if (!s) return { ok: false, error: "no answer" };
  const lines = [...s.lines];
  while (lines.length > 0 && lines[lines.length - 1].trim() === "") lines.pop();
  const code = Number(lines[lines.length - 1]);
  const body = lines.slice(0, -1).join("\n");
  if (s.exit !== 0 || !(code >= 200 && code < 600))
    return { ok: false, error: `curl exit ${s.exit}: ${body.trim().split("\n").pop() || "no answer"}` };
  try {
    return { ok: true, body: JSON.parse(body) as Record<string, unknown> };
  } catch {
    return { ok: false, error: `HTTP ${code}, not JSON: ${body.slice(0, 120)}` };
  }
}

/** Parses what nodeStatusScript printed on `node` (its output, stdout and stderr merged). */
export function parseNodeReport(node: string, output: string, sshExit: number | null): NodeReport {
  const s = sections(output);
  if (!s.has("end")) {
    const last = output.trim().split("\n").slice(-3).join(" / ");
    return { node, reachable: false, error: `ssh exit ${sshExit}${last ? `: ${last}` : ""}` };
  }
  const report: NodeReport = { node, reachable: true };
  const self = s.get("node")?.lines[0]?.split(" ");
  if (self && self.length >= 3) report.self = { name: self[0], ip: self[1], cluster: self[2] };
  const patroni = httpJson(s.get("patroni"));
  if (patroni.ok) {
    const b = patroni.body;
    report.patroni = {
      role: String(b.role ?? "unknown"),
      state: String(b.state ?? "unknown"),
      ...(typeof b.timeline === "number" ? { timeline: b.timeline } : {}),
    };
  } else report.patroni = { error: patroni.error };
  const cluster = httpJson(s.get("cluster"));
  if (cluster.ok && Array.isArray(cluster.body.members)) {
    report.members = (cluster.body.members as Record<string, unknown>[]).map((m) => ({
      name: String(m.name),
      role: String(m.role),
      state: String(m.state),
      ...(typeof m.host === "string" ? { host: m.host } : {}),
      ...(typeof m.timeline === "number" ? { timeline: m.timeline } : {}),
      ...(m.lag !== undefined ? { lag: typeof m.lag === "number" ? m.lag : String(m.lag) } : {}),
    }));
  }
  const config = httpJson(s.get("config"));
  if (config.ok) report.synchronousMode = config.body.synchronous_mode === true;
  const redis = s.get("redis");
  if (redis && redis.exit === 0 && redis.lines.some((l) => l.startsWith("role:"))) {
    const info = Object.fromEntries(
      redis.lines.filter((l) => l.includes(":")).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1)]),
    );
    report.redis = {
      role: info.role === "slave" ? "replica" : info.role,
      ...(info.master_host ? { masterHost: info.master_host } : {}),
      ...(info.master_link_status ? { linkUp: info.master_link_status === "up" } : {}),
    };
  } else report.redis = { error: (redis?.lines.join(" ").trim() || "no answer").slice(0, 160) };
  const sentinel = s.get("sentinel");
  const master = sentinel?.lines.map((l) => l.trim()).filter(Boolean)[0];
  report.sentinelMaster =
    sentinel && sentinel.exit === 0 && master && /^\d+\.\d+\.\d+\.\d+$/.test(master)
      ? master
      : { error: (sentinel?.lines.join(" ").trim() || "no answer").slice(0, 160) };
  const updates = s.get("updates");
  if (updates) report.updates = parseUpdatesMetrics(updates.lines.join("\n"));
  return report;
}

export interface OpsNodeStatus {
  name: string;
  privateIp: string;
  reachable: boolean;
  /** As the leader's Patroni lists it: leader, sync_standby, replica, … (undefined: not a member). */
  role?: string;
  state?: string;
  timeline?: number;
  lag?: number | string;
  redisRole?: string;
  redisLinkUp?: boolean;
  sentinelMaster?: string;
  updates?: NodeUpdates;
}

export interface OpsStatus {
  clusterName: string;
  leader?: string;
  /** The Redis master's node, as a majority of Sentinels name it. */
  redisMaster?: string;
  synchronousMode?: boolean;
  nodes: OpsNodeStatus[];
  /** Every problem: PostgreSQL's (and SSH's) first, then Redis's. */
  problems: string[];
  postgresProblems: string[];
  redisProblems: string[];
  healthy: boolean;
}

const isError = (v: unknown): v is { error: string } => !!v && typeof v === "object" && "error" in v;

/**
 * The cluster's state from every node's report: one Patroni leader that every node's Patroni
 * names, every other member streaming within maximum_lag_on_failover on the leader's timeline (a
 * synchronous standby when synchronous_mode is on), one Redis master that a majority of Sentinels
 * name and every other Redis replicating from with its link up. Anything else is a problem.
 */
export function judgeStatus(target: OpsTarget, reports: NodeReport[]): OpsStatus {
  const postgresProblems: string[] = [];
  const redisProblems: string[] = [];
  const byName = new Map(reports.map((r) => [r.node, r]));
  const ipToName = new Map(target.nodes.map((n) => [n.privateIp, n.name]));
  for (const r of reports) {
    if (!r.reachable) postgresProblems.push(`${r.node}: not reachable over SSH (${r.error})`);
    else if (r.self && (r.self.name !== r.node || r.self.cluster !== target.clusterName))
      postgresProblems.push(`${r.node}: the node at this address says it is ${r.self.name} of ${r.self.cluster}`);
    else if (isError(r.patroni)) postgresProblems.push(`${r.node}: Patroni does not answer (${r.patroni.error})`);
  }
  // The cluster as the leader's Patroni lists it, else as the first node that answered.
  const views = reports.filter((r) => r.members);
  const leaders = new Set(views.flatMap((r) => r.members!.filter((m) => m.role === "leader").map((m) => m.name)));
  const leaderView = views.find((r) => r.members!.some((m) => m.role === "leader" && m.name === r.node)) ?? views[0];
  const members = leaderView?.members ?? [];
  const leader = members.find((m) => m.role === "leader");
  if (leaders.size > 1) postgresProblems.push(`the nodes name different Patroni leaders: ${[...leaders].join(", ")}`);
  if (!leader) postgresProblems.push("no Patroni leader");
  const synchronousMode = reports.find((r) => r.synchronousMode !== undefined)?.synchronousMode;
  for (const n of target.nodes) {
    const m = members.find((x) => x.name === n.name);
    if (!m) {
      if (byName.get(n.name)?.reachable && members.length > 0)
        postgresProblems.push(`${n.name}: not a member of the Patroni cluster`);
      continue;
    }
    if (m.role === "leader") {
      if (m.state !== "running") postgresProblems.push(`${n.name}: leader, but PostgreSQL is ${m.state}`);
      continue;
    }
    if (m.state !== "streaming")
      postgresProblems.push(`${n.name}: ${m.role} ${m.state}, not streaming from the leader`);
    if (leader?.timeline !== undefined && m.timeline !== undefined && m.timeline !== leader.timeline)
      postgresProblems.push(`${n.name}: on timeline ${m.timeline}, the leader on ${leader.timeline}`);
    if (typeof m.lag === "number" && m.lag > MAXIMUM_LAG_ON_FAILOVER)
      postgresProblems.push(
        `${n.name}: ${m.lag} bytes behind the leader (more than maximum_lag_on_failover, ${MAXIMUM_LAG_ON_FAILOVER}: Patroni would not promote it)`,
      );
    else if (m.lag !== undefined && typeof m.lag !== "number") postgresProblems.push(`${n.name}: lag ${m.lag}`);
  }
  if (synchronousMode && target.nodes.length > 1 && leader && !members.some((m) => m.role === "sync_standby"))
    postgresProblems.push("synchronous_mode is on but no member is a synchronous standby");

  // Redis: the master a majority of Sentinels name, which must be a master and the only one.
  const named = reports.map((r) => (typeof r.sentinelMaster === "string" ? r.sentinelMaster : undefined));
  const counts = new Map<string, number>();
  for (const ip of named) if (ip) counts.set(ip, (counts.get(ip) ?? 0) + 1);
  const majority = Math.floor(target.nodes.length / 2) + 1;
  const masterIp = [...counts.entries()].find(([, c]) => c >= majority)?.[0];
  const redisMaster = masterIp ? (ipToName.get(masterIp) ?? masterIp) : undefined;
  if (!masterIp)
    redisProblems.push(
      `no Redis master named by a majority of Sentinels (${[...counts].map(([ip, c]) => `${ip}: ${c}`).join(", ") || "none answered"})`,
    );
  for (const r of reports) {
    if (!r.reachable) continue;
    const ip = target.nodes.find((n) => n.name === r.node)?.privateIp;
    if (isError(r.sentinelMaster))
      redisProblems.push(`${r.node}: Sentinel does not answer (${r.sentinelMaster.error})`);
    else if (masterIp && r.sentinelMaster !== masterIp)
      redisProblems.push(`${r.node}: its Sentinel names ${r.sentinelMaster} as the master, the majority ${masterIp}`);
    if (isError(r.redis)) {
      redisProblems.push(`${r.node}: Redis does not answer (${r.redis.error})`);
      continue;
    }
    if (r.redis?.role === "master" && masterIp && ip !== masterIp)
      redisProblems.push(`${r.node}: Redis is a master too (the Sentinels name ${masterIp})`);
    if (r.redis?.role === "replica") {
      if (masterIp && r.redis.masterHost !== masterIp)
        redisProblems.push(`${r.node}: Redis replicates from ${r.redis.masterHost}, not from the master ${masterIp}`);
      if (!r.redis.linkUp) redisProblems.push(`${r.node}: Redis's link to its master is down`);
    }
    if (ip === masterIp && r.redis?.role !== "master")
      redisProblems.push(`${r.node}: named master by the Sentinels but Redis is a ${r.redis?.role}`);
  }

  const nodes: OpsNodeStatus[] = target.nodes.map((n) => {
    const r = byName.get(n.name);
    const m = members.find((x) => x.name === n.name);
    return {
      name: n.name,
      privateIp: n.privateIp,
      reachable: r?.reachable ?? false,
      ...(m ? { role: m.role, state: m.state, timeline: m.timeline, lag: m.lag } : {}),
      ...(r?.redis && !isError(r.redis) ? { redisRole: r.redis.role, redisLinkUp: r.redis.linkUp } : {}),
      ...(typeof r?.sentinelMaster === "string"
        ? { sentinelMaster: ipToName.get(r.sentinelMaster) ?? r.sentinelMaster }
        : {}),
      ...(r?.updates ? { updates: r.updates } : {}),
    };
  });
  return {
    clusterName: target.clusterName,
    ...(leader ? { leader: leader.name } : {}),
    ...(redisMaster ? { redisMaster } : {}),
    ...(synchronousMode !== undefined ? { synchronousMode } : {}),
    nodes,
    problems: [...postgresProblems, ...redisProblems],
    postgresProblems,
    redisProblems,
    healthy: postgresProblems.length === 0 && redisProblems.length === 0,
  };
}

/** The table status prints. */
export function formatOpsStatus(status: OpsStatus, target: OpsTarget): string {
  const head = ["node", "address", "patroni", "state", "tl", "lag", "redis", "sentinel names"];
  const rows = status.nodes.map((n) => [
    n.name,
    n.privateIp,
    n.reachable ? (n.role ?? "-") : "UNREACHABLE",
    n.state ?? "-",
    n.timeline === undefined ? "-" : String(n.timeline),
    n.lag === undefined ? "-" : String(n.lag),
    n.redisRole
      ? `${n.redisRole}${n.redisRole === "replica" ? (n.redisLinkUp ? " (link up)" : " (link DOWN)") : ""}`
      : "-",
    n.sentinelMaster ?? "-",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join("  ")
      .trimEnd();
  const out = [
    `${status.clusterName}: ${target.description}, ${target.nodes.length} node(s)`,
    "",
    line(head),
    ...rows.map(line),
    "",
    `PostgreSQL leader: ${status.leader ?? "none"}${status.synchronousMode === undefined ? "" : ` (synchronous_mode ${status.synchronousMode ? "on" : "off"})`}; Redis master: ${status.redisMaster ?? "none"}`,
    status.healthy ? "healthy" : `degraded:\n  ${status.problems.join("\n  ")}`,
  ];
  const updates = status.nodes.filter((n) => n.updates);
  if (updates.length > 0)
    out.push("", "updates:", ...updates.map((n) => `  ${n.name}: ${describeUpdates(n.updates!)}`));
  return out.join("\n");
}
