/**
 * The backup side of the render: what every node carries (one script, its secrets, the timers),
 * how cloud-init writes it, and the pgBackRest and Patroni settings that make replicas and
 * restores come from the repository.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  BACKUP_SCRIPT,
  BACKUP_TIMERS,
  REDIS_USERS,
  SECRET_NAMES,
  describeCluster,
  parseSettings,
  readEnvFile,
  renderBackupFiles,
  renderNode,
  serverPaths,
  writtenFiles,
} from "../../core";
import { fixtureTls, randomSecrets, renderStack } from "../support/fixtures";

const { files, secrets, topology } = renderStack({ nodeCount: 3 });
const node = files["madbase-prod-2"];
const written = Object.fromEntries(writtenFiles(node["user-data.yaml"]).map((f) => [f.path, f]));
const nodeEnv = readEnvFile(
  writtenFiles(node["user-data.yaml"]).find((f) => f.path === "/etc/madbase/node.env")!.content,
);
const backupFiles = (() => {
  const { options } = describeCluster(parseSettings("prod", { nodeCount: 3, plan: "cx31" }));
  return renderBackupFiles({
    topology,
    node: topology.nodes[1],
    options,
    secrets,
    tls: fixtureTls(),
    paths: serverPaths(),
  });
})();

test("cloud-init writes the script (in the file bundle, byte for byte) and its environment file, readable by root and redis only", () => {
  const script = written["/usr/local/sbin/madbase-backup"];
  expect(script).toMatchObject({ owner: "root:root", permissions: "0755" });
  expect(script.content).toBe(backupFiles[BACKUP_SCRIPT].content);
  expect(written["/etc/madbase/backup.env"]).toMatchObject({
    owner: "root:redis",
    permissions: "0640",
    content: backupFiles["backup.env"].content,
  });
});

test("the script holds no secret; the environment file holds exactly the ones the jobs need", () => {
  const script = backupFiles[BACKUP_SCRIPT].content;
  for (const name of SECRET_NAMES) expect([name, script.includes(secrets[name])]).toEqual([name, false]);
  // Redis's admin user (the script passes --user) and Sentinel's password; not the application's.
  expect(backupFiles["backup.env"].content).toContain(`REDISCLI_AUTH=${secrets.redisAdmin}\n`);
  expect(backupFiles["backup.env"].content).toContain(`SENTINEL_AUTH=${secrets.sentinel}\n`);
  expect(backupFiles["backup.env"].content).not.toContain(secrets.redis);
  expect(script).toContain(`--user ${REDIS_USERS.admin} `);
  expect(backupFiles["backup.env"].content).toContain(`AWS_SECRET_ACCESS_KEY=${secrets.s3SecretKey}\n`);
  expect(backupFiles["backup.env"].content).not.toContain(secrets.postgresSuperuser);
});

test("every node enables the first-backup, weekly full, daily diff, hourly Redis and metrics timers", () => {
  expect(BACKUP_TIMERS).toEqual([
    "madbase-pg-backup-first.timer",
    "madbase-pg-backup-full.timer",
    "madbase-pg-backup-diff.timer",
    "madbase-redis-snapshot.timer",
    "madbase-pg-metrics.timer",
  ]);
  // madbase-first-boot runs `systemctl enable --now $NODE_TIMERS` on every node: these and the certificate ends'.
  expect(nodeEnv.NODE_TIMERS).toBe([...BACKUP_TIMERS, "madbase-tls-metrics.timer"].join(" "));
  expect(written["/etc/systemd/system/madbase-pg-backup@.service"].content).toMatch(/^User=postgres$/m);
  expect(written["/etc/systemd/system/madbase-redis-snapshot.service"].content).toMatch(/^User=redis$/m);
});

test("pgBackRest archives asynchronously to the bucket with the configured retention", () => {
  const conf = node["pgbackrest.conf"];
  expect(conf).toMatch(/^archive-async=y$/m);
  expect(conf).toMatch(/^repo1-retention-full=4$/m);
  expect(conf).toMatch(/^repo1-s3-uri-style=path$/m);
  expect(conf).toMatch(/^repo1-path=\/madbase-prod\/pgbackrest$/m);
  const { topology: t, options: o } = describeCluster(
    parseSettings("prod", { nodeCount: 3, backupRetentionFull: "9" }),
  );
  const other = renderNode({
    topology: t,
    node: t.nodes[0],
    options: o,
    secrets: randomSecrets(),
    tls: fixtureTls(),
    paths: serverPaths(),
  });
  expect(other["pgbackrest.conf"]).toMatch(/^repo1-retention-full=9$/m);
});

test("Patroni creates replicas from the repository first, and fetches missing WAL from the archive", () => {
  const patroni = yaml.load(node["patroni.yml"]) as any;
  expect(patroni.postgresql.create_replica_methods).toEqual(["pgbackrest", "basebackup"]);
  // Patroni passes --connstring (no no_params): the method checks the leader's system identifier.
  expect(patroni.postgresql.pgbackrest).toEqual({
    command: "/usr/local/sbin/madbase-backup pgbackrest-replica",
    keep_data: true,
  });
  expect(patroni.postgresql.recovery_conf.restore_command).toBe(
    'pgbackrest --config=/etc/pgbackrest.conf --stanza=madbase-prod archive-get %f "%p"',
  );
});

describe("the replica method restores from the repository only when its stanza is this cluster's", () => {
  /** Runs `madbase-backup pgbackrest-replica` with stand-ins for psql (the leader) and pgbackrest (the repository). */
  function replica(leaderId: string, repoId: string) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-replica-"));
    try {
      const calls = path.join(dir, "calls");
      const stub = (name: string, body: string) =>
        fs.writeFileSync(path.join(dir, name), `#!/bin/bash\necho "${name} $*" >>${calls}\n${body}\n`, { mode: 0o755 });
      stub("psql", `echo "${leaderId}|2|0/5000000|"`);
      stub("pgbackrest", `case "$*" in *info*) echo '{"db":[{"id":1,"repo-key":1,"system-id":${repoId}}]}' ;; esac`);
      const script = path.join(dir, "madbase-backup");
      fs.writeFileSync(script, backupFiles[BACKUP_SCRIPT].content, { mode: 0o755 });
      const r = spawnSync(
        "bash",
        [
          script,
          "pgbackrest-replica",
          "--scope=madbase-prod",
          "--role=replica",
          "--datadir=/x",
          "--connstring=dbname=postgres user=replicator host=10.42.1.10 port=5432",
        ],
        {
          env: { PATH: `${dir}:/usr/bin:/bin` },
          encoding: "utf8",
        },
      );
      return {
        code: r.status,
        stderr: r.stderr,
        calls: fs.existsSync(calls) ? fs.readFileSync(calls, "utf8").trim().split("\n") : [],
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  test("same system identifier: pgBackRest restores a standby, asked of the leader over the replication protocol", () => {
    const r = replica("7714460954069873712", "7714460954069873712");
    expect(r.code).toBe(0);
    expect(r.calls[0]).toBe(
      "psql dbname=postgres user=replicator host=10.42.1.10 port=5432 replication=1 -XAtc IDENTIFY_SYSTEM",
    );
    expect(r.calls).toContain(
      "pgbackrest --config=/etc/pgbackrest.conf --stanza=madbase-prod --log-level-console=warn --delta restore --type=standby",
    );
  });

  test("another cluster's stanza (a lost stack's bucket): no restore, and the failure sends Patroni to pg_basebackup", () => {
    const r = replica("7714460954069873712", "7001");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "the repository's stanza belongs to database system 7001, the leader is 7714460954069873712",
    );
    expect(r.calls.filter((c) => c.includes("restore"))).toEqual([]);
  });
});

test("post_bootstrap works after initdb and after a restore: roles created or given this stack's password, the database only when missing", () => {
  expect((yaml.load(node["patroni.yml"]) as any).bootstrap.post_bootstrap).toBe(
    "psql -v ON_ERROR_STOP=1 -f /etc/patroni/post-bootstrap.sql -d",
  );
  const cmd = writtenFiles(node["user-data.yaml"]).find((f) => f.path === "/etc/patroni/post-bootstrap.sql")!.content;
  expect(cmd).toContain(
    `IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'madbase') THEN ALTER ROLE madbase LOGIN PASSWORD '${secrets.app}'`,
  );
  expect(cmd).toContain("WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'madbase') \\gexec");
  expect(cmd).not.toMatch(/-c "CREATE (ROLE|DATABASE)/);
});
