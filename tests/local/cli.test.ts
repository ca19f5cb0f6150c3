/**
 * Bad usage gets a clear message and a non-zero exit, before anything is created. (A second `up`
 * while a cluster runs is in forms.test.ts, which has a cluster.)
 */
import * as fs from "node:fs";
import { ConfigError } from "../../core";
import { loadStackSettings } from "../../core";
import { namespaceExists } from "../../local/network";
import { cli, testLocation } from "./harness";

const loc = testLocation(9);

afterAll(() => fs.rmSync(loc.root, { recursive: true, force: true }));

test("an unknown flag is named, with the usage", () => {
  const r = cli(["up", "--frobnicate"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("--frobnicate");
  expect(r.stderr).toContain("usage: npm run local --");
});

test("an unknown command is named, with the usage", () => {
  const r = cli(["upp"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('unknown command "upp"');
});

test("--nodes 2 is refused with the render core's own message", () => {
  let expected = "";
  try {
    loadStackSettings("dev", { nodeCount: "2" });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expected = (e as Error).message;
  }
  expect(expected).toContain("nodeCount");
  const r = cli(["up", "--stack", "dev", "--nodes", "2"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(expected);
  expect(fs.existsSync(loc.root)).toBe(false);
});

test("prod refuses fewer than 3 nodes (requireHa)", () => {
  const r = cli(["up", "--nodes", "1"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("requires HA");
});

test("missing host tools are named with their Debian packages and the setup script, and nothing is created", () => {
  const r = cli(["up", "--profile", "fast"], { loc, env: { PATH: "/nonexistent" } });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("systemd-nspawn");
  expect(r.stderr).toContain("systemd-container");
  expect(r.stderr).toContain("mmdebstrap");
  expect(r.stderr).toContain("openssh-client");
  expect(r.stderr).toContain("scripts/setup-debian.sh");
  expect(fs.existsSync(loc.root)).toBe(false);
  expect(namespaceExists(`${loc.networkId}-hub`)).toBe(false);
});

test("status, kill-node and down without a cluster say so", () => {
  const st = cli(["status"], { loc });
  expect(st.code).toBe(2);
  expect(st.stderr).toContain("no local cluster is running");
  expect(cli(["kill-node", "madbase-prod-1"], { loc }).stderr).toContain("no local cluster is running");
  const d = cli(["down"], { loc });
  expect(d.code).toBe(0);
});

test("a node command without a node name is refused", () => {
  const r = cli(["kill-node"], { loc });
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("needs a node name");
});
