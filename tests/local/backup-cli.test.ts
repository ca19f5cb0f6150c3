/**
 * The local runner's backup commands refuse bad usage before anything is created (the commands
 * themselves run the script tests/local/backup*.test.ts prove).
 */
import * as fs from "node:fs";
import { cli, testLocation } from "./harness";

const loc = { ...testLocation(5), root: `${testLocation(5).root}-backup-cli` };

afterAll(() => fs.rmSync(loc.root, { recursive: true, force: true }));

test("up --restore takes latest or a time with its zone", () => {
  const r = cli(["up", "--restore", "yesterday"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(
    `--restore takes latest or a time with its zone, such as '2025-01-31 14:05:00+00', not "yesterday"`,
  );
  expect(fs.existsSync(loc.root)).toBe(false);
});

test("backup-pg takes full or diff", () => {
  for (const args of [["backup-pg"], ["backup-pg", "weekly"]]) {
    const r = cli(args, { loc });
    expect([args, r.code]).toEqual([args, 2]);
    expect(r.stderr).toContain("backup-pg takes full or diff");
  }
});

test("the backup commands need a running cluster", () => {
  const r = cli(["backup-redis"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("no local cluster is running");
});
