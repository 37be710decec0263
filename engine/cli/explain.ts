// `osbuild explain STEP`: is the step cached, and if not, what changed since it was last
// built: an option, a host file's content, an input artifact, a tool, the step's version.

import { BuildContext, type BuildSettings, type HistoryRecord, type PreparedStep } from "../build.js";
import type { DirectoryListing } from "../fingerprint.js";
import type { LoadedConfig } from "../config/load.js";
import { ConfigError, formatLocation } from "../errors.js";
import { diffJson } from "../key.js";
import { resolveCached } from "../resolve-cached.js";

export async function explainStep(config: LoadedConfig, requested: string, settings: BuildSettings): Promise<number> {
  const graph = config.graph;
  const stepId = graph.steps.has(requested) ? requested : graph.targets.get(requested)?.from;
  if (!stepId) {
    throw new ConfigError(`no step or target named '${requested}'`, config.definition.location, `steps: ${[...graph.steps.keys()].join(", ")}`);
  }
  const context = new BuildContext(settings);
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);

  // The step's ancestors, resolved from the cache in build order, without building anything.
  const resolved = (await resolveCached(context, graph, [stepId])).get(stepId)!;
  const step = graph.steps.get(stepId)!;
  if (resolved.prepareError) {
    const error = resolved.prepareError;
    out(`${stepId}: cannot start: ${error.message}${error.hint ? `\n  hint: ${error.hint}` : ""}`);
    return 1;
  }
  const where = formatLocation(step.node.location);
  out(`step ${stepId} (${step.node.spec.kind} v${step.node.spec.version})${where ? ` at ${where}` : ""}`);
  const missingInputs = resolved.missingInputs;
  if (missingInputs.length > 0) {
    out(`  will build: its input${missingInputs.length > 1 ? "s" : ""} from ${missingInputs.map((from) => `'${from}'`).join(", ")} will be built first`);
    out(`  (run \`osbuild explain ${missingInputs[0]}\` to see why)`);
    return 0;
  }
  const key = resolved.key!;
  const action = resolved.record;
  if (action) {
    out(`  cached: key ${key.slice(0, 16)}… built ${action.createdAt} in ${action.ms} ms`);
    return 0;
  }
  out(`  will build: key ${key.slice(0, 16)}… is not in the cache`);
  const history = await context.store.getJson<HistoryRecord>(context.historyKey(stepId)).catch(() => undefined);
  if (!history) {
    out("  this step has not been built before with this config");
    return 0;
  }
  const previous = history.value;
  out(`  last built with key ${previous.key.slice(0, 16)}…; what changed since:`);
  const changes = diffJson(previous.preimage, resolved.preimage);
  for (const change of changes) out(`    ${describeChange(change, previous, resolved.prepared!, step.inputs.map((edge) => edge.from))}`);
  if (changes.length === 0) out("    nothing in the key: its cache entry was removed (pruned or found corrupted)");
  return 0;
}

function describeChange(
  change: { path: string; before: unknown; after: unknown },
  previous: HistoryRecord,
  current: Pick<PreparedStep, "hostPaths" | "listings">,
  inputSteps: string[],
): string {
  const hostPaths = current.hostPaths;
  const show = (value: unknown): string => (value === undefined || value === null ? "(none)" : JSON.stringify(value));
  const option = /^options\.([^.[]+)/.exec(change.path);
  if (option && option[1]! in hostPaths) {
    const value = hostPaths[option[1]!]!;
    // Which path of the option: options.NAME, or options.NAME[i] for a list.
    const index = /^options\.[^.[]+\[(\d+)\]/.exec(change.path)?.[1];
    const path = Array.isArray(value) ? (index === undefined ? value.join(", ") : value[Number(index)]!) : value;
    const before = previous.listings?.[path];
    const after = current.listings[path];
    const files = before && after ? listingChanges(before, after) : undefined;
    return `option ${option[1]} (${path}): content changed${files ? `: ${files}` : ` (${change.path.replace(/^options\./, "")}: ${short(change.before)} → ${short(change.after)})`}`;
  }
  if (option) return `option ${change.path.replace(/^options\./, "")}: ${show(change.before)} → ${show(change.after)}`;
  const input = /^inputs\[(\d+)\]/.exec(change.path);
  if (input) {
    const index = Number(input[1]);
    const from = inputSteps[index] ?? previous.inputSteps[index] ?? "?";
    return `input ${index + 1} (from step '${from}'): ${short(change.before)} → ${short(change.after)}`;
  }
  if (change.path.startsWith("tools")) return `tool ${change.path.replace(/^tools\.?/, "")}: ${show(change.before)} → ${show(change.after)}`;
  if (change.path === "version") return `step version: ${show(change.before)} → ${show(change.after)} (the step's behaviour changed)`;
  return `${change.path}: ${show(change.before)} → ${show(change.after)}`;
}

/** "changed etc/a.conf; added etc/b.conf" — at most a few names of each kind. */
function listingChanges(before: DirectoryListing, after: DirectoryListing): string | undefined {
  const changed: string[] = [];
  const added: string[] = [];
  const removed: string[] = [];
  for (const [path, entry] of Object.entries(after)) {
    if (!Object.hasOwn(before, path)) added.push(path);
    else if (before[path] !== entry) changed.push(path);
  }
  for (const path of Object.keys(before)) if (!Object.hasOwn(after, path)) removed.push(path);
  const names = (label: string, paths: string[]): string | undefined => {
    if (paths.length === 0) return undefined;
    const shown = paths.sort().slice(0, 5).join(", ");
    return `${label} ${shown}${paths.length > 5 ? ` and ${paths.length - 5} more` : ""}`;
  };
  const parts = [names("changed", changed), names("added", added), names("removed", removed)].filter((part): part is string => part !== undefined);
  return parts.length > 0 ? parts.join("; ") : undefined;
}

function short(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > 24 ? `${text.slice(0, 23)}…` : String(text);
}
