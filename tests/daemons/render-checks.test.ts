/**
 * Every rendered file, for 1, 3 and 5 nodes and each failover profile, passes its own daemon's
 * check with the binaries of the node image (Debian 13, the packages of NODE_PACKAGES): each
 * command runs chrooted into the image root, in a private mount namespace (/dev, /proc and the
 * scratch directory bound in; nothing outlives the command), inside a network namespace where the
 * node's production private IP exists. So the host's Debian release does not matter.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ChildProcess, execFileSync } from "node:child_process";
import * as yaml from "js-yaml";
import {
  ClusterTls,
  NODE_FILES,
  PGBOUNCER_LIMIT_NOFILE,
  PORTS,
  PROFILE_NAMES,
  RenderedNode,
  Topology,
  USERS,
  buildTopology,
  caCertificateSpec,
  operatorCertificateSpec,
  readEnvFile,
  serverPaths,
  writtenFiles,
} from "../../core";
import { ensureImage, imageUser } from "../../local/image";
import { certPaths, issueCertificate } from "../../local/tls";
import { fixtureTls, fixtureTlsRoot, renderStack } from "../support/fixtures";
import { mapLimit, run, start, stop, waitFor } from "../support/proc";

jest.setTimeout(240_000);

/** The image root (MADBASE_IMAGE_ROOT skips the cache check, e.g. for a tree built by hand). */
let imageRoot = "";
const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-daemons-"));
/** Where the scratch directory appears inside the image. */
const IN_IMAGE = "/mnt";
const inside = (hostPath: string) => path.posix.join(IN_IMAGE, path.relative(work, hostPath));

/** argv running a program of the image, in network namespace `ns` (when given). */
function inImage(ns: string | undefined, argv: string[]): string[] {
  const enter =
    'r=$1 w=$2; shift 2; mount --rbind /dev "$r/dev" && mount --bind /proc "$r/proc" && mount --rbind /sys "$r/sys" && mount --bind "$w" "$r' +
    IN_IMAGE +
    '" && exec chroot "$r" "$@"';
  const inner = ["unshare", "--mount", "--propagation", "private", "sh", "-c", enter, "sh", imageRoot, work, ...argv];
  return ns ? ["ip", "netns", "exec", ns, ...inner] : inner;
}

/**
 * One network namespace per node (rc…), each holding its production private IP, joined by a
 * bridge in a hub namespace so etcd forms a cluster. Names start with "rc" (this test's own).
 */
interface Net {
  hub: string;
  namespaces: Record<string, string>;
}
const ipCmd = (args: string[]) => execFileSync("ip", args, { encoding: "utf8" });
function createNet(id: string, topology: Topology): Net {
  destroyNet(id);
  const hub = `${id}-hub`;
  ipCmd(["netns", "add", hub]);
  ipCmd(["-n", hub, "link", "add", "br0", "type", "bridge"]);
  ipCmd(["-n", hub, "link", "set", "br0", "up"]);
  const namespaces: Record<string, string> = {};
  topology.nodes.forEach((node, i) => {
    const ns = `${id}-${i}`;
    ipCmd(["netns", "add", ns]);
    ipCmd(["-n", ns, "link", "set", "lo", "up"]);
    ipCmd(["-n", hub, "link", "add", `v${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    ipCmd(["-n", hub, "link", "set", `v${i}`, "master", "br0", "up"]);
    ipCmd(["-n", ns, "addr", "add", `${node.privateIp}/${topology.subnetPrefix}`, "dev", "eth0"]);
    ipCmd(["-n", ns, "link", "set", "eth0", "up"]);
    namespaces[node.name] = ns;
  });
  return { hub, namespaces };
}
function destroyNet(id: string): void {
  for (const line of ipCmd(["netns", "list"]).split("\n")) {
    const name = line.split(" ")[0];
    if (name && name.startsWith(`${id}-`)) ipCmd(["netns", "del", name]);
  }
}

type Check = (ns: string, file: string, scratch: string) => Promise<{ ok: boolean; detail: string }>;

/**
 * An exporter's environment file, read the way Debian's init script reads it (the shell sources
 * it) and started with `$ARGS`. It passes when the exporter serves /metrics at the address the file
 * names (the node's private one) and the answer holds `expect`. `overrides` replace variables after
 * the file is read (paths that only exist on a server).
 */
function exporterCheck(
  program: string,
  listenVar: (env: Record<string, string>) => string,
  expect: RegExp,
  overrides: (scratch: string) => Record<string, string> = () => ({}),
): Check {
  return async (ns, file, scratch) => {
    const listen = listenVar(readEnvFile(fs.readFileSync(file, "utf8")));
    const extra = Object.entries(overrides(scratch)).map(([k, v]) => `${k}=${v}`);
    const script = 'set -a; . "$0"; set +a; for kv in "$@"; do export "$kv"; done; exec $PROGRAM $ARGS';
    const proc = start(
      inImage(ns, [
        "env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        `PROGRAM=${program}`,
        "sh",
        "-c",
        script,
        inside(file),
        ...extra,
      ]),
    );
    try {
      const body = await waitFor(
        `${program} on ${listen}`,
        async () => {
          // An exporter that refused its configuration has exited: no need to wait any longer.
          if (proc.exitCode !== null || proc.signalCode !== null) return `EXITED (${proc.exitCode ?? proc.signalCode})`;
          const r = await run(inImage(ns, ["curl", "-sf", "-m", "2", `http://${listen}/metrics`]), { timeoutMs: 5000 });
          return r.code === 0 ? r.stdout : undefined;
        },
        10_000,
        250,
      ).catch((e: Error) => `FAILED: ${e.message}`);
      // Bound to the private address only: a wildcard listener would answer on loopback too.
      const port = listen.slice(listen.lastIndexOf(":") + 1);
      // (The passwords-file check listens on loopback on purpose: nothing to tell apart there.)
      const onLoopback = listen.startsWith("127.");
      const loopback = onLoopback
        ? { code: 1 }
        : await run(inImage(ns, ["curl", "-sf", "-m", "2", "-o", "/dev/null", `http://127.0.0.1:${port}/metrics`]), {
            timeoutMs: 5000,
          });
      return {
        ok: expect.test(body) && loopback.code !== 0,
        detail: `${body.slice(0, 300)}\n${loopback.code === 0 ? `also answers on 127.0.0.1:${port}\n` : ""}${proc.output()}`,
      };
    } finally {
      await stop(proc);
    }
  };
}

