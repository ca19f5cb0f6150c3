/**
 * `npm run local -- apply`: converges a running local cluster to changed settings the way
 * `pulumi up` converges a Hetzner stack: config-refresh (core/scale.ts) on every node, one node at a
 * time in the same order, sent as the same remote command over SSH. What the runner does around
 * it is only what Hetzner would do: a grown volume is grown here (the sparse file and its loop
 * device) before the scripts grow the file system.
 *
 * The settings start from the cluster as it runs (what `up` and earlier applies recorded), or from
 * a stack file with `--stack`, and the options override them. What Pulumi refuses is refused here
 * before any node is touched: another node count (that is `scale`), a smaller volume.
 */
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { ClusterSecrets, ConfigError, describeCluster, loadStackSettings, refreshOrder, refreshScript } from "../core";
import { Location, UnhealthyError, loadCluster, waitHealthy } from "./cluster";
import { assertHostLink } from "./health";
import { ClusterHealth } from "./judge";
import { runScript, scriptContext, withClusterLock } from "./scale";
import { SshIdentity, ensureSshKey, sshIdentity } from "./ssh";
import { LocalClusterState, writeState } from "./state";
import { ensureClusterTls } from "./tls";

export interface ApplyOptions extends Location {
  /** Start from this stack file's settings instead of the cluster's recorded ones (must be the cluster's stack). */
  stack?: string;
  profile?: string;
  plan?: string;
  synchronousMode?: boolean | string;
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

export interface ApplyResult {
  state: LocalClusterState;
  secrets: ClusterSecrets;
  health: ClusterHealth;
  seconds: number;
  /** What changed on each node, in the order the nodes were visited ("already up to date" lines left out). */
  changes: { node: string; lines: string[] }[];
}

/** The lines of a refresh's output that report a change (every section says either). */
export function changeLines(output: string[]): string[] {
  return output
    .map((line) => line.replace(/^\d\d:\d\d:\d\d \[config-refresh [^\]]+\] /, ""))
    .filter((line) => !/already up to date|no restart needed|nothing to move|fills the volume/.test(line));
}

export async function apply(opts: ApplyOptions = {}): Promise<ApplyResult> {
  return withClusterLock(opts, () => applyLocked(opts));
}

async function applyLocked(opts: ApplyOptions): Promise<ApplyResult> {
  const startedAt = Date.now();
  const progress = opts.onProgress ?? (() => undefined);
  const { state, secrets } = loadCluster(opts);
  assertHostLink(state);
  if (opts.stack !== undefined && opts.stack !== state.stack) {
    throw new ConfigError(
      "--stack",
      opts.stack,
      `this cluster is stack ${state.stack}: a running cluster keeps its stack (its name is every node's identity)`,
    );
  }
  const recorded =
    opts.stack === undefined
      ? {
          failoverProfile: state.profile,
          synchronousMode: state.synchronousMode,
          ...(state.plan ? { plan: state.plan } : {}),
        }
      : {};
  const overrides: Record<string, unknown> = {
    ...recorded,
    nodeCount: state.nodes.length,
    subnetCidr: state.subnetCidr,
  };
  if (opts.profile !== undefined) overrides.failoverProfile = opts.profile;
  if (opts.plan !== undefined) overrides.plan = opts.plan;
  if (opts.synchronousMode !== undefined) overrides.synchronousMode = opts.synchronousMode;
  const settings = loadStackSettings(state.stack, overrides);
  const { topology, options } = describeCluster(settings);
  const volumes = checkVolumes(state, opts.volumeGb);

  try {
    await waitHealthy(state, secrets, { timeoutMs: 60_000 });
  } catch (e) {
    if (e instanceof UnhealthyError) throw UnhealthyError.refusing("apply", e.health);
    throw e;
  }
  progress(
    `Applying to ${state.clusterName}: plan ${options.plan.name}, profile ${options.profile.name}, synchronous_mode ${options.synchronousMode}` +
      (volumes ? `, volumes ${volumes.gb} GB` : ""),
  );
  if (volumes) growVolumes(state, volumes.gb, progress);

  const identity = opts.identity ?? sshIdentity(state.root);
  // A node whose certificate files were removed gets a new pair here (README, Rotation).
  ensureClusterTls(state.root, topology);
  const ctx = { ...scriptContext(state, secrets, options), authorizedKeys: authorizedKeys(state, opts) };
  const changes: ApplyResult["changes"] = [];
  for (const node of refreshOrder(topology)) {
    progress(`${node.name}: config-refresh`);
    const output = await runScript(
      state,
      { kind: "run", node, script: "config-refresh", text: refreshScript(topology, node, ctx) },
      progress,
      identity,
    );
    changes.push({ node: node.name, lines: changeLines(output) });
  }
  state.profile = options.profile.name;
  state.synchronousMode = options.synchronousMode;
  state.plan = options.plan.name;
  writeState(state);
  const health = await waitHealthy(state, secrets, {
    timeoutMs: opts.timeoutMs ?? 180_000,
    onProgress: progress,
    since: startedAt,
  });
  return { state, secrets, health, seconds: (Date.now() - startedAt) / 1000, changes };
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
