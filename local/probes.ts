/**
 * Read-only probes of each daemon, the way an operator would look: Patroni's REST API, Redis and
 * Sentinel INFO, etcd's /health and HAProxy's runtime API (`show stat` on its stats socket).
 * Every probe is bounded in time and reports "unreachable" instead of throwing.
 */
import * as net from "node:net";
import Redis from "ioredis";
import { ClusterSecrets, PORTS, REDIS_USERS } from "../core";
import { OperatorTls, tlsRequest } from "./tls";

/** What a call to Patroni's REST API needs: the CA to verify it with and a pair of the CA to present (PEM). */
export type PatroniClientTls = Pick<OperatorTls, "ca" | "cert" | "key">;

const PROBE_TIMEOUT_MS = 1500;

async function getJson(url: string): Promise<unknown | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    return await res.json();
  } catch {
    return undefined;
  }
}

/** A member as Patroni's GET /cluster lists it. */
export interface PatroniMember {
  name: string;
  role: string;
  state: string;
  host: string;
  timeline?: number;
  /** Bytes behind the leader; "unknown" while Patroni cannot tell. */
  lag?: number | string;
}

/** A GET to Patroni's REST API, over HTTPS verified with the cluster CA, presenting `tls`'s pair. */
async function patroniJson(ip: string, what: string, tls: PatroniClientTls): Promise<unknown | undefined> {
  try {
    return JSON.parse(
      (await tlsRequest(`https://${ip}:${PORTS.patroni}/${what}`, { ...tls, timeoutMs: PROBE_TIMEOUT_MS })).body,
    );
  } catch {
    return undefined;
  }
}

export async function patroniCluster(ip: string, tls: PatroniClientTls): Promise<PatroniMember[] | undefined> {
  const body = (await patroniJson(ip, "cluster", tls)) as { members?: PatroniMember[] } | undefined;
  return body?.members;
}

/** Patroni's own view of its node (GET /patroni): role, state and, on a primary, its replication. */
export interface PatroniNode {
  state: string;
  role: string;
  timeline?: number;
  replication?: { application_name: string; state: string; sync_state: string }[];
}

export async function patroniNode(ip: string, tls: PatroniClientTls): Promise<PatroniNode | undefined> {
  return (await patroniJson(ip, "patroni", tls)) as PatroniNode | undefined;
}

/**
 * Whether an etcd member answers at all (/health answers "false" without a quorum). On the metrics
 * port, plain HTTP: it carries no key or member data; the client port takes certificates only.
 */
export async function etcdAnswers(ip: string): Promise<boolean> {
  const body = (await getJson(`http://${ip}:${PORTS.etcdMetrics}/health`)) as { health?: string } | undefined;
  return typeof body?.health === "string";
}

export async function etcdHealthy(ip: string): Promise<boolean> {
  const body = (await getJson(`http://${ip}:${PORTS.etcdMetrics}/health`)) as { health?: string } | undefined;
  return body?.health === "true";
}

/** A Redis or Sentinel login: every one has a user (Redis's `default` is off). */
export interface RedisAuth {
  username: string;
  password: string;
}

/** The probes' logins: Redis's `monitor` (INFO, nothing more), Sentinel's own password. */
export function probeAuth(secrets: ClusterSecrets): { redis: RedisAuth; sentinel: RedisAuth } {
  return {
    redis: { username: REDIS_USERS.monitoring, password: secrets.redisMonitoring },
    sentinel: { username: "default", password: secrets.sentinel },
  };
}

