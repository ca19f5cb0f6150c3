/**
 * `npm run local -- scale --nodes N`: grows or shrinks a running local cluster as `pulumi up` with
 * a new nodeCount does a Hetzner one: core's sequence of steps (provision, join, resize, refresh,
 * leave, decommission), run by local/sequence-runner.ts over SSH, one step at a time.
 */
import { Step } from "../core";
import { Location } from "./cluster";
import { LocalClusterState } from "./state";
import { ChangeResult, changeCluster } from "./sequence-runner";

export { ScaleInProgressError, StepError, scaleLogFile } from "./sequence-runner";

export interface ScaleOptions extends Location {
  /** The node count to reach: 1, 3, 5 or 7 (the stack's rules apply, such as requireHa). */
  nodes: number | string;
  onProgress?: (line: string) => void;
  /** How long the cluster may take to be healthy once membership has moved. */
  timeoutMs?: number;
  /** Called before each step with the state as it is then; a throw stops the scale. */
  beforeStep?: (step: Step, state: LocalClusterState) => void | Promise<void>;
}

export interface ScaleResult extends ChangeResult {
  from: ChangeResult["from"];
}

/**
 * Grows or shrinks the cluster at `opts.root` to `opts.nodes` nodes, then waits until it is healthy.
 * Refuses what the stack refuses, a cluster that is not healthy, and a second change of the same
 * cluster while one runs.
 */
export function scale(opts: ScaleOptions): Promise<ScaleResult> {
  return changeCluster({
    root: opts.root,
    networkId: opts.networkId,
    set: { nodeCount: opts.nodes },
    beforeStep: opts.beforeStep,
    onProgress: opts.onProgress,
    timeoutMs: opts.timeoutMs,
    verb: "scale",
  });
}
