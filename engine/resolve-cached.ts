// The steps a target needs, looked up in the cache without running anything: each one's
// key (once its inputs are known) and its stored result, if any. What `osbuild explain`
// and `osbuild why` start from: offline, from the cache alone, unless they are given the
// shared cache's registries (explain, and prune --unused), whose records count too (nothing
// is pulled).

import { neededSteps, type ActionRecord, type BuildContext, type PreparedStep, type StoredArtifact } from "./build.js";
import { StepError } from "./errors.js";
import type { BuildGraph } from "./graph.js";
import { cacheKeyOf, type CacheKey, type Preimage } from "./key.js";
import type { SharedCache } from "./remote/shared-cache.js";

export interface CachedStep {
  /** Undefined when the step cannot start (a host path is missing, a tool is not installed). */
  prepared?: PreparedStep;
  prepareError?: StepError;
  /** Input steps whose outputs are not in the cache. */
  missingInputs: string[];
  /** Known when every input is. */
  key?: CacheKey;
  preimage?: Preimage;
  /** The stored result, when the key is in the cache (or in a registry of `shared`). */
  record?: ActionRecord;
  /** Where the record is: "local", or a registry's oci:// reference. */
  where?: string;
}

/** `roots` and every step upstream of them, in build order. */
export async function resolveCached(context: BuildContext, graph: BuildGraph, roots: readonly string[], shared?: SharedCache): Promise<Map<string, CachedStep>> {
  const needed = neededSteps(graph, roots);
  const resolved = new Map<string, CachedStep>();
  for (const id of graph.order) {
    if (!needed.has(id)) continue;
    const step = graph.steps.get(id)!;
    const missingInputs = step.inputs.filter((edge) => !resolved.get(edge.from)?.record?.outputs[edge.output]).map((edge) => edge.from);
    let prepared: PreparedStep;
    try {
      prepared = context.prepare(step);
    } catch (error) {
      if (!(error instanceof StepError)) throw error;
      resolved.set(id, { prepareError: error, missingInputs });
      continue;
    }
    if (missingInputs.length > 0) {
      resolved.set(id, { prepared, missingInputs });
      continue;
    }
    const inputs: StoredArtifact[] = step.inputs.map((edge) => resolved.get(edge.from)!.record!.outputs[edge.output]!);
    const preimage = context.preimageOf(prepared, inputs);
    const key = cacheKeyOf(preimage);
    const local = await context.lookupAction(key);
    const remote = local ? undefined : await shared?.lookup(key, id);
    const record = local ?? remote?.record;
    resolved.set(id, { prepared, missingInputs, key, preimage, ...(record && { record, where: remote ? remote.cache.display : "local" }) });
  }
  return resolved;
}
