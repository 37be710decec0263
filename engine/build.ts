// Runs a build graph: computes each step's cache key once its inputs are known, reuses the
// stored result when there is one, otherwise runs the step in a private scratch directory
// and stores what it made. Independent branches run concurrently (p-queue).

import { existsSync, mkdirSync, statfsSync } from "node:fs";
import { join, resolve } from "node:path";
import PQueue from "p-queue";
import { CorruptContentError, StepError, StepFailure, errorMessage, formatLocation } from "./errors.js";
import type { EventSink, StepStatus } from "./events.js";
import type { BuildGraph, PlannedStep } from "./graph.js";
import { KEY_SCHEMA, cacheKeyOf, sha256Hex, type CacheKey, type Digest, type Json, type Preimage } from "./key.js";
import { Fingerprinter, type DirectoryListing, type Fingerprint } from "./fingerprint.js";
import { UnsafeArchiveError } from "./layers/import.js";
import { Layers, type LayerRef } from "./rootfs.js";
import { StepRunner } from "./step-runner.js";
import { Store, markInUse, removeLeftovers } from "./store.js";
import { haveAttrTools } from "./layers/host-metadata.js";
import { MissingToolError, TOOL_NOT_INSTALLED, ToolVersions } from "./tools.js";
import { machineArch } from "./config/load.js";
import type { Arch, Attestations, ToolSpec } from "./types.js";
import { StagedOutputs, removeOutputLeftovers, writeTargets } from "./outputs.js";
import { writeAttestations, type AttestSettings } from "./provenance/attestations.js";
import { stopDescendants } from "./processes.js";
import { stopWorkers } from "./workers.js";
import { RefusedEntryError, SharedCache } from "./remote/shared-cache.js";
import type { SharedCacheSettings } from "./remote/settings.js";
import type { RemoteEntry } from "./remote/remote-cache.js";

export type StoredArtifact = { kind: "rootfs"; digest: Digest; layers: LayerRef[] } | { kind: "blob"; digest: Digest; size: number };

export interface ActionRecord {
  schema: 1;
  key: CacheKey;
  kind: string;
  stepId: string;
  preimage: Preimage;
  createdAt: string;
  ms: number;
  outputs: Record<string, StoredArtifact>;
  /** What the step told of where its result came from (provenance/record.ts), when it told anything. */
  provenance?: Digest;
}

/** Every piece of content a step result refers to: its blobs, its layers and their TOCs, its provenance. */
export function contentOf(record: Pick<ActionRecord, "outputs" | "provenance">): Digest[] {
  const content = Object.values(record.outputs).flatMap((output) => (output.kind === "rootfs" ? output.layers.flatMap((layer) => [layer.digest, layer.toc]) : [output.digest]));
  return record.provenance ? [...content, record.provenance] : content;
}

export interface HistoryRecord {
  key: CacheKey;
  preimage: Preimage;
  /** Where each input came from, for explain. */
  inputSteps: string[];
  /** Host paths as the user wrote them, for explain. */
  hostPaths: Record<string, string | string[]>;
  /** The files of each host directory (by the path as written), so explain can name what changed. */
  listings?: Record<string, DirectoryListing>;
}

export interface BuildSettings {
  configFile: string;
  cacheDir: string;
  outDir: string;
  jobs: number;
  sourceDateEpoch: number;
  arch: Arch;
  keepGoing: boolean;
  /** Print step logs as they come. */
  verbose: boolean;
  /** Write SBOMs and provenance beside the outputs (undefined: neither, as for a command's own artifacts). */
  attest?: AttestSettings;
  /** Registries of the shared cache (--cache-from, --cache-to). */
  cache?: SharedCacheSettings;
}

export interface BuildResult {
  ok: boolean;
  outputs: Record<string, string>;
  attestations: Record<string, Attestations>;
  /** Exit status per the contract: 0 ok, 1 a step failed. */
  exitCode: 0 | 1;
  /** The signal that stopped the build (see Build.interrupt). */
  interrupted?: NodeJS.Signals;
  /** What each written target is and which step made it (for `osbuild push`). */
  targets?: Record<string, BuiltTarget>;
}