/**
 * PgBouncer on a rendered pgbouncer.ini and userlist (copies in scratch space, the ini's auth_file
 * pointed at the copy), run as postgres with the unit's descriptor limit, in the node's namespace.
 * It passes when PgBouncer starts without a warning, listens on the node's private address, and
 * lets the exporter's role read the admin console with the exporter's password: proof of the
 * userlist and of stats_users; over TLS verified against the cluster CA (the node's certificate,
 * naming that address), while the same login without TLS is refused; `during` (the exporter's
 * check) runs while it listens. PostgreSQL does not run here, so the server side's TLS
 * (verify-full towards the node's PostgreSQL) is the end-to-end tests' (tests/local/tls.test.ts).
 * One PgBouncer at a time per namespace (one port).
 */
const pgbouncerTurns = new Map<string, Promise<unknown>>();
function pgbouncerCheck(
  ns: string,
  ini: string,
  userlist: string,
  exporterEnv: string,
  scratch: string,
  during?: () => Promise<{ ok: boolean; detail: string }>,
): Promise<{ ok: boolean; detail: string }> {
  const turn = (pgbouncerTurns.get(ns) ?? Promise.resolve()).then(() =>
    runPgbouncer(ns, ini, userlist, exporterEnv, scratch, during),
  );
  pgbouncerTurns.set(
    ns,
    turn.catch(() => undefined),
  );
  return turn;
}
async function runPgbouncer(
  ns: string,
  ini: string,
  userlist: string,
  exporterEnv: string,
  scratch: string,
  during?: () => Promise<{ ok: boolean; detail: string }>,
) {
  fs.chmodSync(scratch, 0o755);
  const iniCopy = path.join(scratch, "pgbouncer.ini");
  const listCopy = path.join(scratch, "userlist.txt");
  fs.copyFileSync(userlist, listCopy);
  // The node's certificate files (its TLS to clients and to PostgreSQL): the fixture's pair of the
  // node the ini was rendered for, copied into scratch space, the ini's paths pointed at the copies.
  const original = fs.readFileSync(ini, "utf8");
  const nodeName = /^; PgBouncer for (\S+)/m.exec(original)?.[1] ?? "";
  const pair = fixtureTls().nodes[nodeName];
  if (!pair) throw new Error(`no fixture certificate for the node of ${ini} ("${nodeName}")`);
  const pem = { caCert: fixtureTls().caCert, cert: pair.cert, key: pair.key };
  const tlsCopy = { caCert: "", cert: "", key: "" };
  let iniText = original.replace(/^auth_file = .*$/m, `auth_file = ${inside(listCopy)}`);
  for (const k of ["caCert", "cert", "key"] as const) {
    tlsCopy[k] = path.join(scratch, `pgbouncer-${k}.pem`);
    fs.writeFileSync(tlsCopy[k], pem[k]);
    iniText = iniText.split(serverPaths().tls[k]).join(inside(tlsCopy[k]));
  }
  fs.writeFileSync(iniCopy, iniText);
  for (const f of [iniCopy, listCopy, ...Object.values(tlsCopy)]) fs.chmodSync(f, 0o644);
  const text = fs.readFileSync(iniCopy, "utf8");
  const address = /^listen_addr = ([^,\s]+)/m.exec(text)?.[1] ?? "";
  const port = /^listen_port = (\d+)/m.exec(text)?.[1] ?? "";
  const password = readEnvFile(fs.readFileSync(exporterEnv, "utf8")).PGPASSWORD;
  const limit = `ulimit -n ${PGBOUNCER_LIMIT_NOFILE}`;
  const proc = start(
    inImage(ns, [
      "sh",
      "-c",
      `${limit} && exec runuser -u postgres -- sh -c '${limit} && exec pgbouncer "$0"' "$0"`,
      inside(iniCopy),
    ]),
  );
  const closed = new Promise<void>((resolve) => proc.once("close", () => resolve()));
  /** psql on PgBouncer's admin console as the exporter logs in (its password in the environment, not argv). */
  const adminConsole = (libpq: Record<string, string>, sql: string) =>
    run(inImage(ns, ["psql", "-h", address, "-p", port, "-U", USERS.monitoring, "-d", "pgbouncer", "-Atc", sql]), {
      timeoutMs: 5000,
      env: { ...process.env, PGPASSWORD: password, ...libpq },
    });
  try {
    const console = await waitFor(
      `pgbouncer on ${address}:${port}`,
      async () => {
        if (proc.exitCode !== null || proc.signalCode !== null) return `EXITED (${proc.exitCode ?? proc.signalCode})`;
        // TLS, checking that the certificate PgBouncer presents is the CA's and names the address.
        const r = await adminConsole(
          { PGSSLMODE: "verify-full", PGSSLROOTCERT: inside(tlsCopy.caCert) },
          "SHOW CONFIG",
        );
        return r.code === 0
          ? r.stdout
          : /authentication failed|not allowed|no such user/.test(r.stderr)
            ? `REFUSED: ${r.stderr}`
            : undefined;
      },
      10_000,
      250,
    ).catch((e: Error) => `FAILED: ${e.message}`);
    const served = /^pool_mode\|/m.test(console);
    // The same login without TLS: PgBouncer must turn it away before any password is asked for.
    const plain = served
      ? await adminConsole({ PGSSLMODE: "disable" }, "SHOW VERSION")
      : { code: 0, stdout: "", stderr: "" };
    const plainRefused = plain.code !== 0 && /SSL required/.test(plain.stderr);
    const also = during && served ? await during() : { ok: true, detail: "" };
    // Its whole log, up to its exit: what it logs as a client goes (the exporter, just stopped) may
    // not have been written yet.
    await stop(proc);
    await closed;
    const log = proc.output();
    // Warnings PgBouncer logs for what this check does to it, not for its configuration: the plain
    // client it refused ("pooler error: SSL required"), and the exporter, stopped above, closing its
    // TLS connection without a close_notify ("unexpected eof while reading").
    const expected = /pooler error: SSL required$|tls_sbufio_recv: read failed: .*unexpected eof while reading$/;
    // Complete lines only: PgBouncer stopping may leave its last line cut off mid-word (CI saw
    // "unexpected eof while read"), which says nothing about its configuration.
    const lines = log.split("\n");
    if (!log.endsWith("\n")) lines.pop();
    const unexpected = lines.filter((l) => /WARNING|ERROR|FATAL/.test(l) && !expected.test(l));
    return {
      ok: served && plainRefused && unexpected.length === 0 && also.ok,
      // PgBouncer's own log last: a failure report keeps the end of this.
      detail: [
        console.slice(0, 300),
        also.detail.slice(-400),
        `plain client: ${plainRefused ? "refused" : `NOT refused: exit ${plain.code} ${plain.stdout}${plain.stderr}`}`,
        unexpected.length ? `unexpected in the log:\n${unexpected.join("\n")}` : log.slice(-300),
      ].join("\n"),
    };
  } finally {
    await stop(proc);
  }
}

