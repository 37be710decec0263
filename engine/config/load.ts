// Loads osbuild.config.ts: type-checks it, imports it through the TypeScript loader hooks,
// applies parameters and builds the graph. Every problem is a ConfigError with a position.

import { existsSync, readFileSync } from "node:fs";
import { sha256Hex } from "../key.js";
import { machineArch } from "../arch.js";
import { createRequire, register } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ConfigError, errorMessage, type SourceLocation } from "../errors.js";
import { type ConfigDefinition, isConfigDefinition, registeredNodes, resetRegistry, callerLocationOf } from "../define.js";
import { buildGraph, type BuildGraph } from "../graph.js";
import type { Arch, ParamSpec } from "../types.js";
import type { HookData } from "./loader-hooks.js";
import { formatDiagnostic, typecheckConfig } from "./typecheck.js";
import { compileConfig, compiledEntry, type CompileSettings } from "./compiled.js";

/** The package root: dist/.. when built. */
const DIST_DIR = fileURLToPath(new URL("../../", import.meta.url));
const PACKAGE_DIR = resolve(DIST_DIR, "..");
/** What a config's `import ... from "osbuild"` means. */
const OSBUILD_ENTRY = pathToFileURL(join(DIST_DIR, "index.js")).href;

export interface LoadedConfig {
  file: string;
  definition: ConfigDefinition;
  params: Record<string, unknown>;
  graph: BuildGraph;
  sourceDateEpoch: number;
  arch: Arch;
  /** The config's own files (it and the local modules it imports), path → sha256 hex: its provenance. */
  configFiles: Record<string, string>;
  /** SBOMs and provenance beside the outputs (the config's `sbom` and `provenance`). */
  sbom: boolean;
  provenance: boolean;
}

let hooksRegistered = false;

function registerHooks(cacheDir: string): void {
  if (hooksRegistered) return;
  const data: HookData = { osbuildEntry: OSBUILD_ENTRY, cacheDir: join(cacheDir, "transpiled") };
  register(new URL("./loader-hooks.js", import.meta.url), { data });
  hooksRegistered = true;
}

/** The compiled config kept in the cache (compiled.ts), else the .ts file itself through the module hooks. */
function configModuleUrl(file: string, cacheDir: string): string {
  const settings = compileSettings(cacheDir);
  const entry = compiledEntry(file, settings) ?? compileConfig(file, settings);
  if (entry) return pathToFileURL(entry).href;
  registerHooks(cacheDir);
  return pathToFileURL(file).href;
}

function compileSettings(cacheDir: string): CompileSettings {
  return { osbuildEntry: OSBUILD_ENTRY, dir: join(cacheDir, "compiled"), memoFile: join(cacheDir, "memo", "compiled.json") };
}

export function resolveConfigPath(file: string | undefined): string {
  const path = resolve(file ?? "osbuild.config.ts");
  if (!existsSync(path)) {
    throw new ConfigError(`config file ${path} does not exist`, undefined, file ? "check the --config path" : "run osbuild in a directory with an osbuild.config.ts, or pass --config FILE");
  }
  return path;
}

/** Type-checks the config (unless these bytes were checked by this osbuild before, and not `always`); throws a ConfigError listing every diagnostic. Returns the config's files (those outside node_modules) by sha256. */
export async function checkConfig(file: string, cacheDir: string, options: { always?: boolean } = {}): Promise<Record<string, string>> {
  const { diagnostics, files } = await typecheckConfig(file, {
    always: options.always,
    osbuildTypes: join(DIST_DIR, "index.d.ts"),
    typeRoots: [nodeTypesRoot()],
    memoFile: join(cacheDir, "memo", "typecheck.json"),
    compile: compileSettings(cacheDir),
  });
  if (diagnostics.length > 0) {
    throw new ConfigError(
      `the config has ${diagnostics.length} type error${diagnostics.length === 1 ? "" : "s"}; nothing was built`,
      undefined,
      undefined,
      diagnostics.map((diagnostic) => formatDiagnostic(diagnostic)),
    );
  }
  return Object.fromEntries(Object.entries(files).filter(([path]) => !path.includes("/node_modules/")));
}

/**
 * The @types directory holding @types/node, wherever npm put it: inside this package in a
 * checkout, or hoisted beside it when osbuild is installed in a project.
 */
function nodeTypesRoot(): string {
  try {
    return dirname(dirname(createRequire(import.meta.url).resolve("@types/node/package.json")));
  } catch {
    return join(PACKAGE_DIR, "node_modules", "@types");
  }
}

