/**
 * The local runner's backup options refuse bad usage before anything is created, and its former
 * operation verbs name the `npm run ops` line that does them now (the operations themselves are
 * proved in tests/local/backup*.test.ts and tests/ops).
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

test("backup-pg, backup-redis and restore-redis moved to npm run ops, and say the line to use", () => {
  for (const [args, line] of [
    [["backup-pg", "full"], "npm run ops -- backup pg full --stack <its stack> --local"],
    [["backup-pg"], "npm run ops -- backup pg full|diff --stack <its stack> --local"],
    [["backup-redis"], "npm run ops -- backup redis --stack <its stack> --local"],
    [
      ["restore-redis", "--name", "x.rdb"],
      "npm run ops -- restore-redis --name x.rdb --confirm <cluster name> --stack <its stack> --local",
    ],
  ] as const) {
    const r = cli([...args], { loc });
    expect([args, r.code]).toEqual([args, 2]);
    expect(r.stderr).toContain(
      `${args[0]} is an operation now, the same for a local cluster and a Pulumi stack: ${line}`,
    );
  }
  expect(fs.existsSync(loc.root)).toBe(false);
});
