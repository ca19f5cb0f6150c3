/**
 * A local "Hetzner server": what Hetzner gives a node and nothing more. A machine boots the node
 * image under systemd (`systemd-nspawn --boot`) inside the node's network namespace, with
 *  - its own root: an overlay on the shared image, so nodes never write into it or each other;
 *  - a data volume: a sparse file on a loop device, at the path Hetzner uses
 *    (/dev/disk/by-id/scsi-0HC_Volume_<id>), which the node's own mount script formats and mounts;
 *  - cloud-init's NoCloud seed: the user data the Pulumi program sends Hetzner, and meta-data with
 *    the host name and the SSH key (Hetzner's metadata service hands out the same two things).
 * What runs inside is the node's business: its first-boot script, its units. The runner reaches it
 * over SSH like Pulumi does; `exec` (nsenter) is the equivalent of Hetzner's console, for what must
 * work while the network is cut.
 */
import { ChildProcess, execFile, execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

/**
 * The boot flags, in one place. Probed on a Debian 12 host (nspawn 252, hybrid cgroups):
 * --register=no --keep-unit: no systemd on the host to register with ("Failed to open system bus");
 * the unified hierarchy: trixie's systemd 257 wants cgroup v2;
 * --timezone=off: the default bind-mounts /etc/localtime, and package scripts then fail on it;
 * --capability=CAP_NET_ADMIN: root on a server may load firewall rules (the node's nftables
 * guard of the metadata address), and nspawn drops it by default; it reaches only the node's own
 * network namespace.
 */
export const NSPAWN_ENV = { SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: "1" };
export function nspawnArgs(m: MachineRecord): string[] {
  return [
    "--quiet",
    "--boot",
    "--register=no",
    "--keep-unit",
    "--timezone=off",
    "--capability=CAP_NET_ADMIN",
    `--directory=${m.rootDir}`,
    `--machine=${m.name}`,
    `--network-namespace-path=/run/netns/${m.namespace}`,
    ...(m.loopDevice ? [`--bind=${m.loopDevice}:${volumeDevicePath(m.volumeId)}`] : []),
    ...m.binds.map((b) => `--bind=${b.host}:${b.node}`),
  ];
}

/** The cgroup hierarchies a machine's own cgroup is made in (unified: systemd 257's; name=systemd: the legacy one). */
const CGROUP_HIERARCHIES = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"];
const CGROUP_PARENT = "madbase.slice";

export function cgroupName(m: Pick<MachineRecord, "namespace">): string {
  return `machine-${m.namespace}`;
}

/** `sh -c` that moves itself into the machine's cgroup in each hierarchy there is, then becomes systemd-nspawn. */
const ENTER_CGROUP = [
  `for h in ${CGROUP_HIERARCHIES.join(" ")}; do`,
  '  [ -f "$h/cgroup.procs" ] || continue',
  `  d="$h/${CGROUP_PARENT}/$0"`,
  '  mkdir -p "$d" && echo $$ > "$d/cgroup.procs" || exit 1',
  "done",
  'exec systemd-nspawn "$@"',
].join("\n");

/** Removes a stopped machine's cgroups, the ones its systemd made inside them first. */
function removeCgroups(m: Pick<MachineRecord, "namespace">): void {
  for (const h of CGROUP_HIERARCHIES) {
    const top = path.join(h, CGROUP_PARENT, cgroupName(m));
    if (!fs.existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
      dirs.push(d);
    };
    walk(top);
    for (const d of dirs) {
      try {
        fs.rmdirSync(d);
      } catch {
        // still has a process: left for the next removal
      }
    }
  }
}

/** Where Hetzner shows an attached volume, and where the mount script looks for it. */
export function volumeDevicePath(volumeId: number): string {
  return `/dev/disk/by-id/scsi-0HC_Volume_${volumeId}`;
}

/** What the runner keeps about a machine (in state.json), enough to boot, cut and remove it. */
export interface MachineRecord {
  name: string;
  namespace: string;
  /** <cluster root>/<node>/machine: overlay layers, volume file, console log. */
  dir: string;
  image: string;
  rootDir: string;
  volumeFile: string;
  volumeId: number;
  /** The loop device the volume file is attached to; absent for a machine booted without its volume. */
  loopDevice?: string;
  /** Host directories shown inside the machine (the local backup repository). */
  binds: { host: string; node: string }[];
  /** The systemd-nspawn process while the machine runs. */
  nspawnPid?: number;
}

export interface MachineSpec {
  name: string;
  namespace: string;
  dir: string;
  image: string;
  volumeId: number;
  volumeGb: number;
  /** false: boot without attaching the volume (a node whose volume failed to attach). */
  attachVolume?: boolean;
  userData: string;
  /** cloud-init's meta-data: instance id, host name, the SSH public keys for root. */
  metaData: { instanceId: string; hostname: string; publicKeys: string[] };
  binds?: { host: string; node: string }[];
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

function isMounted(dir: string): boolean {
  return fs
    .readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .some((line) => line.split(" ")[1] === dir);
}

/** Lays out a machine: its overlay root on the image, its volume on a loop device, its seed. */
export function createMachine(spec: MachineSpec): MachineRecord {
  const dir = path.resolve(spec.dir);
  const upper = path.join(dir, "upper");
  const work = path.join(dir, "work");
  const rootDir = path.join(dir, "root");
  for (const d of [upper, work, rootDir]) fs.mkdirSync(d, { recursive: true });
  const m: MachineRecord = {
    name: spec.name,
    namespace: spec.namespace,
    dir,
    image: spec.image,
    rootDir,
    volumeFile: path.join(dir, "volume.img"),
    volumeId: spec.volumeId,
    binds: spec.binds ?? [],
  };
  if (!isMounted(rootDir))
    run("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${spec.image},upperdir=${upper},workdir=${work}`,
      rootDir,
    ]);
  // Sparse: a 10 GB volume costs only what PostgreSQL writes.
  if (!fs.existsSync(m.volumeFile)) {
    fs.closeSync(fs.openSync(m.volumeFile, "w"));
    fs.truncateSync(m.volumeFile, spec.volumeGb * 1024 ** 3);
  }
  if (spec.attachVolume !== false) m.loopDevice = run("losetup", ["--find", "--show", m.volumeFile]);
  writeSeed(m, spec);
  return m;
}

/** cloud-init's NoCloud seed: found at boot like Hetzner's metadata service, read once per instance. */
function writeSeed(m: MachineRecord, spec: MachineSpec): void {
  const seed = path.join(m.rootDir, "var", "lib", "cloud", "seed", "nocloud");
  fs.mkdirSync(seed, { recursive: true, mode: 0o700 });
  const meta = [
    `instance-id: ${spec.metaData.instanceId}`,
    `local-hostname: ${spec.metaData.hostname}`,
    "public-keys:",
    ...spec.metaData.publicKeys.map((k) => `  - ${JSON.stringify(k)}`),
    "",
  ].join("\n");
  fs.writeFileSync(path.join(seed, "meta-data"), meta, { mode: 0o600 });
  // The user data holds the cluster's secrets: root-only, as on Hetzner's metadata service.
  fs.writeFileSync(path.join(seed, "user-data"), spec.userData, { mode: 0o600 });
}

export function consoleLog(m: MachineRecord): string {
  return path.join(m.dir, "console.log");
}

export function isRunning(pid: number | undefined): pid is number {
  if (!pid) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Powers the machine on: systemd boots, then cloud-init (first boot only) and the enabled units. */
export function bootMachine(m: MachineRecord): number {
  if (isRunning(m.nspawnPid)) throw new Error(`${m.name} is already running (systemd-nspawn ${m.nspawnPid})`);
  const out = fs.openSync(consoleLog(m), "a");
  let child: ChildProcess;
  try {
    // Each machine in a cgroup of its own, entered before systemd-nspawn starts (it keeps the
    // caller's cgroup: --keep-unit). Without a host systemd to give it one, every container's
    // systemd would manage the same /system.slice/<unit> cgroups, and stopping a unit on one node
    // would kill that daemon on every node.
    child = spawn("sh", ["-c", ENTER_CGROUP, cgroupName(m), ...nspawnArgs(m)], {
      detached: true,
      stdio: ["ignore", out, out],
      env: { ...process.env, ...NSPAWN_ENV },
    });
  } finally {
    fs.closeSync(out);
  }
  if (child.pid === undefined) throw new Error(`could not start systemd-nspawn for ${m.name}`);
  child.on("error", () => undefined);
  const pid = child.pid;
  child.on("exit", (code, signal) =>
    exits.set(pid, signal ? `systemd-nspawn killed by ${signal}` : `systemd-nspawn exited with ${code}`),
  );
  child.unref();
  m.nspawnPid = child.pid;
  return child.pid;
}

/**
 * The machine's PID 1 (systemd), seen from the host; undefined while it is not up. systemd-nspawn
 * forks an outer child that sets the container up and then clones the init: "a running child of
 * nspawn" can be that outer child, or a short-lived helper, which is why init is recognised by what
 * it is, PID 1 of its own PID namespace, among nspawn's children and grandchildren.
 */
export function initPid(m: MachineRecord): number | undefined {
  if (!isRunning(m.nspawnPid)) return undefined;
  const children = childPids(m.nspawnPid);
  return [...children, ...children.flatMap(childPids)].find((pid) => isRunning(pid) && isNamespaceInit(pid));
}

function childPids(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** `NSpid:` lists a process's PID in each nested namespace; the innermost is 1 for a container's init. */
function isNamespaceInit(pid: number): boolean {
  try {
    const line = fs
      .readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((l) => l.startsWith("NSpid:"));
    const ids = line?.split(/\s+/).slice(1) ?? [];
    return ids.length > 1 && ids[ids.length - 1] === "1";
  } catch {
    return false;
  }
}

/** How systemd-nspawn ended, for the machines this process started (said when a boot fails). */
const exits = new Map<number, string>();

export function nspawnExit(m: MachineRecord): string {
  if (isRunning(m.nspawnPid)) return "systemd-nspawn is running";
  return (m.nspawnPid && exits.get(m.nspawnPid)) ?? "systemd-nspawn exited";
}

/** The last lines the machine printed, without the blank ones. */
export function consoleTail(m: MachineRecord, lines = 15): string[] {
  if (!fs.existsSync(consoleLog(m))) return ["(no console log)"];
  const tail = fs
    .readFileSync(consoleLog(m), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(-lines);
  return tail.length > 0 ? tail : ["(the console is empty)"];
}

/** Waits for PID 1 to exist (systemd-nspawn sets up the container first). */
export async function waitForInit(m: MachineRecord, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = initPid(m);
    if (pid) return pid;
    if (!isRunning(m.nspawnPid) || Date.now() > deadline) {
      const how = isRunning(m.nspawnPid) ? "systemd-nspawn still starting" : nspawnExit(m);
      throw new Error(`${m.name} did not boot (${how}); console:\n${consoleTail(m).join("\n")}`);
    }
    await sleep(100);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitExit(pid: number | undefined, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

/** A power cut: SIGKILL to PID 1 ends every process of the machine at the same instant. */
export async function powerCut(m: MachineRecord): Promise<number | undefined> {
  const init = initPid(m);
  if (init) process.kill(init, "SIGKILL");
  if (m.nspawnPid && !(await waitExit(m.nspawnPid, 15_000))) process.kill(m.nspawnPid, "SIGKILL");
  await waitExit(m.nspawnPid, 5_000);
  m.nspawnPid = undefined;
  return init;
}

/**
 * A clean shutdown (systemd stops every unit in order: Patroni stops PostgreSQL and hands back its
 * lock). systemd-nspawn turns SIGTERM into a poweroff of the machine; a machine that has not
 * stopped after `graceMs` loses power.
 */
export async function shutdown(m: MachineRecord, graceMs = 60_000): Promise<"clean" | "forced" | "not running"> {
  if (!isRunning(m.nspawnPid)) return "not running";
  process.kill(m.nspawnPid, "SIGTERM");
  if (await waitExit(m.nspawnPid, graceMs)) {
    m.nspawnPid = undefined;
    return "clean";
  }
  await powerCut(m);
  return "forced";
}

export interface ExecResult {
  /** The exit code; null when the command was killed (its timeout) or the machine is not running. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of a command run in a machine: the node's own PATH, not this process's. */
const NODE_EXEC_ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" };

/**
 * nsenter's arguments for `argv` in every namespace of the machine whose PID 1 is `init`, bounded
 * in time inside the machine: nsenter forks the command into the machine's PID namespace, and
 * killing nsenter at a timeout left a command that does not stop at SIGTERM running there,
 * reparented to the host's init. coreutils' `timeout` ends the command itself, SIGTERM first,
 * SIGKILL a second later; the caller's own timeout, a little longer, is only the backstop.
 */
const inMachine = (init: number, argv: string[], timeoutMs: number) => [
  "--target",
  String(init),
  "--all",
  "--",
  "timeout",
  "--kill-after=1",
  `${timeoutMs / 1000}s`,
  ...argv,
];
/** How much longer the caller waits than `timeout` inside the machine. */
const BACKSTOP_MS = 3_000;
/**
 * The exit code to report: null when our `timeout` ended the command (it exits 124, or 137 after
 * its SIGKILL, once the deadline has passed). Before the deadline a 124 is the command's own
 * answer (a command that runs `timeout` itself), and stays.
 */
function exitCode(status: number | null, startedAt: number, timeoutMs: number): number | null {
  const ours = status !== null && [124, 137].includes(status) && Date.now() - startedAt >= timeoutMs;
  return ours ? null : status;
}

/** Runs a command inside the running machine, in all its namespaces, as root (Hetzner's console). */
export function machineExec(
  m: MachineRecord,
  argv: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): ExecResult {
  const init = initPid(m);
  if (!init) return { code: null, stdout: "", stderr: `${m.name} is not running` };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const startedAt = Date.now();
  const r = spawnSync("nsenter", inMachine(init, argv, timeoutMs), {
    encoding: "utf8",
    input: opts.input,
    timeout: timeoutMs + BACKSTOP_MS,
    env: NODE_EXEC_ENV,
  });
  return { code: exitCode(r.status, startedAt, timeoutMs), stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/**
 * machineExec without blocking this process: what the health probes use, so one slow or hung node
 * (its systemd busy, its disk stalled) holds only its own answer. A blocking call there froze the
 * event loop, and every other probe already in flight hit its timeout and read as "down".
 */
export function machineExecAsync(
  m: MachineRecord,
  argv: string[],
  opts: { timeoutMs?: number } = {},
): Promise<ExecResult> {
  const init = initPid(m);
  if (!init) return Promise.resolve({ code: null, stdout: "", stderr: `${m.name} is not running` });
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const startedAt = Date.now();
  return new Promise((resolve) => {
    execFile(
      "nsenter",
      inMachine(init, argv, timeoutMs),
      { encoding: "utf8", timeout: timeoutMs + BACKSTOP_MS, env: NODE_EXEC_ENV, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        // A non-zero exit is an answer; only a kill (the timeout) or a failed spawn has no code.
        const exit = error ? (typeof error.code === "number" ? error.code : null) : 0;
        resolve({ code: exitCode(exit, startedAt, timeoutMs), stdout: stdout ?? "", stderr: stderr ?? "" });
      },
    );
  });
}

/** A path inside the running machine, seen from the host (its mounts included: the volume). */
export function machinePath(m: MachineRecord, file: string): string | undefined {
  const init = initPid(m);
  return init ? path.join(`/proc/${init}/root`, file) : undefined;
}

/** Detaches the volume and removes the machine's layers (stop it first). Safe to call twice. */
export function destroyMachine(m: MachineRecord): void {
  if (isRunning(m.nspawnPid))
    throw new Error(`${m.name} still runs (systemd-nspawn ${m.nspawnPid}); shut it down first`);
  if (isMounted(m.rootDir)) run("umount", [m.rootDir]);
  detachVolume(m);
  removeCgroups(m);
  fs.rmSync(m.dir, { recursive: true, force: true });
}

/** Detaches the loop device of the machine's volume file (every one, if an earlier run left some). */
export function detachVolume(m: MachineRecord): void {
  if (!fs.existsSync(m.volumeFile)) return;
  const attached = run("losetup", ["--associated", m.volumeFile])
    .split("\n")
    .map((line) => line.split(":")[0])
    .filter(Boolean);
  for (const dev of attached) run("losetup", ["--detach", dev]);
  m.loopDevice = undefined;
}
