/**
 * The GitHub workflows: they pass a GitHub workflow validator (@action-validator/core, the schema
 * checks of action-validator), the pull-request workflow tests and previews every stack with a
 * comment on the PR, `pulumi up` runs only on demand behind the stack's environment, and every
 * command they run (and the CLI form of each pulumi/actions step) is one the README documents.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { validateWorkflow } from "@action-validator/core";
import * as yaml from "js-yaml";

const ROOT = path.resolve(__dirname, "..", "..");
const DIR = path.join(ROOT, ".github", "workflows");
const FILES = fs.readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f));
const load = (f: string) => yaml.load(fs.readFileSync(path.join(DIR, f), "utf8")) as any;
const STACKS = fs
  .readdirSync(ROOT)
  .flatMap((f) => /^Pulumi\.([^.]+)\.yaml$/.exec(f)?.[1] ?? [])
  .sort();
/** The secrets the README tells an operator to create. */
const SECRETS = ["PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "HCLOUD_TOKEN"];

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}

function jobs(f: string): [string, any][] {
  return Object.entries(load(f).jobs);
}

/** Values an expression like `${{ matrix.stack }}` or `${{ inputs.stack }}` takes in a job. */
function expand(value: string, job: any, workflow: any): string[] {
  const m = /^\$\{\{\s*(matrix|inputs)\.(\w+)\s*\}\}$/.exec(value);
  if (!m) return [value];
  if (m[1] === "matrix") return job.strategy?.matrix?.[m[2]] ?? [];
  return workflow.on?.workflow_dispatch?.inputs?.[m[2]]?.options ?? [];
}

/** Every shell command the workflows run, and `pulumi <command> --stack <stack>` for each Pulumi step. */
function commands(): { file: string; job: string; command: string }[] {
  const out: { file: string; job: string; command: string }[] = [];
  for (const file of FILES) {
    const wf = load(file);
    for (const [name, job] of jobs(file)) {
      for (const step of job.steps as Step[]) {
        if (step.run) {
          for (const line of step.run.split("\n")) {
            for (const command of line
              .split("&&")
              .map((c) => c.trim())
              .filter(Boolean))
              out.push({ file, job: name, command });
          }
        }
        if (step.uses?.startsWith("pulumi/actions@")) {
          for (const stack of expand(String(step.with?.["stack-name"]), job, wf)) {
            out.push({ file, job: name, command: `pulumi ${step.with?.command} --stack ${stack}` });
          }
        }
      }
    }
  }
  return out;
}

test.each(FILES)("%s passes the GitHub workflow validator", (file) => {
  const result = validateWorkflow(fs.readFileSync(path.join(DIR, file), "utf8"));
  expect(result.errors).toEqual([]);
});

test("the validator does catch a broken workflow (a step that both runs and uses)", () => {
  const broken =
    "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: npm test\n        uses: actions/checkout@v4\n";
  expect(validateWorkflow(broken).errors.length).toBeGreaterThan(0);
});

describe("pull requests", () => {
  const file = "pull-request.yml";
  const wf = load(file);

  test("run on every pull request, with read-only contents by default", () => {
    expect(Object.keys(wf.on)).toEqual(["pull_request"]);
    expect(wf.permissions).toEqual({ contents: "read" });
  });

  test("install the Debian packages, install, then run the tests", () => {
    const runs = (wf.jobs.test.steps as Step[]).filter((s) => s.run).map((s) => s.run);
    expect(runs).toEqual(["bash scripts/setup-debian.sh", "npm ci", "npm test"]);
    expect(wf.jobs.test.container).toMatchObject({ image: "debian:13", options: "--privileged" });
  });

  test("preview every stack after the tests pass, commenting the diff on the PR", () => {
    const preview = wf.jobs.preview;
    expect(preview.needs).toBe("test");
    expect([...preview.strategy.matrix.stack].sort()).toEqual(STACKS);
    expect(preview.permissions).toMatchObject({ "pull-requests": "write" });
    const step = (preview.steps as Step[]).find((s) => s.uses?.startsWith("pulumi/actions@"))!;
    expect(step.with).toMatchObject({
      command: "preview",
      "stack-name": "${{ matrix.stack }}",
      "comment-on-pr": true,
      "github-token": "${{ secrets.GITHUB_TOKEN }}",
    });
    for (const secret of SECRETS) expect(preview.env[secret]).toBe(`\${{ secrets.${secret} }}`);
  });
});

describe("deploys", () => {
  const file = "deploy.yml";
  const wf = load(file);

  test("run only when asked, for a stack chosen from the committed ones", () => {
    expect(Object.keys(wf.on)).toEqual(["workflow_dispatch"]);
    expect(wf.on.workflow_dispatch.inputs.stack).toMatchObject({ type: "choice", required: true });
    expect([...wf.on.workflow_dispatch.inputs.stack.options].sort()).toEqual(STACKS);
    expect(wf.concurrency).toMatchObject({ group: "pulumi-${{ inputs.stack }}", "cancel-in-progress": false });
  });

  test("pulumi up waits for the stack's environment (its required reviewers), after a preview", () => {
    const upJobs = jobs(file).filter(([, j]) =>
      (j.steps as Step[]).some((s) => s.uses?.startsWith("pulumi/actions@") && s.with?.command === "up"),
    );
    expect(upJobs).toHaveLength(1);
    const [, up] = upJobs[0];
    expect(up.environment).toBe("${{ inputs.stack }}");
    expect(up.needs).toBe("preview");
    for (const secret of SECRETS) expect(wf.env[secret]).toBe(`\${{ secrets.${secret} }}`);
  });

  test("no other workflow runs pulumi up or destroy", () => {
    for (const c of commands()) {
      if (/^pulumi (up|destroy)\b/.test(c.command)) expect(c.file).toBe(file);
    }
  });
});

test("every command the workflows run is one the README documents, and so are the secrets", () => {
  const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
  const all = commands();
  expect(all.map((c) => c.command)).toEqual(
    expect.arrayContaining([
      "npm test",
      "pulumi preview --stack dev",
      "pulumi preview --stack prod",
      "pulumi up --stack prod",
    ]),
  );
  const undocumented = [...new Set(all.map((c) => c.command))].filter((c) => !readme.includes(c));
  expect(undocumented).toEqual([]);
  expect(SECRETS.filter((s) => !readme.includes(s))).toEqual([]);
});
