/**
 * Authentication and secret handling on a booted 3-node prod cluster, from this machine, which
 * sits in the nodes' private network as an application server would: the Redis URL as printed
 * works through the entry point, Sentinel asks for its password, no membership script shows a
 * password in a node's process list, and only root reaches the metadata address. (That the printed
 * URL writes again after a Redis master kill is tests/local/redis-failover.test.ts's.) The ACL rules
 * command by command are proven on the image's own daemons in tests/daemons/redis-acl.test.ts.
 */
import { spawn, spawnSync } from "node:child_process";
import Redis from "ioredis";
import { METADATA_IP, NFTABLES_TABLE, PORTS, REDIS_USERS, SECRET_NAMES, serverPaths } from "../../core";
import { clusterUrls } from "../../local/cluster";
import { apply } from "../../local/apply";
import { initPid, machineExec } from "../../local/machine";
import { LocalClusterState } from "../../local/state";
import { address, nodeRedisCli, sharedCluster, sleep } from "./harness";
import { SHARED_CLUSTER } from "../support/run-dir";

const loc = SHARED_CLUSTER;
const cluster = sharedCluster({ breaks: false });

/** Debian's redis-cli on this machine, as an application server would run it (a password in REDISCLI_AUTH). */
function redisCli(args: string[], password?: string): string {
  const env = { ...process.env, ...(password ? { REDISCLI_AUTH: password } : {}) };
  const r = spawnSync("redis-cli", ["--no-auth-warning", ...args], { encoding: "utf8", timeout: 10_000, env });
  return (r.stdout + r.stderr).trim();
}

function onNode(
  state: LocalClusterState,
  name: string,
  argv: string[],
): { code: number | null; stdout: string; stderr: string } {
  return machineExec(state.nodes.find((n) => n.name === name)!.machine, argv, { timeoutMs: 20_000 });
}

