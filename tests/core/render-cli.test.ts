/** `npm run render`: what it writes, what it prints, and how it refuses bad input. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";

const root = path.resolve(__dirname, "..", "..");
const tsx = path.join(root, "node_modules", ".bin", "tsx");

function render(args: string[]) {
  const r = spawnSync(tsx, [path.join(root, "cli", "render.ts"), ...args], {
    cwd: root,
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The layout the README documents for a render directory's node folder. */
const DAEMON_FILES = [
  "etcd.conf",
  "haproxy.cfg",
  "patroni.yml",
  "pgbackrest.conf",
  "pgbouncer-userlist.txt",
  "pgbouncer.ini",
  "redis-users.acl",
  "redis.conf",
  "sentinel.conf",
  "user-data.yaml",
];
const EXPORTER_FILES = [
  "node-exporter.env",
  "pgbouncer-exporter.env",
  "postgres-exporter.env",
  "redis-exporter-passwords.json",
  "redis-exporter.env",
];

describe("npm run render", () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-render-"));
  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

  it("writes exactly the documented files per node, the exporters' in a folder of their own, and says what it wrote", () => {
    const r = render(["--stack", "prod", "--nodes", "5", "--profile", "fast", "--out", out]);
    expect(r.code).toBe(0);
    const nodes = fs
      .readdirSync(out)
      .filter((f) => fs.statSync(path.join(out, f)).isDirectory())
      .sort();
    expect(nodes).toEqual([1, 2, 3, 4, 5].map((i) => `madbase-prod-${i}`));
    for (const node of nodes) {
      const files = fs.readdirSync(path.join(out, node)).filter((f) => fs.statSync(path.join(out, node, f)).isFile());
      expect(files.sort()).toEqual(DAEMON_FILES);
      const exporters = fs.readdirSync(path.join(out, node, "exporters")).sort();
      expect(exporters).toEqual(EXPORTER_FILES);
      for (const file of files) expect(r.out).toContain(path.join(node, file));
      for (const file of exporters) expect(r.out).toContain(path.join(node, "exporters", file));
    }
    expect(r.out).toMatch(/5 node\(s\), plan cx31, profile fast/);
    expect(fs.readFileSync(path.join(out, "madbase-prod-1", "patroni.yml"), "utf8")).toMatch(/loop_wait: 1\n/);
  });

  it("uses marked placeholders, never prints a secret, and keeps files private", () => {
    const r = render(["--stack", "dev", "--out", out]);
    expect(r.code).toBe(0);
    const redis = fs.readFileSync(path.join(out, "madbase-dev-1", "redis.conf"), "utf8");
    expect(redis).toMatch(/^masterauth PLACEHOLDER-redisReplication-not-a-secret$/m);
    const users = fs.readFileSync(path.join(out, "madbase-dev-1", "redis-users.acl"), "utf8");
    expect(users).toMatch(/^user app on >PLACEHOLDER-redis-not-a-secret /m);
    expect(r.out + r.err).not.toMatch(/PLACEHOLDER-\w+-not-a-secret/);
    expect(fs.statSync(path.join(out, "madbase-dev-1", "redis.conf")).mode & 0o077).toBe(0);
  });

  it.each<[string[], RegExp]>([
    [
      ["--stack", "prod", "--nodes", "2", "--out", "x"],
      /^render: madbase-state:nodeCount: "2" is not allowed; use one of 1, 3, 5, 7/m,
    ],
    [["--stack", "staging", "--out", "x"], /^render: --stack: "staging" is not allowed; use one of dev, prod/m],
    [
      ["--stack", "prod", "--profile", "turbo", "--out", "x"],
      /failoverProfile: "turbo" is not allowed; use one of fast, norm, safe/,
    ],
    [["--stack", "prod", "--out", "x", "--colour"], /^render: Unknown option '--colour'/m],
    [["--stack", "prod"], /^render: --out is required/m],
  ])("refuses %p with exit 2 and a message naming the fix", (args, message) => {
    const r = render(args);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.err).toMatch(/usage: npm run render|is not allowed/);
  });
});
