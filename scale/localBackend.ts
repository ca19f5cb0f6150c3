import { Location, loadCluster } from "../local/cluster";
import { scale } from "../local/scale";
import { ScaleBackend } from "./backend";

/**
 * Scales the local cluster at a root (`npm run local -- up`) with the local runner's `scale`: new
 * nodes boot from the user data Hetzner would get, and the same membership scripts a Hetzner node
 * runs go to each node over SSH, as Pulumi's remote commands. The stack's rules (allowed counts,
 * requireHa) are checked before anything changes.
 */
export class LocalBackend implements ScaleBackend {
  readonly name = "local";

  constructor(private readonly location: Location = {}) {}

  async currentCount(): Promise<number> {
    return loadCluster(this.location).state.nodes.length;
  }

  async scale(target: number, log: (line: string) => void): Promise<void> {
    const result = await scale({ ...this.location, nodes: target, onProgress: log });
    log(
      `${result.to.nodeCount} node(s), healthy: leader ${result.health.leader}, Redis master ${result.health.redisMaster} (${result.seconds.toFixed(1)} s)`,
    );
  }
}
