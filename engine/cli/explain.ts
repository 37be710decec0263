// `osbuild explain STEP`: is the step cached, and if not, what changed since it was last
// built: an option, a host file's content, an input artifact, a tool, the step's version.

import { BuildContext, type BuildSettings, type HistoryRecord, type PreparedStep } from "../build.js";
import type { DirectoryListing } from "../fingerprint.js";
import type { LoadedConfig } from "../config/load.js";
import { ConfigError, formatLocation } from "../errors.js";
import { diffJson } from "../key.js";
import { resolveCached } from "../resolve-cached.js";
import { SharedCache } from "../remote/shared-cache.js";
import { plainSink } from "./progress.js";

export async function explainStep(config: LoadedConfig, requested: string, settings: BuildSettings): Promise<number> {
  const graph = config.graph;
  const stepId = graph.steps.has(requested) ? requested : graph.targets.get(requested)?.from;
  if (!stepId) {
    throw new ConfigError(`no step or target named '${requested}'`, config.definition.location, `steps: ${[...graph.steps.keys()].join(", ")}`);
  }
  const context = new BuildContext(settings);
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  // Only lookups: what the registries of the shared cache hold counts as cached, and nothing is pulled.
  const shared = settings.cache?.from.length ? new SharedCache({ ...settings.cache, to: undefined }, { store: context.store, layers: context.layers, cacheDir: settings.cacheDir }, plainSink(process.stderr, process.stderr)) : undefined;
  try {
    // The step's ancestors, resolved from the caches in build order, without building anything.
    const resolved = (await resolveCached(context, graph, [stepId], shared)).get(stepId)!;
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
    const preimage = resolved.preimage!;
    const record = resolved.record;
    if (record) {
      const origin = resolved.where === "local" ? "" : ` in ${resolved.where}`;
      const by = record.stepId !== stepId ? ` (as step '${record.stepId}')` : "";
      out(`  cached${origin}: key ${key.slice(0, 16)}… built ${record.createdAt}${by} in ${record.ms} ms`);
      return 0;
    }
    const registries = shared ? ` nor in ${settings.cache!.from.join(", ")}` : "";
    out(`  will build: key ${key.slice(0, 16)}… is not in the cache${registries}`);
    let previous = (await context.store.getJson<HistoryRecord>(context.historyKey(stepId)).catch(() => undefined))?.value;
    let since = previous ? `last built with key ${previous.key.slice(0, 16)}…` : "";
    if (!previous && shared) {
      // No build of it here: compare with the newest one a registry has.
      const entry = await shared.newestOf(stepId, step.node.spec.kind, key);
      if (entry) {
        previous = { key: entry.key, preimage: entry.record.preimage, inputSteps: [], hostPaths: {} };
        since = `the newest entry of this step in ${entry.cache.display} has key ${entry.key.slice(0, 16)}… (built ${entry.record.createdAt})`;
      }
    }
    if (!previous) {
      out("  this step has not been built before with this config");
      return 0;
    }
    out(`  ${since}; what changed since:`);
    const changes = diffJson(previous.preimage, preimage);
    for (const change of changes) out(`    ${describeChange(change, previous, resolved.prepared!, step.inputs.map((edge) => edge.from))}`);
    if (changes.length === 0) out("    nothing in the key: its cache entry was removed (pruned or found corrupted)");
    return 0;
  } finally {
    await shared?.settle();
  }
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
