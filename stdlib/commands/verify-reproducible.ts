// `osbuild verify-reproducible [TARGET...]`: builds the targets twice from nothing, each time
// with its own empty cache and output directory, and compares the results byte for byte
// (their SBOMs and provenance too); when they differ, says where in the artifact's own
// structure.
//
// `--provenance FILE`: rebuilds from nothing what a build's provenance statement records
// (the config, its parameters, the source date) and checks that the outputs are its
// subjects. The inputs it records by digest (the config's files, the host files) are checked
// first: one that changed fails the check at once, by name. What steps fetched (a mirror's
// release file, an image) is compared after the rebuild, to name what moved when the
// outputs differ.

import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { ConfigError, isArch, type BuiltOutputs, type CommandContext, type CommandSpec, type ResourceDescriptor } from "../../engine/index.js";
import { asProvenanceStatement, type ProvenanceStatement } from "../../formats/in-toto.js";
import { firstDifference, outputDigest } from "../reproducibility/compare.js";

/** What `osbuild verify-reproducible` does; its name and options are in ./index.ts. */
export const verifyReproducible: Pick<CommandSpec, "run"> = {
  async run(args, options, ctx) {
    const work = mkdtempSync(join(tmpdir(), "osbuild-reproducible-"));
    try {
      const statements = (options.provenance as string[] | undefined) ?? [];
      if (statements.length > 0) {
        if (args.length > 0) throw new ConfigError("give targets or --provenance files, not both: the provenance names its target");
        return await verifyProvenance(statements, work, ctx);
      }
      return await buildTwice(args.length > 0 ? [...args] : await ctx.targetNames(), work, ctx);
    } finally {
      if (options.keep) ctx.log(`kept ${work}`);
      else rmSync(work, { recursive: true, force: true });
    }
  },
};

async function buildTwice(targets: string[], work: string, ctx: CommandContext): Promise<number> {
  const builds: BuiltOutputs[] = [];
  for (const round of [1, 2]) {
    ctx.log(`build ${round} of 2 (cache and output in ${join(work, String(round))})`);
    const built = await ctx.build(targets, { cacheDir: join(work, String(round), "cache"), outDir: join(work, String(round), "out") });
    if (!built.ok) throw new ConfigError(`build ${round} failed: nothing to compare`);
    builds.push(built);
  }
  let differing = 0;
  for (const target of targets) {
    let difference = await firstDifference(builds[0]!.outputs[target]!, builds[1]!.outputs[target]!);
    // The SBOM and the provenance describe the output: they must be as reproducible as it is.
    for (const kind of ["sbom", "provenance"] as const) {
      const [a, b] = [builds[0]!.attestations[target]?.[kind], builds[1]!.attestations[target]?.[kind]];
      if (difference !== undefined || a === undefined || b === undefined) continue;
      const attestation = await firstDifference(a, b);
      if (attestation !== undefined) difference = `its ${kind === "sbom" ? "SBOM" : "provenance"} (${a.slice(a.lastIndexOf("/") + 1)}): ${attestation}`;
    }
    if (difference === undefined) process.stdout.write(`${target}: identical\n`);
    else {
      differing++;
      process.stdout.write(`${target}: DIFFERS: ${difference}\n`);
    }
  }
  process.stdout.write(differing === 0 ? `reproducible: ${targets.length} target(s) byte-identical across two builds\n` : `not reproducible: ${differing} of ${targets.length} target(s) differ\n`);
  return differing === 0 ? 0 : 1;
}

interface Recorded {
  file: string;
  statement: ProvenanceStatement;
  target: string;
  sha256: string;
}

