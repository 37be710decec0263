// The build graph: step nodes and artifact edges, checked for duplicate ids and cycles,
// in topological order, and printable as DOT or Mermaid.

import { Graph, alg } from "@dagrejs/graphlib";
import { type ArtifactHandle, type StepNode, artifactHandle } from "./define.js";
import { ConfigError, formatLocation } from "./errors.js";
import type { ArtifactKind, Targets } from "./types.js";

export interface Edge {
  /** Id of the step that makes the artifact. */
  readonly from: string;
  readonly output: string;
  readonly kind: ArtifactKind;
}

export interface PlannedStep {
  readonly id: string;
  readonly node: StepNode;
  readonly inputs: readonly Edge[];
}

export interface BuildGraph {
  /** Steps by id, only those the targets need. */
  readonly steps: ReadonlyMap<string, PlannedStep>;
  /** Step ids, every step after the steps it depends on. */
  readonly order: readonly string[];
  readonly targets: ReadonlyMap<string, Edge>;
}

/** Assigns ids, resolves references and checks the graph. Throws ConfigError. */
export function buildGraph(targets: Targets, allNodes: readonly StepNode[]): BuildGraph {
  assignIds(allNodes);
  const byId = new Map(allNodes.map((node) => [node.id, node]));

  const resolve = (handle: ArtifactHandle, usedBy: string): Edge => {
    const source = handle.source;
    if ("refId" in source) {
      const node = byId.get(source.refId);
      if (!node) {
        const known = [...byId.keys()].sort().join(", ") || "none";
        throw new ConfigError(`${usedBy}: no step has the id '${source.refId}' (steps: ${known})`, source.location);
      }
      const outputs = outputKinds(node);
      const kind = outputs.get(handle.output);
      if (kind !== handle.kind) {
        const what = kind ? `makes a ${kind}` : `has no output '${handle.output}'`;
        throw new ConfigError(`${usedBy}: step '${node.id}' ${what}, but a ${handle.kind} is referenced`, source.location);
      }
      return { from: node.id, output: handle.output, kind: handle.kind };
    }
    return { from: source.id, output: handle.output, kind: handle.kind };
  };

  const steps = new Map<string, PlannedStep>();
  const targetEdges = new Map<string, Edge>();
  const pending: string[] = [];
  for (const [name, value] of Object.entries(targets)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
      throw new ConfigError(`target name '${name}' must be letters, digits, '.', '_' or '-': it becomes a file name`);
    }
    const handle = artifactHandle(value);
    if (!handle) throw new ConfigError(`target '${name}' is not an artifact made by a step (got ${typeof value})`);
    const edge = resolve(handle, `target '${name}'`);
    targetEdges.set(name, edge);
    pending.push(edge.from);
  }
  while (pending.length > 0) {
    const id = pending.pop()!;
    if (steps.has(id)) continue;
    const node = byId.get(id)!;
    const inputs = node.inputs.map((handle) => resolve(handle, `step '${node.id}'`));
    steps.set(id, { id, node, inputs });
    for (const input of inputs) pending.push(input.from);
  }

  const graph = new Graph({ directed: true });
  for (const id of steps.keys()) graph.setNode(id);
  for (const step of steps.values()) for (const input of step.inputs) graph.setEdge(input.from, step.id);
  const cycles = alg.findCycles(graph);
  if (cycles.length > 0) {
    const cycle = cyclePath(new Set(cycles[0]), steps);
    const first = steps.get(cycle[0]!)!;
    const path = [...cycle, cycle[0]].join(" → ");
    const where = cycle.map((id) => `  ${id} at ${formatLocation(steps.get(id)!.node.location) || "?"}`).join("\n");
    throw new ConfigError(`the steps form a cycle: ${path}\n${where}`, first.node.location, "a step cannot use its own output: break the loop of ref() calls");
  }
  return { steps, order: stableTopologicalOrder(steps), targets: targetEdges };
}

/** A closed walk through one strongly connected component, following the edges. */
function cyclePath(component: ReadonlySet<string>, steps: ReadonlyMap<string, PlannedStep>): string[] {
  const start = [...component].sort((a, b) => steps.get(a)!.node.seq - steps.get(b)!.node.seq)[0]!;
  const path = [start];
  const seen = new Set(path);
  let current = start;
  for (;;) {
    // walk backwards along inputs: "a uses b" means b → a in the build order
    const next = steps.get(current)!.inputs.map((input) => input.from).find((id) => component.has(id) && (id === start || !seen.has(id)));
    if (next === undefined || next === start) break;
    path.push(next);
    seen.add(next);
    current = next;
  }
  return path.reverse();
}