/**
 * Where the passwords-file check's Redis exporter listens: not the exporter's own port, because the
 * redis-exporter.env check may run at the same time in the same namespace and asserts that nothing
 * answers on 127.0.0.1:PORTS.redisExporter.
 */
const PASSWORDS_CHECK_PORT = PORTS.redisExporter + 1000;

/** One check per file: each passes on a good file and fails on a broken one (see the controls below). */
const CHECKS: Record<(typeof NODE_FILES)[number], Check> = {
  // HAProxy loads the CA file its Patroni checks verify with: the fixture CA, in scratch space.
  // The CA (Patroni checks) and the node's pair (the Redis TLS port): the fixture's, in scratch space.
  "haproxy.cfg": async (ns, file, scratch) => {
    let text = fs.readFileSync(file, "utf8");
    const node = /^# HAProxy for (\S+)/m.exec(text)?.[1] ?? "";
    const pair = fixtureTls().nodes[node];
    const pem = { caCert: fixtureTls().caCert, cert: pair?.cert ?? "", key: pair?.key ?? "" };
    for (const k of ["caCert", "cert", "key"] as const) {
      const copy = path.join(scratch, `haproxy-${k}.pem`);
      fs.writeFileSync(copy, pem[k]);
      text = text.split(serverPaths().tls[k]).join(inside(copy));
    }
    const copy = path.join(scratch, "haproxy.cfg");
    fs.writeFileSync(copy, text);
    const r = await run(inImage(ns, ["haproxy", "-c", "-f", inside(copy)]), { timeoutMs: 20_000 });
    // HAProxy 3.0 says nothing about a valid file; a bad one exits non-zero with an ALERT.
    return {
      ok: r.code === 0 && !/\[ALERT\]/.test(r.stdout + r.stderr),
      detail: `exit ${r.code}: ${r.stdout}${r.stderr}`,
    };
  },
  "patroni.yml": async (ns, file) => {
    const r = await run(inImage(ns, ["/usr/bin/patroni", "--validate-config", inside(file)]), { timeoutMs: 30_000 });
    return { ok: r.code === 0, detail: r.stdout + r.stderr };
  },
  // Redis has no check flag: a file that parses keeps the server running until the timeout (124).
  // Its aclfile (checked on its own below) is an empty one here: Redis refuses to start without it.
  "redis.conf": async (ns, file, scratch) => {
    const acl = path.join(scratch, "users.acl");
    fs.writeFileSync(acl, "");
    const r = await run(
      inImage(ns, [
        "timeout",
        "1",
        "redis-server",
        inside(file),
        "--port",
        "0",
        "--unixsocket",
        inside(path.join(scratch, "redis.sock")),
        "--dir",
        inside(scratch),
        "--save",
        "",
        "--aclfile",
        inside(acl),
      ]),
      { timeoutMs: 20_000 },
    );
    return { ok: r.code === 124 && !/FATAL CONFIG FILE ERROR/.test(r.stdout), detail: r.stdout + r.stderr };
  },
  // A Redis that loads the file as its aclfile keeps running; a bad user line aborts its start.
  "redis-users.acl": async (ns, file, scratch) => {
    const sock = inside(path.join(scratch, "redis.sock"));
    const r = await run(
      inImage(ns, [
        "timeout",
        "1",
        "redis-server",
        "--port",
        "0",
        "--unixsocket",
        sock,
        "--dir",
        inside(scratch),
        "--save",
        "",
        "--aclfile",
        inside(file),
      ]),
      {
        timeoutMs: 20_000,
      },
    );
    return {
      ok: r.code === 124 && !/ACL errors|Error in user declaration/.test(r.stdout),
      detail: r.stdout + r.stderr,
    };
  },
  // Sentinel rewrites its file, so it checks a writable copy; it exits 1 on a bad statement.
  "sentinel.conf": async (ns, file, scratch) => {
    const copy = path.join(scratch, "sentinel.conf");
    fs.copyFileSync(file, copy);
    const r = await run(inImage(ns, ["timeout", "1", "redis-sentinel", inside(copy), "--dir", inside(scratch)]), {
      timeoutMs: 20_000,
    });
    return { ok: r.code === 124 && !/FATAL CONFIG FILE ERROR/.test(r.stdout), detail: r.stdout + r.stderr };
  },
  "user-data.yaml": async (_ns, file) => {
    const r = await run(inImage(undefined, ["cloud-init", "schema", "-c", inside(file)]), { timeoutMs: 60_000 });
    // cloud-init 25 says "Valid schema <file>" (22.x said "Valid cloud-config").
    return { ok: r.code === 0 && /Valid (schema|cloud-config)/.test(r.stdout), detail: r.stdout + r.stderr };
  },
  // `help` loads the file and validates every option in it without touching the repository (a
  // real command would try the bucket, which this namespace cannot reach).
  "pgbackrest.conf": async (ns, file) => {
    const results = await Promise.all(
      ["backup", "archive-push"].map((command) =>
        run(
          inImage(ns, [
            "pgbackrest",
            `--config=${inside(file)}`,
            "--stanza=madbase-prod",
            "--log-level-console=warn",
            "--log-level-file=off",
            "help",
            command,
          ]),
          {
            timeoutMs: 20_000,
          },
        ),
      ),
    );
    const text = results.map((r) => r.stdout + r.stderr).join("\n");
    // pgBackRest 2.55 prefixes its warnings with the process ("P00   WARN: ...").
    return { ok: results.every((r) => r.code === 0) && !/^(P\d+\s+)?(WARN|ERROR):/m.test(text), detail: text };
  },
  // etcd.conf is proven by the running cluster itself (below).
  "etcd.conf": async () => ({ ok: true, detail: "started as a cluster" }),
  "node-exporter.env": exporterCheck(
    "prometheus-node-exporter",
    (env) => env.ARGS.replace(/^.*--web\.listen-address=(\S+).*$/, "$1"),
    /^node_cpu_seconds_total\{/m,
  ),
  // No PostgreSQL runs here: the exporter still serves, and says so with pg_up 0.
  "postgres-exporter.env": exporterCheck(
    "prometheus-postgres-exporter",
    (env) => env.ARGS.replace(/^.*--web\.listen-address=(\S+).*$/, "$1"),
    /^pg_up 0$/m,
  ),
  "redis-exporter.env": exporterCheck(
    "prometheus-redis-exporter",
    (env) => env.REDIS_EXPORTER_WEB_LISTEN_ADDRESS,
    /^redis_up 0$/m,
    (scratch) => {
      const passwords = path.join(scratch, "passwords.json");
      fs.writeFileSync(passwords, "{}");
      return { REDIS_PASSWORD_FILE: inside(passwords) };
    },
  ),
  "pgbouncer.ini": (ns, file, scratch) =>
    pgbouncerCheck(ns, file, sibling(file, "pgbouncer-userlist.txt"), sibling(file, "pgbouncer-exporter.env"), scratch),
  "pgbouncer-userlist.txt": (ns, file, scratch) =>
    pgbouncerCheck(ns, sibling(file, "pgbouncer.ini"), file, sibling(file, "pgbouncer-exporter.env"), scratch),
  // The exporter exits when PgBouncer does not answer at its start: checked against the node's
  // PgBouncer, it must read the admin console (pgbouncer_up 1).
  "pgbouncer-exporter.env": (ns, file, scratch) =>
    pgbouncerCheck(ns, sibling(file, "pgbouncer.ini"), sibling(file, "pgbouncer-userlist.txt"), file, scratch, () =>
      exporterCheck(
        "prometheus-pgbouncer-exporter",
        (env) => env.ARGS.replace(/^.*--web\.listen-address=(\S+).*$/, "$1"),
        /^pgbouncer_up 1$/m,
      )(ns, file, scratch),
    ),
  // The Redis exporter loads the file at start and refuses to run on one it cannot read.
  "redis-exporter-passwords.json": async (ns, file, scratch) => {
    const env = path.join(scratch, "redis-exporter.env");
    fs.writeFileSync(
      env,
      `REDIS_ADDR='redis://127.0.0.1:${PORTS.redis}'\nREDIS_PASSWORD_FILE='${inside(file)}'\nREDIS_EXPORTER_WEB_LISTEN_ADDRESS='127.0.0.1:${PASSWORDS_CHECK_PORT}'\n`,
    );
    return exporterCheck("prometheus-redis-exporter", (e) => e.REDIS_EXPORTER_WEB_LISTEN_ADDRESS, /^redis_up 0$/m)(
      ns,
      env,
      scratch,
    );
  },
};

const PROFILE_INDEPENDENT: readonly string[] = [
  "node-exporter.env",
  "postgres-exporter.env",
  "redis-exporter.env",
  "redis-exporter-passwords.json",
  "redis-users.acl",
  "pgbouncer.ini",
  "pgbouncer-userlist.txt",
  "pgbouncer-exporter.env",
];

/** A file rendered for the same node (the broken copies of the controls sit beside no other file). */
function sibling(file: string, name: string): string {
  const beside = path.join(path.dirname(file), name);
  return fs.existsSync(beside) ? beside : path.join(work, "3", "norm", "madbase-prod-2", name);
}

interface NodeRun {
  id: string;
  etcd: ChildProcess[];
}

const running: NodeRun[] = [];

beforeAll(async () => {
  imageRoot =
    process.env.MADBASE_IMAGE_ROOT ||
    (await ensureImage({ onProgress: (line) => process.stderr.write(`image: ${line}\n`) }));
  // Files in the scratch directory are read inside the image by daemon users (redis, postgres).
  fs.chmodSync(work, 0o755);
}, 900_000);

afterAll(async () => {
  for (const r of running) {
    await Promise.all(r.etcd.map((p) => stop(p)));
    destroyNet(r.id);
  }
  fs.rmSync(work, { recursive: true, force: true });
});

function writeRender(dir: string, files: Record<string, RenderedNode>): void {
  for (const [node, rendered] of Object.entries(files)) {
    fs.mkdirSync(path.join(dir, node), { recursive: true });
    for (const [name, content] of Object.entries(rendered)) fs.writeFileSync(path.join(dir, node, name), content);
  }
}

/** A pair of certificate files in the scratch directory, as etcdctl flags (paths inside the image). */
function certFlags(dir: string, pair: { ca: string; cert: string; key: string }): string[] {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, pem] of Object.entries(pair)) fs.writeFileSync(path.join(dir, name), pem, { mode: 0o600 });
  return [
    `--cacert=${inside(path.join(dir, "ca"))}`,
    `--cert=${inside(path.join(dir, "cert"))}`,
    `--key=${inside(path.join(dir, "key"))}`,
  ];
}

