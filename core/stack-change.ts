/**
 * What a `pulumi up` may change on a stack that is already deployed.
 *
 * The program records the settings that decide this as a plain stack output (`appliedSettings`)
 * and reads the last deployment's copy back before it declares anything. `checkStackChange`
 * compares the two and refuses, with a ConfigError naming the key, the old and the new value and
 * what to do instead, every change Hetzner or the cluster cannot make in place: before a single
 * resource is touched, rather than halfway through an update.
 *
 * Plain data, no Pulumi: the rules are tested on their own (tests/core/stack-change.test.ts).
 */
import { serverTypeFor } from "./cluster";
import { ConfigError } from "./errors";
import type { PatroniClientCertificates } from "./patroni-client-certificates";
import { CONFIG_NAMESPACE, StackSettings } from "./settings";

/** Bumped when a field changes meaning; a record of another format is not compared. */
export const APPLIED_SETTINGS_FORMAT = 1;

/** The non-secret settings a deployment was made with, as far as refusals need them. */
export interface AppliedSettings {
  format: typeof APPLIED_SETTINGS_FORMAT;
  nodeCount: number;
  plan: string;
  /** The Hetzner type the servers run (the plan's, or the serverType override). */
  serverType: string;
  /** Whether serverType was set explicitly (names the key a refusal points at). */
  serverTypeOverride: boolean;
  location: string;
  networkCidr: string;
  subnetCidr: string;
  volumeSizeGb: number;
  backupBucket: string;
  backupEndpoint: string;
  backupRegion: string;
  /** Whether Pulumi had an SSH key to the nodes (so membership and resize commands exist). */
  sshPrivateKeySet: boolean;
  /** The failover profile and synchronous mode the nodes run (absent in a record from before they were kept). */
  failoverProfile?: string;
  synchronousMode?: boolean;
  /**
   * Whether the nodes' Patroni asks callers for a certificate (core/patroni-client-certificates.ts).
   * Absent in a record made before it; then the next update prepares first.
   */
  patroniClientCertificates?: PatroniClientCertificates;
  /**
   * The rolling maintenance last asked for (the stack's maintenanceRevision): a new value rolls
   * the cluster once (core/sequence.ts). Absent: never asked.
   */
  maintenanceRevision?: number;
}

export function appliedSettings(
  settings: StackSettings,
  opts: { sshPrivateKeySet: boolean; patroniClientCertificates?: PatroniClientCertificates },
): AppliedSettings & Required<Pick<AppliedSettings, "failoverProfile" | "synchronousMode">> {
  return {
    format: APPLIED_SETTINGS_FORMAT,
    nodeCount: settings.nodeCount,
    plan: settings.plan,
    serverType: serverTypeFor(settings),
    serverTypeOverride: settings.serverType !== undefined,
    location: settings.location,
    networkCidr: settings.networkCidr,
    subnetCidr: settings.subnetCidr,
    volumeSizeGb: settings.volumeSizeGb,
    backupBucket: settings.backupBucket,
    backupEndpoint: settings.backupEndpoint,
    backupRegion: settings.backupRegion,
    sshPrivateKeySet: opts.sshPrivateKeySet,
    failoverProfile: settings.failoverProfile,
    synchronousMode: settings.synchronousMode,
    patroniClientCertificates: opts.patroniClientCertificates ?? "required",
    ...(settings.maintenanceRevision !== undefined ? { maintenanceRevision: settings.maintenanceRevision } : {}),
  };
}

const STRING_FIELDS = [
  "plan",
  "serverType",
  "location",
  "networkCidr",
  "subnetCidr",
  "backupBucket",
  "backupEndpoint",
  "backupRegion",
] as const;
const NUMBER_FIELDS = ["nodeCount", "volumeSizeGb"] as const;
const BOOLEAN_FIELDS = ["serverTypeOverride", "sshPrivateKeySet"] as const;

/**
 * The previous deployment's `appliedSettings` output, or undefined when there is none to compare
 * with: a first `up`, a stack deployed by a version that did not record it, or a record of another
 * format (`reason` says which, for a log line).
 */
export function readAppliedSettings(value: unknown): { previous?: AppliedSettings; reason?: string } {
  if (value === undefined || value === null) return { reason: "no previous deployment recorded appliedSettings" };
  if (typeof value !== "object" || Array.isArray(value))
    return { reason: "the previous appliedSettings output is not an object" };
  const v = value as Record<string, unknown>;
  if (v.format !== APPLIED_SETTINGS_FORMAT)
    return {
      reason: `the previous appliedSettings output has format ${JSON.stringify(v.format)}, not ${APPLIED_SETTINGS_FORMAT}`,
    };
  for (const k of STRING_FIELDS)
    if (typeof v[k] !== "string") return { reason: `the previous appliedSettings output has no ${k}` };
  for (const k of NUMBER_FIELDS)
    if (typeof v[k] !== "number") return { reason: `the previous appliedSettings output has no ${k}` };
  for (const k of BOOLEAN_FIELDS)
    if (typeof v[k] !== "boolean") return { reason: `the previous appliedSettings output has no ${k}` };
  if (v.failoverProfile !== undefined && typeof v.failoverProfile !== "string")
    return { reason: "the previous appliedSettings output has a failoverProfile that is not a string" };
  if (v.synchronousMode !== undefined && typeof v.synchronousMode !== "boolean")
    return { reason: "the previous appliedSettings output has a synchronousMode that is not a boolean" };
  if (v.maintenanceRevision !== undefined && !Number.isInteger(v.maintenanceRevision))
    return { reason: "the previous appliedSettings output has a maintenanceRevision that is not an integer" };
  if (
    v.patroniClientCertificates !== undefined &&
    !["required", "prepared"].includes(v.patroniClientCertificates as string)
  )
    return {
      reason: `the previous appliedSettings output has patroniClientCertificates ${JSON.stringify(v.patroniClientCertificates)}`,
    };
  return { previous: v as unknown as AppliedSettings };
}

