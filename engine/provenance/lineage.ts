// Where a target came from, in the graph's terms: the step that made it, the rootfs it was
// packed from (the packer's first rootfs input), which step made each layer of that rootfs,
// and every step upstream. Built from step results (a build's, or the cache's alone).

import { neededSteps, type ActionRecord, type StoredArtifact } from "../build.js";
import type { SourceLocation } from "../errors.js";
import type { BuildGraph, Edge } from "../graph.js";
import type { Digest } from "../key.js";
import type { RootfsValue } from "../rootfs.js";
import type { StepProvenanceRecord } from "./record.js";

export interface StepRef {
  id: string;
  kind: string;
  location?: SourceLocation;
}

export interface ChainStep extends StepRef {
  record: ActionRecord;
  provenance?: StepProvenanceRecord;
  /** Indices (bottom first) of the layers this step added to the rootfs. */
  layers: number[];
}

export interface Lineage {
  target: string;
  /** The step that made the target, and which of its outputs it is. */
  producer: StepRef & { output: string };
  artifact: StoredArtifact;
  /** The rootfs the target is, or was packed from. Undefined for a blob made without one (dracut). */
  rootfs?: RootfsValue & { stepId: string };
  /** The steps that made the rootfs's layers, bottom first. */
  chain: ChainStep[];
  /** Every step the target needs, in build order, with its result and what it told of its provenance. */
  upstream: Array<StepRef & { record: ActionRecord; provenance?: StepProvenanceRecord }>;
}

/** A step result a lineage needs is not there: the target has not been built (with these inputs). */
export class MissingResultError extends Error {
  constructor(readonly stepId: string) {
    super(`step '${stepId}' has no result in the cache for the config as it is now`);
    this.name = "MissingResultError";
  }
}

export function stepRef(graph: BuildGraph, id: string): StepRef {
  const node = graph.steps.get(id)!.node;
  return { id, kind: node.spec.kind, ...(node.location ? { location: node.location } : {}) };
}

/**
 * The lineage of `target`. `results` holds the step results (built or cached) by step id;
 * `provenanceOf` reads a step's provenance record from the store.
 */
export function lineageOf(
  graph: BuildGraph,
  target: string,
  results: ReadonlyMap<string, ActionRecord | undefined>,
  provenanceOf: (digest: Digest) => StepProvenanceRecord | undefined,
  /** What `target` names: a target of the graph by default, or any step's output. */
  edge: Edge | undefined = graph.targets.get(target),
): Lineage {
  if (!edge) throw new Error(`no target '${target}'`);
  const resultOf = (id: string): ActionRecord => {
    const record = results.get(id);
    if (!record) throw new MissingResultError(id);
    return record;
  };
  const artifact = resultOf(edge.from).outputs[edge.output]!;
  const needed = neededSteps(graph, [edge.from]);
  const provenanceOfStep = (record: ActionRecord): StepProvenanceRecord | undefined => (record.provenance ? provenanceOf(record.provenance) : undefined);
  const upstream = graph.order
    .filter((id) => needed.has(id))
    .map((id) => {
      const record = resultOf(id);
      const provenance = provenanceOfStep(record);
      return { ...stepRef(graph, id), record, ...(provenance ? { provenance } : {}) };
    });
  const lineage: Lineage = { target, producer: { ...stepRef(graph, edge.from), output: edge.output }, artifact, chain: [], upstream };

  const rootfsEdge = artifact.kind === "rootfs" ? edge : graph.steps.get(edge.from)!.inputs.find((input) => input.kind === "rootfs");
  if (!rootfsEdge) return lineage;
  const rootfs = resultOf(rootfsEdge.from).outputs[rootfsEdge.output]!;
  if (rootfs.kind !== "rootfs") return lineage;
  lineage.rootfs = { digest: rootfs.digest, layers: rootfs.layers, stepId: rootfsEdge.from };

  // Down the chain of tree-changing steps, each one's first rootfs input being the one below.
  let current: string | undefined = rootfsEdge.from;
  let output = rootfsEdge.output;
  while (current !== undefined) {
    const record = resultOf(current);
    const made = record.outputs[output];
    if (made?.kind !== "rootfs") break;
    const below: Edge | undefined = graph.steps.get(current)!.inputs.find((input) => input.kind === "rootfs");
    const belowLayers = below ? resultOf(below.from).outputs[below.output] : undefined;
    const inherited = new Set(belowLayers?.kind === "rootfs" ? belowLayers.layers.map((layer) => layer.digest) : []);
    const layers = made.layers.map((layer, index) => (inherited.has(layer.digest) ? -1 : index)).filter((index) => index >= 0);
    const provenance = upstream.find((step) => step.id === current)?.provenance;
    lineage.chain.unshift({ ...stepRef(graph, current), record, layers, ...(provenance ? { provenance } : {}) });
    current = below?.from;
    output = below?.output ?? "out";
  }
  return lineage;
}

/** The chain step that made layer `index`. */
export function layerMaker(lineage: Lineage, index: number): ChainStep | undefined {
  return lineage.chain.find((step) => step.layers.includes(index));
}