/** The operator's pair of the fixture certificates (local/tls.ts): etcd's client port takes nothing else. */
let operatorFlags: string[] = [];

/**
 * Starts every node's etcd from its etcd.conf (the data dir and the certificate files moved to
 * scratch space; the certificates are the fixture's, made by the local runner's generator).
 */
async function startEtcd(
  net: Net,
  topology: Topology,
  files: Record<string, RenderedNode>,
  dir: string,
  tls: ClusterTls,
): Promise<ChildProcess[]> {
  const procs = topology.nodes.map((node) => {
    const env = readEnvFile(files[node.name]["etcd.conf"]);
    env.ETCD_DATA_DIR = inside(path.join(dir, node.name, "etcd-data"));
    const pem = path.join(dir, node.name, "tls");
    const [ca, cert, key] = certFlags(pem, { ca: tls.caCert, ...tls.nodes[node.name] }).map((f) =>
      f.replace(/^--\w+=/, ""),
    );
    Object.assign(env, {
      ETCD_TRUSTED_CA_FILE: ca,
      ETCD_PEER_TRUSTED_CA_FILE: ca,
      ETCD_CERT_FILE: cert,
      ETCD_PEER_CERT_FILE: cert,
      ETCD_KEY_FILE: key,
      ETCD_PEER_KEY_FILE: key,
    });
    const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    return start(inImage(net.namespaces[node.name], ["env", "-i", "PATH=/usr/bin:/bin", ...vars, "etcd"]));
  });
  const first = net.namespaces[topology.nodes[0].name];
  await waitFor(
    `etcd cluster of ${topology.nodeCount}`,
    async () => {
      const r = await run(
        inImage(first, [
          "etcdctl",
          ...operatorFlags,
          `--endpoints=https://${topology.nodes[0].privateIp}:2379`,
          "endpoint",
          "health",
          "--cluster",
        ]),
        {
          timeoutMs: 10_000,
        },
      );
      return r.code === 0 && (r.stdout + r.stderr).split("is healthy").length - 1 === topology.nodeCount;
    },
    60_000,
    500,
  );
  return procs;
}

