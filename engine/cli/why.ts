// `osbuild why TARGET PATH`: every step whose layer added, changed or removed PATH in the
// rootfs TARGET is (or was packed from), what put it there, and what it is in the end.
// Read from the cache alone: nothing is built or fetched.

import { BuildContext, type BuildSettings } from "../build.js";
import type { LoadedConfig } from "../config/load.js";
import { camelCase } from "../define.js";
import { ConfigError, formatLocation } from "../errors.js";
import type { Edge } from "../graph.js";
import { displayPathFor } from "../provenance/display-path.js";
import { lineageOf, type StepRef } from "../provenance/lineage.js";
import { pathHistory, type FinalEntry, type Origin, type PathHistory } from "../provenance/path-history.js";
import { readProvenance } from "../provenance/record.js";
import { resolveCached } from "../resolve-cached.js";

export async function whyCommand(config: LoadedConfig, requested: string, path: string, settings: BuildSettings, json: boolean): Promise<number> {
  const graph = config.graph;
  const edge: Edge | undefined = graph.targets.get(requested) ?? stepEdge(config, requested);
  if (!edge) throw new ConfigError(`no target or step named '${requested}'`, config.definition.location, `targets: ${[...graph.targets.keys()].join(", ")}`);
  const context = new BuildContext(settings);
  const resolved = await resolveCached(context, graph, [edge.from]);
  const unbuilt = graph.order.find((id) => resolved.has(id) && !resolved.get(id)!.record);
  if (unbuilt !== undefined) {
    process.stderr.write(
      `osbuild: ${requested} is not in the cache as the config is now: step '${unbuilt}' has no result for its current inputs\n  hint: build it first (osbuild run${graph.targets.has(requested) ? ` ${requested}` : ""}); \`osbuild explain ${unbuilt}\` says what changed\n`,
    );
    return 1;
  }
  const results = new Map([...resolved].map(([id, step]) => [id, step.record]));
  const lineage = lineageOf(graph, requested, results, (digest) => readProvenance(context.store, digest), edge);
  if (!lineage.rootfs) {
    process.stderr.write(`osbuild: ${requested} was not made from a rootfs (step '${lineage.producer.id}' (${lineage.producer.kind}) makes it from its own inputs): why follows the files of rootfs steps\n`);
    return 1;
  }
  const history = await pathHistory(lineage, context.layers, path);
  const packedBy = lineage.artifact.kind === "blob" ? lineage.producer : undefined;
  if (history.events.length === 0 && !history.final) {
    process.stderr.write(`osbuild: /${history.path} is not in ${requested}, and no layer of its rootfs ever had it${packedBy ? ` (${packedBy.kind} may add files of its own)` : ""}\n`);
    return 1;
  }
  const displayPath = displayPathFor(config.file);
  if (json) {
    process.stdout.write(`${JSON.stringify(asJson(requested, path, history, packedBy, lineage.rootfs, displayPath))}\n`);
    return 0;
  }
  // Names, link targets and commands come from the base: no control character reaches the terminal.
  const out = (line: string): boolean => process.stdout.write(`${printable(line)}\n`);
  const from = packedBy ? `: packed by ${describeStep(packedBy)} from the rootfs of step ${lineage.rootfs.stepId}` : "";
  const asked = `/${path.replace(/^\/+/, "")}`;
  out(`${asked}${asked === `/${history.path}` ? "" : ` (/${history.path})`} in ${requested}${from}`);
  for (const event of history.events) {
    out(`  ${event.change} by ${describeStep(event.step)}, layer ${event.layer + 1} of ${lineage.rootfs.layers.length}`);
    for (const origin of event.origins) out(`    ${describeOrigin(origin, displayPath)}`);
  }
  out(`  now: ${history.final ? describeFinal(history.final) : `not in ${requested}`}`);
  return 0;
}

/** A step id standing for what it made (its first output). */
function stepEdge(config: LoadedConfig, id: string): Edge | undefined {
  const step = config.graph.steps.get(id);
  if (!step) return undefined;
  const output = step.node.spec.output;
  if (output === "rootfs") return { from: id, output: "out", kind: "rootfs" };
  return { from: id, output: output === "blob" ? "out" : output.blobs[0]!, kind: "blob" };
}

/** "install-agent (installAgent at osbuild.config.ts:23:17)" */
function describeStep(step: StepRef): string {
  const where = formatLocation(step.location);
  return `${step.id} (${camelCase(step.kind)}${where ? ` at ${where}` : ""})`;
}

function describeOrigin(origin: Origin, displayPath: (path: string) => string): string {
  switch (origin.type) {
    case "host-file": {
      const what = origin.via === "archive" ? "unpacked from host archive" : "host file";
      return `${what} ${displayPath(origin.hostPath)}${origin.sha256 ? ` (sha256 ${origin.sha256})` : ""}, option ${origin.option}`;
    }
    case "package": {
      const source = origin.source && (origin.source.name !== origin.name || origin.source.version !== origin.version) ? `, from source ${origin.source.name} ${origin.source.version}` : "";
      const what = `package ${origin.name} ${origin.version}${origin.architecture ? ` (${origin.architecture})` : ""}${source}`;
      if (origin.inDirectory !== undefined) return `${what}: made by its install scripts, in /${origin.inDirectory}, a directory only it has (the ${origin.database} database lists no file here)`;
      const shared = origin.alsoListedBy ? ` and ${origin.alsoListedBy} other package${origin.alsoListedBy > 1 ? "s" : ""}` : "";
      return `${what}${shared}, as the ${origin.database} database records it`;
    }
    case "component":
      return `component ${origin.name}, version ${origin.version}${origin.digests?.sha256 ? ` (sha256 ${origin.digests.sha256})` : ""}`;
    case "command": {
      const lines = origin.command.trim().split("\n");
      return `command: ${lines[0]}${lines.length > 1 ? ` (and ${lines.length - 1} more line${lines.length > 2 ? "s" : ""})` : ""}`;
    }
    case "step":
      return "by the step's own code";
  }
}

function describeFinal(final: FinalEntry): string {
  const meta = `mode ${octal(final.mode)}, owner ${final.uid}:${final.gid}`;
  switch (final.type) {
    case "file":
      return `file, ${meta}, ${final.size} bytes, sha256 ${final.sha256}`;
    case "symlink":
      return `symlink to ${final.linkTarget}, ${meta}`;
    case "dir":
      return `directory, ${meta}`;
    default:
      return `${final.type}, ${meta}`;
  }
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, "0");
}

function asJson(target: string, requested: string, history: PathHistory, packedBy: StepRef | undefined, rootfs: { stepId: string; digest: string }, displayPath: (path: string) => string): unknown {
  const step = (ref: StepRef): unknown => ({ id: ref.id, kind: ref.kind, function: camelCase(ref.kind), location: formatLocation(ref.location) || null });
  return {
    target,
    path: requested,
    resolvedPath: `/${history.path}`,
    packedBy: packedBy ? step(packedBy) : null,
    rootfs: { step: rootfs.stepId, digest: rootfs.digest },
    history: history.events.map((event) => ({
      change: event.change,
      step: step(event.step),
      layer: event.layer,
      layerDigest: event.layerDigest,
      origins: event.origins.map((origin) => (origin.type === "host-file" ? { ...origin, hostPath: displayPath(origin.hostPath) } : origin)),
    })),
    final: history.final ? { ...history.final, mode: octal(history.final.mode) } : null,
  };
}

function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