/** Sends `commands` over one connection; each answer, or undefined where it failed (or no connection). */
async function redisCommands(ip: string, port: number, auth: RedisAuth, commands: string[][]): Promise<unknown[]> {
  const client = new Redis({
    host: ip,
    port,
    username: auth.username,
    password: auth.password,
    lazyConnect: true,
    connectTimeout: PROBE_TIMEOUT_MS,
    commandTimeout: PROBE_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on("error", () => undefined);
  try {
    await client.connect();
    return await Promise.all(commands.map((c) => client.call(c[0], ...c.slice(1)).catch(() => undefined)));
  } catch {
    return commands.map(() => undefined);
  } finally {
    client.disconnect();
  }
}

async function redisCommand(ip: string, port: number, auth: RedisAuth, args: string[]): Promise<unknown> {
  return (await redisCommands(ip, port, auth, [args]))[0];
}

export interface RedisReplication {
  role: "master" | "slave";
  connectedReplicas: number;
  masterHost?: string;
  masterLinkUp?: boolean;
}

export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\r\n")) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export async function redisReplication(
  ip: string,
  auth: RedisAuth,
  port: number = PORTS.redis,
): Promise<RedisReplication | undefined> {
  const text = await redisCommand(ip, port, auth, ["INFO", "replication"]);
  if (typeof text !== "string") return undefined;
  const info = parseInfo(text);
  return {
    role: info.role === "master" ? "master" : "slave",
    connectedReplicas: Number(info.connected_slaves ?? 0),
    masterHost: info.master_host,
    masterLinkUp: info.master_link_status === undefined ? undefined : info.master_link_status === "up",
  };
}

/**
 * What a Sentinel knows of the cluster: the master it names, and the replicas and other Sentinels
 * it could fail over with. A replica or Sentinel counts only while its flags say it is reachable
 * (not s_down, o_down or disconnected): Sentinel promotes and reconfigures only the replicas it
 * learnt from the master's INFO (every 10 s), and reaches a quorum only with Sentinels it heard.
 */
export interface SentinelView {
  master: string;
  /** Addresses of the replicas this Sentinel would promote or reconfigure. */
  replicas: string[];
  /** Addresses of the other Sentinels it counts on for a quorum. */
  sentinels: string[];
}

/** One entry of a Sentinel reply (SENTINEL MASTER, REPLICAS, SENTINELS): a flat field, value, … list. */
export function sentinelFields(flat: string[]): Record<string, string> {
  return Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]]] : [])));
}

/** A Sentinel's entries (SENTINEL REPLICAS / SENTINELS: flat field-value lists) whose flags show no trouble. */
export function reachableEntries(reply: unknown): string[] {
  if (!Array.isArray(reply)) return [];
  const bad = new Set(["s_down", "o_down", "disconnected"]);
  return reply
    .filter((e): e is string[] => Array.isArray(e))
    .map(sentinelFields)
    .filter((e) => typeof e.ip === "string" && !(e.flags ?? "").split(",").some((f) => bad.has(f)))
    .map((e) => e.ip);
}

export async function sentinelView(ip: string, masterName: string, auth: RedisAuth): Promise<SentinelView | undefined> {
  const [master, replicas, sentinels] = await redisCommands(ip, PORTS.sentinel, auth, [
    ["SENTINEL", "get-master-addr-by-name", masterName],
    ["SENTINEL", "REPLICAS", masterName],
    ["SENTINEL", "SENTINELS", masterName],
  ]);
  if (!Array.isArray(master) || typeof master[0] !== "string") return undefined;
  return { master: master[0], replicas: reachableEntries(replicas), sentinels: reachableEntries(sentinels) };
}

/** One line of HAProxy's `show stat`: a server of a backend and its check status. */
export interface HaproxyServer {
  proxy: string;
  server: string;
  /** "UP", "DOWN", or a transition such as "UP 1/2", "DOWN 1/2"; "no check" before checks run. */
  status: string;
}

export function parseShowStat(csv: string): HaproxyServer[] {
  const lines = csv.split("\n").filter((l) => l.trim() !== "");
  if (lines.length === 0 || !lines[0].startsWith("# ")) return [];
  const header = lines[0].slice(2).split(",");
  const col = (name: string) => header.indexOf(name);
  const [px, sv, st] = [col("pxname"), col("svname"), col("status")];
  return lines
    .slice(1)
    .map((l) => l.split(","))
    .filter((f) => f[sv] !== "FRONTEND" && f[sv] !== "BACKEND")
    .map((f) => ({ proxy: f[px], server: f[sv], status: f[st] }));
}

/** Sends one command to HAProxy's stats socket (a file, so no network is involved). */
export function haproxyCommand(socketPath: string, command: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socketPath);
    let out = "";
    const done = (value: string | undefined) => {
      sock.destroy();
      resolve(value);
    };
    sock.setTimeout(PROBE_TIMEOUT_MS, () => done(undefined));
    sock.on("connect", () => sock.write(`${command}\n`));
    sock.on("data", (chunk) => (out += chunk.toString()));
    sock.on("end", () => done(out));
    sock.on("error", () => done(undefined));
  });
}

export async function haproxyServers(socketPath: string): Promise<HaproxyServer[] | undefined> {
  const csv = await haproxyCommand(socketPath, "show stat");
  return csv === undefined ? undefined : parseShowStat(csv);
}
