import { randomBytes } from "node:crypto";
import {
  ClusterSecrets,
  NodePaths,
  NodeSpec,
  ProfileName,
  SECRET_NAMES,
  Topology,
  describeCluster,
  parseSettings,
  renderCluster,
  serverPaths,
} from "../../core";

/** Fresh random secrets for each test run, so a snapshot can only pass if every value is masked. */
export function randomSecrets(): ClusterSecrets {
  return Object.fromEntries(
    SECRET_NAMES.map((n) => [n, randomBytes(24).toString("base64url").replace(/[-_]/g, "x")]),
  ) as unknown as ClusterSecrets;
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
}): { topology: Topology; secrets: ClusterSecrets; files: ReturnType<typeof renderCluster> } {
  const settings = parseSettings(opts.stack ?? "prod", {
    nodeCount: opts.nodeCount,
    failoverProfile: opts.profile ?? "norm",
    plan: opts.plan ?? "cx31",
    synchronousMode: opts.synchronousMode ?? true,
    ...(opts.poolMode ? { poolMode: opts.poolMode } : {}),
  });
  const { topology, options } = describeCluster(settings);
  const secrets = opts.secrets ?? randomSecrets();
  return {
    topology,
    secrets,
    files: renderCluster(topology, options, secrets, opts.pathsFor ?? (() => serverPaths())),
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
