/**
 * The one stack-config reader: a stack file's secure values read as "set, value unknown" (never
 * decrypted, never shown, never validated), a plain-text secret in the file is refused, and
 * Pulumi's config map splits the same way.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  ConfigError,
  SECRET_CONFIG_KEYS,
  loadStackConfig,
  loadStackSettings,
  parseStackConfig,
  splitStackConfig,
} from "../../core";

const root = path.resolve(__dirname, "..", "..");
const PROD = fs.readFileSync(path.join(root, "Pulumi.prod.yaml"), "utf8");
/** What `pulumi config set --secret` writes: ciphertext the reader must never show or decrypt. */
const CIPHER = (key: string) => `v1:AAAAAAAAAAAAAAAA${key}CipherText0123456789==`;
const secureLines = (keys: readonly string[]) =>
  keys.map((k) => `  madbase-state:${k}:\n    secure: ${CIPHER(k)}\n`).join("");

const dirs: string[] = [];
/** A directory holding Pulumi.prod.yaml: the committed prod file with `extra` lines under `config:`. */
function stackDir(extra: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-stack-config-"));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, "Pulumi.prod.yaml"), PROD.replace(/\n?$/, "\n") + extra);
  return dir;
}
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function refusal(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

describe("a stack file with secure values", () => {
  it("loads, reports every secret key set and keeps the settings the file gives", () => {
    const read = loadStackConfig("prod", {}, stackDir(secureLines(SECRET_CONFIG_KEYS)));
    expect(read.secretsSet).toEqual({ backupAccessKey: true, backupSecretKey: true, sshPrivateKey: true });
    expect(read.settings).toEqual(loadStackSettings("prod"));
    expect(JSON.stringify(read)).not.toMatch(/CipherText|secure/);
  });

  it("reports only the keys it sets: sshPrivateKey alone", () => {
    const read = loadStackConfig("prod", {}, stackDir(secureLines(["sshPrivateKey"])));
    expect(read.secretsSet).toEqual({ backupAccessKey: false, backupSecretKey: false, sshPrivateKey: true });
  });

  it("reports none set for the committed stack files", () => {
    for (const stack of ["dev", "prod"])
      expect(loadStackConfig(stack).secretsSet).toEqual({
        backupAccessKey: false,
        backupSecretKey: false,
        sshPrivateKey: false,
      });
  });

  it("puts overrides on top, and loadStackSettings returns the same settings", () => {
    const dir = stackDir(secureLines(SECRET_CONFIG_KEYS));
    const read = loadStackConfig("prod", { nodeCount: "5", failoverProfile: "fast" }, dir);
    expect(read.settings).toMatchObject({ nodeCount: 5, failoverProfile: "fast", plan: "cx31" });
    expect(loadStackSettings("prod", { nodeCount: "5", failoverProfile: "fast" }, dir)).toEqual(read.settings);
  });
});

describe("refusals of a stack file", () => {
  it.each(SECRET_CONFIG_KEYS)("a plain-text %s, naming the key and the fix, never the value", (key) => {
    const dir = stackDir(`  madbase-state:${key}: plain-hunter2-value\n`);
    const e = refusal(() => loadStackConfig("prod", {}, dir));
    expect(e.field).toBe(`madbase-state:${key}`);
    expect(e.message).toMatch(new RegExp(`^madbase-state:${key}: "\\(hidden\\)" is not allowed; `));
    expect(e.message).toContain(`pulumi config set --secret madbase-state:${key}`);
    expect(e.message).not.toContain("hunter2");
  });

  it.each<[string, string]>([
    ["an empty secure value", "  madbase-state:backupAccessKey:\n    secure: ''\n"],
    ["a secure value with other keys", `  madbase-state:backupAccessKey:\n    secure: v1:abc\n    plain: hunter2\n`],
    ["an empty value", "  madbase-state:sshPrivateKey:\n"],
  ])("a secret given as %s", (_label, extra) => {
    const e = refusal(() => loadStackConfig("prod", {}, stackDir(extra)));
    expect(e.message).toMatch(/^madbase-state:(backupAccessKey|sshPrivateKey): "\(hidden\)" is not allowed; /);
    expect(e.message).not.toContain("hunter2");
  });

  it("an unknown key, plain or secure, naming the key and not its value", () => {
    for (const extra of ["  madbase-state:backupAccesKey: hunter2\n", secureLines(["backupAccesKey"])]) {
      const e = refusal(() => loadStackConfig("prod", {}, stackDir(extra)));
      expect(e.message).toMatch(
        /^madbase-state \(unknown key\): "backupAccesKey" is not allowed; known keys are nodeCount, .*and the secrets backupAccessKey, backupSecretKey, sshPrivateKey/,
      );
      expect(e.message).not.toMatch(/hunter2|CipherText/);
    }
  });

  it("a secure value under a setting, which could not be read without Pulumi, never showing the ciphertext", () => {
    const dir = stackDir(secureLines(["volumeSizeGb"]));
    const e = refusal(() => loadStackConfig("prod", {}, dir));
    expect(e.message).toMatch(
      /^madbase-state:volumeSizeGb: "\(hidden\)" is not allowed; volumeSizeGb is not a secret.*pulumi config set madbase-state:volumeSizeGb/,
    );
    expect(e.message).not.toContain("CipherText");
  });
});

describe("Pulumi's config map", () => {
  const all = {
    "madbase-state:nodeCount": "5",
    "madbase-state:adminCidrs": '["203.0.113.4/32"]',
    "madbase-state:backupAccessKey": "HZ1ACCESSKEYEXAMPLE0",
    "madbase-state:sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
    "hcloud:token": "not-ours",
  };

  it("splits the same way: secrets set but never among the settings, lists parsed, other namespaces left out", () => {
    const split = splitStackConfig({ pulumiConfig: all });
    expect(split).toEqual({
      settings: { nodeCount: "5", adminCidrs: ["203.0.113.4/32"] },
      secretsSet: { backupAccessKey: true, backupSecretKey: false, sshPrivateKey: true },
    });
  });

  it("validates the settings", () => {
    const read = parseStackConfig("prod", { pulumiConfig: all });
    expect(read.settings).toMatchObject({ stack: "prod", nodeCount: 5, adminCidrs: ["203.0.113.4/32"] });
    expect(JSON.stringify(read)).not.toMatch(/HZ1ACCESSKEY|PRIVATE KEY/);
  });
});
