/**
 * Reads the stack's `madbase-state:*` config and validates it with the core's schema.
 *
 * Every key under the namespace is passed to the schema, so a misspelt key is refused rather than
 * silently ignored. The secret keys (SECRET_CONFIG_KEYS: the S3 keys and sshPrivateKey) are the
 * exception: core's splitStackConfig keeps them apart, and they are read here with getSecret and
 * never handed to code that might echo them in an error message.
 */
import * as pulumi from "@pulumi/pulumi";
import {
  CONFIG_NAMESPACE,
  ConfigError,
  StackSettings,
  checkSecrets,
  holdsKey,
  openSshPublicKey,
  parseSettings,
  placeholderSecrets,
  splitStackConfig,
} from "../core";

/** An OpenSSH or PEM private key, as `pulumi config set --secret sshPrivateKey < key` stores it. */
const PRIVATE_KEY_RE = /^-----BEGIN ([A-Z]+ )?PRIVATE KEY-----\r?\n[\s\S]+\r?\n-----END ([A-Z]+ )?PRIVATE KEY-----\s*$/;

export interface BackupCredentials {
  accessKey: pulumi.Output<string>;
  secretKey: pulumi.Output<string>;
}

export interface StackConfig {
  settings: StackSettings;
  /** Absent when neither key is set: the nodes then carry clearly named placeholders. */
  backupCredentials?: BackupCredentials;
  /**
   * The private key Pulumi logs in to the nodes with (root, over SSH) to move membership when the
   * node count changes and to push configuration; its public key must be in sshPublicKeys.
   * Absent: no membership commands are declared (and the program warns).
   */
  sshPrivateKey?: pulumi.Output<string>;
}

/** The raw `madbase-state:*` values (as Pulumi passes them, lists parsed), without the secret keys. */
export function rawSettings(all: Record<string, string> = pulumi.runtime.allConfig()): Record<string, unknown> {
  return splitStackConfig({ pulumiConfig: all }).settings;
}

/**
 * Validates the whole stack config. Throws a ConfigError that names the key, the value and what is
 * allowed; call it before declaring any resource.
 */
export function readStackConfig(stack: string = pulumi.getStack()): StackConfig {
  const settings = parseSettings(stack, rawSettings());
  const config = new pulumi.Config(CONFIG_NAMESPACE);
  const sshPrivateKey = readPrivateKey(config);
  checkOwnKeyKept(settings.sshPublicKeys);
  const accessKey = config.getSecret("backupAccessKey");
  const secretKey = config.getSecret("backupSecretKey");
  if (!accessKey && !secretKey) return { settings, sshPrivateKey };
  if (!accessKey || !secretKey) {
    const missing = accessKey ? "backupSecretKey" : "backupAccessKey";
    throw new ConfigError(
      `${CONFIG_NAMESPACE}:${missing}`,
      undefined,
      "set both S3 keys (pulumi config set --secret ...), or neither",
    );
  }
  // Check the keys' shape now, so a bad one stops the program before anything is declared. The
  // values are read from the config map only for this check; the error never shows them.
  const all = pulumi.runtime.allConfig();
  for (const key of ["backupAccessKey", "backupSecretKey"] as const) {
    const name = key === "backupAccessKey" ? "s3AccessKey" : "s3SecretKey";
    try {
      checkSecrets({ ...placeholderSecrets(), [name]: all[`${CONFIG_NAMESPACE}:${key}`] });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      throw new ConfigError(`${CONFIG_NAMESPACE}:${key}`, "(hidden)", e.allowed);
    }
  }
  return { settings, backupCredentials: { accessKey, secretKey }, sshPrivateKey };
}

/**
 * Every refresh makes root's keys on the nodes exactly sshPublicKeys; without the public half of
 * sshPrivateKey among them, Pulumi would lock itself out of every node, one refresh after another.
 * (A key file in another format than OpenSSH's cannot be checked here: ssh-keygen -y shows its
 * public key.)
 */
function checkOwnKeyKept(publicKeys: string[]): void {
  const value = pulumi.runtime.allConfig()[`${CONFIG_NAMESPACE}:sshPrivateKey`];
  if (value === undefined || publicKeys.length === 0) return;
  const own = openSshPublicKey(value);
  if (own && !holdsKey(publicKeys, own)) {
    throw new ConfigError(
      `${CONFIG_NAMESPACE}:sshPublicKeys`,
      `${publicKeys.length} key(s), none of them sshPrivateKey's (${own.slice(0, 40)}...)`,
      "keep the public key of sshPrivateKey in the list (ssh-keygen -y -f <key file>): every pulumi up makes root's keys on the nodes exactly this list, and Pulumi logs in with sshPrivateKey. To rotate, add the new key, switch sshPrivateKey to it in a later up, then drop the old one",
    );
  }
}

/** The SSH private key, checked for shape without ever showing it. */
function readPrivateKey(config: pulumi.Config): pulumi.Output<string> | undefined {
  const key = "sshPrivateKey";
  const value = pulumi.runtime.allConfig()[`${CONFIG_NAMESPACE}:${key}`];
  if (value === undefined) return undefined;
  if (!PRIVATE_KEY_RE.test(value)) {
    throw new ConfigError(
      `${CONFIG_NAMESPACE}:${key}`,
      "(hidden)",
      "use the whole private key file, from -----BEGIN ... PRIVATE KEY----- to its END line: pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519",
    );
  }
  return config.requireSecret(key);
}
