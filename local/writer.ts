/**
 * A writer that records every acknowledged write: it inserts rows with increasing ids, one
 * transaction each, and keeps the id only when the commit returned OK. After a failure it
 * reconnects and goes on with a new id (a write whose outcome is unknown is never counted).
 *
 * Runs in-process (tests, benchmark) or as a command inside a node's namespace, printing
 * `ack <id> <ms>` per acknowledged write, so a writer can sit on the far side of a partition:
 *   node --import tsx local/writer.ts --host H --port P --password-file F --first ID [--table T]
 */
import * as fs from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { parseArgs } from "node:util";
import { Client } from "pg";
import { APP_DATABASE, USERS } from "../core";

export interface WriterOptions {
  host: string;
  port: number;
  password: string;
  /** First id to write; give each writer of a test its own range. */
  firstId?: number;
  table?: string;
  /** Pause between writes. */
  intervalMs?: number;
  /** Pause after a failure before reconnecting. */
  retryMs?: number;
  /** Called for each acknowledged write. */
  onAck?: (id: number, at: number) => void;
  /** TLS towards PostgreSQL (remote logins need it); PROBE_SSL when absent. */
  ssl?: ConnectionOptions;
}

/**
 * TLS without checking the server's certificate: remote logins must use TLS (pg_hba), and these
 * writers and probes measure availability, not identity. The check that a client verifies the
 * server (verify-full against the cluster CA) is tests/local/tls.test.ts's.
 */
export const PROBE_SSL: ConnectionOptions = { rejectUnauthorized: false };

export const DEFAULT_TABLE = "acked_writes";

export interface Ack {
  id: number;
  /** Date.now() when the commit was acknowledged. */
  at: number;
  /** The address of the server that acknowledged it (behind HAProxy: the leader at that moment). */
  server?: string;
}

export class AckWriter {
  readonly acks: Ack[] = [];
  failures = 0;
  private nextId: number;
  private running = false;
  private loop?: Promise<void>;
  private client?: Client;

  constructor(private readonly opts: WriterOptions) {
    this.nextId = opts.firstId ?? 1;
  }

  get table(): string {
    return this.opts.table ?? DEFAULT_TABLE;
  }

  get ackedIds(): number[] {
    return this.acks.map((a) => a.id);
  }

  start(): this {
    if (this.running) return this;
    this.running = true;
    this.loop = this.run();
    return this;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** The first acknowledgement at or after `since` (ms since epoch), optionally from another server than `notFrom`. */
  firstAckAfter(since: number, notFrom?: string): Ack | undefined {
    return this.acks.find((a) => a.at >= since && (notFrom === undefined || a.server !== notFrom));
  }

  /** Resolves once `count` more writes than now have been acknowledged; rejects after `timeoutMs`. */
  async waitForAcks(count: number, timeoutMs: number): Promise<void> {
    const target = this.acks.length + count;
    const deadline = Date.now() + timeoutMs;
    while (this.acks.length < target) {
      if (Date.now() > deadline)
        throw new Error(
          `writer: ${this.acks.length - target + count}/${count} acknowledged writes in ${timeoutMs} ms (${this.failures} failures)`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async connect(): Promise<Client> {
    const client = new Client({
      host: this.opts.host,
      port: this.opts.port,
      user: USERS.app,
      password: this.opts.password,
      database: APP_DATABASE,
      connectionTimeoutMillis: 2000,
      ssl: this.opts.ssl ?? PROBE_SSL,
      // A commit waiting for a lost synchronous standby must not hold the writer forever.
      query_timeout: 5000,
    });
    client.on("error", () => undefined);
    await client.connect();
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${this.table} (id bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())`,
    );
    return client;
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        this.client ??= await this.connect();
        const id = this.nextId++;
        const { rows } = await this.client.query<{ server: string }>(
          `INSERT INTO ${this.table} (id) VALUES ($1) RETURNING host(inet_server_addr()) AS server`,
          [id],
        );
        const at = Date.now();
        this.acks.push({ id, at, server: rows[0]?.server });
        this.opts.onAck?.(id, at);
        if (this.opts.intervalMs) await new Promise((r) => setTimeout(r, this.opts.intervalMs));
      } catch {
        this.failures++;
        const old = this.client;
        this.client = undefined;
        old?.end().catch(() => undefined);
        await new Promise((r) => setTimeout(r, this.opts.retryMs ?? 100));
      }
    }
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
  }
}

/** Ids among `ids` that a server does not have (read through `host:port`, normally a 5433). */
export async function missingIds(
  opts: { host: string; port: number; password: string; table?: string; ssl?: ConnectionOptions },
  ids: number[],
): Promise<number[]> {
  const client = new Client({
    host: opts.host,
    port: opts.port,
    user: USERS.app,
    password: opts.password,
    database: APP_DATABASE,
    connectionTimeoutMillis: 3000,
    ssl: opts.ssl ?? PROBE_SSL,
  });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: string }>(
      `SELECT id FROM ${opts.table ?? DEFAULT_TABLE} WHERE id = ANY($1::bigint[])`,
      [ids],
    );
    const present = new Set(rows.map((r) => Number(r.id)));
    return ids.filter((id) => !present.has(id));
  } finally {
    await client.end();
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      host: { type: "string" },
      port: { type: "string" },
      "password-file": { type: "string" },
      first: { type: "string" },
      table: { type: "string" },
      "interval-ms": { type: "string" },
    },
    strict: true,
  });
  if (!values.host || !values.port || !values["password-file"])
    throw new Error("--host, --port and --password-file are required");
  const writer = new AckWriter({
    host: values.host,
    port: Number(values.port),
    password: fs.readFileSync(values["password-file"], "utf8").trim(),
    firstId: Number(values.first ?? 1),
    table: values.table,
    intervalMs: values["interval-ms"] ? Number(values["interval-ms"]) : undefined,
    onAck: (id, at) => process.stdout.write(`ack ${id} ${at}\n`),
  }).start();
  const stop = () => void writer.stop().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (require.main === module) main();
