/**
 * The backup files every node gets, checked by the programs that run them: the `madbase-backup`
 * script by bash (syntax, usage) and ShellCheck, the systemd units and their schedules by
 * `systemd-analyze`. (The script's behaviour against real daemons and an S3 store is in
 * tests/local/backup.test.ts.)
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  BACKUP_SCRIPT,
  BACKUP_UNITS,
  FIRST_BACKUP_TIMER,
  describeCluster,
  parseSettings,
  renderBackupFiles,
  renderBackupUnits,
  serverPaths,
} from "../../core";
import { fixtureTls, randomSecrets } from "../support/fixtures";
import { run } from "../support/proc";

jest.setTimeout(120_000);

const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-backup-files-"));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const settings = parseSettings("prod", { nodeCount: 3 });
const { topology, options } = describeCluster(settings);
// The units name the script by its installed path: here, the rendered copy in the scratch dir.
const paths = { ...serverPaths(), scriptDir: work };
const input = { topology, node: topology.nodes[1], options, secrets: randomSecrets(), tls: fixtureTls(), paths };
const script = path.join(work, BACKUP_SCRIPT);
fs.writeFileSync(script, renderBackupFiles(input)[BACKUP_SCRIPT].content, { mode: 0o755 });
const unitDir = path.join(work, "units");
fs.mkdirSync(unitDir);
for (const unit of renderBackupUnits(input))
  fs.writeFileSync(path.join(unitDir, path.basename(unit.path)), unit.content);

async function verifyUnit(file: string): Promise<{ ok: boolean; detail: string }> {
  const r = await run(["systemd-analyze", "verify", "--man=no", file], { timeoutMs: 30_000 });
  const text = r.stdout + r.stderr;
  // systemd only warns about an unknown key or a bad value; treat every such line as a failure.
  return {
    ok: r.code === 0 && !/Unknown (key|section)|Failed to parse|Invalid|is not executable/.test(text),
    detail: text,
  };
}

test("the script parses, passes ShellCheck and answers bad usage with exit 2", async () => {
  expect((await run(["bash", "-n", script])).code).toBe(0);
  const sc = await run(["shellcheck", "-s", "bash", script]);
  expect([sc.code, sc.stdout]).toEqual([0, ""]);
  for (const args of [
    [],
    ["pg"],
    ["pg", "weekly"],
    ["pg-restore", "time", "yesterday"],
    ["redis-restore"],
    ["pgbackrest-archive-push"],
  ]) {
    const r = await run(["bash", script, ...args], { timeoutMs: 10_000 });
    expect([args, r.code]).toEqual([args, 2]);
    expect(r.stderr).toMatch(/madbase-backup .*: usage: /);
  }
});

test("every unit passes systemd-analyze verify, and a broken one does not", async () => {
  expect(fs.readdirSync(unitDir).sort()).toEqual([...BACKUP_UNITS].sort());
  for (const unit of BACKUP_UNITS) {
    const result = await verifyUnit(path.join(unitDir, unit));
    expect([unit, result.ok, result.ok ? "" : result.detail]).toEqual([unit, true, ""]);
  }
  const broken = path.join(work, "broken.timer");
  fs.writeFileSync(
    broken,
    fs.readFileSync(path.join(unitDir, "madbase-pg-backup-diff.timer"), "utf8").replace("01:15:00", "25:15:00"),
  );
  expect((await verifyUnit(broken)).ok).toBe(false);
});

test("the timers fire weekly (full), on the other six days (diff) and hourly (Redis)", async () => {
  const calendar = (unit: string) => /^OnCalendar=(.*)$/m.exec(fs.readFileSync(path.join(unitDir, unit), "utf8"))![1];
  const r = await run([
    "systemd-analyze",
    "calendar",
    "--iterations=8",
    calendar("madbase-pg-backup-full.timer"),
    calendar("madbase-pg-backup-diff.timer"),
    calendar("madbase-redis-snapshot.timer"),
  ]);
  expect(r.code).toBe(0);
  const blocks = r.stdout.split(/\n\s*\n/).filter((b) => /Normalized form/.test(b));
  const days = (block: string) =>
    [...block.matchAll(/(?:Next elapse|Iter\. #\d+): (\w{3}) \S+ (\d\d:\d\d)/g)].map((m) => `${m[1]} ${m[2]}`);
  expect(new Set(days(blocks[0]))).toEqual(new Set(["Sun 01:15"]));
  expect(new Set(days(blocks[1]).map((d) => d.slice(0, 3)))).toEqual(
    new Set(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]),
  );
  expect(days(blocks[2]).every((d) => d.endsWith(":40"))).toBe(true);
});

test("the first-backup timer runs `madbase-backup pg first` a minute after boot and every 10 minutes", async () => {
  const timer = fs.readFileSync(path.join(unitDir, "madbase-pg-backup-first.timer"), "utf8");
  expect(timer).toMatch(/^Unit=madbase-pg-backup@first\.service$/m);
  const span = async (key: string) => {
    const value = new RegExp(`^${key}=(.*)$`, "m").exec(timer)![1];
    const r = await run(["systemd-analyze", "timespan", value]);
    expect([key, r.code]).toEqual([key, 0]);
    return Number(/μs: (\d+)/.exec(r.stdout)![1]) / 1e6;
  };
  expect(await span("OnBootSec")).toBe(FIRST_BACKUP_TIMER.bootDelaySeconds);
  expect(await span("OnUnitActiveSec")).toBe(FIRST_BACKUP_TIMER.intervalSeconds);
  // The template unit hands the instance name to the script: `pg first`.
  const service = fs.readFileSync(path.join(unitDir, "madbase-pg-backup@.service"), "utf8");
  expect(service).toMatch(new RegExp(`^ExecStart=${work}/madbase-backup pg %i$`, "m"));
});
