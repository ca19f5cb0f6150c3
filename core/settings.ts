import { z } from "zod";
import * as ipaddr from "ipaddr.js";
import { ConfigError } from "./errors";
import { PLAN_NAMES } from "./plans";
import { ALLOWED_NODE_COUNTS, parseCidr, subnetContains } from "./topology";
import { PROFILE_NAMES } from "./profiles";
import { DEFAULT_POOL_MODE, POOL_MODES } from "./pooler";

/** The project's config namespace in Pulumi.<stack>.yaml. */
export const CONFIG_NAMESPACE = "madbase-state";

export const HETZNER_LOCATIONS = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] as const;

// Pulumi config values arrive as strings (`pulumi config set`) or as YAML scalars; accept both.
const fromString = (parse: (s: string) => unknown) => (v: unknown) => (typeof v === "string" ? parse(v.trim()) : v);
const toNumber = fromString((s) => (s === "" ? s : Number(s)));
const toBoolean = fromString((s) => (s === "true" ? true : s === "false" ? false : s));
const toList = fromString((s) => {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
});

const NODE_COUNT_RULE = `use one of ${ALLOWED_NODE_COUNTS.join(", ")} (1 is a dev node without HA; an odd count of 3 or more keeps a majority through the loss of a node)`;
const VOLUME_RULE = "use a whole number of GB from 10 to 10240 (Hetzner volume limits)";
const RETENTION_RULE = "use a whole number of full backups to keep, 1 to 52";
const REDIS_RETENTION_RULE = "use a whole number of days to keep Redis snapshots, 1 to 365";

const SSH_KEY_RE =
  /^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/;
const SSH_KEY_RULE = 'use a list of OpenSSH public keys, such as ["ssh-ed25519 AAAA... you@laptop"]';

const isCidr = (v: string) => ipaddr.isValidCIDR(v);
const cidrList = (what: string) => {
  const rule = `use a list of ${what} in CIDR form, such as ["203.0.113.4/32"]`;
  return z.preprocess(toList, z.array(z.string({ error: rule }).refine(isCidr, { error: rule }), { error: rule }));
};

/**
 * The `madbase-state:` keys that hold secrets, set with `pulumi config set --secret`: never passed
 * to the schema below (core/stack-config.ts keeps them apart and says only whether each is set).
 */
export const SECRET_CONFIG_KEYS = ["backupAccessKey", "backupSecretKey", "sshPrivateKey"] as const;
export type SecretConfigKey = (typeof SECRET_CONFIG_KEYS)[number];

/**
 * Every other key the stack reads under `madbase-state:`, with its default. The README's table of keys
 * is the same list.
 */
