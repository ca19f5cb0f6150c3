/**
 * Redis's users as rendered (redis-users.acl, redis.conf, sentinel.conf, the exporter's files), on
 * the node image's own redis-server, redis-sentinel and redis_exporter: a master and a replica of
 * a 3-node render and the master's Sentinel, each chrooted into the image inside one network
 * namespace that holds both nodes' private addresses. What only a booted cluster proves (HAProxy,
 * a failover by a Sentinel majority, process lists) is in tests/local/auth.test.ts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { PORTS, REDIS_USERS, RenderedNode, readEnvFile, redisUrl } from "../../core";
import { ensureImage } from "../../local/image";
import { renderStack } from "../support/fixtures";
import { run, start, stop, waitFor } from "../support/proc";

jest.setTimeout(120_000);

let imageRoot = "";
const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-acl-"));
const IN_IMAGE = "/mnt";
const inside = (hostPath: string) => path.posix.join(IN_IMAGE, path.relative(work, hostPath));
const ns = `ra${(process.pid % 46656).toString(36).padStart(3, "0")}`;

/** argv running a program of the image in the test's namespace (as render-checks.test.ts does). */
function inImage(argv: string[]): string[] {
  const enter =
    'r=$1 w=$2; shift 2; mount --rbind /dev "$r/dev" && mount --bind /proc "$r/proc" && mount --bind "$w" "$r' +
    IN_IMAGE +
    '" && exec chroot "$r" "$@"';
  return [
    "ip",
    "netns",
    "exec",
    ns,
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    enter,
    "sh",
    imageRoot,
    work,
    ...argv,
  ];
}

const { topology, secrets, files } = renderStack({ nodeCount: 3 });
const [master, replica] = topology.nodes;
const rendered = (name: string): RenderedNode => files[name];
const daemons: ReturnType<typeof start>[] = [];

/** redis-cli in the image; the password reaches it in its environment (REDISCLI_AUTH), as on a node. */
async function cli(
  ip: string,
  port: number,
  auth: { user?: string; password?: string },
  args: string[],
): Promise<string> {
  const env = { ...process.env, ...(auth.password ? { REDISCLI_AUTH: auth.password } : {}) };
  const user = auth.user ? ["--user", auth.user] : [];
  const r = await run(inImage(["redis-cli", "--no-auth-warning", "-h", ip, "-p", String(port), ...user, ...args]), {
    timeoutMs: 15_000,
    env,
  });
  return (r.stdout + r.stderr).trim();
}
const redisAs = (who: keyof typeof REDIS_USERS, args: string[], ip = master.privateIp) => {
  const password = {
    app: secrets.redis,
    replication: secrets.redisReplication,
    sentinel: secrets.redisSentinel,
    monitoring: secrets.redisMonitoring,
    admin: secrets.redisAdmin,
    check: secrets.redisCheck,
  }[who];
  return cli(ip, PORTS.redis, { user: REDIS_USERS[who], password }, args);
};
const sentinel = (args: string[], auth: { user?: string; password?: string } = { password: secrets.sentinel }) =>
  cli(master.privateIp, PORTS.sentinel, auth, args);

/** Writes a node's rendered file into its scratch directory (Redis and Sentinel rewrite theirs). */
function place(node: string, file: string): string {
  const target = path.join(work, node, file);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, rendered(node)[file as keyof RenderedNode]);
  return target;
}

function startRedis(node: (typeof topology.nodes)[number], bind: string): void {
  const conf = place(node.name, "redis.conf");
  const acl = place(node.name, "redis-users.acl");
  // Only the data directory, the ACL file's place and the addresses differ from the node's file.
  daemons.push(
    start(
      inImage([
        "redis-server",
        inside(conf),
        "--dir",
        inside(path.dirname(conf)),
        "--aclfile",
        inside(acl),
        "--bind",
        bind,
        "--save",
        "",
      ]),
    ),
  );
}