export interface BuiltTarget {
  artifact: StoredArtifact;
  key: CacheKey;
  stepId: string;
  kind: string;
  /** The step's media type for this output (blobs), when it declares one. */
  mediaType?: string;
}

/** How long the programs of an interrupted build get to exit on SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5000;

interface StepOutcome {
  /** "deferred": it needed content a registry's entry could not give; the next round builds that here. */
  status: StepStatus | "skipped" | "deferred";
  outputs?: Record<string, StoredArtifact>;
  key?: CacheKey;
  record?: ActionRecord;
  /** The registry entry it came from, whose content may not be here yet. */
  entry?: RemoteEntry;
}

/** Step options with host paths resolved and fingerprinted, ready for keys. */
export interface PreparedStep {
  step: PlannedStep;
  options: Record<string, unknown>;
  optionsForKey: Json;
  tools: Record<string, string>;
  hostPaths: Record<string, string | string[]>;
  listings: Record<string, DirectoryListing>;
}

/** Everything a build shares: the store, layer handling, memos. */
export class BuildContext {
  readonly store: Store;
  readonly layers: Layers;
  readonly fingerprints: Fingerprinter;
  readonly tools: ToolVersions;
  readonly asRoot = process.getuid?.() === 0;
  readonly scope: string;

  constructor(
    readonly settings: BuildSettings,
    warn: (message: string) => void = () => undefined,
  ) {
    this.store = Store.open(settings.cacheDir);
    mkdirSync(join(settings.cacheDir, "memo"), { recursive: true });
    this.layers = new Layers(this.store, this.asRoot, haveAttrTools, warn);
    this.fingerprints = new Fingerprinter(join(settings.cacheDir, "memo", "fingerprints.json"));
    this.tools = new ToolVersions(join(settings.cacheDir, "memo", "tools.json"));
    this.scope = sha256Hex(resolve(settings.configFile)).slice(0, 16);
    cleanStaleScratch(settings.cacheDir);
    this.releaseCache = markInUse(settings.cacheDir);
  }

  /** Says this build no longer uses the cache (see markInUse). */
  readonly releaseCache: () => void;

  saveMemos(): void {
    this.fingerprints.save();
    this.tools.save();
    this.store.saveMemo();
  }

  historyKey(stepId: string): string {
    return `osbuild:history:${this.scope}:${stepId}`;
  }

  /** Resolves host paths against the config's directory and fingerprints them. */
  prepare(step: PlannedStep): PreparedStep {
    const spec = step.node.spec;
    const configDir = resolve(this.settings.configFile, "..");
    const options: Record<string, unknown> = { ...step.node.options };
    const optionsForKey: Record<string, unknown> = { ...step.node.options };
    const hostPaths: Record<string, string | string[]> = {};
    const listings: Record<string, DirectoryListing> = {};
    for (const name of spec.hostPaths ?? []) {
      const value = options[name];
      if (value === undefined) continue;
      const fingerprintOf = (path: string): Fingerprint => {
        const absolute = resolve(configDir, path);
        try {
          const fingerprint = this.fingerprints.fingerprint(absolute);
          const listing = fingerprint.type === "dir" ? this.fingerprints.listingOf(absolute) : undefined;
          if (listing) listings[path] = listing;
          return fingerprint;
        } catch (error) {
          const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
          throw new StepError(
            `option '${name}': ${missing ? `${absolute} does not exist` : errorMessage(error)}`,
            step.id,
            missing ? `create it, or change the path at ${formatLocation(step.node.location) || "the config"}` : undefined,
          );
        }
      };
      if (Array.isArray(value)) {
        hostPaths[name] = value as string[];
        options[name] = (value as string[]).map((path) => resolve(configDir, path));
        optionsForKey[name] = (value as string[]).map((path) => fingerprintOf(path));
      } else {
        hostPaths[name] = value as string;
        options[name] = resolve(configDir, value as string);
        optionsForKey[name] = fingerprintOf(value as string);
      }
    }
    const machine = { arch: this.settings.arch, hostArch: machineArch(), root: this.asRoot };
    const toolSpecs: readonly ToolSpec[] = typeof spec.tools === "function" ? spec.tools(step.node.options, machine) : (spec.tools ?? []);
    const tools: Record<string, string> = {};
    for (const tool of toolSpecs) {
      try {
        tools[tool.command] = this.tools.version(tool);
      } catch (error) {
        if (!(error instanceof MissingToolError)) throw error;
        if (!tool.optional) throw new StepError(error.message, step.id, error.hint);
        tools[tool.command] = TOOL_NOT_INSTALLED;
      }
    }
    return { step, options, optionsForKey: JSON.parse(JSON.stringify(optionsForKey)) as Json, tools, hostPaths, listings };
  }

