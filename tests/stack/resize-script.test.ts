/**
 * scripts/hetzner/resize-server.sh against a fake Hetzner API on 127.0.0.1 (fastify) and a
 * stand-in for ssh that runs the drain and settle scripts here: one timeline records API calls and
 * remote runs, so the order (drain → shutdown → off → change_type → power on → SSH → settle) is
 * checked as it happened. Also: the no-op when the type already matches, the hard power-off after
 * the shutdown timeout, power-on again after a failed type change, nothing touched when the drain
 * fails, and ShellCheck.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Fastify, { FastifyInstance } from "fastify";
import { run } from "../support/proc";

const ROOT = path.resolve(__dirname, "..", "..");
const SCRIPT = path.join(ROOT, "scripts", "hetzner", "resize-server.sh");
const TOKEN = "fake-hcloud-token-0123456789";
const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----";

interface FakeServer {
  type: string;
  status: "running" | "off" | "starting" | "stopping";
  /** What the fake does with an ACPI shutdown: power off, or ignore it (a hung guest). */
  acpi: "off" | "ignore";
  /** Makes change_type's action end in error. */
  changeTypeFails?: boolean;
}

let work: string;
let log: string;
let api: FastifyInstance;
let endpoint: string;
let server: FakeServer;
let unauthorized = 0;

const timeline = () => fs.readFileSync(log, "utf8").trim().split("\n").filter(Boolean);
const note = (line: string) => fs.appendFileSync(log, `${line}\n`);

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-resize-"));
  log = path.join(work, "timeline");
  // ssh's stand-in: records the host and the key file it was given, then runs `bash -s` here.
  const fakeSsh = path.join(work, "fake-ssh");
  fs.writeFileSync(
    fakeSsh,
    `#!/bin/bash
prev=""; key=""
for a in "$@"; do [[ $prev == -i ]] && key=$a; prev=$a; done
script=$(cat)
# Refuses (as a booting server does) the next N connections, N from $REFUSE_FILE when there is one.
if [[ -n \${REFUSE_FILE:-} && -f $REFUSE_FILE && $(cat "$REFUSE_FILE") -gt 0 ]]; then
  echo $(($(cat "$REFUSE_FILE") - 1)) >"$REFUSE_FILE"
  echo "ssh refused" >>"$TIMELINE"
  exit 255
fi
printf 'ssh %s %s mode=%s key=%s\\n' "\${*: -3:1}" "$key" "$(stat -c %a "$key")" "$(head -c 35 "$key")" >>"$TIMELINE"
bash -s <<<"$script"
`,
    { mode: 0o755 },
  );

  api = Fastify();
  let actionId = 0;
  const actions = new Map<number, { polls: number; fails: boolean }>();
  api.addHook("onRequest", async (req, reply) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      unauthorized++;
      return reply.code(401).send({ error: { code: "unauthorized", message: "unable to authenticate" } });
    }
  });
  api.get("/v1/servers/:id", async (req) => ({
    server: {
      id: Number((req.params as { id: string }).id),
      status: server.status,
      server_type: { name: server.type },
    },
  }));
  api.post("/v1/servers/:id/actions/:action", async (req, reply) => {
    const { action } = req.params as { action: string };
    note(`api ${action}${req.body ? ` ${JSON.stringify(req.body)}` : ""} (status ${server.status})`);
    let fails = false;
    if (action === "shutdown" && server.status === "running" && server.acpi === "off") server.status = "off";
    if (action === "poweroff") server.status = "off";
    if (action === "change_type") {
      if (server.status !== "off")
        return reply.code(409).send({ error: { code: "server_not_stopped", message: "server must be stopped" } });
      if (server.changeTypeFails) fails = true;
      else server.type = (req.body as { server_type: string }).server_type;
    }
    if (action === "poweron") server.status = "running";
    const id = ++actionId;
    actions.set(id, { polls: 0, fails });
    return { action: { id, command: action, status: "running", error: null } };
  });
  api.get("/v1/servers/:id/actions/:aid", async (req) => {
    const id = Number((req.params as { aid: string }).aid);
    const a = actions.get(id)!;
    // Each action takes one poll to finish.
    const status = a.polls++ < 1 ? "running" : a.fails ? "error" : "success";
    return {
      action: {
        id,
        status,
        error: a.fails && status === "error" ? { code: "resize_failed", message: "no capacity" } : null,
      },
    };
  });
  await api.listen({ host: "127.0.0.1", port: 0 });
  const address = api.server.address() as { port: number };
  endpoint = `http://127.0.0.1:${address.port}/v1`;
});