function startSentinel(): void {
  const conf = path.join(work, master.name, "sentinel.conf");
  if (!fs.existsSync(conf)) place(master.name, "sentinel.conf");
  daemons.push(start(inImage(["redis-sentinel", inside(conf), "--dir", inside(path.dirname(conf))])));
}

beforeAll(async () => {
  imageRoot =
    process.env.MADBASE_IMAGE_ROOT ||
    (await ensureImage({ onProgress: (line) => process.stderr.write(`image: ${line}\n`) }));
  fs.chmodSync(work, 0o755);
  execFileSync("ip", ["netns", "add", ns]);
  execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"]);
  for (const node of [master, replica])
    execFileSync("ip", ["-n", ns, "addr", "add", `${node.privateIp}/32`, "dev", "lo"]);
  startRedis(master, `${master.privateIp} 127.0.0.1`);
  startRedis(replica, replica.privateIp);
  startSentinel();
  await waitFor(
    "the replica in sync with the master",
    async () => /master_link_status:up/.test(await redisAs("admin", ["INFO", "replication"], replica.privateIp)),
    30_000,
    300,
  );
}, 900_000);

afterAll(async () => {
  await Promise.all(daemons.map((d) => stop(d)));
  execFileSync("ip", ["netns", "del", ns]);
  fs.rmSync(work, { recursive: true, force: true });
});

test("the application's URL, as printed, works with redis-cli -u; that user reads, writes, publishes and runs scripts", async () => {
  const url = redisUrl(secrets.redis, master.privateIp).replace(`:${PORTS.redisMaster}/`, `:${PORTS.redis}/`);
  const viaUrl = async (args: string[]) =>
    (await run(inImage(["redis-cli", "--no-auth-warning", "-u", url, ...args]), { timeoutMs: 15_000 })).stdout.trim();
  expect(await viaUrl(["SET", "acl:k", "v"])).toBe("OK");
  expect(await viaUrl(["GET", "acl:k"])).toBe("v");
  expect(await viaUrl(["EXPIRE", "acl:k", "60"])).toBe("1");
  expect(await viaUrl(["PUBLISH", "acl:ch", "hello"])).toBe("0");
  expect(await viaUrl(["EVAL", "return redis.call('GET', KEYS[1])", "1", "acl:k"])).toBe("v");
  expect(await viaUrl(["ACL", "WHOAMI"])).toBe(REDIS_USERS.app);
  // SUBSCRIBE blocks: a second's worth of it shows the subscription confirmed.
  const sub = await run(inImage(["timeout", "1", "redis-cli", "--no-auth-warning", "-u", url, "SUBSCRIBE", "acl:ch"]), {
    timeoutMs: 15_000,
  });
  expect(sub.stdout.split("\n").slice(0, 3)).toEqual(["subscribe", "acl:ch", "1"]);
});

test("the application's user is refused every admin and dangerous command", async () => {
  for (const args of [
    ["CONFIG", "SET", "maxmemory", "1"],
    ["CONFIG", "GET", "masterauth"],
    ["REPLICAOF", "NO", "ONE"],
    ["FLUSHALL"],
    ["KEYS", "*"],
    ["ACL", "LIST"],
    ["ACL", "SETUSER", "x"],
    ["SHUTDOWN"],
  ]) {
    expect([args.join(" "), await redisAs("app", args)]).toEqual([args.join(" "), expect.stringMatching(/^NOPERM /)]);
  }
  // DEBUG is off for everyone here (enable-debug-command); the ACL refuses it to app regardless.
  expect(await redisAs("admin", ["ACL", "DRYRUN", REDIS_USERS.app, "DEBUG", "SLEEP", "0"])).toMatch(
    /no permissions to run the 'debug' command/,
  );
});

test("without a user, or with the default user, nothing gets in", async () => {
  expect(await cli(master.privateIp, PORTS.redis, {}, ["PING"])).toMatch(/^NOAUTH /);
  for (const password of [secrets.redis, secrets.redisAdmin])
    expect(await cli(master.privateIp, PORTS.redis, { password }, ["PING"])).toMatch(
      /WRONGPASS|invalid username-password/,
    );
  expect(await redisAs("admin", ["ACL", "LIST"])).toMatch(/^user default off /m);
});