describe.each([1, 3, 5])("rendered files for %i node(s)", (nodeCount) => {
  let topology: Topology;
  let net: Net;
  let tls: ClusterTls;
  const rendered: Record<string, Record<string, RenderedNode>> = {};

  beforeAll(async () => {
    for (const profile of PROFILE_NAMES) {
      const r = renderStack({ nodeCount, profile });
      topology = r.topology;
      tls = r.tls;
      rendered[profile] = r.files;
      writeRender(path.join(work, `${nodeCount}`, profile), r.files);
    }
    // Unique per run: two runs at once must not remove each other's namespaces.
    const id = `rc${nodeCount}${(process.pid % 46656).toString(36).padStart(3, "0")}`;
    net = createNet(id, topology);
    const run: NodeRun = { id, etcd: [] };
    running.push(run);
    const root = fixtureTlsRoot();
    operatorFlags = certFlags(path.join(work, `${nodeCount}`, "operator"), {
      ca: fs.readFileSync(certPaths(root, "ca").cert, "utf8"),
      cert: fs.readFileSync(certPaths(root, "operator").cert, "utf8"),
      key: fs.readFileSync(certPaths(root, "operator").key, "utf8"),
    });
    run.etcd = await startEtcd(net, topology, rendered.norm, path.join(work, `${nodeCount}`), tls);
  });

  it("etcd forms a cluster from every node's etcd.conf, over TLS between peers", async () => {
    const first = net.namespaces[topology.nodes[0].name];
    const r = await run(
      inImage(first, [
        "etcdctl",
        ...operatorFlags,
        `--endpoints=https://${topology.nodes[0].privateIp}:2379`,
        "member",
        "list",
      ]),
      { timeoutMs: 10_000 },
    );
    const members = r.stdout.trim().split("\n");
    expect(members).toHaveLength(nodeCount);
    for (const node of topology.nodes)
      expect(r.stdout).toContain(`${node.name}, https://${node.privateIp}:2380, https://${node.privateIp}:2379`);
  });

  it("etcd serves only clients with a certificate of the cluster's CA", async () => {
    const first = net.namespaces[topology.nodes[0].name];
    const endpoint = `--endpoints=https://${topology.nodes[0].privateIp}:2379`;
    const put = (flags: string[]) =>
      run(
        inImage(first, [
          "etcdctl",
          ...flags,
          endpoint,
          "--dial-timeout=2s",
          "--command-timeout=3s",
          "put",
          "/probe",
          "x",
        ]),
        { timeoutMs: 15_000 },
      );
    // A pair from another CA (its own, made the same way), trusted CA still the cluster's.
    const otherRoot = path.join(work, `${nodeCount}`, "other-ca");
    issueCertificate(caCertificateSpec({ clusterName: "someone-else" }), certPaths(otherRoot, "ca"));
    issueCertificate(
      operatorCertificateSpec({ clusterName: "someone-else" }),
      certPaths(otherRoot, "operator"),
      certPaths(otherRoot, "ca"),
    );
    const foreign = certFlags(path.join(otherRoot, "flags"), {
      ca: tls.caCert,
      cert: fs.readFileSync(certPaths(otherRoot, "operator").cert, "utf8"),
      key: fs.readFileSync(certPaths(otherRoot, "operator").key, "utf8"),
    });
    const [noCert, otherCa, plain, ours] = [
      await put([operatorFlags[0]]),
      await put(foreign),
      await run(inImage(first, ["curl", "-s", "-m", "3", `http://${topology.nodes[0].privateIp}:2379/version`]), {
        timeoutMs: 10_000,
      }),
      await put(operatorFlags),
    ];
    expect(noCert.code).not.toBe(0);
    expect(otherCa.code).not.toBe(0);
    expect(plain.stdout).not.toContain("etcdserver");
    expect({ code: ours.code, out: ours.stdout.trim() }).toEqual({ code: 0, out: "OK" });
    // Metrics stay plain HTTP, on their own port, without a key in sight.
    const metrics = await run(
      inImage(first, ["curl", "-sf", "-m", "3", `http://${topology.nodes[0].privateIp}:${PORTS.etcdMetrics}/health`]),
      { timeoutMs: 10_000 },
    );
    expect(metrics.stdout).toContain('"health":"true"');
  });

  it.each(PROFILE_NAMES)("every file passes its daemon's check (profile %s)", async (profile) => {
    // The exporters' files do not depend on the failover profile: starting them once per node is enough.
    const files = NODE_FILES.filter((f) => profile === "norm" || !PROFILE_INDEPENDENT.includes(f));
    const jobs = topology.nodes.flatMap((node) => files.map((file) => ({ node: node.name, file })));
    const failures = (
      await mapLimit(jobs, 2, async ({ node, file }) => {
        const scratch = fs.mkdtempSync(path.join(work, "scratch-"));
        const result = await CHECKS[file](
          net.namespaces[node],
          path.join(work, `${nodeCount}`, profile, node, file),
          scratch,
        );
        return result.ok ? undefined : `${node}/${file}: ${result.detail.slice(-800)}`;
      })
    ).filter(Boolean);
    expect(failures).toEqual([]);
  });

  if (nodeCount === 3) {
    it.each<[(typeof NODE_FILES)[number], (text: string) => string]>([
      ["haproxy.cfg", (t) => t.replace("balance first", "balance fastest")],
      ["patroni.yml", (t) => t.replace("loop_wait: 5", "loop_wait: soon")],
      ["redis.conf", (t) => t.replace("maxmemory-policy noeviction", "maxmemory-policy forget-everything")],
      ["sentinel.conf", (t) => t.replace("sentinel parallel-syncs", "sentinel parallel-sinks")],
      ["redis-users.acl", (t) => t.replace("-@admin", "-@admins")],
      ["user-data.yaml", (t) => t.replace("package_update: true", "package_update: [1, 2]")],
      ["pgbackrest.conf", (t) => t.replace("repo1-type=s3", "repo1-type=s3\nrepo1-kind=bucket")],
      ["node-exporter.env", (t) => t.replace("--web.listen-address=", "--web.listen-adress=")],
      ["postgres-exporter.env", (t) => t.replace("--web.listen-address=", "--web.listen-adress=")],
      [
        "redis-exporter.env",
        (t) =>
          t.replace(
            /^REDIS_EXPORTER_WEB_LISTEN_ADDRESS='[^']*'/m,
            "REDIS_EXPORTER_WEB_LISTEN_ADDRESS='10.42.1.10:9121'",
          ),
      ],
      ["redis-exporter-passwords.json", (t) => t.replace(/ }\s*$/, "\n")],
      ["pgbouncer.ini", (t) => t.replace(/^pool_mode = .*$/m, "pool_mode = statement-ish")],
      // A PgBouncer that still serves plain-text clients fails the check too.
      ["pgbouncer.ini", (t) => t.replace(/^client_tls_sslmode = .*$/m, "client_tls_sslmode = prefer")],
      ["pgbouncer-userlist.txt", (t) => t.replace(/^"monitor" "/m, '"monitor" "x')],
      ["pgbouncer-exporter.env", (t) => t.replace("--web.listen-address=", "--web.listen-adress=")],
    ])("the %s check catches a broken file", async (file, breakIt) => {
      const node = topology.nodes[1].name;
      const broken = path.join(work, `broken-${file}`);
      fs.writeFileSync(broken, breakIt(rendered.norm[node][file]));
      expect(fs.readFileSync(broken, "utf8")).not.toBe(rendered.norm[node][file]);
      const scratch = fs.mkdtempSync(path.join(work, "scratch-"));
      const result = await CHECKS[file](net.namespaces[node], broken, scratch);
      expect(result.ok).toBe(false);
    });
  }
});

