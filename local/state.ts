/**
 * What a running local cluster is: written by `up` before the first process starts and updated as
 * each one does, so `status`, `down` and the tests find every process by PID and every namespace
 * by name, even after a half-finished `up`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { BackupTarget, ClusterSecrets } from "../core";
import type { Programs } from "./packages";

export const SERVICES = ["etcd", "patroni", "redis", "sentinel", "haproxy", "node_exporter", "postgres_exporter", "redis_exporter"] as const;
export type Service = (typeof SERVICES)[number];

export interface LocalNode {
  name: string;
  address: string;
  namespace: string;
  /** Processes this runner started, by service. The postmaster is Patroni's, read from postmaster.pid. */
  pids: Partial<Record<Service, number>>;
}

export interface LocalClusterState {
  version: 1;
  stack: string;
  profile: string;
  synchronousMode: boolean;
  clusterName: string;
  subnetCidr: string;
  quorum: number;
  networkId: string;
  /** This machine's address on the nodes' subnet (the veth `<networkId>-host`). */
  hostIp: string;
  root: string;
  startedAt: string;
  /** The programs `up` found, so a restarted node runs the same binaries. */
  programs: Programs;
  /** The backup repository `up` rendered the nodes with, so that a node added later (scale) matches. */
  backup?: BackupTarget;
  nodes: LocalNode[];
}

export const STATE_FILE = "state.json";
export const SECRETS_FILE = "secrets.json";

export function statePath(root: string): string {
  return path.join(root, STATE_FILE);
}

export function readState(root: string): LocalClusterState | undefined {
  const file = statePath(root);
  if (!fs.existsSync(file)) return undefined;
  return JSON.parse(fs.readFileSync(file, "utf8")) as LocalClusterState;
}

/** Written whole and renamed into place, so a crash never leaves half a state file. */
export function writeState(state: LocalClusterState): void {
  const file = statePath(state.root);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

export function readSecrets(root: string): ClusterSecrets {
  return JSON.parse(fs.readFileSync(path.join(root, SECRETS_FILE), "utf8")) as ClusterSecrets;
}

export function writeSecrets(root: string, secrets: ClusterSecrets): void {
  fs.writeFileSync(path.join(root, SECRETS_FILE), JSON.stringify(secrets, null, 2) + "\n", { mode: 0o600 });
}

export function findNode(state: LocalClusterState, name: string): LocalNode {
  const node = state.nodes.find((n) => n.name === name);
  if (!node) throw new Error(`no node ${JSON.stringify(name)}; nodes are ${state.nodes.map((n) => n.name).join(", ")}`);
  return node;
}
