// defineStep / defineConfig / param / ref: how configs and steps describe the graph.
// Calling a step does no work: it records a node that the engine later schedules.

import { fileURLToPath } from "node:url";
import { ConfigError, type SourceLocation } from "./errors.js";
import type {
  Arch,
  Artifact,
  ArtifactKind,
  Blob,
  ConfigOptions,
  OutputSpec,
  ParamSpec,
  ParamSpecs,
  Rootfs,
  StepFunction,
  StepSpec,
  Targets,
} from "./types.js";

// The loose shape the engine handles internally once the type parameters have done their job.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyStepSpec = StepSpec<any, readonly ArtifactKind[], OutputSpec>;

export interface StepNode {
  /** Creation order: stable tie-breaker for automatic ids. */
  readonly seq: number;
  id: string;
  readonly explicitId: boolean;
  readonly spec: AnyStepSpec;
  /** Options as written (without the common ones), host paths not yet resolved. */
  readonly options: Record<string, unknown>;
  readonly inputs: readonly ArtifactHandle[];
  readonly location: SourceLocation | undefined;
}

/** A reference to a step by id, resolved when the graph is built (forward references, loops). */
export interface LazyStepRef {
  readonly refId: string;
  readonly location: SourceLocation | undefined;
}

/** The runtime object behind a `Rootfs` or `Blob` value. */
export interface ArtifactHandle {
  readonly kind: ArtifactKind;
  readonly source: StepNode | LazyStepRef;
  /** "out" for single-output steps, else the blob's name. */
  readonly output: string;
}

const HANDLE = Symbol.for("osbuild.artifact");
const CONFIG = Symbol.for("osbuild.config");

/** Every step node created while a config is evaluated, in order. */
let registry: StepNode[] = [];
let nextSeq = 0;

export function resetRegistry(): void {
  registry = [];
  nextSeq = 0;
}

export function registeredNodes(): readonly StepNode[] {
  return registry;
}

export function artifactHandle(value: unknown): ArtifactHandle | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  return (value as { [HANDLE]?: ArtifactHandle })[HANDLE];
}

function makeArtifact(handle: ArtifactHandle): Artifact {
  const artifact = { kind: handle.kind, [HANDLE]: handle };
  Object.defineProperty(artifact, HANDLE, { enumerable: false });
  return Object.freeze(artifact) as unknown as Artifact;
}

// ---------------------------------------------------------------------------

const STEP_KIND = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** Defines a step. The standard library uses this and nothing else. */
export function defineStep<Options, const Inputs extends readonly ArtifactKind[], const Output extends OutputSpec>(
  spec: StepSpec<Options, Inputs, Output>,
): StepFunction<Options, Inputs, Output> {
  if (!STEP_KIND.test(spec.kind)) throw new Error(`step kind '${spec.kind}' must be kebab-case, e.g. 'mk-cpio'`);
  if (!Number.isInteger(spec.version) || spec.version < 1) throw new Error(`step '${spec.kind}': version must be a positive integer`);
  const stepFunction = (...args: unknown[]): unknown => {
    const location = callerLocation();
    const arity = spec.inputs.length;
    const artifacts = args.slice(0, arity);
    const rawOptions = (args[arity] ?? {}) as Record<string, unknown>;
    if (typeof rawOptions !== "object" || rawOptions === null || artifactHandle(rawOptions)) {
      throw new ConfigError(`${spec.kind}: expected an options object after ${arity} artifact argument(s)`, location);
    }
    const handles = artifacts.map((value, index) => {
      const handle = artifactHandle(value);
      const expected = spec.inputs[index]!;
      if (!handle) {
        throw new ConfigError(`${spec.kind}: argument ${index + 1} must be a ${expected} made by a step, got ${describe(value)}`, location);
      }
      if (handle.kind !== expected) {
        throw new ConfigError(`${spec.kind}: argument ${index + 1} must be a ${expected}, got a ${handle.kind}`, location);
      }
      return handle;
    });
    const { id, ...options } = rawOptions;
    if (id !== undefined && (typeof id !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id))) {
      throw new ConfigError(`${spec.kind}: id '${String(id)}' must be letters, digits, '.', '_' or '-'`, location);
    }
    const problem = spec.validate?.(options as never);
    if (problem) throw new ConfigError(`${spec.kind}: ${problem}`, location);
    const node: StepNode = {
      seq: nextSeq++,
      id: (id as string | undefined) ?? "",
      explicitId: id !== undefined,
      spec,
      options,
      inputs: handles,
      location,
    };
    registry.push(node);
    const output = spec.output;
    if (output === "rootfs" || output === "blob") return makeArtifact({ kind: output, source: node, output: "out" });
    const named: Record<string, Artifact> = {};
    for (const name of output.blobs) named[name] = makeArtifact({ kind: "blob", source: node, output: name });
    return Object.freeze(named);
  };
  Object.defineProperty(stepFunction, "name", { value: camelCase(spec.kind) });
  return stepFunction as StepFunction<Options, Inputs, Output>;
}

