/**
 * An S3-compatible store over TLS for the backup tests, reachable from the nodes of a local
 * cluster and from nowhere else: s3rver (tests/support/s3-server.ts) runs inside a namespace of its
 * own, `<networkId>s3`, with one address in the cluster's subnet on a veth into the cluster's
 * bridge. The namespace's name does not start with `<networkId>-`, so `down` (which removes those)
 * leaves the store and its data alone; `attach` links it into the next cluster's bridge (call it as
 * soon as `up` created the network: the nodes' first boot creates the stanza in the store).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { ChildProcess } from "node:child_process";
import { MachineRecord, machineExec, machinePath } from "../../local/machine";
import { inNamespace, namespaceExists } from "../../local/network";
import { start, stop, waitFor } from "./proc";

const REPO = path.resolve(__dirname, "..", "..");

function ip(args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

export interface S3StoreOptions {
  networkId: string;
  /** The store's address in the cluster's subnet (outside the node range). */
  address: string;
  subnetPrefix: number;
  /** Where the objects and the certificate live; survives the cluster. */
  dir: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
}

export class S3Store {
  readonly namespace: string;
  private proc?: ChildProcess & { output: () => string };

  constructor(readonly opts: S3StoreOptions) {
    this.namespace = `${opts.networkId}s3`;
  }

  /** Creates the namespace, an empty store and a self-signed certificate for the store's address. */
  create(): void {
    this.destroy();
    fs.rmSync(this.opts.dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(this.opts.dir, "objects"), { recursive: true });
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=madbase-test-s3",
        "-addext",
        `subjectAltName=IP:${this.opts.address}`,
        "-keyout",
        path.join(this.opts.dir, "key.pem"),
        "-out",
        path.join(this.opts.dir, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
    ip(["netns", "add", this.namespace]);
    ip(["-n", this.namespace, "link", "set", "lo", "up"]);
  }

  /** Links the store into a cluster network's bridge (after each `up` created a new one). */
  attach(): void {
    const hub = `${this.opts.networkId}-hub`;
    try {
      ip(["-n", this.namespace, "link", "del", "eth0"]);
    } catch {
      /* not linked: the last cluster's bridge went with `down` */
    }
    ip(["-n", hub, "link", "add", "s3link", "type", "veth", "peer", "name", "eth0", "netns", this.namespace]);
    ip(["-n", hub, "link", "set", "s3link", "master", "br0", "up"]);
    ip(["-n", this.namespace, "addr", "add", `${this.opts.address}/${this.opts.subnetPrefix}`, "dev", "eth0"]);
    ip(["-n", this.namespace, "link", "set", "eth0", "up"]);
  }

  /** Starts s3rver in the namespace (HTTPS on 443) and waits until it listens. */
  async start(): Promise<void> {
    if (this.running) return;
    const d = this.opts.dir;
    this.proc = start(
      inNamespace(this.namespace, [
        process.execPath,
        "--import",
        "tsx",
        path.join(REPO, "tests", "support", "s3-server.ts"),
        "--dir",
        path.join(d, "objects"),
        "--cert",
        path.join(d, "cert.pem"),
        "--key",
        path.join(d, "key.pem"),
        "--port",
        "443",
        "--bucket",
        this.opts.bucket,
      ]),
      { env: { PATH: process.env.PATH, S3_ACCESS_KEY: this.opts.accessKey, S3_SECRET_KEY: this.opts.secretKey } },
    );
    const proc = this.proc;
    await waitFor(
      "the S3 store to listen",
      async () => {
        if (proc.exitCode !== null) throw new Error(`s3-server exited ${proc.exitCode}: ${proc.output()}`);
        return /listening 443/.test(proc.output());
      },
      30_000,
    );
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Stops the server (by its PID); the namespace and the objects stay. */
  async stop(): Promise<void> {
    if (this.proc) await stop(this.proc);
    this.proc = undefined;
  }

  /**
   * Uploads `content` as `key` with s3cmd from inside a node (the image has s3cmd; the host need
   * not): the keys travel on stdin, never on a command line.
   */
  putFrom(machine: MachineRecord, content: string, key: string): void {
    const file = `/tmp/s3-put-${process.pid}`;
    const hostPath = machinePath(machine, file);
    if (!hostPath) throw new Error(`${machine.name} is not running`);
    fs.writeFileSync(hostPath, content);
    const script =
      "read -r AWS_ACCESS_KEY_ID; read -r AWS_SECRET_ACCESS_KEY; export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; " +
      `s3cmd -c /dev/null --host=${this.opts.address} --host-bucket=${this.opts.address} --region=fsn1 --ssl --no-check-certificate --quiet put ${file} s3://${this.opts.bucket}/${key}; ` +
      `rc=$?; rm -f ${file}; exit $rc`;
    const r = machineExec(machine, ["bash", "-c", script], {
      input: `${this.opts.accessKey}\n${this.opts.secretKey}\n`,
      timeoutMs: 60_000,
    });
    if (r.code !== 0)
      throw new Error(`s3cmd put ${key} from ${machine.name} failed (${r.code}): ${r.stdout}${r.stderr}`);
  }

  /** Object keys under a prefix, from the server's directory (no S3 request involved). */
  keys(prefix: string): string[] {
    const root = path.join(this.opts.dir, "objects", this.opts.bucket);
    const out: string[] = [];
    const walk = (dir: string) => {
      if (!fs.existsSync(dir)) return;
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        // s3rver keeps each object as <key>._S3rver_object beside its metadata.
        else if (entry.name.endsWith("._S3rver_object"))
          out.push(path.relative(root, full).slice(0, -"._S3rver_object".length));
      }
    };
    walk(path.join(root, prefix));
    return out.sort();
  }

  async destroyAll(): Promise<void> {
    await this.stop();
    this.destroy();
    fs.rmSync(this.opts.dir, { recursive: true, force: true });
  }

  private destroy(): void {
    if (namespaceExists(this.namespace)) ip(["netns", "del", this.namespace]);
  }
}

/**
 * A test's store beside its cluster: at .200 of the test's /24 (outside the node range), with a
 * key pair made for this run, which only this store accepts.
 */
export function testStore(loc: { root: string; networkId: string; subnetCidr: string }, bucket: string): S3Store {
  return new S3Store({
    networkId: loc.networkId,
    address: loc.subnetCidr.replace(/\.0\/24$/, ".200"),
    subnetPrefix: 24,
    dir: `${loc.root}-s3`,
    bucket,
    accessKey: `MBTEST${randomBytes(6).toString("hex").toUpperCase()}`,
    secretKey: randomBytes(24).toString("hex"),
  });
}
