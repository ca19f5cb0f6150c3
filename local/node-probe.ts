/**
 * What a booted node says about itself, read the way an operator on Hetzner's console would:
 * systemd's view of each unit, cloud-init's result for this boot, the node's readiness marker,
 * whether the data volume is mounted, the postmaster's PID. Read from the host through the
 * machine's /proc/<pid 1>/root (its own mounts included) and one `systemctl show`, so it works while
 * the node's network is cut.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { serverPaths } from "../core";
import { MachineRecord, initPid, machineExecAsync } from "./machine";
import { SERVICES, Service, UNITS } from "./state";

export type CloudInitStatus = "done" | "running" | "error" | "not running";

export interface NodeProbe {
  /** false: the machine is powered off. */
  running: boolean;
  /** Each service's unit: its ActiveState (active, activating, failed, inactive) and main PID. */
  units: Record<Service, { state: string; pid: number | null }>;
  /** The postmaster's PID (inside the node), when PostgreSQL runs. */
  postmasterPid: number | null;
  cloudInit: CloudInitStatus;
  /** cloud-init's errors for this boot (a failed first-boot script shows here). */
  cloudInitErrors: string[];
  /** The node's readiness marker exists: its first boot finished. */
  ready: boolean;
  /** PostgreSQL's volume is mounted at its place. */
  volumeMounted: boolean;
}

const SERVER = serverPaths();

function readText(file: string | undefined): string | undefined {
  if (!file) return undefined;
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** `systemctl show` output: blocks of KEY=value lines, one block per unit. */
export function parseSystemctlShow(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const block of text.split(/\n\s*\n/)) {
    const props: Record<string, string> = {};
    for (const line of block.split("\n")) {
      const i = line.indexOf("=");
      if (i > 0) props[line.slice(0, i)] = line.slice(i + 1);
    }
    if (props.Id) out[props.Id] = props;
  }
  return out;
}

/** cloud-init's result.json (written when its last stage ends): done, or done with errors. */
export function parseCloudInitResult(
  text: string | undefined,
  statusJson: string | undefined,
): { status: CloudInitStatus; errors: string[] } {
  if (text) {
    try {
      const errors = ((JSON.parse(text) as { v1?: { errors?: unknown[] } }).v1?.errors ?? []).map(String);
      return { status: errors.length > 0 ? "error" : "done", errors };
    } catch {
      return { status: "running", errors: [] };
    }
  }
  return { status: statusJson ? "running" : "not running", errors: [] };
}

/**
 * True while the machine runs and its first boot has neither finished (no readiness marker) nor
 * failed (cloud-init's result is not written yet): read from the host through /proc, no process
 * started, so `waitHealthy` can ask it often and look at every daemon less often meanwhile.
 */
export function firstBootRunning(m: MachineRecord): boolean {
  const init = initPid(m);
  if (!init) return false;
  const inside = (file: string) => path.join(`/proc/${init}/root`, file);
  return !fs.existsSync(inside(SERVER.readyMarker)) && !fs.existsSync(inside("/run/cloud-init/result.json"));
}

export async function probeNode(m: MachineRecord): Promise<NodeProbe> {
  const init = initPid(m);
  const units = Object.fromEntries(SERVICES.map((s) => [s, { state: "unknown", pid: null }])) as NodeProbe["units"];
  if (!init) {
    return {
      running: false,
      units,
      postmasterPid: null,
      cloudInit: "not running",
      cloudInitErrors: [],
      ready: false,
      volumeMounted: false,
    };
  }
  const inside = (file: string) => path.join(`/proc/${init}/root`, file);
  const shown = await machineExecAsync(
    m,
    ["systemctl", "show", "--property=Id,ActiveState,MainPID", ...SERVICES.map((s) => UNITS[s])],
    { timeoutMs: 10_000 },
  );
  const props = parseSystemctlShow(shown.stdout);
  for (const s of SERVICES) {
    const p = props[UNITS[s]];
    if (!p) continue;
    const pid = Number(p.MainPID);
    units[s] = { state: p.ActiveState ?? "unknown", pid: p.ActiveState === "active" && pid > 0 ? pid : null };
  }
  const pidLine = readText(inside(path.join(SERVER.pgDataDir, "postmaster.pid")))?.split("\n")[0];
  let postmasterPid: number | null = null;
  if (pidLine && /^\d+$/.test(pidLine.trim())) {
    // The PID is the node's own; it is running when a process of that PID exists in the node.
    const alive = (await machineExecAsync(m, ["kill", "-0", pidLine.trim()], { timeoutMs: 5000 })).code === 0;
    postmasterPid = alive ? Number(pidLine) : null;
  }
  const result = parseCloudInitResult(
    readText(inside("/run/cloud-init/result.json")),
    readText(inside("/run/cloud-init/status.json")),
  );
  const mounts = readText(`/proc/${init}/mounts`) ?? "";
  return {
    running: true,
    units,
    postmasterPid,
    cloudInit: result.status,
    cloudInitErrors: result.errors,
    ready: fs.existsSync(inside(SERVER.readyMarker)),
    volumeMounted: mounts.split("\n").some((line) => line.split(" ")[1] === SERVER.volumeMount),
  };
}
