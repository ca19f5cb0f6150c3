/**
 * The lint rule that keeps imports pointing one way (eslint.config.mjs): `core` imports nothing of
 * ours and no Pulumi; `components` and `local` import `core`; `ops` imports `core` and `local`;
 * `cli` and `scale` import anything.
 * Checked on snippets linted as if they lived in each folder, with the project's own config.
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";

const REPO = path.resolve(__dirname, "..", "..");

const FORBIDDEN: [string, string][] = [
  ["core/x.ts", 'import { up } from "../local/cluster";'],
  ["core/x.ts", 'import { StatePillar } from "../components/statePillar";'],
  ["core/x.ts", 'import { main } from "../cli/local";'],
  ["core/x.ts", 'import * as pulumi from "@pulumi/pulumi";'],
  ["components/x.ts", 'import { up } from "../local/cluster";'],
  ["components/x.ts", 'import { main } from "../cli/render";'],
  ["local/x.ts", 'import { StatePillar } from "../components/statePillar";'],
  ["local/x.ts", 'import { jobs } from "../scale/jobs";'],
  ["local/x.ts", 'import * as hcloud from "@pulumi/hcloud";'],
  ["local/x.ts", 'import { restorePostgres } from "../ops/restore";'],
  ["core/x.ts", 'import { switchover } from "../ops/switchover";'],
  ["components/x.ts", 'import { collectStatus } from "../ops/session";'],
  ["ops/x.ts", 'import { StatePillar } from "../components/statePillar";'],
  ["ops/x.ts", 'import { main } from "../cli/ops";'],
  ["ops/x.ts", 'import { jobs } from "../scale/jobs";'],
  ["ops/x.ts", 'import * as pulumi from "@pulumi/pulumi";'],
];
const ALLOWED: [string, string][] = [
  ["core/x.ts", 'import { PLANS } from "./plans";'],
  ["components/x.ts", 'import { PLANS } from "../core";\nimport * as pulumi from "@pulumi/pulumi";'],
  ["local/x.ts", 'import { PLANS } from "../core";'],
  ["cli/x.ts", 'import { up } from "../local/cluster";\nimport { PLANS } from "../core";'],
  ["ops/x.ts", 'import { PLANS } from "../core";\nimport { sshScript } from "../local/ssh";'],
  ["cli/x.ts", 'import { switchover } from "../ops/switchover";'],
  ["scale/x.ts", 'import { up } from "../local/cluster";\nimport { StatePillar } from "../components/statePillar";'],
];

/**
 * The messages of no-restricted-imports for each snippet, linted by ESLint's own API in a child
 * process (ESLint loads its flat config with a dynamic import, which jest's module sandbox lacks).
 */
function restricted(cases: [string, string][]): string[][] {
  const script = `
    const { ESLint } = require("eslint");
    const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
    (async () => {
      const eslint = new ESLint({ cwd: process.cwd() });
      const out = [];
      for (const [file, source] of cases) {
        const [r] = await eslint.lintText(source + "\\nexport {};\\n", { filePath: require("path").join(process.cwd(), file) });
        out.push(r.messages.filter((m) => m.ruleId === "no-restricted-imports").map((m) => m.message));
      }
      process.stdout.write(JSON.stringify(out));
    })();`;
  const r = spawnSync(process.execPath, ["-e", script], { cwd: REPO, input: JSON.stringify(cases), encoding: "utf8" });
  if (r.status !== 0) throw new Error(`eslint: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const forbidden = restricted(FORBIDDEN);
const allowed = restricted(ALLOWED);

test.each(FORBIDDEN.map(([file, source], i) => [file, source, i] as const))(
  "%s may not say: %s",
  (_file, _source, i) => {
    expect(forbidden[i]).toHaveLength(1);
  },
);

test.each(ALLOWED.map(([file, source], i) => [file, source, i] as const))("%s may say: %s", (_file, _source, i) => {
  expect(allowed[i]).toEqual([]);
});