afterAll(async () => {
  await api.close();
  fs.rmSync(work, { recursive: true, force: true });
});

beforeEach(() => {
  fs.writeFileSync(log, "");
  unauthorized = 0;
});

function resize(extra: Record<string, string> = {}) {
  return run(["bash", SCRIPT], {
    timeoutMs: 60_000,
    env: {
      PATH: process.env.PATH,
      HOME: work,
      TIMELINE: log,
      HCLOUD_TOKEN: TOKEN,
      HCLOUD_ENDPOINT: endpoint,
      SERVER_ID: "4711",
      SERVER_TYPE: "cx43",
      NODE_HOST: "203.0.113.9",
      NODE_NAME: "madbase-prod-3",
      MADBASE_SSH_KEY: KEY,
      MADBASE_SSH: path.join(work, "fake-ssh"),
      DRAIN_SCRIPT: `echo drain on the node >>"${log}"`,
      SETTLE_SCRIPT: `echo settle on the node >>"${log}"`,
      RESIZE_POLL_SECONDS: "0.05",
      RESIZE_SHUTDOWN_TIMEOUT: "1",
      ...extra,
    },
  });
}

/** The timeline without the SSH probes' details, for order checks. */
const steps = () => timeline().map((l) => (l.startsWith("ssh root@") ? "ssh" : l.replace(/ \(status \w+\)$/, "")));

test("the script parses and passes ShellCheck", async () => {
  expect((await run(["bash", "-n", SCRIPT])).code).toBe(0);
  const sc = await run(["shellcheck", "-s", "bash", SCRIPT]);
  expect([sc.code, sc.stdout]).toEqual([0, ""]);
});

test("a server that already has the type is left alone", async () => {
  server = { type: "cx43", status: "running", acpi: "off" };
  const r = await resize();
  expect([r.code, r.stderr]).toEqual([0, ""]);
  expect(r.stdout).toBe("resize madbase-prod-3 (id 4711): already cx43; nothing to do\n");
  expect(timeline()).toEqual([]);
});

test("drain → shutdown → change_type → poweron → SSH → settle, one line per step, the key file gone afterwards", async () => {
  server = { type: "cx33", status: "running", acpi: "off" };
  const r = await resize();
  expect([r.code, r.stderr]).toEqual([0, ""]);
  expect(steps()).toEqual([
    "ssh",
    "drain on the node",
    "api shutdown",
    'api change_type {"server_type":"cx43","upgrade_disk":false}',
    "api poweron",
    "ssh", // SSH answers
    "ssh",
    "settle on the node",
  ]);
  expect(server).toMatchObject({ type: "cx43", status: "running" });
  // ssh got root@host and a 0600 file holding the key, which is removed when the script ends.
  const ssh = timeline().filter((l) => l.startsWith("ssh root@"));
  const keyFile = / (\S+) mode=/.exec(ssh[0])![1];
  for (const l of ssh)
    expect(l).toBe(`ssh root@203.0.113.9 ${keyFile} mode=600 key=-----BEGIN OPENSSH PRIVATE KEY-----`);
  expect(fs.existsSync(keyFile)).toBe(false);
  expect(r.stdout.trim().split("\n")).toEqual([
    "resize madbase-prod-3 (id 4711): cx33 → cx43 (status running)",
    "resize madbase-prod-3 (id 4711): draining: the node's leaderships move to other nodes",
    "resize madbase-prod-3 (id 4711): shutting down (ACPI)",
    "resize madbase-prod-3 (id 4711): off",
    "resize madbase-prod-3 (id 4711): changing type to cx43 (disk kept)",
    "resize madbase-prod-3 (id 4711): powering on",
    "resize madbase-prod-3 (id 4711): waiting for SSH",
    "resize madbase-prod-3 (id 4711): settling: waiting until the node serves and replicates again",
    "resize madbase-prod-3 (id 4711): done: cx43",
  ]);
  expect(unauthorized).toBe(0);
});