test("the user data's file bundle unpacks with the image's tar as the first boot does: every file, its content, its owner by name, its mode", async () => {
  const userData = renderStack({ nodeCount: 3 }).files["madbase-prod-2"]["user-data.yaml"];
  const bundle = (yaml.load(userData) as { write_files: { path: string; content: string }[] }).write_files.find(
    (f) => f.path === serverPaths().fileBundle,
  )!;
  const scratch = fs.mkdtempSync(path.join(work, "bundle-"));
  fs.writeFileSync(path.join(scratch, "bundle.tar.br"), Buffer.from(bundle.content, "base64"));
  fs.mkdirSync(path.join(scratch, "root"));
  // The flags of the first boot's unpack command (the render tests pin that command), into a scratch root.
  const unpack = `tar -I brotli -xpf ${inside(path.join(scratch, "bundle.tar.br"))} --same-owner --touch -C ${inside(path.join(scratch, "root"))}`;
  const list = `find ${inside(path.join(scratch, "root"))} -type f -printf '/%P %u:%g %m\\n'`;
  const r = await run(inImage(undefined, ["sh", "-ec", `${unpack} && ${list}`]), { timeoutMs: 30_000 });
  expect(r.stderr).toBe("");
  const landed = Object.fromEntries(
    r.stdout
      .trim()
      .split("\n")
      .map((l) => [l.split(" ")[0], l.split(" ").slice(1).join(" ")]),
  );
  const expected = writtenFiles(userData).filter((f) => f.defer);
  expect(Object.keys(landed).sort()).toEqual(expected.map((f) => f.path).sort());
  for (const f of expected) {
    // The owners resolve by name to the image's own users (postgres is not root).
    expect([f.path, landed[f.path]]).toEqual([f.path, `${f.owner} ${Number.parseInt(f.permissions!, 8).toString(8)}`]);
    expect(fs.readFileSync(path.join(scratch, "root", f.path), "utf8")).toBe(f.content);
  }
  const uid = (name: string) => fs.statSync(path.join(scratch, "root", name)).uid;
  expect(uid("/etc/patroni/config.yml")).toBe(imageUser(imageRoot, "postgres").uid);
});

