/**
 * TLS and authentication on a booted 3-node prod cluster, asserted from this machine, which sits in
 * the nodes' private network as an application server would:
 *  - etcd: no client certificate, or one from another CA, can neither read nor write; the
 *    cluster's (the operator's pair) can;
 *  - PostgreSQL: plain-text logins to a node's 5432 and to the entry port 5433 are refused;
 *    sslmode=verify-full against the CA works through the entry point;
 *  - the certificates the nodes present are the cluster CA's, with the node's SANs;
 *  - Patroni: HTTPS only; no answer without a client certificate of the CA (one of another CA
 *    neither), not even to a read; an unsafe call from this machine (not a member) is refused even
 *    with the operator's pair and the password, one from a member without the password too; HAProxy checks it over TLS and follows the
 *    leader through a power cut within the profile's time, and the old leader rejoins;
 *  - PgBouncer (5433, 5434, 6432): TLS only, and TLS on to PostgreSQL;
 *  - Redis over TLS (6381, ended at HAProxy): the printed rediss URL works verified with the CA;
 *    plain text there, or a client without the CA, gets nothing;
 *  - rotation: a node's new pair reaches it through config-refresh, and its daemons present it;
 *    on the leader, under writes, without a failover, without any HAProxy losing the leader, and
 *    without losing an acknowledged write.
 */
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import Redis from "ioredis";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  APP_DATABASE,
  PORTS,
  TLS_METRICS,
  TLS_METRICS_FILE,
  USERS,
  caCertificateSpec,
  entryPointName,
  getProfile,
  operatorCertificateSpec,
  serverPaths,
} from "../../core";
import { apply } from "../../local/apply";
import { UpResult, clusterUrls, killNode, loadCluster, startNode, waitHealthy } from "../../local/cluster";
import { machinePath } from "../../local/machine";
import { parseMetrics, sampleValue } from "../../local/metrics";
import { haproxyCommand, haproxyServers } from "../../local/probes";
import { certPaths, issueCertificate, operatorTls } from "../../local/tls";
import { AckWriter, missingIds } from "../../local/writer";
import {
  address,
  finish,
  health,
  patroniCall,
  patroniGet,
  redisClient,
  startCluster,
  testLocation,
  waitFor,
  writeEntryServer,
} from "./harness";

const loc = testLocation(16);
let cluster: UpResult;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-tls-test-"));

beforeAll(async () => {
  // Booted as a stack from before Patroni asked for client certificates is after the update that
  // prepared it: the first test is the next update, and every later one runs on its result.
  cluster = await startCluster(loc, { patroniClientCertificates: "prepared" });
}, 240_000);

afterAll(async () => {
  await finish(loc);
  fs.rmSync(scratch, { recursive: true, force: true });
}, 120_000);

/** The HTTP status of a GET to a node's Patroni from this machine without a client certificate ("000": no answer). */
function patroniWithoutCertificate(ip: string, what: string): string {
  const op = operatorTls(cluster.state.root);
  return spawnSync(
    "curl",
    [
      "-s",
      "-m",
      "10",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--cacert",
      op.caFile,
      `https://${ip}:${PORTS.patroni}/${what}`,
    ],
    { encoding: "utf8" },
  ).stdout;
}

/** How often each HAProxy's check marked `server` DOWN on the write port (show stat's chkdown). */
async function leaderChecksDown(nodes: typeof cluster.state.nodes, server: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const node of nodes) {
    const csv = (await haproxyCommand(machinePath(node.machine, serverPaths().haproxySocket)!, "show stat")) ?? "";
    const [head, ...rows] = csv.split("\n").filter((l) => l.trim() !== "");
    const cols = head.slice(2).split(",");
    const row = rows.map((r) => r.split(",")).find((f) => f[0] === "postgres_primary" && f[1] === server);
    out[node.name] = Number(row?.[cols.indexOf("chkdown")] ?? NaN);
  }
  return out;
}

