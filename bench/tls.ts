/**
 * npm run bench:tls [-- --rounds 2000 --keep]
 *
 * What TLS costs one PostgreSQL client: `SELECT 1` round trips on one connection to the leader's
 * PostgreSQL, with TLS and without, on a booted 3-node cluster. Plain text is only allowed over
 * loopback (pg_hba refuses it from the network), so both sides run inside the leader's node, to
 * 127.0.0.1:5432, alternating three times so drift hits both alike; for reference, this machine's
 * round trip over the private network (TLS, the only way in). Prints the figures.
 */
import { spawnSync } from "node:child_process";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { Client } from "pg";
import { APP_DATABASE, PORTS, USERS } from "../core";
import { down, up } from "../local/cluster";
import { clusterHealth } from "../local/health";
import { findNode } from "../local/state";
import { PROBE_SSL } from "../local/writer";

const LOC = { root: path.join(os.tmpdir(), "madbase-bench-tls"), networkId: "btls", subnetCidr: "10.42.201.0/24" };

export interface RoundTrips {
  medianUs: number;
  p90Us: number;
}

/** Median and 90th percentile of `rounds` sequential `SELECT 1` round trips on one connection, in µs. */
export async function selectRoundTrips(opts: {
  host: string;
  port: number;
  password: string;
  ssl: boolean;
  rounds: number;
}): Promise<RoundTrips> {
  const client = new Client({
    host: opts.host,
    port: opts.port,
    user: USERS.app,
    password: opts.password,
    database: APP_DATABASE,
    ssl: opts.ssl ? PROBE_SSL : false,
  });
  await client.connect();
  try {
    const { rows } = await client.query<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    if (rows[0]?.ssl !== opts.ssl) throw new Error(`asked for ssl=${opts.ssl}, the server says ssl=${rows[0]?.ssl}`);
    for (let i = 0; i < 50; i++) await client.query("SELECT 1");
    const us: number[] = [];
    for (let i = 0; i < opts.rounds; i++) {
      const t = process.hrtime.bigint();
      await client.query("SELECT 1");
      us.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    us.sort((a, b) => a - b);
    return { medianUs: us[Math.floor(us.length / 2)], p90Us: us[Math.floor(us.length * 0.9)] };
  } finally {
    await client.end();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rounds: { type: "string", default: "2000" }, keep: { type: "boolean", default: false } },
  });
  const rounds = Number(values.rounds);
  // As the child inside a node: MADBASE_BENCH_CHILD=ssl or plain, the password in the environment.
  if (process.env.MADBASE_BENCH_CHILD) {
    const r = await selectRoundTrips({
      host: "127.0.0.1",
      port: PORTS.postgres,
      password: process.env.MADBASE_BENCH_PASSWORD!,
      ssl: process.env.MADBASE_BENCH_CHILD === "ssl",
      rounds,
    });
    console.log(JSON.stringify(r));
    return;
  }
  await down(LOC);
  const { state, secrets } = await up({ ...LOC, stack: "prod", profile: "fast", timeoutMs: 180_000 });
  try {
    const leader = findNode(state, (await clusterHealth(state, secrets)).leader!);
    const inNode = (mode: "ssl" | "plain"): RoundTrips => {
      const r = spawnSync(
        "ip",
        [
          "netns",
          "exec",
          leader.namespace,
          process.execPath,
          "--import",
          "tsx",
          __filename,
          "--rounds",
          String(rounds),
        ],
        {
          encoding: "utf8",
          env: { ...process.env, MADBASE_BENCH_CHILD: mode, MADBASE_BENCH_PASSWORD: secrets.app },
          timeout: 120_000,
        },
      );
      if (r.status !== 0) throw new Error(`round trips (${mode}) in ${leader.name}: ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split("\n").pop()!) as RoundTrips;
    };
    const tls: RoundTrips[] = [];
    const plain: RoundTrips[] = [];
    for (let i = 0; i < 3; i++) {
      plain.push(inNode("plain"));
      tls.push(inNode("ssl"));
    }
    const network = await selectRoundTrips({
      host: leader.address,
      port: PORTS.postgres,
      password: secrets.app,
      ssl: true,
      rounds,
    });
    const m = (xs: RoundTrips[], k: keyof RoundTrips) => median(xs.map((x) => x[k]));
    console.log(
      `PostgreSQL SELECT 1 round trip at one client (${rounds} per run, median of 3 runs), on ${leader.name}:`,
    );
    console.log(
      `  loopback, plain text: median ${m(plain, "medianUs").toFixed(0)} µs, p90 ${m(plain, "p90Us").toFixed(0)} µs`,
    );
    console.log(
      `  loopback, TLS:        median ${m(tls, "medianUs").toFixed(0)} µs, p90 ${m(tls, "p90Us").toFixed(0)} µs`,
    );
    console.log(`  TLS costs ${(m(tls, "medianUs") - m(plain, "medianUs")).toFixed(0)} µs a round trip (median)`);
    console.log(
      `  this machine -> ${leader.address}:${PORTS.postgres} over TLS: median ${network.medianUs.toFixed(0)} µs, p90 ${network.p90Us.toFixed(0)} µs`,
    );
  } finally {
    if (!values.keep) await down(LOC);
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
