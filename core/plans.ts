import { ConfigError } from "./errors";

/**
 * MadBase plans. The names are MadBase's own (they began as Hetzner CX21/CX31/CX41, which Hetzner
 * has since retired); each maps to the smallest orderable Hetzner type with at least the plan's
 * memory, and stack config may name another type (`serverType`).
 */
export interface Plan {
  name: string;
  memoryGb: number;
  cpus: number;
  maxConnections: number;
  /** Default Hetzner server type behind the plan. */
  serverType: string;
}

export const PLANS = {
  cx21: { name: "cx21", memoryGb: 8, cpus: 3, maxConnections: 100, serverType: "cx33" },
  cx31: { name: "cx31", memoryGb: 16, cpus: 4, maxConnections: 200, serverType: "cx43" },
  cx41: { name: "cx41", memoryGb: 32, cpus: 8, maxConnections: 500, serverType: "cx53" },
} as const satisfies Record<string, Plan>;

export type PlanName = keyof typeof PLANS;
export const PLAN_NAMES = Object.keys(PLANS) as PlanName[];

export function getPlan(name: unknown): Plan {
  if (typeof name === "string" && Object.prototype.hasOwnProperty.call(PLANS, name)) {
    return PLANS[name as PlanName];
  }
  throw new ConfigError("plan", name, `use one of ${PLAN_NAMES.join(", ")}`);
}

/** The largest cluster the stack builds; replication capacity is sized for it on every plan. */
export const MAX_NODE_COUNT = 7;

export interface PostgresTuning {
  /** Same on every member (Patroni keeps these in the DCS and ignores local copies). */
  cluster: {
    max_connections: number;
    max_wal_senders: number;
    max_replication_slots: number;
    max_worker_processes: number;
  };
  /** Sized from the node's memory; kept in each node's local Patroni parameters. */
  local: {
    shared_buffers: string;
    effective_cache_size: string;
    work_mem: string;
    maintenance_work_mem: string;
  };
}

/**
 * PostgreSQL memory and capacity settings for a plan.
 * `memoryMb` lets a local run size memory for the machine it is on while keeping the plan's
 * connection limits.
 */
export function postgresTuning(plan: Plan, memoryMb = plan.memoryGb * 1024): PostgresTuning {
  const sharedBuffersMb = Math.floor(memoryMb / 4);
  const effectiveCacheMb = Math.floor((memoryMb * 3) / 4);
  // What is left after shared buffers, spread over every connection running a few sorts at once.
  const workMemMb = Math.max(4, Math.floor((memoryMb - sharedBuffersMb) / (plan.maxConnections * 3)));
  const maintenanceMb = Math.min(2048, Math.max(64, Math.floor(memoryMb / 16)));
  // One sender and one slot per possible replica, plus room for backups and a spare.
  const replicationCapacity = MAX_NODE_COUNT + 3;
  return {
    cluster: {
      max_connections: plan.maxConnections,
      max_wal_senders: replicationCapacity,
      max_replication_slots: replicationCapacity,
      max_worker_processes: Math.max(8, plan.cpus),
    },
    local: {
      shared_buffers: `${sharedBuffersMb}MB`,
      effective_cache_size: `${effectiveCacheMb}MB`,
      work_mem: `${workMemMb}MB`,
      maintenance_work_mem: `${maintenanceMb}MB`,
    },
  };
}