test("the update after the prepared one requires Patroni client certificates, node by node, while writes go on and every HAProxy keeps the leader", async () => {
  const { state, secrets } = cluster;
  const leader = state.nodes.find((n) => n.name === cluster.health.leader)!;
  // Prepared: every HAProxy and script presents the node's pair, Patroni does not ask yet.
  for (const n of state.nodes)
    expect([n.name, patroniWithoutCertificate(n.address, "cluster")]).toEqual([n.name, "200"]);
  const downBefore = await leaderChecksDown(state.nodes, leader.name);
  expect(Object.values(downBefore).every(Number.isFinite)).toBe(true);
  const writer = new AckWriter({
    host: state.nodes.find((n) => n.name !== leader.name)!.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 15_000_000,
    intervalMs: 20,
  }).start();
  try {
    await writer.waitForAcks(20, 30_000);
    const result = await apply({ ...loc });
    for (const c of result.changes)
      expect([c.node, c.lines]).toEqual([
        c.node,
        expect.arrayContaining(["patroni: reloaded with the new patroni.yml"]),
      ]);
    await writer.waitForAcks(20, 30_000);
  } finally {
    await writer.stop();
  }
  for (const n of state.nodes)
    expect([n.name, patroniWithoutCertificate(n.address, "cluster")]).toEqual([n.name, "000"]);
  // No HAProxy lost the leader on its way (no check without a certificate met a Patroni that asks), no failover.
  expect(await leaderChecksDown(state.nodes, leader.name)).toEqual(downBefore);
  const after = await waitHealthy(state, secrets, { timeoutMs: 60_000 });
  expect(after.leader).toBe(leader.name);
  expect(
    await missingIds({ host: leader.address, port: PORTS.postgresPrimary, password: secrets.app }, writer.ackedIds),
  ).toEqual([]);
}, 300_000);

