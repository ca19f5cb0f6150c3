import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { ClusterSecrets as SecretValues, GENERATED_SECRET_NAMES, SECRET_NAMES, placeholderSecrets } from "../core";
import { BackupCredentials } from "./stackConfig";

/** Length of every generated password: 32 letters and digits is about 190 bits. */
export const PASSWORD_LENGTH = 32;

export interface ClusterSecretsArgs {
  /** S3 keys from stack config; placeholders when absent (WAL archiving and backups are then off). */
  backupCredentials?: BackupCredentials;
  /**
   * Protect the generated passwords. A replaced password would change the stack's outputs while
   * the running nodes keep the old one (their user data is never re-applied), locking clients out.
   */
  protect: boolean;
}

/** Picks every secret the core needs out of a resolved record, failing loudly if one is missing. */
function toSecretValues(values: Record<string, string>): SecretValues {
  const out: Partial<SecretValues> = {};
  for (const name of SECRET_NAMES) {
    if (typeof values[name] !== "string") throw new Error(`secret ${name} has no value`);
    out[name] = values[name];
  }
  return out as SecretValues;
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * Every secret the nodes carry. Passwords are generated once by @pulumi/random and kept, encrypted,
 * in the stack's state; they are letters and digits only (`special: false`) because they go
 * unquoted into redis.conf, haproxy.cfg, YAML and URLs.
 */
export class ClusterSecrets extends pulumi.ComponentResource {
  readonly passwords: Record<(typeof GENERATED_SECRET_NAMES)[number], random.RandomPassword>;
  /** All secrets as one secret value, ready for the render core. */
  readonly values: pulumi.Output<SecretValues>;

  constructor(name: string, args: ClusterSecretsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:ClusterSecrets", name, {}, opts);
    this.passwords = Object.fromEntries(
      GENERATED_SECRET_NAMES.map((secret) => [
        secret,
        new random.RandomPassword(
          `${name}-${kebab(secret)}`,
          { length: PASSWORD_LENGTH, special: false, upper: true, lower: true, numeric: true },
          { parent: this, protect: args.protect },
        ),
      ]),
    ) as ClusterSecrets["passwords"];

    let s3AccessKey: pulumi.Input<string>;
    let s3SecretKey: pulumi.Input<string>;
    if (args.backupCredentials) {
      s3AccessKey = args.backupCredentials.accessKey;
      s3SecretKey = args.backupCredentials.secretKey;
    } else {
      // No keys: the nodes archive nothing and their backup jobs touch no store (archivingDecision
      // says so on every pulumi up); the placeholders only keep backup.env's shape.
      const placeholders = placeholderSecrets();
      s3AccessKey = placeholders.s3AccessKey;
      s3SecretKey = placeholders.s3SecretKey;
    }

    const generated = Object.fromEntries(
      GENERATED_SECRET_NAMES.map((secret) => [secret, this.passwords[secret].result]),
    );
    const inputs = { ...generated, s3AccessKey, s3SecretKey } as Record<keyof SecretValues, pulumi.Input<string>>;
    this.values = pulumi.secret(pulumi.all(inputs).apply(toSecretValues));
    this.registerOutputs({});
  }
}