export interface LoadOptions {
  cacheDir: string;
  sets: ReadonlyArray<readonly [string, string]>;
  /** From checkConfig; default: the config file alone. */
  configFiles?: Record<string, string>;
  /** Instead of the config's and SOURCE_DATE_EPOCH's. */
  sourceDateEpoch?: number;
  /** Instead of the config's `arch` (osbuild run --arch). */
  arch?: Arch;
}

export async function loadConfig(file: string, options: LoadOptions): Promise<LoadedConfig> {
  // Stack frames, and so step locations, in the config's .ts files. Enabled after osbuild's own
  // modules are loaded, so that the source maps of ~150 modules are not read at every start.
  await import(OSBUILD_ENTRY);
  process.setSourceMapsEnabled(true);
  resetRegistry();
  let module: { default?: unknown };
  try {
    module = (await import(configModuleUrl(file, options.cacheDir))) as { default?: unknown };
  } catch (error) {
    throw asConfigError(error, file);
  }
  const definition = module.default;
  if (!isConfigDefinition(definition)) {
    throw new ConfigError(`${file} must \`export default defineConfig(...)\``, { file, line: 1, column: 1 }, 'import { defineConfig } from "osbuild" and export its result as default');
  }
  const params = resolveParams(definition, file, options.sets);
  let targets;
  try {
    targets = definition.targets(params);
  } catch (error) {
    throw asConfigError(error, file);
  }
  if (typeof targets !== "object" || targets === null || Object.keys(targets).length === 0) {
    throw new ConfigError("the config's targets function must return an object of named artifacts, e.g. { initrd: mkCpio(rootfs) }", definition.location);
  }
  const graph = buildGraph(targets, registeredNodes());
  const envEpoch = process.env.SOURCE_DATE_EPOCH;
  let sourceDateEpoch = options.sourceDateEpoch ?? definition.sourceDateEpoch ?? 0;
  if (options.sourceDateEpoch === undefined && envEpoch !== undefined && envEpoch !== "") {
    sourceDateEpoch = Number(envEpoch);
    if (!Number.isInteger(sourceDateEpoch) || sourceDateEpoch < 0) throw new ConfigError(`SOURCE_DATE_EPOCH=${envEpoch} is not a number of seconds`, undefined, "set it to an integer such as 1700000000, or unset it");
  }
  const configFiles = options.configFiles ?? { [file]: sha256Hex(readFileSync(file)) };
  return { file, definition, params, graph, sourceDateEpoch, arch: options.arch ?? definition.arch ?? machineArch(), configFiles, sbom: definition.sbom ?? true, provenance: definition.provenance ?? true };
}

/** The build machine's architecture (exported here too for the engine's importers). */
export { machineArch };

function resolveParams(definition: ConfigDefinition, file: string, sets: ReadonlyArray<readonly [string, string]>): Record<string, unknown> {
  const configDir = dirname(file);
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(definition.params)) {
    values[name] = spec.type === "path" ? resolve(configDir, spec.default as string) : spec.default;
  }
  for (const [name, raw] of sets) {
    const spec = definition.params[name];
    if (!spec) {
      const known = Object.keys(definition.params).sort().join(", ") || "none";
      throw new ConfigError(`--set ${name}=${raw}: the config has no parameter '${name}' (parameters: ${known})`, definition.location);
    }
    values[name] = parseParam(name, raw, spec, definition.location);
  }
  return values;
}

function parseParam(name: string, raw: string, spec: ParamSpec<unknown>, location: SourceLocation | undefined): unknown {
  switch (spec.type) {
    case "string":
      return raw;
    case "path":
      return resolve(raw); // relative to where the user typed it
    case "number": {
      const value = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(value)) throw new ConfigError(`--set ${name}=${raw}: expected a number`, location);
      return value;
    }
    case "boolean": {
      if (/^(true|yes|1|on)$/i.test(raw)) return true;
      if (/^(false|no|0|off)$/i.test(raw)) return false;
      throw new ConfigError(`--set ${name}=${raw}: expected true or false`, location);
    }
    case "choice":
      if (!spec.choices!.includes(raw)) throw new ConfigError(`--set ${name}=${raw}: expected one of ${spec.choices!.join(", ")}`, location);
      return raw;
  }
}

/** Errors thrown while the config runs, with the position of the config line involved. */
function asConfigError(error: unknown, file: string): ConfigError {
  if (error instanceof ConfigError) return error;
  const location = callerLocationOf(error) ?? { file, line: 1, column: 1 };
  return new ConfigError(`evaluating the config failed: ${errorMessage(error)}`, location);
}
