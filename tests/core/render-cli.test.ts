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

  it("renders a stack file holding secure values (pulumi config set --secret), says which are set and never shows them", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-render-stack-"));
    try {
      const prod = fs.readFileSync(path.join(root, "Pulumi.prod.yaml"), "utf8").replace(/\n?$/, "\n");
      const secure = ["backupAccessKey", "backupSecretKey", "sshPrivateKey"]
        .map((k) => `  madbase-state:${k}:\n    secure: v1:AAAA${k}CipherText==\n`)
        .join("");
      fs.writeFileSync(path.join(dir, "Pulumi.prod.yaml"), prod + secure);
      const r = render(["--stack", "prod", "--stack-dir", dir, "--out", path.join(dir, "out")]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^Rendering stack prod: 3 node\(s\), plan cx31/m);
      expect(r.out).toMatch(
        /^Secret keys the stack file sets \(encrypted, not read here\): backupAccessKey, backupSecretKey, sshPrivateKey$/m,
      );
      expect(fs.readdirSync(path.join(dir, "out", "madbase-prod-1")).sort()).toEqual(
        [...DAEMON_FILES, "exporters"].sort(),
      );
      const written = fs
        .readdirSync(path.join(dir, "out"), { recursive: true, encoding: "utf8" })
        .map((f) => path.join(dir, "out", f))
        .filter((f) => fs.statSync(f).isFile());
      expect(written.length).toBeGreaterThan(DAEMON_FILES.length * 3);
      expect(written.filter((f) => fs.readFileSync(f, "utf8").includes("CipherText"))).toEqual([]);
      expect(r.out).not.toMatch(/CipherText/);

      // The same key in plain text is refused, naming it and the fix, without its value.
      fs.writeFileSync(path.join(dir, "Pulumi.prod.yaml"), prod + "  madbase-state:backupSecretKey: hunter2-plain\n");
      const refused = render(["--stack", "prod", "--stack-dir", dir, "--out", path.join(dir, "out2")]);
      expect(refused.code).toBe(2);
      expect(refused.err).toMatch(
        /^render: madbase-state:backupSecretKey: "\(hidden\)" is not allowed; .*pulumi config set --secret madbase-state:backupSecretKey/m,
      );
      expect(refused.out + refused.err).not.toMatch(/hunter2/);
      expect(fs.existsSync(path.join(dir, "out2"))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("says no secret key is set for the committed prod file", () => {
    const r = render(["--stack", "prod", "--out", out]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Secret keys the stack file sets \(encrypted, not read here\): none$/m);
  });

  it.each<[string[], RegExp]>([
    [
      ["--stack", "prod", "--stack-dir", "/nonexistent-madbase", "--out", "x"],
      /^render: --stack-dir: "\/nonexistent-madbase" is not allowed; use a directory/m,
    ],
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