export const settingsSchema = z
  .object({
    nodeCount: z
      .preprocess(
        toNumber,
        z.number({ error: NODE_COUNT_RULE }).refine((n) => (ALLOWED_NODE_COUNTS as readonly number[]).includes(n), {
          error: NODE_COUNT_RULE,
        }),
      )
      .default(3),
    plan: z.enum(PLAN_NAMES as [string, ...string[]], { error: `use one of ${PLAN_NAMES.join(", ")}` }).default("cx21"),
    serverType: z
      .string()
      .regex(/^[a-z]+[0-9]+[a-z0-9-]*$/, { error: "use a Hetzner server type name such as cx33, cpx31 or ccx23" })
      .optional(),
    location: z.enum(HETZNER_LOCATIONS, { error: `use one of ${HETZNER_LOCATIONS.join(", ")}` }).default("fsn1"),
    networkCidr: z.string().default("10.42.0.0/16"),
    subnetCidr: z.string().default("10.42.1.0/24"),
    sshPublicKeys: z
      .preprocess(
        toList,
        z.array(z.string({ error: SSH_KEY_RULE }).regex(SSH_KEY_RE, { error: SSH_KEY_RULE }), { error: SSH_KEY_RULE }),
      )
      .default([]),
    adminCidrs: cidrList("admin networks allowed to SSH in").default([]),
    clientCidrs: cidrList("client networks allowed to reach 5433, 5434 and 6379").default([]),
    volumeSizeGb: z
      .preprocess(
        toNumber,
        z
          .number({ error: VOLUME_RULE })
          .int({ error: VOLUME_RULE })
          .min(10, { error: VOLUME_RULE })
          .max(10240, { error: VOLUME_RULE }),
      )
      .default(40),
    failoverProfile: z
      .enum(PROFILE_NAMES as [string, ...string[]], { error: `use one of ${PROFILE_NAMES.join(", ")}` })
      .default("norm"),
    synchronousMode: z.preprocess(toBoolean, z.boolean({ error: "use true or false" })).default(false),
    /** PgBouncer's pool_mode on every node (core/pooler.ts says what each means). */
    poolMode: z.enum(POOL_MODES, { error: `use one of ${POOL_MODES.join(", ")}` }).default(DEFAULT_POOL_MODE),
    protectNodes: z.preprocess(toBoolean, z.boolean({ error: "use true or false" })).default(false),
    /** Refuse to go below 3 nodes once the stack is HA (scaling issue). */
    requireHa: z.preprocess(toBoolean, z.boolean({ error: "use true or false" })).default(false),
    backupBucket: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, {
        error: "use an S3 bucket name: 3-63 lower-case letters, digits, dots and dashes",
      })
      .optional(),
    backupEndpoint: z
      .string()
      .regex(/^[a-z0-9.-]+(:[0-9]+)?$/, {
        error: "use a host name without scheme, such as fsn1.your-objectstorage.com",
      })
      .optional(),
    backupRegion: z.string().min(1).optional(),
    backupRetentionFull: z
      .preprocess(
        toNumber,
        z
          .number({ error: RETENTION_RULE })
          .int({ error: RETENTION_RULE })
          .min(1, { error: RETENTION_RULE })
          .max(52, { error: RETENTION_RULE }),
      )
      .default(4),
    /**
     * true: the stack declares the bucket (kept when the stack is destroyed). false: backupBucket
     * names a bucket that already exists; the stack only uses it.
     */
    backupCreateBucket: z
      .preprocess(
        toBoolean,
        z.boolean({
          error: "use true (the stack creates the bucket) or false (use an existing bucket named by backupBucket)",
        }),
      )
      .default(true),
    /**
     * A rolling maintenance for `pulumi up` (core/maintenance.ts): a new value upgrades every
     * node's packages and restarts what changed, one node at a time, the leader's last; rebooting
     * where required. Any integer; change it to roll again.
     */
    maintenanceRevision: z
      .preprocess(
        toNumber,
        z
          .number({ error: "use an integer; a new value rolls the cluster once" })
          .int({ error: "use an integer; a new value rolls the cluster once" })
          .min(0, { error: "use an integer of 0 or more; a new value rolls the cluster once" }),
      )
      .optional(),
    backupRedisRetentionDays: z
      .preprocess(
        toNumber,
        z
          .number({ error: REDIS_RETENTION_RULE })
          .int({ error: REDIS_RETENTION_RULE })
          .min(1, { error: REDIS_RETENTION_RULE })
          .max(365, { error: REDIS_RETENTION_RULE }),
      )
      .default(7),
  })
  .strict();

export type StackSettings = z.infer<typeof settingsSchema> & {
  /** The stack name (dev, prod, ...). */
  stack: string;
  backupBucket: string;
  backupEndpoint: string;
  backupRegion: string;
};

/**
 * Validates the stack's config. Throws a ConfigError naming the key, the value and what is
 * allowed; nothing is declared before this returns.
 */
export function parseSettings(stack: string, raw: Record<string, unknown>): StackSettings {
  const result = settingsSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const key = String(issue.path[0] ?? "(config)");
    // The offending element itself when the key is a list.
    const value =
      issue.code === "unrecognized_keys"
        ? issue.keys.join(", ")
        : issue.path
            .slice(1)
            .reduce<unknown>(
              (v, k) => (v as Record<PropertyKey, unknown> | undefined)?.[k as PropertyKey],
              issue.path.length > 1 ? toList(raw[key]) : raw[key],
            );
    const allowed =
      issue.code === "unrecognized_keys"
        ? `known keys are ${Object.keys(settingsSchema.shape).join(", ")}, and the secrets ${SECRET_CONFIG_KEYS.join(", ")} (pulumi config set --secret)`
        : issue.message;
    const field =
      issue.code === "unrecognized_keys"
        ? `${CONFIG_NAMESPACE} (unknown key)`
        : `${CONFIG_NAMESPACE}:${[key, ...issue.path.slice(1)].join(".")}`;
    throw new ConfigError(field, value, allowed);
  }
  const s = result.data;
  parseCidr(s.networkCidr, `${CONFIG_NAMESPACE}:networkCidr`);
  parseCidr(s.subnetCidr, `${CONFIG_NAMESPACE}:subnetCidr`);
  if (!subnetContains(s.networkCidr, s.subnetCidr)) {
    throw new ConfigError(
      `${CONFIG_NAMESPACE}:subnetCidr`,
      s.subnetCidr,
      `use a subnet inside networkCidr ${s.networkCidr}`,
    );
  }
  if (s.requireHa && s.nodeCount < 3) {
    throw new ConfigError(
      `${CONFIG_NAMESPACE}:nodeCount`,
      s.nodeCount,
      "this stack requires HA (requireHa: true): use 3, 5 or 7, or set requireHa to false first",
    );
  }
  return {
    ...s,
    stack,
    backupBucket: s.backupBucket ?? `madbase-state-${stack}`,
    backupEndpoint: s.backupEndpoint ?? `${s.location}.your-objectstorage.com`,
    backupRegion: s.backupRegion ?? s.location,
  };
}