test("every other user can do its job and nothing more", async () => {
  // The replica synced as `replica` (masteruser); that user reads no key.
  expect(await redisAs("admin", ["INFO", "replication"], replica.privateIp)).toMatch(/master_link_status:up/);
  expect(await redisAs("replication", ["GET", "acl:k"])).toMatch(/^NOPERM /);
  // HAProxy's check: INFO replication and PING, nothing else.
  expect(await redisAs("check", ["INFO", "replication"])).toMatch(/role:master/);
  expect(await redisAs("check", ["PING"])).toBe("PONG");
  for (const args of [["GET", "acl:k"], ["ROLE"], ["CONFIG", "GET", "maxmemory"]])
    expect(await redisAs("check", args)).toMatch(/^NOPERM /);
  // The exporter's user: INFO, not a key, not CONFIG GET (it would show masterauth).
  expect(await redisAs("monitoring", ["INFO", "memory"])).toMatch(/maxmemory:/);
  for (const args of [
    ["GET", "acl:k"],
    ["CONFIG", "GET", "masterauth"],
    ["SCAN", "0"],
  ])
    expect(await redisAs("monitoring", args)).toMatch(/^NOPERM /);
  // The node's scripts: CONFIG SET + REWRITE (config-refresh), BGSAVE and LASTSAVE (snapshots).
  expect(await redisAs("admin", ["CONFIG", "SET", "min-replicas-max-lag", "10"])).toBe("OK");
  expect(await redisAs("admin", ["CONFIG", "REWRITE"])).toBe("OK");
  expect(await redisAs("admin", ["LASTSAVE"])).toMatch(/^\d+$/);
});

test("redis_exporter reads Redis and Sentinel as monitor, from its rendered files", async () => {
  const env = readEnvFile(rendered(master.name)["redis-exporter.env"]);
  const passwords = place(master.name, "redis-exporter-passwords.json");
  const listen = `${master.privateIp}:${PORTS.redisExporter}`;
  const exporter = start(
    inImage([
      "env",
      `REDIS_ADDR=${env.REDIS_ADDR}`,
      `REDIS_USER=${env.REDIS_USER}`,
      `REDIS_PASSWORD_FILE=${inside(passwords)}`,
      `REDIS_EXPORTER_WEB_LISTEN_ADDRESS=${listen}`,
      "prometheus-redis-exporter",
    ]),
  );
  try {
    const get = async (p: string) =>
      (
        await run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "5", `http://${listen}${p}`], {
          timeoutMs: 10_000,
        })
      ).stdout;
    const metrics = await waitFor(
      "the exporter's /metrics",
      async () => (/^redis_up 1$/m.test(await get("/metrics")) ? get("/metrics") : false),
      20_000,
      300,
    ).catch((e) => {
      throw new Error(`${(e as Error).message}; the exporter said: ${exporter.output().slice(-1500)}`);
    });
    expect(metrics).toMatch(/^redis_connected_slaves 1$/m);
    const sentinelMetrics = await get(`/scrape?target=redis://127.0.0.1:${PORTS.sentinel}`);
    expect(sentinelMetrics).toMatch(/^redis_up 1$/m);
    expect(sentinelMetrics).toMatch(/^redis_sentinel_masters 1$/m);
  } finally {
    await stop(exporter);
  }
});

