/**
 * The one order of every change to a running cluster: which step runs on which node, after which.
 *
 * `changeSequence` is the only place that decides the order, and (through `checkStackChange`) the
 * only place that refuses a change. Its drivers only carry the steps out:
 *  - the Pulumi program declares each step of `declaredSequence` as its resource, each depending on
 *    the step before it (components/statePillar.ts); the engine then runs the steps whose inputs
 *    changed, which is `changeSequence`;
 *  - the local runner (local/sequence-runner.ts) runs `changeSequence`'s steps in this order over
 *    SSH, one at a time.
 *
 * A step is one command on one node (the Pulumi resource it becomes is named by `stepResource`):
 *  - provision: the node's machine is created with its user data (an hcloud Server; a container
 *    locally). New machines take no part in the cluster until they join, so they are made first
 *    and together (Pulumi creates servers in parallel; founding nodes must boot together, since
 *    etcd forms its first quorum from all of them).
 *  - join: node-join on a new node (a no-op on a member), nodes in index order.
 *  - resize: the node goes to the wanted server type by drain → clean power-off → new type → boot
 *    → settle (`RESIZE_PHASES`), from the last node to node 1, each draining towards the nodes
 *    already resized. A no-op on a server that already has the type (a new server's first run).
 *  - refresh: config-refresh on every node, from the last node to node 1 (`refreshOrder`), the
 *    first led by leadership-handoff (which moves leadership off nodes that leave; a no-op
 *    otherwise). It runs when anything it renders changed (a count, a setting, a template).
 *  - leave: node-leave on a node that goes, from the last node down, each followed by its
 *    decommission (the server and its volume go).
 *  - maintain: one node's part of a rolling maintenance (core/maintenance.ts), from the last node
 *    to node 1 after the refreshes, when the stack's maintenanceRevision is new: packages
 *    upgraded, each changed daemon restarted once, a reboot when required (drain, clean reboot,
 *    settle). Which node leads is decided when each step runs: a node that leads then hands over
 *    first, preferably to a node already done (`prefer`).
 *
 * Every step that runs a script on a node of the cluster (join, resize, refresh, leave) comes
 * after the one before it: no two of them ever run at once, so at most one node is ever down.
 *
 * Where the Pulumi engine decides, this is its rule (`ENGINE_DELETE_RULE`): a leave is the delete
 * of the node's membership command, so it runs after every create and update of the update, in
 * the reverse dependency order of the previous deployment (the last node leaves first, and a
 * node's server goes only after its membership); and an update that failed half-way leaves its
 * pending deletes for the next `up`, which runs them first. The order here puts the leaves last
 * for that reason, so both drivers run the same order.
 */
import type { AppliedSettings } from "./stack-change";
import { MaintenancePackages, MaintenanceReboot, STACK_MAINTENANCE } from "./maintenance";
import { checkStackChange } from "./stack-change";
import { MAX_NODE_COUNT } from "./plans";
import { NodeSpec, Topology, buildTopology, nodeName } from "./topology";

export const ENGINE_DELETE_RULE =
  "Pulumi runs deletes after every create and update, in the reverse dependency order of the previous deployment; " +
  "an update that failed half-way runs its pending deletes first on the next up";

/** What a resize does to one node, in order (scripts/hetzner/resize-server.sh; local/sequence-runner.ts). */
export const RESIZE_PHASES = ["drain", "power-off", "change-type", "power-on", "settle"] as const;

export type Step =
  /** The node's machine comes to exist with its user data. */
  | { kind: "provision"; node: NodeSpec }
  /** node-join: the new node joins the running cluster. */
  | { kind: "join"; node: NodeSpec }
  /**
   * The node goes to `serverType`, draining its leaderships towards `prefer`: the names of the
   * nodes resized before it (every higher index a cluster may have, so that the drain script, and
   * the resource carrying it, do not change with the node count; the script passes over names
   * that are not members).
   */
  | { kind: "resize"; node: NodeSpec; serverType: string; prefer: string[] }
  /** config-refresh on the node; `handoff`: led by leadership-handoff (the first refresh of a round). */
  | { kind: "refresh"; node: NodeSpec; handoff: boolean }
  /** node-leave: the node leaves the cluster. */
  | { kind: "leave"; node: NodeSpec }
  /**
   * node-maintain on the node (and, when it asks for one, a clean reboot and node-settle): rolling
   * maintenance number `revision`; `prefer` as for a resize (the nodes maintained before it).
   */
  | {
      kind: "maintain";
      node: NodeSpec;
      revision: number;
      packages: MaintenancePackages;
      reboot: MaintenanceReboot;
      prefer: string[];
    }
  /** The node's machine and volume go (after it left). */
  | { kind: "decommission"; node: NodeSpec };

export type StepKind = Step["kind"];

/** "madbase-prod-2: refresh (after leadership-handoff)", for progress lines and errors. */
export function describeStep(step: Step): string {
  const what =
    step.kind === "refresh" && step.handoff
      ? "leadership-handoff, refresh"
      : step.kind === "resize"
        ? `resize to ${step.serverType}`
        : step.kind === "maintain"
          ? `maintenance ${step.revision}`
          : step.kind;
  return `${step.node.name}: ${what}`;
}

