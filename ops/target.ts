/**
 * Where an operation acts, made explicit: the local cluster of a stack (its state under
 * MADBASE_LOCAL_ROOT, its own SSH key), or a Pulumi stack's servers, read with the Pulumi CLI
 * (`pulumi stack output --json --show-secrets`, the key from `pulumi config get
 * madbase-state:sshPrivateKey` or `--ssh-key FILE`). Both end as the same OpsSession.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ConfigError, RefusedError } from "../core";
import { OpsCommon, OpsTarget, checkLocalStack, targetFromStackOutputs } from "../core/ops";
import { Location, loadCluster, resolveLocation } from "../local/cluster";
import { LocalClusterState } from "../local/state";
import { SshIdentity, sshIdentity } from "../local/ssh";
import { OpsSession } from "./session";

/** A local cluster as a target: its nodes are reached at their private addresses from this machine. */
export function localTarget(state: LocalClusterState): OpsTarget {
  const relative = path.relative(process.cwd(), state.root);
  return {
    kind: "local",
    stack: state.stack,
    clusterName: state.clusterName,
    nodes: state.nodes.map((n) => ({ name: n.name, privateIp: n.address, sshHost: n.address })),
    description: `the local cluster of stack ${state.stack} (${relative && !relative.startsWith("..") ? relative : state.root})`,
  };
}

export function localSession(state: LocalClusterState, log: (line: string) => void): OpsSession {
  return { target: localTarget(state), identity: sshIdentity(state.root), log };
}

/** Runs a command, returning its stdout; how the Pulumi CLI is called (a test may put its own on PATH). */
export type CommandRunner = (
  command: string,
  args: string[],
) => { code: number | null; stdout: string; stderr: string; missing?: boolean };

export const runCommand: CommandRunner = (command, args) => {
  const r = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
  const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? String(r.error ?? ""), missing };
};

function pulumi(run: CommandRunner, args: string[], what: string): string {
  const r = run("pulumi", args);
  if (r.missing)
    throw new RefusedError(
      `the Pulumi CLI is not installed here (no pulumi on PATH), and ${what} needs it; install it (https://www.pulumi.com/docs/install/) and log in to the stack's backend, or act on a local cluster with --local`,
    );
  if (r.code !== 0)
    throw new RefusedError(
      `pulumi ${args.filter((a) => a !== "--show-secrets").join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`,
    );
  return r.stdout;
}

/** The directory where a Pulumi stack's host keys are pinned (learnt at first contact). */
function knownHostsFile(stack: string): string {
  const dir = path.join(process.env.XDG_STATE_HOME || path.join(os.homedir(), ".local", "state"), "madbase-state");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return path.join(dir, `known_hosts-${stack}`);
}

/**
 * The session for a request, and what to remove afterwards (the key written from the stack's
 * config). Refuses, before touching any node, a local cluster of another stack and a stack
 * whose outputs do not describe its nodes.
 */
export function resolveSession(
  request: OpsCommon,
  loc: Location,
  log: (line: string) => void,
  run: CommandRunner = runCommand,
): { session: OpsSession; cleanup: () => void } {
  if (request.local) {
    const { state } = loadCluster(loc);
    checkLocalStack(request.stack, state.stack, resolveLocation(loc).root);
    return { session: localSession(state, log), cleanup: () => undefined };
  }
  const out = pulumi(
    run,
    ["stack", "output", "--json", "--show-secrets", "--stack", request.stack],
    "reading the stack's nodes",
  );
  let outputs: unknown;
  try {
    outputs = JSON.parse(out);
  } catch {
    throw new ConfigError(
      `pulumi stack output --json (stack ${request.stack})`,
      out.slice(0, 80),
      "a JSON object of the stack's outputs",
    );
  }
  const target = targetFromStackOutputs(request.stack, outputs);
  let keyFile = request.sshKey;
  let cleanup = () => undefined as void;
  if (keyFile !== undefined) {
    if (!fs.existsSync(keyFile)) throw new ConfigError("--ssh-key", keyFile, "a readable OpenSSH private key file");
  } else {
    const key = pulumi(
      run,
      ["config", "get", "madbase-state:sshPrivateKey", "--stack", request.stack],
      "the SSH key (or give --ssh-key FILE)",
    ).trim();
    if (!/^-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key))
      throw new ConfigError(
        `madbase-state:sshPrivateKey (stack ${request.stack})`,
        key ? "(not a private key)" : undefined,
        "an OpenSSH private key (pulumi config set --secret madbase-state:sshPrivateKey < ~/.ssh/id_ed25519), or give --ssh-key FILE",
      );
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-ops-"));
    keyFile = path.join(dir, "id");
    fs.writeFileSync(keyFile, `${key}\n`, { mode: 0o600 });
    cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  }
  const identity: SshIdentity = { keyFile, knownHosts: knownHostsFile(request.stack) };
  return { session: { target, identity, log }, cleanup };
}
