/**
 * Every shell file of the repository is a real shell file: `bash -n` parses it and shellcheck
 * (installed by scripts/setup-debian.sh) finds nothing at warning level or above, as it stands
 * in the tree. Rendered scripts (`.sh.hbs`) are checked after rendering, in tests/core/scale.test.ts
 * and tests/daemons/backup-files.test.ts.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

const REPO = path.resolve(__dirname, "..", "..");

function shellFiles(dir: string): string[] {
  return fs.readdirSync(path.join(REPO, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return shellFiles(rel);
    return e.name.endsWith(".sh") ? [rel] : [];
  });
}

const FILES = [...shellFiles("templates"), ...shellFiles("scripts")];

test("the tree has its shell as .sh files", () => {
  expect(FILES).toEqual(
    expect.arrayContaining([
      "templates/scripts/first-boot.sh",
      "templates/scripts/node-join.sh",
      "scripts/setup-debian.sh",
    ]),
  );
});

test.each(FILES)("%s parses and passes shellcheck", (file) => {
  const parsed = spawnSync("bash", ["-n", file], { cwd: REPO, encoding: "utf8" });
  expect(parsed.stderr).toBe("");
  const checked = spawnSync("shellcheck", ["-S", "warning", "-x", file], { cwd: REPO, encoding: "utf8" });
  if (checked.error)
    throw new Error(`shellcheck is missing (scripts/setup-debian.sh installs it): ${checked.error.message}`);
  expect(checked.stdout).toBe("");
  expect(checked.status).toBe(0);
});