test("Sentinel asks for its password, lets monitor only look, and fails over as its `sentinel` user; a rewritten file keeps all of it", async () => {
  const name = topology.clusterName;
  expect(await sentinel(["SENTINEL", "get-master-addr-by-name", name], {})).toMatch(/^NOAUTH /);
  expect(await sentinel(["SENTINEL", "get-master-addr-by-name", name], { password: secrets.redis })).toMatch(
    /WRONGPASS|invalid username-password/,
  );
  expect(
    await sentinel(["SENTINEL", "MASTERS"], { user: REDIS_USERS.monitoring, password: secrets.redisMonitoring }),
  ).toContain(name);
  expect(
    await sentinel(["SENTINEL", "FAILOVER", name], { user: REDIS_USERS.monitoring, password: secrets.redisMonitoring }),
  ).toMatch(/^NOPERM /);
  // Sentinel logged in to the master and to the running replica as `sentinel`: both answer it
  // (flags without s_down or disconnected). It knows the render's third node too (sentinel.conf's
  // known-replica), which runs nothing here and stays down.
  const replicaFlags = async () =>
    (await sentinel(["SENTINEL", "REPLICAS", name]))
      .split(/^name$/m)
      .find((entry) => entry.includes(`\nip\n${replica.privateIp}\n`))
      ?.match(/^flags\n(.*)$/m)?.[1];
  await waitFor(
    "Sentinel to see the master and its replica",
    async () =>
      /^flags\nmaster$/m.test(await sentinel(["SENTINEL", "MASTER", name])) && (await replicaFlags()) === "slave",
    20_000,
    300,
  );
  // A forced failover: SLAVEOF NO ONE and CONFIG REWRITE on the replica, as `sentinel`.
  expect(await sentinel(["SENTINEL", "FAILOVER", name])).toBe("OK");
  await waitFor(
    "the replica promoted",
    async () => /role:master/.test(await redisAs("admin", ["INFO", "replication"], replica.privateIp)),
    30_000,
    300,
  );
  await waitFor(
    "the old master following it, as `replica`",
    async () => /master_link_status:up/.test(await redisAs("admin", ["INFO", "replication"])),
    30_000,
    300,
  );
  expect(await redisAs("admin", ["ACL", "LOG"], replica.privateIp)).not.toMatch(/sentinel/);
  // Sentinel rewrote its file on the failover: started again from it, it still asks for a password.
  await stop(daemons.pop()!);
  expect(fs.readFileSync(path.join(work, master.name, "sentinel.conf"), "utf8")).not.toBe(
    rendered(master.name)["sentinel.conf"],
  );
  startSentinel();
  await waitFor("Sentinel back", async () => (await sentinel(["PING"])) === "PONG", 20_000, 300);
  expect(await sentinel(["PING"], {})).toMatch(/^NOAUTH /);
  expect(
    await sentinel(["SENTINEL", "MASTERS"], { user: REDIS_USERS.monitoring, password: secrets.redisMonitoring }),
  ).toContain(replica.privateIp);
});

test("the node scripts' reading of SENTINEL REPLICAS (sentinel_reachable) on this Sentinel's own answers: a replica counts until it is down", async () => {
  const name = topology.clusterName;
  const lib = path.join(__dirname, "..", "..", "templates", "scripts", "scale-lib.sh");
  // The library's function, fed the answer redis-cli printed (raw, as it prints to a pipe) instead of asking.
  const reachable = async (): Promise<string[]> => {
    const answer = path.join(work, "sentinel-replicas.txt");
    fs.writeFileSync(answer, await sentinel(["SENTINEL", "REPLICAS", name]));
    const r = await run(
      [
        "bash",
        "-c",
        `source "$1"; answer=$2; sentinel_at() { cat "$answer"; }; sentinel_reachable ${master.privateIp} REPLICAS`,
        "-",
        lib,
        answer,
      ],
      { timeoutMs: 10_000 },
    );
    expect(r.code).toBe(0);
    return r.stdout.split("\n").filter(Boolean);
  };
  // After the failover above, the old master is the replica this Sentinel knows.
  await waitFor(
    "Sentinel to list the old master as a replica",
    async () => (await reachable()).includes(master.privateIp),
    30_000,
    500,
  );
  expect(await reachable()).toEqual([master.privateIp]);
  // Its Redis stops: once Sentinel flags it down, the scripts no longer count it.
  await stop(daemons[0]);
  await waitFor(
    "Sentinel to flag the stopped replica down",
    async () => /s_down/.test(await sentinel(["SENTINEL", "REPLICAS", name])),
    30_000,
    500,
  );
  expect(await reachable()).toEqual([]);
});