  preimageOf(prepared: PreparedStep, inputs: readonly StoredArtifact[]): Preimage {
    const spec = prepared.step.node.spec;
    return {
      schema: KEY_SCHEMA,
      kind: spec.kind,
      version: spec.version,
      arch: this.settings.arch,
      sourceDateEpoch: this.settings.sourceDateEpoch,
      options: prepared.optionsForKey,
      inputs: inputs.map((input) => (input.kind === "rootfs" ? { kind: "rootfs", digest: input.digest } : { kind: "blob", digest: input.digest })),
      tools: prepared.tools,
    };
  }

  /** The stored result of `key`, if all of its content is still there. */
  async lookupAction(key: CacheKey, options: { touch?: boolean } = {}): Promise<ActionRecord | undefined> {
    let found;
    try {
      found = await this.store.getJson<ActionRecord>(`osbuild:action:${key}`);
    } catch (error) {
      if (!(error instanceof CorruptContentError)) throw error;
      await this.store.removeContent(error.digest);
      return undefined;
    }
    if (!found) return undefined;
    if (!contentOf(found.value).every((digest) => this.store.hasContent(digest))) return undefined;
    // Pruning goes by the index time: a result still in use is recorded again once a day.
    if (options.touch && Date.now() - found.entry.time > 86_400_000) await this.store.touch(found.entry);
    return found.value;
  }
}

export class Build {
  private readonly context: BuildContext;
  private readonly queue: PQueue;
  private stopping = false;
  private interrupted?: NodeJS.Signals;
  /** Stopping the programs and worker threads of an interrupted build. */
  private stoppingWork?: Promise<void>;
  private readonly corrupt = new Set<Digest>();
  private readonly shared: SharedCache | undefined;
  /** Artifacts of registry entries (by digest), brought in when something needs their content. */
  private readonly remoteArtifacts = new Map<Digest, { entry: RemoteEntry; output: string }>();
  /** A registry's entry was refused where its content was needed: another round builds it here. */
  private refusedEntry = false;
  /** Copies of blob targets, begun as their steps finish. */
  private readonly staged: StagedOutputs;
  /** The target each step output is copied to early ("stepId\0output" → target name). */
  private stagedTargets = new Map<string, string>();
  private readonly timings: Array<{ id: string; kind: string; status: StepStatus | "skipped"; ms: number }> = [];

  constructor(
    private readonly graph: BuildGraph,
    readonly settings: BuildSettings,
    private readonly emit: EventSink,
  ) {
    this.context = new BuildContext(settings, (message) => this.emit({ type: "warning", message }));
    this.queue = new PQueue({ concurrency: Math.max(1, settings.jobs) });
    this.staged = new StagedOutputs(resolve(settings.outDir));
    const shared = settings.cache ? new SharedCache(settings.cache, { store: this.context.store, layers: this.context.layers, cacheDir: settings.cacheDir }, emit) : undefined;
    this.shared = shared?.active ? shared : undefined;
  }