test("a server that ignores the ACPI shutdown is powered off only after the timeout, and the script says so", async () => {
  server = { type: "cx33", status: "running", acpi: "ignore" };
  const r = await resize();
  expect(r.code).toBe(0);
  expect(steps().filter((s) => s.startsWith("api"))).toEqual([
    "api shutdown",
    "api poweroff",
    'api change_type {"server_type":"cx43","upgrade_disk":false}',
    "api poweron",
  ]);
  expect(r.stdout).toContain("still not off 1 s after the ACPI shutdown: powering off (hard)");
});

test("a failed type change powers the server on again with its old type and fails", async () => {
  server = { type: "cx33", status: "running", acpi: "off", changeTypeFails: true };
  const r = await resize();
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/change_type \(action \d+\) failed: .*no capacity/);
  expect(r.stderr).toContain("failed while the server was off; powering it on again with its current type");
  expect(
    steps()
      .filter((s) => s.startsWith("api"))
      .at(-1),
  ).toBe("api poweron");
  expect(server).toMatchObject({ type: "cx33", status: "running" });
  expect(timeline()).not.toContain("settle on the node");
});

test("a failed drain touches nothing", async () => {
  server = { type: "cx33", status: "running", acpi: "off" };
  const r = await resize({ DRAIN_SCRIPT: "echo no healthy node to hand over to >&2; exit 3" });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("drain failed; the server was not touched");
  expect(steps().filter((s) => s.startsWith("api"))).toEqual([]);
  expect(server).toMatchObject({ type: "cx33", status: "running" });
});

test("a server found off (an earlier run stopped after the shutdown) is resized without a drain", async () => {
  server = { type: "cx33", status: "off", acpi: "off" };
  const r = await resize();
  expect(r.code).toBe(0);
  expect(steps()).toEqual([
    'api change_type {"server_type":"cx43","upgrade_disk":false}',
    "api poweron",
    "ssh",
    "ssh",
    "settle on the node",
  ]);
  expect(r.stdout).toContain("already off: not drained again");
});

test("SSH that answers late after power-on is waited for", async () => {
  server = { type: "cx33", status: "running", acpi: "off" };
  // The drain tells the stand-in to refuse the next 3 connections: the server "boots" slowly.
  const refuse = path.join(work, "refuse");
  const r = await resize({
    REFUSE_FILE: refuse,
    DRAIN_SCRIPT: `echo drain on the node >>"${log}"; echo 3 >"${refuse}"`,
  });
  fs.rmSync(refuse, { force: true });
  expect(r.code).toBe(0);
  expect(steps().slice(steps().indexOf("api poweron") + 1)).toEqual([
    "ssh refused",
    "ssh refused",
    "ssh refused",
    "ssh",
    "ssh",
    "settle on the node",
  ]);
});

test("missing settings and a bad type stop the script before any call", async () => {
  server = { type: "cx33", status: "running", acpi: "off" };
  const r = await resize({ SERVER_TYPE: 'cx43", "upgrade_disk": true' });
  expect(r.code).toBe(2);
  const noToken = await resize({ HCLOUD_TOKEN: "" });
  expect(noToken.code).not.toBe(0);
  expect(noToken.stderr).toMatch(/HCLOUD_TOKEN is not set/);
  expect(timeline()).toEqual([]);
});