/** Refers to a rootfs made by the step with this id, defined anywhere in the config. */
function refRootfs(stepId: string): Rootfs {
  return makeArtifact({ kind: "rootfs", source: { refId: stepId, location: callerLocation() }, output: "out" }) as Rootfs;
}

/** Refers to the blob made by the step with this id (or its named output). */
function refBlob(stepId: string, output = "out"): Blob {
  return makeArtifact({ kind: "blob", source: { refId: stepId, location: callerLocation() }, output }) as Blob;
}

export const ref = { rootfs: refRootfs, blob: refBlob };

// ---------------------------------------------------------------------------
// Config

export interface ConfigDefinition {
  readonly [CONFIG]: true;
  readonly params: ParamSpecs;
  readonly sourceDateEpoch: number | undefined;
  readonly arch: Arch | undefined;
  readonly sbom: boolean | undefined;
  readonly provenance: boolean | undefined;
  readonly cache: ConfigOptions<ParamSpecs>["cache"];
  readonly targets: (params: Record<string, unknown>) => Targets;
  readonly location: SourceLocation | undefined;
}

/** Declares a config: `export default defineConfig({ params, targets })` or `defineConfig(() => targets)`. */
export function defineConfig<const P extends ParamSpecs = {}>(config: ConfigOptions<P> | (() => Targets)): ConfigDefinition {
  const options = typeof config === "function" ? { targets: config } : config;
  return {
    [CONFIG]: true,
    params: (options as ConfigOptions<P>).params ?? {},
    sourceDateEpoch: (options as ConfigOptions<P>).sourceDateEpoch,
    arch: (options as ConfigOptions<P>).arch,
    sbom: (options as ConfigOptions<P>).sbom,
    provenance: (options as ConfigOptions<P>).provenance,
    cache: (options as ConfigOptions<P>).cache,
    targets: options.targets as (params: Record<string, unknown>) => Targets,
    location: callerLocation(),
  };
}

export function isConfigDefinition(value: unknown): value is ConfigDefinition {
  return typeof value === "object" && value !== null && (value as { [CONFIG]?: boolean })[CONFIG] === true;
}

/** Typed config parameters with defaults. */
export const param = {
  string: (defaultValue: string, description?: string): ParamSpec<string> => ({ type: "string", default: defaultValue, description }),
  /** A host path; a default is relative to the config file, `--set` to the current directory. */
  path: (defaultValue: string, description?: string): ParamSpec<string> => ({ type: "path", default: defaultValue, description }),
  number: (defaultValue: number, description?: string): ParamSpec<number> => ({ type: "number", default: defaultValue, description }),
  boolean: (defaultValue: boolean, description?: string): ParamSpec<boolean> => ({ type: "boolean", default: defaultValue, description }),
  choice: <const C extends readonly string[]>(choices: C, defaultValue: C[number], description?: string): ParamSpec<C[number]> => ({
    type: "choice",
    default: defaultValue,
    description,
    choices,
  }),
};

// ---------------------------------------------------------------------------

const ENGINE_DIR = fileURLToPath(new URL("..", import.meta.url)); // the package root (dist/ or sources)

/** The first stack frame outside osbuild itself: the line of the config that made the call. */
export function callerLocation(): SourceLocation | undefined {
  const saved = Error.stackTraceLimit;
  Error.stackTraceLimit = 64;
  const stack = new Error().stack ?? "";
  Error.stackTraceLimit = saved;
  return firstUserFrame(stack);
}

/** Where in the config an error was thrown (the first frame that is not osbuild's own). */
export function callerLocationOf(error: unknown): SourceLocation | undefined {
  return error instanceof Error && error.stack ? firstUserFrame(error.stack) : undefined;
}

function firstUserFrame(stack: string): SourceLocation | undefined {
  for (const line of stack.split("\n").slice(1)) {
    const match = /\(?((?:file:\/\/)?\/[^():]+(?:\([^)]*\))?[^():]*):(\d+):(\d+)\)?\s*$/.exec(line.trim());
    if (!match) continue;
    const file = match[1]!.startsWith("file://") ? fileURLToPath(match[1]!) : match[1]!;
    if (file.startsWith(ENGINE_DIR) && !isUserFileInsidePackage(file)) continue;
    if (file.includes("/node_modules/")) continue;
    return { file, line: Number(match[2]), column: Number(match[3]) };
  }
  return undefined;
}

// Configs and examples live inside the package folder too; only engine/stdlib frames are ours.
function isUserFileInsidePackage(file: string): boolean {
  const relative = file.slice(ENGINE_DIR.length);
  return !/^(dist\/)?(engine|stdlib|formats)\//.test(relative) && !/^(dist\/)?index\.[jt]s$/.test(relative);
}

/** The name of a step's function: "install-agent" → "installAgent". */
export function camelCase(kind: string): string {
  return kind.replace(/-([a-z0-9])/g, (_, letter: string) => letter.toUpperCase());
}

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}