  async run(targetNames: readonly string[]): Promise<BuildResult> {
    const started = performance.now();
    const targets = new Map([...this.graph.targets].filter(([name]) => targetNames.includes(name)));
    const needed = neededSteps(this.graph, [...targets.values()].map((edge) => edge.from));
    this.stagedTargets = new Map([...targets].reverse().map(([name, edge]) => [`${edge.from}\0${edge.output}`, name])); // the first target of an output
    this.emit({
      type: "plan",
      targets: [...targets.keys()],
      steps: this.graph.order.filter((id) => needed.has(id)).map((id) => ({ id, kind: this.graph.steps.get(id)!.node.spec.kind })),
    });

    // Host paths and tools are checked for every step before anything runs.
    const prepared = new Map<string, PreparedStep>();
    const preflightErrors: StepError[] = [];
    for (const id of this.graph.order) {
      if (!needed.has(id)) continue;
      try {
        prepared.set(id, this.context.prepare(this.graph.steps.get(id)!));
      } catch (error) {
        if (!(error instanceof StepError)) throw error;
        preflightErrors.push(error);
      }
    }
    if (preflightErrors.length > 0) {
      for (const error of preflightErrors) {
        const step = this.graph.steps.get(error.stepId)!;
        this.emit({ type: "step", id: error.stepId, kind: step.node.spec.kind, status: "failed", key: "", ms: 0, error: error.message, hint: error.hint });
      }
      this.context.saveMemos();
      this.context.releaseCache();
      this.emit({ type: "done", ok: false, outputs: {}, error: `${preflightErrors.length} step(s) cannot start` });
      return { ok: false, outputs: {}, attestations: {}, exitCode: 1 };
    }

    // Corrupt content found while building or writing outputs is removed, and a registry's
    // entry refused where its content was needed is built here: the build runs again, at
    // most three times in all; the last attempt's outcome is the result.
    let result: BuildResult;
    for (let attempt = 1; ; attempt++) {
      this.corrupt.clear();
      this.refusedEntry = false;
      this.stopping = false;
      this.timings.length = 0;
      const last = attempt === 3;
      const outcomes = await this.runOnce(prepared, needed, last);
      if (this.interrupted) return this.finishInterrupted(this.interrupted);
      const again = (): boolean => this.corrupt.size > 0 || this.refusedEntry;
      if (!again() || last) {
        result = await this.finish(outcomes, targets, prepared, last);
        // Outputs being written when the signal came are written whole; the build still stops as interrupted.
        if (this.interrupted) return this.finishInterrupted(this.interrupted);
        if (!again() || last) break;
      }
      await this.heal(outcomes);
    }
    await this.staged.discard();
    await this.shared?.settle();
    this.emit({ type: "summary", ms: Math.round(performance.now() - started), steps: this.timings });
    this.context.saveMemos();
    this.context.layers.releaseLeases();
    await this.context.layers.pruneTrees().catch(() => 0);
    this.context.releaseCache();
    this.emit({ type: "done", ok: result.ok, outputs: result.outputs });
    return result!;
  }

