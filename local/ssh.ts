/**
 * SSH to local nodes, the way Pulumi's remote commands reach a Hetzner server: as root, with the
 * cluster's own key (its public half went into each node's meta-data), over the private network.
 * A command's text travels on standard input (`bash -s`), never on a command line, so the secrets
 * a membership script carries do not show in any process list.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

export interface SshIdentity {
  /** Private key file (0600); its `.pub` beside it. */
  keyFile: string;
  knownHosts: string;
}

export function sshIdentity(root: string): SshIdentity {
  const dir = path.join(root, "ssh");
  return { keyFile: path.join(dir, "id_ed25519"), knownHosts: path.join(dir, "known_hosts") };
}

/** Creates the cluster's key pair once (ed25519, no passphrase: the runner is the operator). */
export function ensureSshKey(root: string): { identity: SshIdentity; publicKey: string } {
  const identity = sshIdentity(root);
  fs.mkdirSync(path.dirname(identity.keyFile), { recursive: true, mode: 0o700 });
  if (!fs.existsSync(identity.keyFile)) {
    const r = spawnSync(
      "ssh-keygen",
      ["-q", "-t", "ed25519", "-N", "", "-C", "madbase-local", "-f", identity.keyFile],
      { encoding: "utf8" },
    );
    if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr || r.error}`);
  }
  return { identity, publicKey: fs.readFileSync(`${identity.keyFile}.pub`, "utf8").trim() };
}

/**
 * The client's options. A node's host key is learnt at first contact and pinned from then on
 * (a power-cut node keeps its key; a node that came back with another one is refused).
 */
export function sshOptions(id: SshIdentity, connectTimeoutS = 5): string[] {
  return [
    "-i",
    id.keyFile,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=accept-new",
    "-o",
    `UserKnownHostsFile=${id.knownHosts}`,
    "-o",
    `ConnectTimeout=${connectTimeoutS}`,
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=6",
    "-o",
    "LogLevel=ERROR",
  ];
}

export interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a shell script on a node as root and waits for it. `onLine` sees each line of output as it
 * comes (membership scripts take minutes, and their progress is the log).
 */
export function sshScript(
  id: SshIdentity,
  host: string,
  script: string,
  opts: { timeoutMs?: number; onLine?: (line: string, stream: "stdout" | "stderr") => void; args?: string[] } = {},
): Promise<SshResult> {
  return new Promise((resolve) => {
    const remote = ["bash", "-s", "--", ...(opts.args ?? [])].join(" ");
    const child = spawn("ssh", [...sshOptions(id), `root@${host}`, remote], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const buffers = { stdout: "", stderr: "" };
    const feed = (stream: "stdout" | "stderr", chunk: Buffer) => {
      const text = chunk.toString();
      if (stream === "stdout") stdout += text;
      else stderr += text;
      if (!opts.onLine) return;
      buffers[stream] += text;
      const lines = buffers[stream].split("\n");
      buffers[stream] = lines.pop() ?? "";
      for (const line of lines) opts.onLine(line, stream);
    };
    child.stdout.on("data", (c: Buffer) => feed("stdout", c));
    child.stderr.on("data", (c: Buffer) => feed("stderr", c));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 600_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: stderr + String(err) });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      for (const stream of ["stdout", "stderr"] as const)
        if (buffers[stream] && opts.onLine) opts.onLine(buffers[stream], stream);
      resolve({ code, stdout, stderr });
    });
    // An ssh that ends before reading its script (the node not answering yet) closes the pipe:
    // its exit code says what happened, not the write's EPIPE.
    child.stdin.on("error", () => undefined);
    child.stdin.end(script);
  });
}

/** An interactive root shell on a node, or one command (`npm run local -- ssh NAME [-- CMD]`). */
export function sshInteractive(id: SshIdentity, host: string, command: string[]): number {
  const r = spawnSync("ssh", [...sshOptions(id), ...(command.length === 0 ? ["-t"] : []), `root@${host}`, ...command], {
    stdio: "inherit",
  });
  return r.status ?? 1;
}
