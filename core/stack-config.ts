/**
 * The one reader of a stack's `madbase-state:*` config, whichever way it arrives: a committed
 * Pulumi.<stack>.yaml document (the renderer and the local runner, without Pulumi) or Pulumi's own
 * config map (the program). It splits the settings the schema validates from the secret keys, and
 * of a secret only ever says whether it is set: a value, plain or encrypted, never reaches the
 * schema or an error message.
 */
import { ConfigError } from "./errors";
import {
  CONFIG_NAMESPACE,
  SECRET_CONFIG_KEYS,
  SecretConfigKey,
  StackSettings,
  parseSettings,
  settingsSchema,
} from "./settings";

/** For every secret key, whether the stack sets it (its value is not read here). */
export type SecretKeysSet = Readonly<Record<SecretConfigKey, boolean>>;

/** Where a stack's config comes from. */
export type StackConfigSource =
  /** A parsed Pulumi.<stack>.yaml: secrets as `{ secure: "v1:..." }`, which is never decrypted. */
  | { stackFile: unknown }
  /**
   * Pulumi's config map (`pulumi.runtime.allConfig()`): namespaced keys, string values (lists as
   * JSON text), secrets already decrypted.
   */
  | { pulumiConfig: Readonly<Record<string, string>> };

/** A stack's config split in two: the settings' raw values (no secret among them) and the secrets set. */
export interface StackConfigValues {
  settings: Record<string, unknown>;
  secretsSet: SecretKeysSet;
}

/** A stack's config, validated. */
export interface StackConfigRead {
  settings: StackSettings;
  secretsSet: SecretKeysSet;
}

const isSecretKey = (name: string): name is SecretConfigKey => (SECRET_CONFIG_KEYS as readonly string[]).includes(name);

/** What `pulumi config set --secret` writes into the stack file: `{ secure: "v1:..." }` and nothing else. */
function isSecureValue(value: unknown): boolean {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  const secure = (value as { secure?: unknown }).secure;
  return keys.length === 1 && typeof secure === "string" && secure !== "";
}

/**
 * Splits a stack's `madbase-state:*` config into the settings (keys without the namespace) and
 * which secret keys are set. From a stack file, a secret must be a secure value (a plain one is
 * refused: the file is committed), and a secure value under a setting is refused (it could not be
 * read without Pulumi). ConfigError names the key; a secret's value shows as "(hidden)".
 */
export function splitStackConfig(source: StackConfigSource): StackConfigValues {
  const fromFile = "stackFile" in source;
  const entries = fromFile
    ? Object.entries((source.stackFile as { config?: Record<string, unknown> } | null)?.config ?? {})
    : Object.entries(source.pulumiConfig);
  const prefix = `${CONFIG_NAMESPACE}:`;
  const settings: Record<string, unknown> = {};
  const secretsSet: Record<SecretConfigKey, boolean> = {
    backupAccessKey: false,
    backupSecretKey: false,
    sshPrivateKey: false,
  };
  for (const [key, value] of entries) {
    if (!key.startsWith(prefix)) continue;
    const name = key.slice(prefix.length);
    if (isSecretKey(name)) {
      if (fromFile && !isSecureValue(value)) {
        throw new ConfigError(
          key,
          "(hidden)",
          `a secret is not kept in plain text in the stack file, which is committed: remove the line and run pulumi config set --secret ${key} <value>, which stores it encrypted (secure: v1:...); if the file was ever committed or shared with the value, rotate it`,
        );
      }
      secretsSet[name] = value !== undefined;
    } else if (fromFile && isSecureValue(value)) {
      // A misspelt key is still refused by the schema as unknown (it names keys, not values).
      if (!(name in settingsSchema.shape)) settings[name] = "(hidden)";
      else
        throw new ConfigError(
          key,
          "(hidden)",
          `${name} is not a secret, and npm run render and npm run local read the stack file without Pulumi, so they cannot decrypt it: set it in plain text (pulumi config set ${key} <value>)`,
        );
    } else {
      settings[name] = fromFile ? value : structured(value as string);
    }
  }
  return { settings, secretsSet };
}

/**
 * The stack's config, validated: `overrides` (raw values, as on the command line) go on top of
 * the settings before parseSettings; ConfigError names the key, the value and what is allowed.
 */
export function parseStackConfig(
  stack: string,
  source: StackConfigSource,
  overrides: Record<string, unknown> = {},
): StackConfigRead {
  const { settings, secretsSet } = splitStackConfig(source);
  return { settings: parseSettings(stack, { ...settings, ...overrides }), secretsSet };
}

/** The settings' raw values of a Pulumi.<stack>.yaml document, without the namespace (no secret among them). */
export function settingsFromStackFile(doc: unknown): Record<string, unknown> {
  return splitStackConfig({ stackFile: doc }).settings;
}

/**
 * Pulumi hands list values (`sshPublicKeys`, `adminCidrs`, `clientCidrs`) to the program as JSON
 * text. Parse them here, so that a bad element is reported as that element rather than as the
 * text it came in; anything that is not JSON stays as it was for the schema to reject.
 */
function structured(value: string): unknown {
  const text = value.trim();
  if (!text.startsWith("[") && !text.startsWith("{")) return value;
  try {
    return JSON.parse(text);
  } catch {
    return value;
  }
}