const key = (name: string) => `${CONFIG_NAMESPACE}:${name}`;
const q = (v: unknown) => JSON.stringify(v);
const SET_KEY = `pulumi config set --secret ${key("sshPrivateKey")} < ~/.ssh/id_ed25519`;

/**
 * Throws a ConfigError for a change this stack refuses; returns when `next` may be applied to a
 * stack last deployed with `previous` (always, when there is no previous deployment).
 */
export function checkStackChange(previous: AppliedSettings | undefined, next: AppliedSettings): void {
  if (!previous || previous.nodeCount < 1) return;
  const nodes = `this stack's ${previous.nodeCount} node(s)`;

  // Hetzner places a server, its volume and the network for good: a change here replaces them,
  // and with them every node's data.
  const placed = [
    [
      "location",
      `${nodes} and their volumes are in ${q(previous.location)}; Hetzner cannot move a server, volume or load balancer, so Pulumi would replace them and their data`,
    ],
    [
      "networkCidr",
      `${nodes} sit in the private network ${q(previous.networkCidr)}; Hetzner cannot change a network's range, so Pulumi would replace the network and every server in it`,
    ],
    [
      "subnetCidr",
      `${nodes} have fixed addresses in ${q(previous.subnetCidr)}, named in every node's configuration; a new subnet would replace it and every server in it`,
    ],
  ] as const;
  for (const [field, why] of placed) {
    if (previous[field] !== next[field]) {
      throw new ConfigError(
        key(field),
        next[field],
        `${why}. Set it back to ${q(previous[field])}; to move, create a new stack with the new value and restore it from this stack's backups`,
      );
    }
  }

  if (next.volumeSizeGb < previous.volumeSizeGb) {
    throw new ConfigError(
      key("volumeSizeGb"),
      next.volumeSizeGb,
      `${nodes} have ${previous.volumeSizeGb} GB volumes and Hetzner volumes cannot shrink: use ${previous.volumeSizeGb} or more (a bigger size grows them online)`,
    );
  }

  const repository = [
    ["backupBucket", "bucket"],
    ["backupEndpoint", "endpoint"],
    ["backupRegion", "region"],
  ] as const;
  for (const [field, what] of repository) {
    if (previous[field] !== next[field]) {
      throw new ConfigError(
        key(field),
        next[field],
        `this stack's pgBackRest repository and Redis snapshots are in bucket ${q(previous.backupBucket)} at ${q(previous.backupEndpoint)} (region ${q(previous.backupRegion)}); ` +
          `a new ${what} is a new repository, which needs a new pgBackRest stanza and a full backup, and while the nodes switch, WAL would be archived to two repositories. ` +
          `Keep ${field} ${q(previous[field])}: there is no in-place migration of the backups yet (a new stack restored from this one's backups can use a new bucket)`,
      );
    }
  }

  if (previous.sshPrivateKeySet && !next.sshPrivateKeySet) {
    throw new ConfigError(
      key("sshPrivateKey"),
      undefined,
      `${nodes} were deployed with sshPrivateKey, so each has a membership command; without the key they would be deleted, and deleting one runs node-leave on its node. Set it again (${SET_KEY})`,
    );
  }

  if (!next.sshPrivateKeySet && next.nodeCount !== previous.nodeCount) {
    throw new ConfigError(
      key("nodeCount"),
      next.nodeCount,
      `this stack has ${previous.nodeCount} node(s) and no sshPrivateKey, so Pulumi cannot log in to them: new servers would boot and never join the cluster, and removed ones would be deleted without leaving etcd. ` +
        `Set sshPrivateKey first (${SET_KEY}), or keep nodeCount ${previous.nodeCount}`,
    );
  }

  if (!next.sshPrivateKeySet && (next.serverType !== previous.serverType || next.plan !== previous.plan)) {
    const field =
      next.serverType !== previous.serverType && (next.serverTypeOverride || previous.serverTypeOverride)
        ? "serverType"
        : "plan";
    const [was, now] = field === "serverType" ? [previous.serverType, next.serverType] : [previous.plan, next.plan];
    throw new ConfigError(
      key(field),
      now,
      `${nodes} run ${q(previous.plan)} on ${q(previous.serverType)}; a new type is applied one node at a time (drain, shut down, change type, power on, settle) and PostgreSQL's memory settings follow the plan, both over SSH, which needs sshPrivateKey. ` +
        `Set sshPrivateKey first (${SET_KEY}), or keep ${field} ${q(was)}`,
    );
  }
}
