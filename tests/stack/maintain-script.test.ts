/**
 * scripts/hetzner/maintain-server.sh, the command Pulumi runs for each node's part of a rolling
 * maintenance, with a stand-in for ssh that runs the remote scripts here and plays a server's
 * boot id (a scheduled reboot gives it a new one): node-maintain alone when it asks for no reboot;
 * node-maintain → clean reboot → SSH on a new boot → node-settle when it does; nothing touched and
 * the node named when node-maintain fails; and, on an update whose previous output shows this
 * revision done (a rotated key or a new script text), no SSH at all. Its one line of stdout is
 * what the next update reads back.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { run } from "../support/proc";

const SCRIPT = path.resolve(__dirname, "..", "..", "scripts", "hetzner", "maintain-server.sh");
const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----";

let work: string;
let timeline: string;
let bootFile: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-maintain-"));
  timeline = path.join(work, "timeline");
  bootFile = path.join(work, "boot_id");
  // ssh's stand-in: a reboot gives the "server" a new boot id; a boot id read answers it; any other
  // script runs here, as root's `bash -s` would there.
  fs.writeFileSync(
    path.join(work, "fake-ssh"),
    `#!/bin/bash
script=$(cat)
case $script in
  *"systemctl reboot"*) echo reboot >>"$TIMELINE"; echo "boot-$RANDOM$RANDOM" >"$BOOT_FILE" ;;
  *boot_id*) cat "$BOOT_FILE" ;;
  *) echo "ssh: \${script%%$'\\n'*}" >>"$TIMELINE"; bash -s <<<"$script" ;;
esac
`,
    { mode: 0o755 },
  );
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

beforeEach(() => {
  fs.writeFileSync(timeline, "");
  fs.writeFileSync(bootFile, "boot-first\n");
});

function maintain(maintainScript: string, extra: Record<string, string> = {}) {
  return run(["bash", SCRIPT], {
    timeoutMs: 30_000,
    env: {
      ...process.env,
      NODE_HOST: "203.0.113.7",
      NODE_NAME: "madbase-prod-2",
      MADBASE_SSH_KEY: KEY,
      MADBASE_SSH: path.join(work, "fake-ssh"),
      MAINTAIN_SCRIPT: maintainScript,
      SETTLE_SCRIPT: "# node-settle\necho settled",
      MAINTENANCE_REVISION: "4",
      MAINTAIN_POLL_SECONDS: "0.1",
      TIMELINE: timeline,
      BOOT_FILE: bootFile,
      ...extra,
    },
  });
}
const steps = () => fs.readFileSync(timeline, "utf8").trim().split("\n").filter(Boolean);

test("node-maintain without a reboot asked: it alone runs, and stdout says the revision is done", async () => {
  const r = await maintain("# node-maintain\necho upgraded");
  expect([r.code, r.stdout]).toEqual([0, "maintenance revision 4 done\n"]);
  expect(steps()).toEqual(["ssh: # node-maintain"]);
  expect(r.stderr).toContain("upgraded");
});

test("node-maintain asks for a reboot: a clean reboot, SSH on the new boot, then node-settle", async () => {
  const r = await maintain("# node-maintain\necho 'madbase-maintain: reboot required'");
  expect([r.code, r.stdout]).toEqual([0, "maintenance revision 4 done\n"]);
  expect(steps()).toEqual(["ssh: # node-maintain", "reboot", "ssh: # node-settle"]);
  expect(fs.readFileSync(bootFile, "utf8")).not.toBe("boot-first\n");
});

test("node-maintain fails: no reboot, no settle, the node named, nothing on stdout", async () => {
  const r = await maintain("# node-maintain\necho 'madbase-maintain: reboot'; exit 3");
  expect(r.code).not.toBe(0);
  expect(r.stdout).toBe("");
  expect(r.stderr).toContain("the roll stops at madbase-prod-2");
  expect(steps()).toEqual(["ssh: # node-maintain"]);
});

test("an update whose previous run did this revision touches nothing; one that did an older revision maintains", async () => {
  const same = await maintain("# node-maintain\necho upgraded", {
    PULUMI_COMMAND_STDOUT: "maintenance revision 4 done",
  });
  expect([same.code, same.stdout]).toEqual([0, "maintenance revision 4 done\n"]);
  expect(steps()).toEqual([]);
  const older = await maintain("# node-maintain\necho upgraded", {
    PULUMI_COMMAND_STDOUT: "maintenance revision 3 done",
  });
  expect([older.code, older.stdout]).toEqual([0, "maintenance revision 4 done\n"]);
  expect(steps()).toEqual(["ssh: # node-maintain"]);
});
