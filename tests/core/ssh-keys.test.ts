/** The public key of an OpenSSH private key file, read as ssh-keygen -y reads it. */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { holdsKey, openSshPublicKey } from "../../core";

describe("openSshPublicKey", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-keys-"));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each([
    ["ed25519", []],
    ["ecdsa", ["-b", "256"]],
    ["rsa", ["-b", "2048"]],
  ])("gives what ssh-keygen -y gives for a new %s key, passphrase or not", (type, bits) => {
    for (const passphrase of ["", "secret passphrase"]) {
      const file = path.join(dir, `${type}-${passphrase.length}`);
      expect(spawnSync("ssh-keygen", ["-q", "-t", type, ...bits, "-N", passphrase, "-C", "c", "-f", file]).status).toBe(
        0,
      );
      const expected = spawnSync("ssh-keygen", ["-y", "-P", passphrase, "-f", file], { encoding: "utf8" })
        .stdout.trim()
        .split(" ")
        .slice(0, 2)
        .join(" ");
      expect(openSshPublicKey(fs.readFileSync(file, "utf8"))).toBe(expected);
    }
  });

  it("gives nothing for another format or a damaged file", () => {
    expect(
      openSshPublicKey("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"),
    ).toBeUndefined();
    expect(
      openSshPublicKey(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5v\n-----END OPENSSH PRIVATE KEY-----\n",
      ),
    ).toBeUndefined();
  });

  it("holdsKey compares type and key, not comments", () => {
    expect(holdsKey(["ssh-ed25519 AAAA one@a", "ssh-rsa BBBB"], "ssh-ed25519 AAAA")).toBe(true);
    expect(holdsKey(["ssh-ed25519 AAAB one@a"], "ssh-ed25519 AAAA other")).toBe(false);
  });
});