test("the application's REDIS_URL, as printed, works with redis-cli -u and ioredis through 6379; its user may not administer Redis", async () => {
  const { state, secrets } = cluster();
  const url = clusterUrls(state, secrets).redisUrl;
  expect(url).toBe(`redis://app:${encodeURIComponent(secrets.redis)}@${state.nodes[0].address}:${PORTS.redisMaster}/0`);
  expect(redisCli(["-u", url, "SET", "auth:k", "v"])).toBe("OK");
  expect(redisCli(["-u", url, "GET", "auth:k"])).toBe("v");
  expect(redisCli(["-u", url, "EVAL", "return redis.call('EXPIRE', KEYS[1], 60)", "1", "auth:k"])).toBe("1");
  for (const args of [["CONFIG", "SET", "maxmemory", "1"], ["REPLICAOF", "NO", "ONE"], ["FLUSHALL"], ["ACL", "LIST"]]) {
    expect([args[0], redisCli(["-u", url, ...args])]).toEqual([args[0], expect.stringMatching(/^NOPERM /)]);
  }
  // Today's shape without a user name, and the default user, are refused.
  const noUser = url.replace("redis://app:", "redis://:");
  expect(redisCli(["-u", noUser, "PING"])).toMatch(/WRONGPASS|NOAUTH|invalid username-password/);
  expect(redisCli(["-h", state.nodes[1].address, "-p", String(PORTS.redisMaster), "PING"])).toMatch(/^NOAUTH /);
  // A client library with the same URL, through another node's entry point.
  const client = new Redis(url.replace(state.nodes[0].address, state.nodes[2].address), {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on("error", () => undefined);
  await client.connect();
  try {
    expect(await client.get("auth:k")).toBe("v");
    expect(await client.publish("auth:ch", "x")).toBe(0);
  } finally {
    client.disconnect();
  }
});

test("every Sentinel refuses a client without its password", () => {
  const { state, secrets } = cluster();
  for (const node of state.nodes) {
    const ask = [
      "-h",
      node.address,
      "-p",
      String(PORTS.sentinel),
      "SENTINEL",
      "get-master-addr-by-name",
      state.clusterName,
    ];
    expect([node.name, redisCli(ask)]).toEqual([node.name, expect.stringMatching(/^NOAUTH /)]);
    expect([node.name, redisCli(ask, secrets.redis)]).toEqual([
      node.name,
      expect.stringMatching(/WRONGPASS|invalid username-password/),
    ]);
    expect(redisCli(ask, secrets.sentinel).split("\n")[0]).toBe(address(state, cluster().health.redisMaster!));
  }
});

test("only root reaches the metadata address: the rule is loaded on every node, and a non-root connect is dropped", async () => {
  const { state } = cluster();
  const counter = (name: string) => {
    const r = onNode(state, name, ["nft", "list", "table", "inet", NFTABLES_TABLE]);
    expect(r.code).toBe(0);
    const m = r.stdout.match(/ip daddr 169\.254\.169\.254 meta skuid != 0 counter packets (\d+) bytes \d+ drop/);
    expect(m).not.toBeNull();
    return Number(m![1]);
  };
  for (const node of state.nodes) {
    counter(node.name);
    expect(onNode(state, node.name, ["systemctl", "is-enabled", "nftables"]).stdout.trim()).toBe("enabled");
  }
  // There is no metadata service here: a route to it, as Hetzner's network has, lets a connect
  // leave the node at all, so the rule's effect shows.
  const name = state.nodes[1].name;
  const connect = (asNobody: boolean) => {
    const attempt = ["timeout", "4", "bash", "-c", `exec 3<>/dev/tcp/${METADATA_IP}/80`];
    const argv = asNobody ? ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", ...attempt] : attempt;
    const started = Date.now();
    const r = onNode(state, name, argv);
    return { code: r.code, seconds: (Date.now() - started) / 1000, stderr: r.stderr };
  };
  expect(onNode(state, name, ["ip", "route", "replace", `${METADATA_IP}/32`, "dev", "eth0"]).code).toBe(0);
  try {
    const before = counter(name);
    const nobody = connect(true);
    const afterNobody = counter(name);
    // Dropped: no answer, no error, until the timeout (124); the counter took its SYNs.
    expect([nobody.code, afterNobody > before]).toEqual([124, true]);
    const root = connect(false);
    // Root's packets pass the rule (here nobody answers them: unreachable or a timeout).
    expect(counter(name)).toBe(afterNobody);
    expect(root.code).not.toBe(0);
  } finally {
    onNode(state, name, ["ip", "route", "del", `${METADATA_IP}/32`, "dev", "eth0"]);
  }
});

/**
 * A scanner inside a node: reads every process's command line again and again until its standard
 * input closes, and reports any that holds one of the secrets (sent on its stdin, never argv).
 */
function scanner(state: LocalClusterState, name: string, secrets: string[]) {
  const program = [
    "import os, select, sys",
    "secrets = [l.strip().encode() for l in iter(sys.stdin.readline, 'END\\n')]",
    "scans = 0; leaks = set(); scripts = set()",
    "while not select.select([sys.stdin], [], [], 0)[0]:",
    "    for pid in os.listdir('/proc'):",
    "        if not pid.isdigit(): continue",
    "        try: line = open('/proc/%s/cmdline' % pid, 'rb').read()",
    "        except OSError: continue",
    "        if b'-config-refresh.sh' in line: scripts.add(pid)",
    "        for s in secrets:",
    "            if s in line: leaks.add(line.replace(s, b'<secret>').replace(b'\\0', b' ').decode(errors='replace'))",
    "    scans += 1",
    "print('scans', scans, 'refreshes', len(scripts)); [print('leak', l) for l in sorted(leaks)]",
  ].join("\n");
  const init = initPid(state.nodes.find((n) => n.name === name)!.machine)!;
  const child = spawn("nsenter", ["--target", String(init), "--all", "--", "/usr/bin/python3", "-c", program], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  child.stdin.write(secrets.join("\n") + "\nEND\n");
  const done = new Promise<string>((resolve) => child.on("close", () => resolve(out)));
  return { stop: () => (child.stdin.end(), done) };
}

test("while config-refresh runs on each node (apply), no process on any node has a password on its command line; it restores the rendered Redis users", async () => {
  const { state, secrets } = cluster();
  const values = SECRET_NAMES.map((n) => secrets[n]);
  const scanners = state.nodes.map((n) => ({ name: n.name, scan: scanner(state, n.name, values) }));
  await sleep(500);
  // The control: a process that does carry a password on its command line is seen. The script
  // ends in a builtin so bash forks sleep and keeps its own command line for the two seconds
  // (a lone "sleep 2" would be exec'd, and bash's argv gone before the scanner looks).
  const canary = state.nodes[0].name;
  onNode(state, canary, ["bash", "-c", "sleep 2; :", "canary", secrets.postgresSuperuser]);
  // A user added by hand on one node: the refresh puts the rendered users back, and loads them.
  const tampered = state.nodes[1];
  const aclUsers = () =>
    onNode(
      state,
      tampered.name,
      nodeRedisCli("redis", ["-h", tampered.address, "-p", String(PORTS.redis), "ACL", "USERS"]),
    ).stdout.trim();
  onNode(state, tampered.name, [
    "bash",
    "-c",
    `echo 'user intruder on >not-a-secret ~* +@all' >>${serverPaths().config["redis-users.acl"]}`,
  ]);
  onNode(
    state,
    tampered.name,
    nodeRedisCli("redis", ["-h", tampered.address, "-p", String(PORTS.redis), "ACL", "LOAD"]),
  );
  expect(aclUsers()).toContain("intruder");
  const result = await apply({ ...loc }).catch((e) => e as Error);
  const reports = await Promise.all(scanners.map(async (s) => ({ name: s.name, report: await s.scan.stop() })));
  expect(result).not.toBeInstanceOf(Error);
  expect(aclUsers().split("\n").sort()).toEqual(["default", ...Object.values(REDIS_USERS)].sort());
  for (const { name, report } of reports) {
    const [, scans, refreshes] = report.match(/^scans (\d+) refreshes (\d+)$/m) ?? [];
    // The scanner looked many times, and saw the refresh script run on its node.
    expect([name, Number(scans) > 50, Number(refreshes) > 0]).toEqual([name, true, true]);
    const leaks = report.split("\n").filter((l) => l.startsWith("leak "));
    // The canary is seen on its node (and, at times, the nsenter that starts it, before it execs
    // bash); nothing else, on any node, holds a password.
    expect([name, leaks.filter((l) => !l.endsWith("bash -c sleep 2; : canary <secret> "))]).toEqual([name, []]);
    expect([name, leaks.includes("leak bash -c sleep 2; : canary <secret> ")]).toEqual([name, name === canary]);
  }
}, 600_000);

cluster.handBack();
