/**
 * What a running local cluster is: written by `up` before the first machine boots and updated as
 * machines boot, stop and go, so `status`, `down` and the tests find every machine, loop device and
 * namespace, even after a half-finished `up`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { AppliedSettings, BackupTarget, ClusterSecrets } from "../core";
import type { MachineRecord } from "./machine";

/** The daemons of a node, by the name the runner and the tests use. */
export const SERVICES = [
  "etcd",
  "patroni",
  "redis",
  "sentinel",
  "haproxy",
  "pgbouncer",
  "node_exporter",
  "postgres_exporter",
  "redis_exporter",
  "pgbouncer_exporter",
] as const;
export type Service = (typeof SERVICES)[number];

/** Each service's systemd unit on a node (Debian's own units, with the node's drop-ins). */
export const UNITS: Record<Service, string> = {
  etcd: "etcd.service",
  patroni: "patroni.service",
  redis: "redis-server.service",
  sentinel: "redis-sentinel.service",
  haproxy: "haproxy.service",
  pgbouncer: "pgbouncer.service",
  node_exporter: "prometheus-node-exporter.service",
  postgres_exporter: "prometheus-postgres-exporter.service",
  redis_exporter: "prometheus-redis-exporter.service",
  pgbouncer_exporter: "prometheus-pgbouncer-exporter.service",
};

export interface LocalNode {
  name: string;
  address: string;
  namespace: string;
  /** The Hetzner server type this machine stands for (a resize changes it; see local/sequence-runner.ts). */
  serverType: string;
  machine: MachineRecord;
}

export interface LocalClusterState {
  version: typeof STATE_VERSION;
  stack: string;
  /**
   * The settings the cluster runs with, the record a Pulumi deployment outputs as appliedSettings:
   * `scale` and `apply` compare the wanted settings with it (checkStackChange) and take the steps
   * of core's sequence from it; they rewrite it once every step has run.
   */
  applied: RecordedSettings;
  clusterName: string;
  subnetCidr: string;
  networkId: string;
  /** This machine's address on the nodes' subnet (the veth `<networkId>-host`). */
  hostIp: string;
  root: string;
  startedAt: string;
  /** The node image every machine boots (an overlay on it each). */
  image: string;
  /** The backup repository `up` rendered the nodes with, so that a node added later (scale) matches. */
  backup?: BackupTarget;
  /** The host directory shown to every node as the local backup repository, when there is one. */
  backupHostDir?: string;
  nodes: LocalNode[];
}

/** The applied record with what a local cluster always records (a Pulumi record from before them may lack them). */
export type RecordedSettings = AppliedSettings & Required<Pick<AppliedSettings, "failoverProfile" | "synchronousMode">>;

export const STATE_FILE = "state.json";
/** 3: the settings are the appliedSettings record, and each node has a server type. */
export const STATE_VERSION = 3;
export const SECRETS_FILE = "secrets.json";

export function statePath(root: string): string {
  return path.join(root, STATE_FILE);
}

export function readState(root: string): LocalClusterState | undefined {
  const file = statePath(root);
  if (!fs.existsSync(file)) return undefined;
  const state = JSON.parse(fs.readFileSync(file, "utf8")) as LocalClusterState;
  if (state.version !== STATE_VERSION) {
    throw new Error(
      `${file} is from an older runner (version ${state.version}): stop its processes and remove ${root} by hand`,
    );
  }
  return state;
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
