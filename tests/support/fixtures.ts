import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  ClusterSecrets,
  ClusterTls,
  NodePaths,
  NodeSpec,
  ProfileName,
  SECRET_NAMES,
  Topology,
  buildTopology,
  describeCluster,
  parseSettings,
  renderCluster,
  serverPaths,
} from "../../core";
import { ensureClusterTls } from "../../local/tls";
import { TEST_RUN_DIR_ENV } from "./run-dir";

/** Fresh random secrets for each test run, so a snapshot can only pass if every value is masked. */
export function randomSecrets(): ClusterSecrets {
  return Object.fromEntries(
    SECRET_NAMES.map((n) => [n, randomBytes(24).toString("base64url").replace(/[-_]/g, "x")]),
  ) as unknown as ClusterSecrets;
}

const tlsRoots = new Map<string, string>();
/**
 * Real certificates for a stack's nodes (all seven a stack can have), made by the local runner's
 * generator once per stack and test process: the CA and pairs are cached in a temporary directory.
 */
export function fixtureTls(stack = "prod", subnetCidr = "10.42.1.0/24"): ClusterTls {
  return ensureClusterTls(fixtureTlsRoot(stack, subnetCidr), buildTopology({ stack, nodeCount: 7, subnetCidr }));
}

/** The directory fixtureTls keeps its files in (local/tls.ts's layout: the CA, the nodes', the operator's). */
export function fixtureTlsRoot(stack = "prod", subnetCidr = "10.42.1.0/24"): string {
  const id = `${stack}-${subnetCidr}`;
  let root = tlsRoots.get(id);
  if (!root) {
    // In the run's directory, which global-teardown.ts removes (outside jest's global setup, a
    // directory of its own, removed at exit).
    const runDir = process.env[TEST_RUN_DIR_ENV];
    root = fs.mkdtempSync(path.join(runDir ?? os.tmpdir(), "madbase-tls-fixture-"));
    tlsRoots.set(id, root);
    if (!runDir) process.on("exit", () => fs.rmSync(root!, { recursive: true, force: true }));
  }
  return root;
}

export function renderStack(opts: {
  stack?: string;
  nodeCount: number;
  profile?: ProfileName;
  plan?: string;
  synchronousMode?: boolean;
  poolMode?: string;
  secrets?: ClusterSecrets;
  pathsFor?: (node: NodeSpec) => NodePaths;
}): { topology: Topology; secrets: ClusterSecrets; tls: ClusterTls; files: ReturnType<typeof renderCluster> } {
  const settings = parseSettings(opts.stack ?? "prod", {
    nodeCount: opts.nodeCount,
    failoverProfile: opts.profile ?? "norm",
    plan: opts.plan ?? "cx31",
    synchronousMode: opts.synchronousMode ?? true,
    ...(opts.poolMode ? { poolMode: opts.poolMode } : {}),
  });
  const { topology, options } = describeCluster(settings);
  const secrets = opts.secrets ?? randomSecrets();
  const tls = fixtureTls(topology.stack, topology.subnetCidr);
  return {
    topology,
    secrets,
    tls,
    files: renderCluster(topology, options, secrets, tls, opts.pathsFor ?? (() => serverPaths())),
  };
}

/**
 * An OpenSSH private key file for the stack tests (its key bytes are a label, not a key: nothing
 * ever logs in with it), and the public key it carries, which sshPublicKeys must hold.
 */
export const FIXTURE_SSH_PRIVATE_KEY =
  "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBmYWtlLWtleS1mb3ItbWFkYmFzZS1zdGF0ZS10ZXN0cw==\n-----END OPENSSH PRIVATE KEY-----\n";
export const FIXTURE_SSH_PUBLIC_KEY =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2Uta2V5LWZvci1tYWRiYXNlLXN0YXRlLXRlc3Rz pulumi@ci";