  private async runOnce(prepared: Map<string, PreparedStep>, needed: Set<string>, last: boolean): Promise<Map<string, StepOutcome>> {
    const promises = new Map<string, Promise<StepOutcome>>();
    for (const id of this.graph.order) {
      if (!needed.has(id)) continue;
      const step = this.graph.steps.get(id)!;
      promises.set(
        id,
        (async (): Promise<StepOutcome> => {
          const inputs = await Promise.all(step.inputs.map((edge) => promises.get(edge.from)!));
          if (inputs.some((input) => input.status === "deferred")) return { status: "deferred" };
          const failedInput = inputs.findIndex((input) => input.status === "failed" || input.status === "skipped");
          if (failedInput >= 0 || this.stopping) {
            const reason = failedInput >= 0 ? `input from step '${step.inputs[failedInput]!.from}' is not available` : "the build is stopping after a failure";
            this.emit({ type: "step-skipped", id, kind: step.node.spec.kind, reason });
            this.timings.push({ id, kind: step.node.spec.kind, status: "skipped", ms: 0 });
            return { status: "skipped" };
          }
          const artifacts = step.inputs.map((edge, index) => inputs[index]!.outputs![edge.output]!);
          return (await this.queue.add(async () => {
            if (!this.interrupted) return this.execute(prepared.get(id)!, artifacts, last);
            this.emit({ type: "step-skipped", id, kind: step.node.spec.kind, reason: `the build was interrupted (${this.interrupted})` });
            return { status: "skipped" };
          })) as StepOutcome;
        })(),
      );
    }
    const outcomes = new Map<string, StepOutcome>();
    for (const [id, promise] of promises) outcomes.set(id, await promise);
    return outcomes;
  }

  private async execute(prepared: PreparedStep, inputs: StoredArtifact[], last: boolean): Promise<StepOutcome> {
    const step = prepared.step;
    const kind = step.node.spec.kind;
    const started = performance.now();
    const preimage = this.context.preimageOf(prepared, inputs);
    const key = cacheKeyOf(preimage);
    const history: HistoryRecord = { key, preimage, inputSteps: step.inputs.map((edge) => edge.from), hostPaths: prepared.hostPaths, listings: prepared.listings };
    try {
      const cached = await this.context.lookupAction(key, { touch: true });
      const entry = cached ? undefined : await this.shared?.lookup(key, step.id);
      if (cached || entry) {
        await this.recordHistory(step.id, history);
        const ms = Math.round(performance.now() - started);
        this.emit({ type: "step", id: step.id, kind, status: "cached", key, ms, ...(entry && { remote: entry.cache.display }) });
        this.timings.push({ id: step.id, kind, status: "cached", ms });
        if (entry) for (const [output, artifact] of Object.entries(entry.record.outputs)) this.remoteArtifacts.set(artifact.digest, { entry, output });
        this.shared?.schedulePush(key, (cached ?? entry!.record), entry);
        return { status: "cached", outputs: (cached ?? entry!.record).outputs, key, record: cached ?? entry!.record, entry };
      }
      // What the step reads must be here: inputs that came from a registry are brought in now.
      const local = await this.localArtifacts(inputs, last);
      if (!local) return { status: "deferred", key };
      this.emit({ type: "step-start", id: step.id, kind, key });
      const stageOutput = (output: string, file: string): ((digest: Digest) => void) | undefined => {
        const target = this.stagedTargets.get(`${step.id}\0${output}`);
        if (target === undefined || this.interrupted) return undefined;
        this.staged.stage(target, file);
        return (digest) => this.staged.recordDigest(target, digest);
      };
      const runner = new StepRunner(this.context, prepared, local, key, this.emit, this.takesInputTree(step), stageOutput);
      const { outputs, provenance } = await runner.run();
      const ms = Math.round(performance.now() - started);
      const record: ActionRecord = { schema: 1, key, kind, stepId: step.id, preimage, createdAt: new Date().toISOString(), ms, outputs, ...(provenance ? { provenance } : {}) };
      await this.context.store.putJson(`osbuild:action:${key}`, record, { stepId: step.id, kind });
      await this.recordHistory(step.id, history);
      this.shared?.schedulePush(key, record);
      this.emit({ type: "step", id: step.id, kind, status: "built", key, ms });
      this.timings.push({ id: step.id, kind, status: "built", ms });
      return { status: "built", outputs, key, record };
    } catch (error) {
      const ms = Math.round(performance.now() - started);
      if (error instanceof CorruptContentError) {
        this.corrupt.add(error.digest);
        this.emit({ type: "warning", id: step.id, message: `${error.message}; it will be dropped and rebuilt` });
      }
      if (!this.settings.keepGoing) this.stopping = true;
      const failure = this.interrupted ? { message: `stopped: the build was interrupted (${this.interrupted})` } : describeFailure(error, step, this.settings);
      this.emit({ type: "step", id: step.id, kind, status: "failed", key, ms, error: failure.message, hint: failure.hint, log: failure.log });
      this.timings.push({ id: step.id, kind, status: "failed", ms });
      return { status: "failed", key };
    }
  }

