/**
 * Where a local node's files live. The rendered configuration uses the core's `localPaths`
 * (everything under `<root>/<node>/`); the runner adds its own files beside them: daemon logs and
 * the writable copies of redis.conf and sentinel.conf that Sentinel rewrites as it works.
 */
import * as path from "node:path";
import { NodePaths, localPaths } from "../core";
import type { LocalClusterState, LocalNode } from "./state";

export function localPathsOf(state: Pick<LocalClusterState, "root">, node: Pick<LocalNode, "name">): NodePaths {
  return localPaths(state.root, node);
}

export interface RuntimeFiles {
  /** The copy redis-server runs from: seeded once from the render, then Redis's own (CONFIG REWRITE). */
  redisConf: string;
  /** Likewise for Sentinel, which rewrites its file as it learns the cluster. */
  sentinelConf: string;
  logDir: string;
}

export function runtimeFiles(state: Pick<LocalClusterState, "root">, node: Pick<LocalNode, "name">): RuntimeFiles {
  const p = localPathsOf(state, node);
  return {
    redisConf: path.join(p.redisDir, "redis.conf"),
    sentinelConf: path.join(p.sentinelDir, "sentinel.conf"),
    logDir: path.join(state.root, node.name, "log"),
  };
}

export function logFile(state: Pick<LocalClusterState, "root">, node: Pick<LocalNode, "name">, service: string): string {
  return path.join(runtimeFiles(state, node).logDir, `${service}.log`);
}
