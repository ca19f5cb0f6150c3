/**
 * `npm run local -- apply`: converges a running local cluster to changed settings as `pulumi up`
 * converges a Hetzner stack: core's sequence of steps (a new plan: every machine resized one at a
 * time, drain → clean power-off → new type → boot → settle; then config-refresh on every node, one
 * at a time, the first led by the leadership hand-off), run over SSH by local/sequence-runner.ts.
 * What the runner does around the scripts is only what Hetzner would do: a grown volume is grown
 * here (the sparse file and its loop device) before the scripts grow the file system.
 *
 * The settings start from the cluster's applied record (what `up` and every change recorded), or
 * from its stack file with `--stack`, and the options override them. What Pulumi refuses is
 * refused here, by the same checkStackChange, before any node is touched.
 */
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { ConfigError, UsageError } from "../core";
import { Location } from "./cluster";
import { ChangeResult, changeCluster } from "./sequence-runner";
import { SshIdentity, ensureSshKey } from "./ssh";
import { LocalClusterState } from "./state";

export interface ApplyOptions extends Location {
  /** Start from this stack file's settings instead of the cluster's applied ones (must be the cluster's stack). */
  stack?: string;
  profile?: string;
  plan?: string;
  synchronousMode?: boolean | string;
  /** Any other stack key, as `pulumi config set KEY VALUE` would set it (`--set KEY=VALUE`). */
  set?: Record<string, string>;
  /**
   * root's authorized keys on every node. The runner's own key is added unless `identity` says
   * the runner logs in with another key from now on.
   */
  authorizedKeys?: string[];
  /** The key the runner logs in with for this apply and after it (a rotated key). */
  identity?: SshIdentity;
  /** Grow every node's data volume to this many GB (as Hetzner resizes a volume), then its file system. */
  volumeGb?: number;
  onProgress?: (line: string) => void;
  timeoutMs?: number;
}

export interface ApplyResult extends ChangeResult {
  /** What changed on each node's refresh, in the order the nodes were visited ("already up to date" lines left out). */
  changes: { node: string; lines: string[] }[];
}

/** The lines of a refresh's output that report a change (every section says either). */
export function changeLines(output: string[]): string[] {
  return output
    .filter((line) => /^\d\d:\d\d:\d\d \[config-refresh [^\]]+\] /.test(line))
    .map((line) => line.replace(/^\d\d:\d\d:\d\d \[config-refresh [^\]]+\] /, ""))
    .filter((line) => !/already up to date|no restart needed|nothing to move|fills the volume/.test(line));
}

/**
 * Converges the running cluster to the changed settings by core's sequence (a new plan resizes
 * every machine, one at a time, before the refreshes), over SSH; refuses what checkStackChange
 * refuses, and another node count (that is `scale`), before any node is touched.
 */
export async function apply(opts: ApplyOptions = {}): Promise<ApplyResult> {
  const set: Record<string, unknown> = { ...opts.set };
  if (opts.profile !== undefined) set.failoverProfile = opts.profile;
  if (opts.plan !== undefined) set.plan = opts.plan;
  if (opts.synchronousMode !== undefined) set.synchronousMode = opts.synchronousMode;
  if ("nodeCount" in set) throw new UsageError("apply keeps the node count: use `scale --nodes N` for nodeCount");
  const result = await changeCluster({
    root: opts.root,
    networkId: opts.networkId,
    set,
    fromStackFile: opts.stack !== undefined,
    keepNodeCount: true,
    identity: opts.identity,
    authorizedKeys: (state) => authorizedKeys(state, opts),
    beforeSteps: (state) => {
      if (opts.stack !== undefined && opts.stack !== state.stack) {
        throw new ConfigError(
          "--stack",
          opts.stack,
          `this cluster is stack ${state.stack}: a running cluster keeps its stack (its name is every node's identity)`,
        );
      }
      const volumes = checkVolumes(state, opts.volumeGb);
      if (volumes) growVolumes(state, volumes.gb, opts.onProgress ?? (() => undefined));
    },
    onProgress: opts.onProgress,
    timeoutMs: opts.timeoutMs ?? 180_000,
    verb: "apply",
  });
  const changes = result.steps
    .filter((s) => s.step.kind === "refresh")
    .map((s) => ({ node: s.step.node.name, lines: changeLines(s.output) }));
  return { ...result, changes };
}

function authorizedKeys(state: LocalClusterState, opts: ApplyOptions): string[] | undefined {
  if (!opts.authorizedKeys) return undefined;
  if (opts.identity) return opts.authorizedKeys;
  const own = ensureSshKey(state.root).publicKey;
  return opts.authorizedKeys.includes(own) ? opts.authorizedKeys : [own, ...opts.authorizedKeys];
}

/** A volume only grows (Hetzner cannot shrink one): refused before anything changes. */
function checkVolumes(state: LocalClusterState, gb: number | undefined): { gb: number } | undefined {
  if (gb === undefined) return undefined;
  if (!Number.isInteger(gb) || gb < 10 || gb > 10240)
    throw new ConfigError("--volume-gb", gb, "use a whole number of GB from 10 to 10240");
  for (const node of state.nodes) {
    const current = fs.statSync(node.machine.volumeFile).size / 1024 ** 3;
    if (gb < current) {
      throw new ConfigError(
        "--volume-gb",
        gb,
        `${node.name}'s volume has ${current} GB and a volume cannot shrink: keep ${current} or more`,
      );
    }
  }
  return { gb };
}

/** What Hetzner does on a volume resize: the block device grows under the running node. */
function growVolumes(state: LocalClusterState, gb: number, progress: (line: string) => void): void {
  for (const node of state.nodes) {
    const { volumeFile, loopDevice } = node.machine;
    if (fs.statSync(volumeFile).size >= gb * 1024 ** 3) continue;
    fs.truncateSync(volumeFile, gb * 1024 ** 3);
    if (loopDevice) {
      const r = spawnSync("losetup", ["--set-capacity", loopDevice], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`losetup --set-capacity ${loopDevice}: ${r.stderr.trim()}`);
    }
    progress(`${node.name}: volume grown to ${gb} GB`);
  }
}
