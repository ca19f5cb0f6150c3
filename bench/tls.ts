/**
 * npm run bench:tls [-- --rounds 2000 --keep]
 *
 * What TLS costs one PostgreSQL client: `SELECT 1` round trips on one connection to the leader's
 * PostgreSQL, with TLS and without, on a booted 3-node cluster. Plain text is only allowed over
 * loopback (pg_hba refuses it from the network), so both sides run inside the leader's node, to
 * 127.0.0.1:5432, alternating three times so drift hits both alike; for reference, this machine's
 * round trip over the private network (TLS, the only way in). And what TLS costs one Redis client:
 * `PING` round trips from this machine through a node's HAProxy to the master, on 6379 (plain) and
 * on 6381 (TLS ended at HAProxy), alternating three times. Prints the figures.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import Redis from "ioredis";
import { Client } from "pg";
import { APP_DATABASE, PORTS, USERS } from "../core";
import { down, up } from "../local/cluster";
import { clusterHealth } from "../local/health";
import { LocalClusterState, findNode } from "../local/state";
import { operatorTls } from "../local/tls";
import { clusterUrls } from "../local/cluster";
import { PROBE_SSL } from "../local/writer";
import { RoundTrips, median, roundTrips } from "./round-trips";

const LOC = { root: path.join(os.tmpdir(), "madbase-bench-tls"), networkId: "btls", subnetCidr: "10.42.201.0/24" };

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
    return await roundTrips(opts.rounds, () => client.query("SELECT 1"));
  } finally {
    await client.end();
  }
}

/** Median and 90th percentile of `rounds` sequential PINGs on one connection to `url`, in µs. */
export async function pingRoundTrips(url: string, rounds: number, ca?: string): Promise<RoundTrips> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, ...(ca ? { tls: { ca } } : {}) });
  await client.connect();
  try {
    return await roundTrips(rounds, () => client.ping());
  } finally {
    client.disconnect();
  }
}

/** Redis PING through a node's HAProxy: plain (6379) against TLS (6381), alternating three times. */
async function redisFigures(
  state: LocalClusterState,
  urls: { redisUrl: string; redisTlsUrl: string },
  ca: string,
  rounds: number,
) {
  const plain: RoundTrips[] = [];
  const tls: RoundTrips[] = [];
  for (let i = 0; i < 3; i++) {
    plain.push(await pingRoundTrips(urls.redisUrl, rounds));
    tls.push(await pingRoundTrips(urls.redisTlsUrl, rounds, ca));
  }
  const m = (xs: RoundTrips[], k: keyof RoundTrips) => median(xs.map((x) => x[k]));
  console.log(
    `Redis PING round trip at one client through ${state.nodes[0].name}'s HAProxy (${rounds} per run, median of 3 runs):`,
  );
  console.log(
    `  6379, plain text: median ${m(plain, "medianUs").toFixed(0)} µs, p90 ${m(plain, "p90Us").toFixed(0)} µs`,
  );
  console.log(`  6381, TLS:        median ${m(tls, "medianUs").toFixed(0)} µs, p90 ${m(tls, "p90Us").toFixed(0)} µs`);
  console.log(`  TLS costs ${(m(tls, "medianUs") - m(plain, "medianUs")).toFixed(0)} µs a round trip (median)`);
}

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
    await redisFigures(
      state,
      clusterUrls(state, secrets),
      fs.readFileSync(operatorTls(state.root).caFile, "utf8"),
      rounds,
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