  /**
   * Stops the build on a signal (SIGINT, SIGTERM): no step starts any more, every program
   * the build started gets the signal (SIGKILL after a grace period) and the worker threads
   * end, so the running steps fail at once; `run` then removes their scratch directories
   * and temporary files, writes no outputs and returns with `interrupted` set. A second
   * signal kills the programs outright.
   */
  interrupt(signal: NodeJS.Signals): void {
    if (this.interrupted) {
      void stopDescendants("SIGKILL", 0);
      return;
    }
    this.interrupted = signal;
    this.stopping = true;
    this.emit({ type: "warning", message: `interrupted (${signal}): stopping the running steps and removing their scratch directories` });
    this.stoppingWork = Promise.all([stopWorkers(new Error(`the build was interrupted (${signal})`)), stopDescendants("SIGTERM", STOP_GRACE_MS)]).then(() => undefined);
  }

  /** The end of an interrupted build: nothing of it is left in the cache or the output directory. */
  private async finishInterrupted(signal: NodeJS.Signals): Promise<BuildResult> {
    await this.stoppingWork;
    await this.staged.discard();
    const own = { pid: process.pid };
    for (const dir of ["scratch", "tmp-osbuild"]) removeLeftovers(join(this.settings.cacheDir, dir), own);
    removeOutputLeftovers(resolve(this.settings.outDir), own);
    this.context.saveMemos();
    this.context.layers.releaseLeases();
    this.context.releaseCache();
    this.emit({ type: "done", ok: false, outputs: {}, error: `interrupted by ${signal}` });
    return { ok: false, outputs: {}, attestations: {}, exitCode: 1, interrupted: signal };
  }

  /**
   * Whether a tree-changing step may move its input's cached tree instead of copying it: when
   * it is that rootfs's only consumer here and no target names it. The input is not lost:
   * the step's output tree is kept, and an incremental rebuild (a new agent on the same base)
   * gets the input back from it by undoing the step's layer (Layers.revertDescendant).
   */
  private takesInputTree(step: PlannedStep): boolean {
    if (step.node.spec.output !== "rootfs") return false;
    const input = step.inputs.find((edge) => edge.kind === "rootfs");
    if (!input) return false;
    const consumers = [...this.graph.steps.values()].filter((other) => other.inputs.some((edge) => edge.from === input.from && edge.output === input.output));
    if (consumers.length !== 1) return false;
    return ![...this.graph.targets.values()].some((edge) => edge.from === input.from && edge.output === input.output);
  }

  private async recordHistory(stepId: string, history: HistoryRecord): Promise<void> {
    const key = this.context.historyKey(stepId);
    const previous = await this.context.store.lookup(key);
    if ((previous?.metadata as { key?: string } | undefined)?.key === history.key) return;
    await this.context.store.putJson(key, history, { key: history.key });
  }

  /**
   * The artifacts with their content in the store: those of registry entries are brought in.
   * Undefined when an entry was refused (the next round builds it here); on the last round,
   * that is an error.
   */
  private async localArtifacts(artifacts: readonly StoredArtifact[], last: boolean): Promise<StoredArtifact[] | undefined> {
    try {
      return await Promise.all(
        artifacts.map(async (artifact) => {
          const remote = this.remoteArtifacts.get(artifact.digest);
          if (!remote || !this.shared) return artifact;
          return (await this.shared.localize(remote.entry)).outputs[remote.output] ?? artifact;
        }),
      );
    } catch (error) {
      if (!(error instanceof RefusedEntryError)) throw error;
      if (last) throw new StepFailure("a registry's entry for what this needs was refused three times over; build without --cache-from");
      this.refusedEntry = true;
      return undefined;
    }
  }

