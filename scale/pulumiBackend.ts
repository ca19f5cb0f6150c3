import * as path from "node:path";
import { CONFIG_NAMESPACE, parseSettings } from "../core";
import { ScaleBackend } from "./backend";

/** The part of an Automation API stack the backend uses (so tests can stand in for the engine). */
export interface AutomationStack {
  getAllConfig(): Promise<Record<string, { value: string; secret?: boolean }>>;
  setConfig(key: string, value: { value: string; secret?: boolean }): Promise<void>;
  up(opts: { onOutput: (out: string) => void }): Promise<{ summary: { result?: string } }>;
}

const NODE_COUNT_KEY = `${CONFIG_NAMESPACE}:nodeCount`;

/**
 * Scales a real stack: sets `madbase-state:nodeCount` and runs `pulumi up`, streaming its output
 * into the job log. The new count is checked against the stack's own config (e.g. requireHa)
 * before anything is changed.
 */
export class PulumiBackend implements ScaleBackend {
  readonly name: string;

  constructor(
    private readonly stackName: string,
    private readonly openStack: () => Promise<AutomationStack> = () => selectLocalStack(stackName),
  ) {
    this.name = `pulumi:${stackName}`;
  }

  async currentCount(): Promise<number> {
    const stack = await this.openStack();
    return this.settingsWith(await stack.getAllConfig()).nodeCount;
  }

  async scale(target: number, log: (line: string) => void): Promise<void> {
    const stack = await this.openStack();
    const config = await stack.getAllConfig();
    // Throws a ConfigError naming the key before the stack is touched.
    this.settingsWith(config, target);
    log(`setting ${NODE_COUNT_KEY}=${target} on stack ${this.stackName}`);
    await stack.setConfig(NODE_COUNT_KEY, { value: String(target) });
    log("running pulumi up");
    let pending = "";
    const result = await stack.up({
      onOutput: (out) => {
        pending += out;
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) if (line.trim()) log(line);
      },
    });
    if (pending.trim()) log(pending);
    if (result.summary.result && result.summary.result !== "succeeded") {
      throw new Error(`pulumi up ended with result ${result.summary.result}`);
    }
  }

  private settingsWith(config: Record<string, { value: string; secret?: boolean }>, nodeCount?: number) {
    const raw: Record<string, unknown> = {};
    for (const [key, { value, secret }] of Object.entries(config)) {
      // Secrets (S3 keys) are not stack settings the core validates; never copy them around.
      if (key.startsWith(`${CONFIG_NAMESPACE}:`) && !secret) raw[key.slice(CONFIG_NAMESPACE.length + 1)] = value;
    }
    delete raw.backupAccessKey;
    delete raw.backupSecretKey;
    if (nodeCount !== undefined) raw.nodeCount = nodeCount;
    return parseSettings(this.stackName, raw);
  }
}

async function selectLocalStack(stackName: string): Promise<AutomationStack> {
  // Loaded lazily: the Automation API needs the Pulumi CLI, which only this backend uses.
  const { LocalWorkspace } = await import("@pulumi/pulumi/automation");
  const stack = await LocalWorkspace.selectStack({ stackName, workDir: path.resolve(__dirname, "..") });
  return {
    getAllConfig: () => stack.getAllConfig(),
    setConfig: (key, value) => stack.setConfig(key, value),
    up: (opts) => stack.up(opts),
  };
}
