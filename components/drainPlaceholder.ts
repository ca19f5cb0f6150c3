/**
 * PLACEHOLDER until core/scale.ts has `drainScript` and `settleScript` (being written on main):
 * same signatures, but the scripts refuse to run, so a resize stops at its first step (before the
 * server is shut down) instead of powering off a node that still leads. Remove this file and
 * import both from ../core once main has them.
 */
import { NodeSpec, ScriptContext, Topology } from "../core";

const refuse = (what: string, node: NodeSpec) =>
  `#!/bin/bash\necho "madbase: ${what} for ${node.name} is not in this version yet; not resizing a node that may lead" >&2\nexit 1\n`;

export function drainScript(_topology: Topology, node: NodeSpec, _ctx: ScriptContext, _opts?: { prefer?: NodeSpec[] }): string {
  return refuse("node-drain", node);
}

export function settleScript(_topology: Topology, node: NodeSpec, _ctx: ScriptContext): string {
  return refuse("node-settle", node);
}