/**
 * The name of the Pulumi resource a step is, when it is one of the chain (the membership command's
 * create is the join and its delete the leave; provision and decommission are the server's).
 */
export function stepResource(step: Step): string {
  switch (step.kind) {
    case "provision":
    case "decommission":
      return step.node.name;
    case "join":
    case "leave":
      return `${step.node.name}-membership`;
    case "resize":
      return `${step.node.name}-resize`;
    case "refresh":
      return `${step.node.name}-config`;
    case "maintain":
      return `${step.node.name}-maintenance`;
  }
}

function topologyOf(applied: Pick<AppliedSettings, "nodeCount" | "subnetCidr">, stack: string): Topology {
  return buildTopology({ stack, nodeCount: applied.nodeCount, subnetCidr: applied.subnetCidr });
}

export interface ChangeInput {
  /** The stack name (every node's identity derives from it). */
  stack: string;
  /** What runs now: the last deployment's record; undefined before the first up. */
  running: AppliedSettings | undefined;
  /** What is wanted. */
  wanted: AppliedSettings;
  /**
   * Whether what config-refresh renders onto a node changed (a setting, a template, a key). A
   * count change always changes it. The local runner passes true: a refresh that finds its node
   * up to date changes nothing.
   */
  refresh: boolean;
}

/**
 * The whole chain as Pulumi declares it for `wanted`: every step of a first `up`, each of the
 * chain depending on the one before it. Running it on a cluster that already runs would change
 * nothing: join, resize and refresh are each a no-op on a node already as wanted.
 */
export function declaredSequence(stack: string, wanted: AppliedSettings): Step[] {
  return changeSequence({ stack, running: undefined, wanted, refresh: true });
}

/**
 * The ordered steps that take the cluster from `running` to `wanted`; refuses (ConfigError, from
 * checkStackChange) before any step a change the running stack cannot take in place.
 *
 *   first up:  provision every node; join 1..N; resize N..1; refresh N..1
 *   grow:      provision the new nodes; join them in index order; resize the new ones (no-op);
 *              refresh N..1
 *   shrink:    refresh the staying nodes N..1 (the first led by the hand-off); then from the last
 *              node down: leave, decommission
 *   new type:  resize N..1, then refresh N..1 (the per-node parameters follow the plan)
 *   a setting: refresh N..1
 *   a new maintenanceRevision: (refresh N..1, when anything rendered changed), then maintain N..1
 */
export function changeSequence(input: ChangeInput): Step[] {
  const { stack, running, wanted } = input;
  checkStackChange(running, wanted);
  const to = topologyOf(wanted, stack);
  const from = running ? topologyOf(running, stack) : undefined;
  const have = from?.nodeCount ?? 0;
  const added = to.nodes.slice(have);
  const leaving = from ? from.nodes.slice(to.nodeCount).reverse() : [];
  const retyped = running !== undefined && running.serverType !== wanted.serverType;
  const refresh = input.refresh || have !== to.nodeCount || retyped || running === undefined;

  const steps: Step[] = [];
  for (const node of added) steps.push({ kind: "provision", node });
  for (const node of added) steps.push({ kind: "join", node });
  // The resize chain runs from the last node down; a new server runs its (no-op) resize too.
  for (const node of [...to.nodes].reverse()) {
    if (!retyped && node.index < have) continue;
    steps.push({
      kind: "resize",
      node,
      serverType: wanted.serverType,
      prefer: preferAfter(stack, node),
    });
  }
  if (refresh) {
    refreshOrder(to).forEach((node, k) => steps.push({ kind: "refresh", node, handoff: k === 0 }));
  }
  const revision = wanted.maintenanceRevision;
  if (revision !== undefined && revision !== running?.maintenanceRevision) {
    for (const node of refreshOrder(to))
      steps.push({
        kind: "maintain",
        node,
        revision,
        ...STACK_MAINTENANCE,
        prefer: preferAfter(stack, node),
      });
  }
  for (const node of leaving) {
    steps.push({ kind: "leave", node });
    steps.push({ kind: "decommission", node });
  }
  return steps;
}

/**
 * The nodes a roll from the last node down has done before `node`: every higher index a cluster
 * may have (so a step's script does not change with the node count; scripts pass over names that
 * are not members).
 */
function preferAfter(stack: string, node: NodeSpec): string[] {
  return Array.from({ length: MAX_NODE_COUNT - node.index - 1 }, (_, k) => nodeName(stack, node.index + 1 + k));
}

/**
 * The order config-refresh visits the nodes in, one at a time: from the last node to the first.
 * Node 1 founded the cluster and usually leads, so a refresh that must restart PostgreSQL restarts
 * the replicas first and the leader last, handing its leadership to a node already refreshed.
 */
export function refreshOrder(topology: Topology): NodeSpec[] {
  return [...topology.nodes].reverse();
}

/** The nodes refreshed before `node` in a round: where its leadership goes when it must restart. */
export function refreshedBefore(topology: Topology, node: NodeSpec): NodeSpec[] {
  const order = refreshOrder(topology);
  return order.slice(
    0,
    order.findIndex((n) => n.name === node.name),
  );
}