/** The image's etcdctl (etcd-client 3.5, the nodes' own), run on this machine. */
function etcdctl(flags: string[], args: string[]): { code: number | null; out: string } {
  const bin = path.join(cluster.state.image, "usr", "bin", "etcdctl");
  const endpoint = `--endpoints=https://${cluster.state.nodes[0].address}:${PORTS.etcdClient}`;
  const r = spawnSync(bin, [endpoint, "--dial-timeout=2s", "--command-timeout=3s", ...flags, ...args], {
    encoding: "utf8",
    timeout: 20_000,
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** psql on this machine, with the password in the environment (never on its command line). */
function psql(conninfo: string, extraEnv: Record<string, string> = {}): { code: number | null; out: string } {
  const r = spawnSync("psql", [conninfo, "-XAtc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"], {
    encoding: "utf8",
    timeout: 20_000,
    env: { ...process.env, PGPASSWORD: cluster.secrets.app, PGCONNECT_TIMEOUT: "5", ...extraEnv },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

test("etcd: without a client certificate, or with one from another CA, nothing is read or written; the cluster's certificate can", () => {
  const op = operatorTls(cluster.state.root);
  const ours = [`--cacert=${op.caFile}`, `--cert=${op.certFile}`, `--key=${op.keyFile}`];
  // Another CA, made exactly like the cluster's, and a client pair it signed.
  const other = path.join(scratch, "other");
  issueCertificate(caCertificateSpec({ clusterName: "someone-else" }), certPaths(other, "ca"));
  issueCertificate(
    operatorCertificateSpec({ clusterName: "someone-else" }),
    certPaths(other, "operator"),
    certPaths(other, "ca"),
  );
  const foreign = [
    `--cacert=${op.caFile}`,
    `--cert=${certPaths(other, "operator").cert}`,
    `--key=${certPaths(other, "operator").key}`,
  ];
  const noCert = [`--cacert=${op.caFile}`];

  for (const flags of [noCert, foreign]) {
    const put = etcdctl(flags, ["put", "/madbase/intruder", "x"]);
    expect(put.code).not.toBe(0);
    const get = etcdctl(flags, ["get", "--prefix", "/madbase/"]);
    expect(get.code).not.toBe(0);
    expect(get.out).not.toContain("/madbase/madbase-prod/leader");
    const remove = etcdctl(flags, ["member", "list"]);
    expect(remove.code).not.toBe(0);
  }
  // Plain HTTP on the client port gets no answer from etcd's API.
  const plain = spawnSync(
    "curl",
    ["-s", "-m", "3", `http://${cluster.state.nodes[0].address}:${PORTS.etcdClient}/version`],
    { encoding: "utf8" },
  );
  expect(plain.stdout).not.toContain("etcdserver");

  expect(etcdctl(ours, ["put", "/madbase-tls-test/probe", "ok"])).toEqual({ code: 0, out: "OK\n" });
  expect(etcdctl(ours, ["get", "--print-value-only", "/madbase-tls-test/probe"]).out).toBe("ok\n");
  const leader = etcdctl(ours, ["get", "--print-value-only", "/madbase/madbase-prod/leader"]);
  expect(leader).toEqual({ code: 0, out: `${cluster.health.leader}\n` });
  expect(etcdctl(ours, ["del", "/madbase-tls-test/probe"]).code).toBe(0);
});

test("the nodes present certificates of the cluster CA, with their name and address and the entry point's", () => {
  const op = operatorTls(cluster.state.root);
  for (const node of cluster.state.nodes) {
    const chain = spawnSync(
      "openssl",
      [
        "s_client",
        "-connect",
        `${node.address}:${PORTS.etcdClient}`,
        "-CAfile",
        op.caFile,
        "-verify_return_error",
        "-verify_ip",
        node.address,
        "-cert",
        op.certFile,
        "-key",
        op.keyFile,
      ],
      {
        input: "",
        encoding: "utf8",
        timeout: 15_000,
      },
    );
    expect(chain.stdout).toMatch(/Verify return code: 0 \(ok\)/);
    const pem = chain.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)![0];
    const text = spawnSync("openssl", ["x509", "-noout", "-ext", "subjectAltName"], {
      input: pem,
      encoding: "utf8",
    }).stdout;
    for (const san of [
      `DNS:${node.name}`,
      `DNS:${entryPointName(cluster.state)}`,
      `IP Address:${node.address}`,
      "IP Address:127.0.0.1",
    ])
      expect(text).toContain(san);
  }
});

test("PostgreSQL: plain-text logins to a node and to the entry port are refused; verify-full against the CA works through the entry point", () => {
  const { state } = cluster;
  const op = operatorTls(state.root);
  const leaderNode = state.nodes.find((n) => n.name === cluster.health.leader)!;
  const entry = state.nodes.find((n) => n.name !== cluster.health.leader)!;
  const base = `user=${USERS.app} dbname=${APP_DATABASE}`;
  // PostgreSQL refuses by its pg_hba (5432, and 5435 straight to the leader's); PgBouncer (5433,
  // 5434 and its own 6432) by client_tls_sslmode, before it asks for a password.
  const byHba = /no pg_hba.conf entry|rejects connection|pg_hba\.conf rejects/;
  const byPgbouncer = /SSL required/;
  for (const [host, port, refusal] of [
    [leaderNode.address, PORTS.postgres, byHba],
    [entry.address, PORTS.postgres, byHba],
    [entry.address, PORTS.postgresDirect, byHba],
    [entry.address, PORTS.postgresPrimary, byPgbouncer],
    [entry.address, PORTS.postgresReplicas, byPgbouncer],
    [leaderNode.address, PORTS.pgbouncer, byPgbouncer],
  ] as const) {
    const plain = psql(`host=${host} port=${port} ${base} sslmode=disable`);
    expect({ port, code: plain.code }).toEqual({ port, code: 2 });
    expect([port, plain.out]).toEqual([port, expect.stringMatching(refusal)]);
  }
  // verify-full through another node's HAProxy: the leader's certificate names the entry point,
  // which this client asks for by name (host=) while connecting to the node's address (hostaddr=).
  // That is PgBouncer's TLS; the "t" is pg_stat_ssl of PgBouncer's own connection to PostgreSQL
  // (server_tls_sslmode verify-full towards the node's private address), TLS too.
  const verified = psql(
    `host=${entryPointName(state)} hostaddr=${entry.address} port=${PORTS.postgresPrimary} ${base} sslmode=verify-full sslrootcert=${op.caFile}`,
  );
  expect(verified).toEqual({ code: 0, out: "t" });
  // Verifying against another CA fails: the client really checks the server.
  const other = path.join(scratch, "other-pg");
  issueCertificate(caCertificateSpec({ clusterName: "someone-else" }), certPaths(other, "ca"));
  const wrongCa = psql(
    `host=${entryPointName(state)} hostaddr=${entry.address} port=${PORTS.postgresPrimary} ${base} sslmode=verify-full sslrootcert=${certPaths(other, "ca").cert}`,
  );
  expect(wrongCa.code).not.toBe(0);
  expect(wrongCa.out).toMatch(/certificate verify failed/);
  // The URL the runner prints asks for TLS.
  expect(
    psql(`postgresql://${USERS.app}@${entry.address}:${PORTS.postgresPrimary}/${APP_DATABASE}?sslmode=require`),
  ).toEqual({ code: 0, out: "t" });
});

/** Connects a client and runs `commands`; each answer, or the connection's or command's error message. */
async function redisAnswers(client: Redis, commands: string[][]): Promise<string[]> {
  let failure = "";
  client.on("error", (e: Error) => (failure ||= e.message));
  try {
    await client.connect();
    const out: string[] = [];
    for (const c of commands) out.push(String(await client.call(c[0], ...c.slice(1))));
    return out;
  } catch (e) {
    return [failure || (e as Error).message];
  } finally {
    client.disconnect();
  }
}

test("Redis over TLS: the printed rediss URL works through a node's 6381, verified with the CA; plain text there gets nothing, a client without the CA refuses the certificate", async () => {
  const { state, secrets } = cluster;
  const url = clusterUrls(state, secrets).redisTlsUrl;
  expect(url).toMatch(new RegExp(`^rediss://app:[^@]+@${state.nodes[0].address}:${PORTS.redisMasterTls}/0$`));
  const ca = fs.readFileSync(operatorTls(state.root).caFile, "utf8");
  const quick = { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, retryStrategy: () => null };
  const key = `tls-test-${Date.now()}`;
  expect(
    await redisAnswers(new Redis(url, { ...quick, tls: { ca } }), [
      ["SET", key, "over-tls"],
      ["GET", key],
      ["PUBLISH", key, "hello"],
    ]),
  ).toEqual(["OK", "over-tls", "0"]);
  // Debian's redis-cli as the README shows it (--tls --cacert), the password in its environment.
  const cli = spawnSync(
    "redis-cli",
    [
      "--tls",
      "--cacert",
      operatorTls(state.root).caFile,
      "-h",
      state.nodes[2].address,
      "-p",
      String(PORTS.redisMasterTls),
      "--user",
      "app",
      "--no-auth-warning",
      "GET",
      key,
    ],
    { encoding: "utf8", timeout: 10_000, env: { ...process.env, REDISCLI_AUTH: secrets.redis } },
  );
  expect([cli.status, cli.stdout.trim()]).toEqual([0, "over-tls"]);
  // The same master as 6379 (HAProxy's one redis_master section): the key is there in plain text too.
  const plainEntry = redisClient(state, secrets.redis, state.nodes[1].address);
  expect(await redisAnswers(plainEntry, [["GET", key]])).toEqual(["over-tls"]);
  // Without the cluster CA, Node's default trust refuses the node's certificate.
  const [untrusted] = await redisAnswers(new Redis(url, { ...quick, tls: {} }), [["PING"]]);
  expect(untrusted).toMatch(/self[- ]signed|unable to (verify|get)|certificate/i);
  // Plain text to the TLS port: HAProxy waits for a TLS hello and never answers a Redis command. It
  // either holds the connection until the client gives up or drops it on the bytes that are no
  // hello; the client then sees a timeout, a close, a reset, or EPIPE if it was still writing.
  const [plain] = await redisAnswers(redisClient(state, secrets.redis, state.nodes[0].address, PORTS.redisMasterTls), [
    ["PING"],
  ]);
  expect(plain).not.toBe("PONG");
  expect(plain).toMatch(/timeout|closed|ECONNRESET|EPIPE/i);
});

test("Patroni: HTTPS only, and no answer, not even a read, without a certificate of the CA; unsafe calls need the password and a member's address", async () => {
  const { state, secrets } = cluster;
  const [n1, n2] = state.nodes;
  const op = operatorTls(state.root);
  /** curl from this machine to n1's REST API: its HTTP status ("000": no answer) and exit code. */
  const curl = (url: string, flags: string[], input = "") => {
    const r = spawnSync("curl", ["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", ...flags, url], {
      input,
      encoding: "utf8",
    });
    return { http: r.stdout, code: r.status };
  };
  // Plain HTTP gets no answer from the REST API.
  expect(curl(`http://${n1.address}:${PORTS.patroni}/cluster`, []).http).not.toBe("200");
  // Without a client certificate, or with one of another CA, the TLS handshake fails: no read at all.
  const other = path.join(scratch, "other-patroni");
  issueCertificate(caCertificateSpec({ clusterName: "someone-else" }), certPaths(other, "ca"));
  issueCertificate(
    operatorCertificateSpec({ clusterName: "someone-else" }),
    certPaths(other, "operator"),
    certPaths(other, "ca"),
  );
  const foreign = ["--cert", certPaths(other, "operator").cert, "--key", certPaths(other, "operator").key];
  for (const flags of [[], foreign]) {
    for (const what of ["cluster", "config", "patroni", "primary"]) {
      const r = curl(`https://${n1.address}:${PORTS.patroni}/${what}`, ["--cacert", op.caFile, ...flags]);
      expect([what, r.http]).toEqual([what, "000"]);
      expect(r.code).not.toBe(0);
    }
  }
  // With the operator's pair, reads work, verified with the cluster CA.
  expect((await patroniGet(state, n1.address, "cluster")).members).toHaveLength(3);
  // This machine is not a member: even with a certificate and the password, an unsafe call is refused.
  const fromHost = curl(
    `https://${n1.address}:${PORTS.patroni}/config`,
    ["-K", "-", "--cacert", op.caFile, "--cert", op.certFile, "--key", op.keyFile, "-X", "PATCH", "-d", "{}"],
    `user = "${USERS.patroniRest}:${secrets.patroniRest}"\n`,
  );
  expect(fromHost.http).toBe("403");
  // From a member: without the password, or with a wrong one, refused; with it, done.
  expect(patroniCall(state, n2, n1.address, "PATCH", "config", { body: {} }).status).toBe(401);
  expect(patroniCall(state, n2, n1.address, "PATCH", "config", { body: {}, password: "not-the-password" }).status).toBe(
    401,
  );
  expect(patroniCall(state, n2, n1.address, "POST", "restart", { body: {}, password: "not-the-password" }).status).toBe(
    401,
  );
  // A change to the value it has: accepted, and nothing changes.
  const ok = patroniCall(state, n2, n1.address, "PATCH", "config", {
    body: { ttl: getProfile(state.applied.failoverProfile).patroni.ttl },
    password: secrets.patroniRest,
  });
  expect(ok.status).toBe(200);
  expect(JSON.parse(ok.body)).toMatchObject({ ttl: getProfile(state.applied.failoverProfile).patroni.ttl });
});

test("HAProxy checks Patroni over TLS and follows the leader through a power cut within the profile's time; the old leader rejoins (pg_rewind over TLS)", async () => {
  const { state, secrets } = cluster;
  const leader = cluster.health.leader!;
  const entry = state.nodes.find((n) => n.name !== leader)!;
  // Every HAProxy sees exactly the leader UP on 5433 (its checks are HTTPS with the CA).
  for (const node of state.nodes) {
    const socket = machinePath(node.machine, serverPaths().haproxySocket)!;
    const up = (await haproxyServers(socket))!
      .filter((s) => s.proxy === "postgres_primary" && s.status === "UP")
      .map((s) => s.server);
    expect(up).toEqual([leader]);
  }
  const writer = new AckWriter({
    host: entry.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 16_000_000,
    intervalMs: 20,
  }).start();
  try {
    await writer.waitForAcks(20, 30_000);
    await killNode(leader, loc);
    const cutAt = Date.now();
    await writer.waitForAcks(20, 120_000);
    const resumedAt = writer.firstAckAfter(cutAt)!.at;
    // A power cut holds the leader key for the ttl; then a loop, the checks' fall, and room for a slow machine.
    const p = getProfile(state.applied.failoverProfile);
    const boundMs =
      (p.patroni.ttl + p.patroni.loopWait + p.patroni.retryTimeout) * 1000 +
      (p.haproxy.fall + p.haproxy.rise) * p.haproxy.interMs +
      10_000;
    expect(resumedAt - cutAt).toBeLessThan(boundMs);
    const h = await waitFor(loc, "a new leader", (x) => x.leader !== null && x.leader !== leader);
    expect(await writeEntryServer(state, secrets.app, entry.address)).toEqual({
      server: address(state, h.leader!),
      recovery: false,
    });
    await startNode(leader, loc);
    const healed = await waitHealthy(state, secrets, { timeoutMs: 150_000 });
    const old = healed.nodes.find((n) => n.name === leader)!;
    expect(["replica", "sync_standby"]).toContain(old.role);
    expect(old.streaming).toBe(true);
  } finally {
    await writer.stop();
  }
  expect(
    await missingIds(
      { host: address(state, (await health(loc)).leader!), port: PORTS.postgresPrimary, password: secrets.app },
      writer.ackedIds,
    ),
  ).toEqual([]);
}, 400_000);

/** The serial of the certificate a node presents on a port (`postgres`: STARTTLS of PostgreSQL's protocol). */
function presentedSerial(ip: string, port: number, starttls?: string): string {
  const args = ["s_client", "-connect", `${ip}:${port}`, ...(starttls ? ["-starttls", starttls] : [])];
  const op = operatorTls(cluster.state.root);
  // etcd and Patroni ask for a client certificate of the CA.
  if (port === PORTS.etcdClient || port === PORTS.patroni) args.push("-cert", op.certFile, "-key", op.keyFile);
  const chain = spawnSync("openssl", args, { input: "", encoding: "utf8", timeout: 15_000 });
  const pem = chain.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0] ?? "";
  return spawnSync("openssl", ["x509", "-noout", "-serial"], { input: pem, encoding: "utf8" }).stdout.trim();
}

test("rotation: a node's new pair reaches it through config-refresh (apply), and etcd, Patroni, PgBouncer and PostgreSQL present it", async () => {
  // The state as it is now: the power cut above restarted the old leader (its machine has a new
  // init, and the files under it are reached through that).
  const { state } = loadCluster(loc);
  const node = state.nodes[2];
  const ports: [number, string?][] = [
    [PORTS.etcdClient],
    [PORTS.patroni],
    [PORTS.postgres, "postgres"],
    [PORTS.pgbouncer, "postgres"],
  ];
  const before = ports.map(([port, starttls]) => presentedSerial(node.address, port, starttls));
  expect(new Set(before).size).toBe(1);
  expect(before[0]).toMatch(/^serial=/);
  // README, Rotation: remove the node's pair; apply makes a new one and runs config-refresh.
  for (const f of Object.values(certPaths(state.root, node.name))) fs.rmSync(f);
  const result = await apply({ ...loc });
  const lines = (name: string) => result.changes.find((c) => c.node === name)!.lines;
  expect(lines(node.name)).toContain(
    "tls: Patroni, HAProxy, PgBouncer and PostgreSQL reloaded with the new certificate files",
  );
  for (const other of state.nodes.filter((n) => n.name !== node.name))
    expect(lines(other.name).join("\n")).not.toContain("tls:");
  const after = ports.map(([port, starttls]) => presentedSerial(node.address, port, starttls));
  expect(after.every((s) => s === after[0] && s !== before[0])).toBe(true);
  expect(after[0]).toBe(
    spawnSync("openssl", ["x509", "-noout", "-serial", "-in", certPaths(state.root, node.name).cert], {
      encoding: "utf8",
    }).stdout.trim(),
  );
  // The certificate-end metrics follow the renewal at once (config-refresh runs their job), so an
  // expiry alert clears with it rather than at the timer's next run.
  const textfile = fs.readFileSync(machinePath(node.machine, TLS_METRICS_FILE)!, "utf8");
  const newEnd = Math.floor(
    new Date(new X509Certificate(fs.readFileSync(certPaths(state.root, node.name).cert)).validTo).getTime() / 1000,
  );
  expect(sampleValue(parseMetrics(textfile), TLS_METRICS.notAfter, { certificate: "node" })).toBe(newEnd);
  expect(result.health.healthy).toBe(true);
}, 300_000);

test("rotation on the leader under writes: no failover, no other HAProxy loses the leader, no acknowledged write lost", async () => {
  // The state as it is now: the power cut above restarted a node (its machine has a new init).
  const { state, secrets } = loadCluster(loc);
  const healthy = await waitHealthy(state, secrets, { timeoutMs: 120_000 });
  const leader = state.nodes.find((n) => n.name === healthy.leader)!;
  const others = state.nodes.filter((n) => n.name !== leader.name);
  const entry = others[0];
  const downBefore = await leaderChecksDown(others, leader.name);
  expect(Object.values(downBefore).every(Number.isFinite)).toBe(true);
  const writer = new AckWriter({
    host: entry.address,
    port: PORTS.postgresPrimary,
    password: secrets.app,
    firstId: 17_000_000,
    intervalMs: 20,
  }).start();
  let rotatedAt = 0;
  try {
    await writer.waitForAcks(20, 30_000);
    const startedAt = Date.now();
    for (const f of Object.values(certPaths(state.root, leader.name))) fs.rmSync(f);
    const result = await apply({ ...loc });
    rotatedAt = Date.now();
    expect(result.changes.find((c) => c.node === leader.name)!.lines).toContain(
      "tls: Patroni, HAProxy, PgBouncer and PostgreSQL reloaded with the new certificate files",
    );
    await writer.waitForAcks(20, 30_000);
    const during = writer.acks.filter((a) => a.at >= startedAt && a.at <= rotatedAt);
    const gaps = during.slice(1).map((a, i) => a.at - during[i].at);
    console.log(
      `leader rotation under writes: ${during.length} writes acknowledged during apply (${((rotatedAt - startedAt) / 1000).toFixed(1)} s), ` +
        `longest gap ${Math.max(0, ...gaps)} ms, ${writer.failures} failed attempts`,
    );
    expect(during.length).toBeGreaterThan(0);
  } finally {
    await writer.stop();
  }
  // Still the same leader (a reload, not a failover), and no other node's entry point lost it.
  const after = await waitHealthy(state, secrets, { timeoutMs: 60_000 });
  expect(after.leader).toBe(leader.name);
  expect(await leaderChecksDown(others, leader.name)).toEqual(downBefore);
  expect(
    await missingIds({ host: leader.address, port: PORTS.postgresPrimary, password: secrets.app }, writer.ackedIds),
  ).toEqual([]);
}, 300_000);
