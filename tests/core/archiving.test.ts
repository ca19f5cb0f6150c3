/**
 * WAL archiving as the stack decides it: on with real S3 keys; off (and said so) without them;
 * refused on a protected stack without them. And the archive can never fill the data volume:
 * pgBackRest's queue is a fifth of it, and an idle cluster switches a segment every 5 minutes at most.
 */
import * as yaml from "js-yaml";
import {
  ARCHIVING_OFF_COMMAND,
  ConfigError,
  alertRules,
  archivePushQueueMaxMb,
  archivingDecision,
  describeCluster,
  parseSettings,
  placeholderSecrets,
  placeholderTls,
  renderNode,
  serverPaths,
} from "../../core";

function render(stack: string, overrides: Record<string, unknown>, archiving?: boolean) {
  const { topology, options } = describeCluster(parseSettings(stack, overrides));
  if (archiving !== undefined) options.backup.archiving = archiving;
  const files = renderNode({
    topology,
    node: topology.nodes[0],
    options,
    secrets: placeholderSecrets(),
    tls: placeholderTls(topology.nodes.map((n) => n.name)),
    paths: serverPaths(),
  });
  return { topology, options, files, patroni: yaml.load(files["patroni.yml"]) as any };
}

describe("archivingDecision", () => {
  test("with S3 keys the stack archives, and says nothing", () => {
    expect(archivingDecision(parseSettings("prod", { protectNodes: true }), true)).toEqual({
      archiving: true,
      warnings: [],
    });
  });

  test("without keys an unprotected stack runs with archiving off, and says so", () => {
    const d = archivingDecision(parseSettings("dev", { nodeCount: 1 }), false);
    expect(d.archiving).toBe(false);
    expect(d.warnings).toHaveLength(1);
    expect(d.warnings[0]).toMatch(/archiving is OFF on stack dev/);
    expect(d.warnings[0]).toMatch(/backupAccessKey/);
  });

  test("without keys a protected stack refuses, naming the key", () => {
    const settings = parseSettings("prod", { protectNodes: true });
    expect(() => archivingDecision(settings, false)).toThrow(ConfigError);
    expect(() => archivingDecision(settings, false)).toThrow(/madbase-state:backupAccessKey.*protected/);
  });
});

describe("what the nodes get", () => {
  test("archiving on: pgBackRest's archive_command, a queue a fifth of the volume, archive_timeout 300 s", () => {
    const { files, patroni } = render("prod", { volumeSizeGb: 100 });
    expect(patroni.postgresql.parameters.archive_command).toBe(
      "/usr/local/sbin/madbase-backup pgbackrest-archive-push %p",
    );
    expect(patroni.bootstrap.dcs.postgresql.parameters.archive_timeout).toBe("300s");
    expect(patroni.bootstrap.dcs.maximum_lag_on_failover).toBe(1048576);
    expect(files["pgbackrest.conf"]).toMatch(/^archive-async=y$/m);
    expect(files["pgbackrest.conf"]).toMatch(
      new RegExp(`^archive-push-queue-max=${archivePushQueueMaxMb(100)}MiB$`, "m"),
    );
    expect(archivePushQueueMaxMb(100)).toBe(20480);
    expect(archivePushQueueMaxMb(40)).toBe(8192);
  });

  test("archiving off: archive_command /bin/true (WAL is recycled), and the rules say archiving is off", () => {
    const { topology, options, patroni } = render("dev", { nodeCount: 1 }, false);
    expect(patroni.postgresql.parameters.archive_command).toBe(ARCHIVING_OFF_COMMAND);
    const names = alertRules(topology, options).map((r) => r.alert);
    expect(names).toContain("PostgresArchivingOff");
    expect(names.filter((n) => /Archiv|Backup|Wal/.test(n))).toEqual(["PostgresArchivingOff"]);
  });

  test("a bad volume size is refused", () => {
    expect(() => archivePushQueueMaxMb(0)).toThrow(/whole number of GB/);
  });
});
