/**
 * `npm run scale-api`: its options, and that it never starts without a token (a scale API without
 * authentication would let anyone on the host resize the database cluster).
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { parseOptions } from "../../cli/scale-api";

const REPO = path.resolve(__dirname, "..", "..");

function runCli(args: string[], env: Record<string, string | undefined>) {
  const base = { ...process.env };
  delete base.MADBASE_SCALE_API_TOKEN;
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(REPO, "cli", "scale-api.ts"), ...args], {
    cwd: REPO,
    env: { ...base, ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stderr: r.stderr };
}

describe("npm run scale-api", () => {
  it("defaults to the local backend on 127.0.0.1:8001", () => {
    expect(parseOptions([])).toEqual({ backend: "local", stack: undefined, host: "127.0.0.1", port: 8001 });
    expect(parseOptions(["--backend", "pulumi", "--stack", "prod", "--port", "9000"])).toEqual({
      backend: "pulumi",
      stack: "prod",
      host: "127.0.0.1",
      port: 9000,
    });
  });

  it.each<[string[], RegExp]>([
    [["--backend", "aws"], /--backend "aws": use local or pulumi/],
    [["--backend", "pulumi"], /--backend pulumi needs --stack/],
    [["--port", "80000"], /--port "80000": use a TCP port/],
    [["--nodes", "3"], /Unknown option '--nodes'/],
  ])("refuses %p", (args, message) => {
    expect(() => parseOptions(args)).toThrow(message);
  });

  it("refuses to start without MADBASE_SCALE_API_TOKEN, or with a short one", () => {
    const none = runCli([], {});
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/MADBASE_SCALE_API_TOKEN is not set; refusing to start/);
    const short = runCli([], { MADBASE_SCALE_API_TOKEN: "short" });
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/at least 24 characters/);
  });
});