  /**
   * The step results the SBOMs and provenance are made from. An SBOM lists the rootfs a target
   * is or was packed from, file by file, from its layers' TOCs; a TOC is made from its layer
   * here (a registry's word is not taken for it), so with SBOMs the layers of rootfs results
   * that came from a registry come in too. Throws RefusedEntryError.
   */
  private async attestedRecords(outcomes: Map<string, StepOutcome>, sbom: boolean): Promise<Map<string, ActionRecord | undefined>> {
    const results = new Map<string, ActionRecord | undefined>();
    for (const [id, outcome] of outcomes) {
      const entry = outcome.entry;
      const needsLayers = sbom && entry !== undefined && Object.values(entry.record.outputs).some((output) => output.kind === "rootfs");
      results.set(id, needsLayers && this.shared ? await this.shared.localize(entry) : outcome.record);
    }
    return results;
  }

  /** Drops corrupted content and the results that refer to it, so the next pass rebuilds them. */
  private async heal(outcomes: Map<string, StepOutcome>): Promise<void> {
    if (this.refusedEntry) {
      // Entries found damaged stay out of the next round's lookups (their registry remembers them).
      this.remoteArtifacts.clear();
      this.emit({ type: "warning", message: "building again what the shared cache's refused entries would have given" });
      if (this.corrupt.size === 0) return;
    }
    for (const digest of this.corrupt) await this.context.store.removeContent(digest);
    for (const outcome of outcomes.values()) {
      if (!outcome.record || !outcome.key) continue;
      if (contentOf(outcome.record).some((digest) => this.corrupt.has(digest))) await this.context.store.removeEntry(`osbuild:action:${outcome.key}`);
    }
    this.emit({ type: "warning", message: `rebuilding after dropping ${this.corrupt.size} corrupted cache entr${this.corrupt.size === 1 ? "y" : "ies"}` });
  }

  private async finish(outcomes: Map<string, StepOutcome>, targets: BuildGraph["targets"], prepared: ReadonlyMap<string, PreparedStep>, last: boolean): Promise<BuildResult> {
    const failed = [...outcomes.values()].some((outcome) => outcome.status === "failed" || outcome.status === "skipped" || outcome.status === "deferred");
    const available = new Map<string, StoredArtifact>();
    for (const [name, edge] of targets) {
      const artifact = outcomes.get(edge.from)?.outputs?.[edge.output];
      if (artifact) available.set(name, artifact);
    }
    let local: StoredArtifact[] | undefined;
    try {
      local = await this.localArtifacts([...available.values()], last);
    } catch (error) {
      this.emit({ type: "warning", message: `could not write the outputs: ${errorMessage(error)}` });
      return { ok: false, outputs: {}, attestations: {}, exitCode: 1 };
    }
    if (!local) return { ok: false, outputs: {}, attestations: {}, exitCode: 1 };
    [...available.keys()].forEach((name, index) => available.set(name, local[index]!));
    const built: Record<string, BuiltTarget> = {};
    for (const [name, edge] of targets) {
      const artifact = available.get(name);
      const outcome = outcomes.get(edge.from);
      if (!artifact || !outcome?.key) continue;
      const spec = this.graph.steps.get(edge.from)!.node.spec;
      const mediaTypes = typeof spec.mediaTypes === "function" ? spec.mediaTypes(this.graph.steps.get(edge.from)!.node.options) : spec.mediaTypes;
      built[name] = { artifact, key: outcome.key, stepId: edge.from, kind: spec.kind, ...(mediaTypes?.[edge.output] && { mediaType: mediaTypes[edge.output] }) };
    }
    let outputs: Record<string, string> = {};
    try {
      outputs = await writeTargets(this.context, available, this.emit, this.staged);
    } catch (error) {
      if (error instanceof CorruptContentError) {
        this.corrupt.add(error.digest);
      }
      const space = noSpaceHint(error, this.settings);
      this.emit({ type: "warning", message: `could not write the outputs: ${errorMessage(error)}${space ? `\n  hint: ${space}` : ""}` });
      return { ok: false, outputs, attestations: {}, exitCode: 1 };
    }
    let attestations: Record<string, Attestations> = {};
    if (this.settings.attest) {
      let results: Map<string, ActionRecord | undefined>;
      try {
        results = await this.attestedRecords(outcomes, this.settings.attest.sbom);
      } catch (error) {
        if (!(error instanceof RefusedEntryError)) throw error;
        if (last) this.emit({ type: "warning", message: "could not write the SBOMs and provenance: a registry's entry they need was refused" });
        else this.refusedEntry = true;
        return { ok: false, outputs, attestations, exitCode: 1 };
      }
      try {
        attestations = await writeAttestations(this.context, this.graph, results, prepared, available, this.settings.attest, this.emit);
      } catch (error) {
        if (error instanceof CorruptContentError) this.corrupt.add(error.digest);
        this.emit({ type: "warning", message: `could not write the SBOMs and provenance: ${errorMessage(error)}` });
        return { ok: false, outputs, attestations, exitCode: 1 };
      }
    }
    return { ok: !failed, outputs, attestations, exitCode: failed ? 1 : 0, targets: built };
  }
}