test("the image's Python (Patroni's REST server with verify_client required) accepts the cluster's certificates: the operator's and a member's as clients, a node's as the server", async () => {
  const root = fixtureTlsRoot();
  fixtureTls();
  const dir = path.join(work, "python-tls");
  fs.mkdirSync(dir, { recursive: true });
  const script = path.join(dir, "tls_handshake.py");
  fs.copyFileSync(path.resolve(__dirname, "..", "support", "tls_handshake.py"), script);
  const copy = (id: string) => {
    const p = certPaths(root, id);
    for (const f of [p.cert, p.key]) fs.copyFileSync(f, path.join(dir, path.basename(f)));
    return { cert: inside(path.join(dir, path.basename(p.cert))), key: inside(path.join(dir, path.basename(p.key))) };
  };
  const ca = copy("ca").cert;
  // fixtureTls's topology: 7 prod nodes in 10.42.1.0/24.
  const [server, member] = buildTopology({ stack: "prod", nodeCount: 7, subnetCidr: "10.42.1.0/24" }).nodes;
  const serverPair = copy(server.name);
  for (const client of [copy("operator"), copy(member.name)]) {
    const r = await run(
      inImage(undefined, [
        "python3",
        inside(script),
        ca,
        serverPair.cert,
        serverPair.key,
        server.privateIp,
        client.cert,
        client.key,
      ]),
      { timeoutMs: 20_000 },
    );
    expect([r.code, r.stdout.trim(), r.stderr.trim()]).toEqual([0, "ok", ""]);
  }
});