/** Dependencies first (Kahn's algorithm), ties broken by creation order, for a stable output. */
function stableTopologicalOrder(steps: ReadonlyMap<string, PlannedStep>): string[] {
  const remaining = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const [id, step] of steps) {
    const unique = new Set(step.inputs.map((input) => input.from));
    remaining.set(id, unique.size);
    for (const from of unique) {
      const list = dependents.get(from);
      if (list) list.push(id);
      else dependents.set(from, [id]);
    }
  }
  const ready = [...steps.keys()].filter((id) => remaining.get(id) === 0);
  const result: string[] = [];
  while (ready.length > 0) {
    ready.sort((a, b) => steps.get(a)!.node.seq - steps.get(b)!.node.seq);
    const id = ready.shift()!;
    result.push(id);
    for (const next of dependents.get(id) ?? []) {
      const left = remaining.get(next)! - 1;
      remaining.set(next, left);
      if (left === 0) ready.push(next);
    }
  }
  return result;
}

/** Explicit ids first (duplicates are errors), then kind-based ids in creation order. */
function assignIds(nodes: readonly StepNode[]): void {
  const taken = new Map<string, StepNode>();
  for (const node of nodes) {
    if (!node.explicitId) continue;
    const other = taken.get(node.id);
    if (other) {
      throw new ConfigError(
        `two steps have the id '${node.id}': ${other.spec.kind} at ${formatLocation(other.location) || "?"} and ${node.spec.kind} at ${formatLocation(node.location) || "?"}`,
        node.location,
        "give each step a unique `id` option",
      );
    }
    taken.set(node.id, node);
  }
  const counts = new Map<string, number>();
  for (const node of nodes) {
    if (node.explicitId) continue;
    let count = counts.get(node.spec.kind) ?? 0;
    let id: string;
    do {
      count++;
      id = count === 1 ? node.spec.kind : `${node.spec.kind}-${count}`;
    } while (taken.has(id));
    counts.set(node.spec.kind, count);
    node.id = id;
    taken.set(id, node);
  }
}

function outputKinds(node: StepNode): Map<string, ArtifactKind> {
  const output = node.spec.output;
  if (output === "rootfs" || output === "blob") return new Map([["out", output]]);
  return new Map(output.blobs.map((name) => [name, "blob" as const]));
}

// ---------------------------------------------------------------------------
// Rendering

export function renderDot(graph: BuildGraph): string {
  const lines = ["digraph osbuild {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];'];
  for (const id of graph.order) {
    const step = graph.steps.get(id)!;
    lines.push(`  ${quote(id)} [label=${quote(`${id}\\n(${step.node.spec.kind})`)}];`);
  }
  for (const id of graph.order) {
    for (const input of graph.steps.get(id)!.inputs) {
      const label = input.output === "out" ? input.kind : `${input.output}: ${input.kind}`;
      lines.push(`  ${quote(input.from)} -> ${quote(id)} [label=${quote(label)}];`);
    }
  }
  for (const [name, edge] of graph.targets) {
    lines.push(`  ${quote(`target:${name}`)} [label=${quote(name)}, shape=note];`);
    lines.push(`  ${quote(edge.from)} -> ${quote(`target:${name}`)} [label=${quote(edge.kind)}];`);
  }
  lines.push("}");
  return lines.join("\n") + "\n";
}

export function renderMermaid(graph: BuildGraph): string {
  const ids = new Map<string, string>();
  const nodeId = (id: string): string => {
    if (!ids.has(id)) ids.set(id, `n${ids.size}`);
    return ids.get(id)!;
  };
  const lines = ["flowchart LR"];
  for (const id of graph.order) lines.push(`  ${nodeId(id)}["${id}<br/>(${graph.steps.get(id)!.node.spec.kind})"]`);
  for (const id of graph.order) {
    for (const input of graph.steps.get(id)!.inputs) lines.push(`  ${nodeId(input.from)} -- ${input.kind} --> ${nodeId(id)}`);
  }
  for (const [name, edge] of graph.targets) {
    const target = nodeId(`target:${name}`);
    lines.push(`  ${target}[/"${name}"/]`);
    lines.push(`  ${nodeId(edge.from)} --> ${target}`);
  }
  return lines.join("\n") + "\n";
}

function quote(text: string): string {
  return `"${text.replace(/"/g, '\\"')}"`;
}