/** The steps `roots` need: themselves and everything upstream of them. */
export function neededSteps(graph: BuildGraph, roots: readonly string[]): Set<string> {
  const needed = new Set<string>();
  const pending = [...roots];
  while (pending.length > 0) {
    const id = pending.pop()!;
    if (needed.has(id)) continue;
    needed.add(id);
    for (const input of graph.steps.get(id)!.inputs) pending.push(input.from);
  }
  return needed;
}

function describeFailure(error: unknown, step: PlannedStep, settings: BuildSettings): { message: string; hint?: string; log?: string } {
  const space = noSpaceHint(error, settings);
  if (space) return { message: errorMessage(error), hint: space, log: error instanceof StepError ? error.logPath : undefined };
  if (error instanceof StepError) return { message: error.message, hint: error.hint, log: error.logPath };
  if (error instanceof StepFailure) return { message: error.message };
  if (error instanceof UnsafeArchiveError) return { message: error.message, hint: "the archive is unsafe to extract: fix or replace it" };
  if (error instanceof CorruptContentError) return { message: error.message };
  const where = formatLocation(step.node.location);
  return { message: `${errorMessage(error)}`, hint: where ? `step defined at ${where}` : undefined };
}

/**
 * For a failure because a disk is full (ENOSPC from osbuild itself, or "No space left on
 * device" from a tool it ran): where the build writes, how much room each place has left,
 * and what to do.
 */
function noSpaceHint(error: unknown, settings: BuildSettings): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code !== "ENOSPC" && !/ENOSPC|no space left on device/i.test(errorMessage(error))) return undefined;
  const free = (dir: string): string => {
    try {
      const stats = statfsSync(dir);
      return `${Math.floor((stats.bavail * stats.bsize) / 2 ** 20)} MiB free`;
    } catch {
      return "free space unknown";
    }
  };
  const out = resolve(settings.outDir);
  return `a filesystem the build writes to is full (the cache ${settings.cacheDir}: ${free(settings.cacheDir)}; the output directory ${out}: ${free(existsSync(out) ? out : resolve(out, ".."))}): free some space there (\`osbuild cache prune\` removes what recent builds did not use), or build with --cache-dir or --out on a larger filesystem`;
}

/** Removes scratch directories and temp files left by processes that no longer run. */
function cleanStaleScratch(cacheDir: string): void {
  for (const dir of [join(cacheDir, "scratch"), join(cacheDir, "tmp-osbuild")]) removeLeftovers(dir);
}

