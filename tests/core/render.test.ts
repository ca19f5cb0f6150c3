import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  NODE_FILES,
  NODE_PACKAGES,
  SECRET_NAMES,
  expandUserData,
  maskPem,
  maskSecrets,
  serverPaths,
  template,
  writtenFiles,
} from "../../core";
import { renderStack } from "../support/fixtures";

const root = path.resolve(__dirname, "..", "..");

describe("rendering", () => {
  it("renders every file a node runs, for every node", () => {
    const { files, topology } = renderStack({ nodeCount: 3 });
    expect(Object.keys(files)).toEqual(topology.nodes.map((n) => n.name));
    for (const node of Object.values(files)) expect(Object.keys(node).sort()).toEqual([...NODE_FILES].sort());
  });

  it("is deterministic: the same input renders the same bytes", () => {
    const a = renderStack({ nodeCount: 3 });
    const b = renderStack({ nodeCount: 3, secrets: a.secrets });
    expect(b.files).toEqual(a.files);
  });

  it("fails on a value the template needs but the model lacks, instead of writing an empty string", () => {
    expect(() => template("redis.conf")({ node: { privateIp: "10.0.0.1" } })).toThrow(/"name" not defined/);
  });

  it("parses every YAML file it renders", () => {
    const { files } = renderStack({ nodeCount: 5 });
    for (const node of Object.values(files)) {
      expect(() => yaml.load(node["patroni.yml"])).not.toThrow();
      expect(() => yaml.load(node["user-data.yaml"])).not.toThrow();
    }
  });

  it("points Patroni at every etcd member (over TLS) and PostgreSQL 17, and keeps pg_hba to the private subnet with scram, over TLS", () => {
    const { files, topology } = renderStack({ nodeCount: 3 });
    const patroni = yaml.load(files["madbase-prod-2"]["patroni.yml"]) as any;
    // Patroni 4 (fixed in 3.0.3): every member, its own included, with member discovery.
    expect(patroni.etcd3.hosts).toEqual(topology.nodes.map((n) => `${n.privateIp}:2379`));
    expect(patroni.etcd3.use_proxies).toBeUndefined();
    expect(patroni.etcd3).toMatchObject({
      protocol: "https",
      cacert: "/etc/madbase/tls/ca.crt",
      cert: "/etc/madbase/tls/node.crt",
      key: "/etc/madbase/tls/node.key",
    });
    expect(patroni.postgresql).toMatchObject({
      bin_dir: "/usr/lib/postgresql/17/bin",
      data_dir: "/var/lib/postgresql/17/madbase",
    });
    const single = yaml.load(renderStack({ nodeCount: 1 }).files["madbase-prod-1"]["patroni.yml"]) as any;
    expect(single.etcd3.hosts).toEqual(["10.42.1.10:2379"]);
    expect(patroni.restapi.listen).toBe("10.42.1.11:8008");
    expect(patroni.bootstrap.dcs).toMatchObject({
      failsafe_mode: true,
      synchronous_mode: true,
      ttl: 20,
      loop_wait: 5,
      retry_timeout: 5,
    });
    expect(patroni.bootstrap.dcs.postgresql).toMatchObject({ use_pg_rewind: true, use_slots: true });
    expect(patroni.bootstrap.dcs.postgresql.parameters.max_connections).toBe(200);
    expect(patroni.postgresql.parameters.shared_buffers).toBe("4096MB");
    const hostRules = (patroni.postgresql.pg_hba as string[]).filter((r) => r.startsWith("host"));
    // Loopback logins as before; from the subnet only over TLS; any other plain-text login refused.
    for (const rule of hostRules) {
      expect(rule).toMatch(
        /^(host .* 127\.0\.0\.1\/32 scram-sha-256|hostssl .* 10\.42\.1\.0\/24 scram-sha-256|hostnossl \S+ all 0\.0\.0\.0\/0 reject)$/,
      );
    }
    expect(hostRules.filter((r) => r.startsWith("hostssl"))).toHaveLength(2);
    expect(hostRules.slice(-2)).toEqual([
      "hostnossl replication all 0.0.0.0/0 reject",
      "hostnossl all all 0.0.0.0/0 reject",
    ]);
    expect(hostRules.join("\n")).not.toMatch(/::\/0|trust|md5/);
    expect(patroni.postgresql.parameters).toMatchObject({
      ssl: "on",
      ssl_cert_file: "/etc/madbase/tls/node.crt",
      ssl_key_file: "/etc/madbase/tls/node.key",
    });
    expect(patroni.postgresql.authentication.replication).toMatchObject({
      sslmode: "verify-full",
      sslrootcert: "/etc/madbase/tls/ca.crt",
    });
    expect(patroni.postgresql.authentication.rewind).toMatchObject({ sslmode: "verify-full" });
    expect(patroni.bootstrap.pg_hba).toEqual(patroni.postgresql.pg_hba);
  });

  it("switches synchronous replication per stack", () => {
    const off = yaml.load(
      renderStack({ nodeCount: 3, synchronousMode: false }).files["madbase-prod-1"]["patroni.yml"],
    ) as any;
    expect(off.bootstrap.dcs.synchronous_mode).toBe(false);
  });

  it("makes the first node the Redis master and the others its replicas", () => {
    const { files } = renderStack({ nodeCount: 3 });
    expect(files["madbase-prod-1"]["redis.conf"]).not.toMatch(/^replicaof /m);
    expect(files["madbase-prod-2"]["redis.conf"]).toMatch(/^replicaof 10\.42\.1\.10 6380$/m);
    expect(files["madbase-prod-3"]["sentinel.conf"]).toMatch(/^sentinel monitor madbase-prod 10\.42\.1\.10 6380 2$/m);
  });

  it("does not ask a lone Redis to wait for replicas it will never have", () => {
    expect(renderStack({ nodeCount: 1 }).files["madbase-prod-1"]["redis.conf"]).toMatch(/^min-replicas-to-write 0$/m);
    expect(renderStack({ nodeCount: 3 }).files["madbase-prod-1"]["redis.conf"]).toMatch(/^min-replicas-to-write 1$/m);
  });

  it("gives HAProxy one backend server per node on each entry port, checked the documented way", () => {
    const { files } = renderStack({ nodeCount: 5, profile: "fast" });
    const cfg = files["madbase-prod-4"]["haproxy.cfg"];
    for (const section of ["postgres_primary", "postgres_replicas", "redis_master"]) {
      const body = cfg.split(`listen ${section}`)[1].split(/\nlisten /)[0];
      expect(body.match(/^\s+server /gm)).toHaveLength(5);
    }
    expect(cfg).toMatch(/http-check send meth OPTIONS uri \/primary/);
    expect(cfg).toMatch(/http-check send meth OPTIONS uri \/replica\?lag=16MB/);
    expect(cfg).toMatch(/tcp-check expect string role:master/);
    // The direct write port asks Patroni nothing itself: each server follows the pooled port's check.
    const direct = cfg.split("listen postgres_direct")[1].split(/\nlisten /)[0];
    const tracked = [...direct.matchAll(/^\s+server (\S+) \S+ track (\S+) /gm)].map((m) => [m[1], m[2]]);
    expect(tracked).toEqual([1, 2, 3, 4, 5].map((i) => [`madbase-prod-${i}`, `postgres_primary/madbase-prod-${i}`]));
    expect(direct).not.toMatch(/\bcheck\b/);
    expect(cfg).toMatch(/inter 500ms .*fall 2 rise 2 on-marked-down shutdown-sessions/);
    expect(cfg).toMatch(/stats auth stats:\S+/);
  });

  it("keeps user-data.yaml under Hetzner's 32 KiB for the largest topology", () => {
    const { files } = renderStack({ nodeCount: 7, plan: "cx41" });
    for (const node of Object.values(files)) expect(Buffer.byteLength(node["user-data.yaml"])).toBeLessThan(32 * 1024);
  });

  it("writes every rendered file through cloud-init byte for byte, with owners and modes", () => {
    const { files } = renderStack({ nodeCount: 3 });
    const node = files["madbase-prod-3"];
    const doc = yaml.load(node["user-data.yaml"]) as any;
    const byPath = Object.fromEntries(writtenFiles(node["user-data.yaml"]).map((f) => [f.path, f]));
    const paths = serverPaths();
    for (const [file, target] of Object.entries(paths.config)) {
      expect(byPath[target].content).toBe(node[file as keyof typeof node]);
      expect(byPath[target].defer).toBe(true);
    }
    expect(byPath["/etc/patroni/config.yml"]).toMatchObject({ owner: "postgres:postgres", permissions: "0600" });
    expect(byPath["/etc/postgresql-common/createcluster.conf"].content).toMatch(/create_main_cluster = false/);
    expect(doc.packages).toEqual([...NODE_PACKAGES]);
    expect(doc.packages).toEqual(
      expect.arrayContaining([
        "postgresql-17",
        "postgresql-client-17",
        "patroni",
        "etcd-server",
        "redis-sentinel",
        "haproxy",
        "pgbackrest",
      ]),
    );
    // The passwords of post_bootstrap travel in a postgres-only file, never on its command line.
    expect(byPath["/etc/patroni/post-bootstrap.sql"]).toMatchObject({
      owner: "postgres:postgres",
      permissions: "0600",
    });
    expect(yaml.load(node["patroni.yml"])).toMatchObject({
      bootstrap: { post_bootstrap: "psql -v ON_ERROR_STOP=1 -f /etc/patroni/post-bootstrap.sql -d" },
    });
  });

  it("never starts Patroni without its volume, and retries every unit that binds the private address", () => {
    const { files } = renderStack({ nodeCount: 3 });
    const byPath = Object.fromEntries(
      writtenFiles(files["madbase-prod-1"]["user-data.yaml"]).map((f) => [f.path, f.content]),
    );
    const lines = (unit: string, name = "madbase") =>
      byPath[`/etc/systemd/system/${unit}.service.d/${name}.conf`]?.split("\n").filter(Boolean);
    expect(lines("patroni")).toEqual([
      "[Unit]",
      "Requires=madbase-volume.service",
      "After=madbase-volume.service etcd.service",
      "RequiresMountsFor=/var/lib/postgresql",
      "StartLimitIntervalSec=0",
      "[Service]",
      "ExecStartPre=/usr/bin/mountpoint -q /var/lib/postgresql",
      "Restart=always",
      "RestartSec=5",
    ]);
    for (const unit of [
      "etcd",
      "redis-server",
      "redis-sentinel",
      "haproxy",
      "prometheus-node-exporter",
      "prometheus-postgres-exporter",
      "prometheus-redis-exporter",
    ]) {
      expect(lines(unit)).toEqual(["[Unit]", "StartLimitIntervalSec=0", "[Service]", "Restart=always", "RestartSec=2"]);
    }
    expect(lines("redis-server", "madbase-follow")).toEqual([
      "[Service]",
      "ExecStartPre=-+/usr/local/sbin/madbase-redis-follow /etc/madbase/node.env",
    ]);
  });

  it("boots through one first-boot script, and lets root log in with the meta-data keys", () => {
    const { files } = renderStack({ nodeCount: 3 });
    const doc = yaml.load(files["madbase-prod-1"]["user-data.yaml"]) as any;
    // One command: the file bundle unpacked (owners and modes kept), removed, then the first boot.
    expect(doc.runcmd).toHaveLength(1);
    const [shell, flag, script, name, ...args] = doc.runcmd[0];
    expect([shell, flag, name]).toEqual(["sh", "-ec", "unpack"]);
    expect(script).toMatch(/tar -I brotli -xpf "\$1" --same-owner .*-C \/ && rm -f "\$1" && exec "\$2" "\$3"/);
    expect(args).toEqual([
      "/var/lib/madbase/first-boot-files.tar.br",
      "/usr/local/sbin/madbase-first-boot",
      "/etc/madbase/node.env",
    ]);
    expect(doc.write_files.find((f: any) => f.path === args[0])).toMatchObject({
      owner: "root:root",
      permissions: "0600",
      defer: true,
      encoding: "b64",
    });
    expect(doc.disable_root).toBe(false);
    const byPath = Object.fromEntries(writtenFiles(files["madbase-prod-1"]["user-data.yaml"]).map((f) => [f.path, f]));
    expect(byPath["/usr/local/sbin/madbase-first-boot"]).toMatchObject({ owner: "root:root", permissions: "0755" });
    expect(byPath["/etc/madbase/node.env"].content).toMatch(/^NODE_NAME=/m);
    expect(byPath["/usr/local/sbin/madbase-first-boot"].content).toMatch(/^set -euo pipefail$/m);
    expect(byPath["/usr/local/sbin/madbase-redis-follow"]).toMatchObject({ permissions: "0755" });
  });

  it("matches the reviewed files, with every secret masked", () => {
    const { files, secrets } = renderStack({ nodeCount: 3 });
    for (const file of NODE_FILES) {
      // user-data's compressed files are unpacked, so that the snapshot shows (and masks) what they hold.
      const text =
        file === "user-data.yaml" ? expandUserData(files["madbase-prod-2"][file]) : files["madbase-prod-2"][file];
      // Certificates and keys are made afresh in each test process: shown as <pem:…>.
      const masked = maskPem(maskSecrets(text, secrets));
      for (const name of SECRET_NAMES) expect(masked).not.toContain(secrets[name]);
      expect(masked).not.toContain("PRIVATE KEY-----\n");
      expect(masked).toMatchSnapshot(file);
    }
  });

  it("masks every secret it carries, and only secrets", () => {
    const { files, secrets } = renderStack({ nodeCount: 3 });
    const node = files["madbase-prod-1"];
    const all = [...Object.values(node), expandUserData(node["user-data.yaml"])].join("\n");
    const masked = maskSecrets(all, secrets);
    for (const name of SECRET_NAMES) {
      expect(all).toContain(secrets[name]);
      expect(masked).toContain(`<secret:${name}>`);
    }
    // Masking changes nothing but the secrets: putting them back gives the original.
    const unmasked = masked.replace(/<secret:(\w+)>/g, (_, name: keyof typeof secrets) => secrets[name]);
    expect(unmasked).toBe(all);
  });

  it("keeps the core free of Pulumi, so it runs the same on Hetzner and locally", () => {
    const coreDir = path.join(root, "core");
    for (const file of fs.readdirSync(coreDir).filter((f) => f.endsWith(".ts"))) {
      expect(fs.readFileSync(path.join(coreDir, file), "utf8")).not.toMatch(/from ["']@pulumi\//);
    }
  });
});
