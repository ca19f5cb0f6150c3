/**
 * A stack's settings from its committed Pulumi.<stack>.yaml, as the Pulumi CLI would hand them to
 * the program, with overrides: how the renderer and the local runner read a stack without Pulumi.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { ConfigError } from "./errors";
import { StackSettings } from "./settings";
import { StackConfigRead, parseStackConfig } from "./stack-config";

/** The project's directory, where Pulumi.<stack>.yaml files live. */
const PROJECT_DIR = path.resolve(__dirname, "..");

/**
 * The stack file's `madbase-state:*` settings with `overrides` on top, validated, and which secret
 * keys it sets (`{ secure: ... }` values, never decrypted; a plain-text secret is refused).
 * ConfigError for an unknown stack.
 */
export function loadStackConfig(
  stack: string,
  overrides: Record<string, unknown> = {},
  root = PROJECT_DIR,
): StackConfigRead {
  const file = path.join(root, `Pulumi.${stack}.yaml`);
  if (!/^[a-z][a-z0-9-]*$/.test(stack) || !fs.existsSync(file)) {
    const stacks = fs
      .readdirSync(root)
      .filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f))
      .map((f) => f.split(".")[1]);
    throw new ConfigError(
      "--stack",
      stack,
      `use one of ${stacks.join(", ")} (a Pulumi.<stack>.yaml beside Pulumi.yaml)`,
    );
  }
  return parseStackConfig(stack, { stackFile: yaml.load(fs.readFileSync(file, "utf8")) }, overrides);
}

/** loadStackConfig's settings alone. */
export function loadStackSettings(
  stack: string,
  overrides: Record<string, unknown> = {},
  root = PROJECT_DIR,
): StackSettings {
  return loadStackConfig(stack, overrides, root).settings;
}