async function verifyProvenance(files: readonly string[], work: string, ctx: CommandContext): Promise<number> {
  const recorded = files.map(readStatement);
  // One build's statements: they must agree on how it was made.
  const parametersOf = (item: Recorded): Record<string, unknown> => ({ ...item.statement.predicate.buildDefinition.externalParameters, target: undefined });
  const first = recorded[0]!;
  const mismatch = recorded.find((item) => JSON.stringify(parametersOf(item)) !== JSON.stringify(parametersOf(first)));
  if (mismatch) throw new ConfigError(`${mismatch.file} and ${first.file} come from builds with different parameters: check them one at a time`);
  const external = first.statement.predicate.buildDefinition.externalParameters as { parameters?: Record<string, string | number | boolean>; sourceDateEpoch?: number; arch?: unknown };
  const overrides = {
    ...(external.parameters ? { params: external.parameters } : {}),
    ...(typeof external.sourceDateEpoch === "number" ? { sourceDateEpoch: external.sourceDateEpoch } : {}),
    // An arm64 image's provenance is rebuilt for arm64, whatever the machine or the config says now.
    ...(isArch(external.arch) ? { arch: external.arch } : {}),
  };
  const targets = [...new Set(recorded.map((item) => item.target))];
  const known = await ctx.targetNames();
  const missing = targets.find((target) => !known.includes(target));
  if (missing !== undefined) throw new ConfigError(`the provenance is of target '${missing}', which the config does not have`, undefined, `targets: ${known.join(", ")}`);

  // The inputs known before building: a changed one is named without a rebuild.
  const recordedInputs = first.statement.predicate.buildDefinition.resolvedDependencies.filter(isKnownBeforeBuilding);
  const changed = compareInputs(recordedInputs, (await ctx.buildInputs(targets, overrides)).filter(isKnownBeforeBuilding));
  if (changed.length > 0) {
    process.stdout.write(`changed since the recorded build:\n${changed.map((line) => `  ${line}\n`).join("")}`);
    process.stdout.write(`not reproducible: ${changed.length} recorded input(s) changed; nothing was rebuilt\n`);
    return 1;
  }

  ctx.log(`rebuilding ${targets.join(", ")} from nothing (cache and output in ${work})`);
  const built = await ctx.build(targets, { ...overrides, cacheDir: join(work, "cache"), outDir: join(work, "out") });
  if (!built.ok) throw new ConfigError("the rebuild failed: nothing to compare");
  let differing = 0;
  for (const item of recorded) {
    const output = built.outputs[item.target]!;
    const rebuilt = await outputDigest(output);
    if (rebuilt === item.sha256) {
      process.stdout.write(`${item.target}: matches its provenance (sha256 ${rebuilt})\n`);
      continue;
    }
    differing++;
    process.stdout.write(`${item.target}: DIFFERS: the provenance records sha256 ${item.sha256}, the rebuild made ${rebuilt}\n`);
    const rebuiltStatement = built.attestations[item.target]?.provenance;
    if (rebuiltStatement) {
      const statement = readStatement(rebuiltStatement).statement;
      for (const line of compareInputs(item.statement.predicate.buildDefinition.resolvedDependencies, statement.predicate.buildDefinition.resolvedDependencies)) process.stdout.write(`  changed: ${line}\n`);
      for (const line of compareVersions(item.statement.predicate.runDetails.builder.version ?? {}, statement.predicate.runDetails.builder.version ?? {})) process.stdout.write(`  changed: ${line}\n`);
    }
    // The recorded output, when it is still beside its provenance: where the bytes part.
    const original = join(dirname(resolve(item.file)), item.target);
    if (existsSync(original) && (await outputDigest(original)) === item.sha256) {
      process.stdout.write(`  first difference from ${original}: ${(await firstDifference(original, output)) ?? "none"}\n`);
    }
  }
  process.stdout.write(differing === 0 ? `reproducible: ${recorded.length} target(s) rebuilt from their provenance match it\n` : `not reproducible: ${differing} of ${recorded.length} target(s) differ from their provenance\n`);
  return differing === 0 ? 0 : 1;
}

function readStatement(file: string): Recorded {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new ConfigError(`cannot read the provenance ${file}: ${(error as Error).message}`, undefined, "give a <target>.intoto.json that osbuild run wrote");
  }
  const statement = asProvenanceStatement(value);
  if (typeof statement === "string") throw new ConfigError(`${file} is not a provenance statement: ${statement}`, undefined, "give a <target>.intoto.json that osbuild run wrote");
  if (statement.subject.length !== 1) throw new ConfigError(`${file} has ${statement.subject.length} subjects; osbuild writes one per target`);
  return { file, statement, target: statement.subject[0]!.name, sha256: statement.subject[0]!.digest.sha256! };
}

/** The config's files and the host inputs: what a build records before it runs any step. */
function isKnownBeforeBuilding(input: ResourceDescriptor): boolean {
  return input.name?.startsWith("config:") === true || input.name?.startsWith("host:") === true;
}

/** One line per input that differs between two lists, matched by name. */
function compareInputs(before: readonly ResourceDescriptor[], after: readonly ResourceDescriptor[]): string[] {
  const lines: string[] = [];
  const describe = (input: ResourceDescriptor): string => `${input.name}${input.uri ? ` (${input.uri})` : ""}`;
  const digestText = (input: ResourceDescriptor): string =>
    Object.entries(input.digest ?? {})
      .map(([algorithm, value]) => `${algorithm} ${value}`)
      .join(", ") || "no digest";
  const now = new Map(after.map((input) => [input.name, input]));
  for (const input of before) {
    const current = now.get(input.name);
    if (!current) lines.push(`${describe(input)}: recorded, but the build no longer has it`);
    else if (digestText(current) !== digestText(input) || current.uri !== input.uri) lines.push(`${describe(input)}: ${digestText(input)} recorded, now ${digestText(current)}${current.uri !== input.uri ? ` from ${current.uri}` : ""}`);
  }
  const then = new Set(before.map((input) => input.name));
  for (const input of after) if (!then.has(input.name)) lines.push(`${describe(input)}: a new input, not in the recorded build`);
  return lines;
}

function compareVersions(before: Record<string, string>, after: Record<string, string>): string[] {
  return [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((tool) => before[tool] !== after[tool]).map((tool) => `${tool}: ${before[tool] ?? "(none)"} → ${after[tool] ?? "(none)"}`);
}
