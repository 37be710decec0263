// Runs one step for real: gives it its context (inputs, a private scratch directory, the
// tree or output paths, exec and logging) and turns what it produced into stored artifacts.

import { spawn } from "node:child_process";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createWriteStream, existsSync, mkdirSync, type WriteStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import type { BuildContext, PreparedStep, StoredArtifact } from "./build.js";
import { StepError, StepFailure } from "./errors.js";
import type { EventSink } from "./events.js";
import { canonicalJson, sha256Hex, type CacheKey } from "./key.js";
import { emptyOverrides, type TreeOverrides } from "./layers/diff.js";
import { StepTree } from "./layers/tree.js";
import { BlobInputImpl, RootfsInputImpl } from "./inputs.js";
import { EMPTY_ROOTFS, rootfsOf, type LayerRef, type RootfsValue } from "./rootfs.js";
import { hashFile, ownedName } from "./store.js";
import { machineArch } from "./config/load.js";
import { toolEnvironment } from "./tool-environment.js";
import { TOOL_NOT_INSTALLED } from "./tools.js";
import { prestartWorker } from "./workers.js";
import type { BlobInput, ExecOptions, ExecResult, RootfsInput, Tree } from "./types.js";
import { ProvenanceRecorder } from "./provenance/record.js";
import type { Digest } from "./key.js";

const STDERR_TAIL = 64 * 1024;

export class StepRunner {
  private readonly scratch: string;
  private readonly logPath: string;
  private log?: WriteStream;
  private readonly started = performance.now();
  private tree?: StepTree;
  private readonly provenance: ProvenanceRecorder;

  constructor(
    private readonly context: BuildContext,
    private readonly prepared: PreparedStep,
    private readonly inputs: readonly StoredArtifact[],
    private readonly key: CacheKey,
    private readonly emit: EventSink,
    /** Move the input's cached tree into the scratch instead of copying it (see Build). */
    private readonly takeInputTree = false,
    /** Told of each blob output file before the store takes it (a target's copy begins: StagedOutputs); what it returns is told the digest. */
    private readonly stageOutput?: (output: string, file: string) => ((digest: Digest) => void) | undefined,
  ) {
    this.scratch = join(context.settings.cacheDir, "scratch", ownedName(prepared.step.id));
    const logDir = join(context.settings.cacheDir, "logs", context.scope);
    mkdirSync(logDir, { recursive: true });
    this.logPath = join(logDir, `${prepared.step.id}.log`);
    this.provenance = new ProvenanceRecorder(prepared, (path) => (this.tree ? this.tree.layerPath(path) : path.split("/").filter((part) => part !== "" && part !== ".").join("/")));
  }

  /** Runs the step; returns what it made and the digest of what it told of its provenance. */
  async run(): Promise<{ outputs: Record<string, StoredArtifact>; provenance?: Digest }> {
    const outputs = await this.runStep();
    return { outputs, provenance: await this.provenance.save(this.context.store, this.key) };
  }

  private async runStep(): Promise<Record<string, StoredArtifact>> {
    const step = this.prepared.step;
    const spec = step.node.spec;
    mkdirSync(this.scratch, { recursive: true });
    this.log = createWriteStream(this.logPath);
    // A log that cannot be written (a full disk) is given up; the step's own writes report the failure.
    this.log.on("error", () => (this.log = undefined));
    this.writeLog(`# ${step.id} (${spec.kind} v${spec.version}) key ${this.key}`);
    try {
      const inputs = this.inputs.map((input): RootfsInput | BlobInput =>
        input.kind === "rootfs" ? new RootfsInputImpl({ digest: input.digest, layers: input.layers }, this.context.layers) : new BlobInputImpl(input.digest, input.size, this.context.store),
      );
      const output = spec.output;
      if (output === "rootfs") return { out: await this.runRootfsStep(inputs) };
      const names = output === "blob" ? ["out"] : [...output.blobs];
      return await this.runBlobStep(inputs, names);
    } catch (error) {
      throw this.withLog(error);
    } finally {
      await new Promise<void>((resolve) => (this.log ? this.log.end(resolve) : resolve()));
      await rm(this.scratch, { recursive: true, force: true });
    }
  }

  private async runRootfsStep(inputs: Array<RootfsInput | BlobInput>): Promise<StoredArtifact> {
    const step = this.prepared.step;
    const settings = this.context.settings;
    const layers = this.context.layers;
    const baseIndex = this.inputs.findIndex((input) => input.kind === "rootfs");
    const baseArtifact = baseIndex >= 0 ? this.inputs[baseIndex]! : undefined;
    const base: RootfsValue = baseArtifact?.kind === "rootfs" ? { digest: baseArtifact.digest, layers: baseArtifact.layers } : EMPTY_ROOTFS;

    let tree: { tree: StepTree; overrides: TreeOverrides } | undefined;
    let treeBase: RootfsValue = base;
    const appended: LayerRef[] = [];
    const ctx = {
      ...this.commonContext(inputs),
      tree: async (): Promise<Tree> => {
        if (!tree) {
          // Layers appended so far are part of what the tree starts from.
          treeBase = rootfsOf([...base.layers, ...appended]);
          const root = join(this.scratch, "tree");
          this.writeLog(`preparing the tree (${this.takeInputTree ? "moving" : "copying"} the input's)`);
          prestartWorker(); // for the layer work ahead: extracting the tree, or committing the step's changes
          const baseline = await layers.scratchCopy(treeBase, root, { take: this.takeInputTree && appended.length === 0 });
          const overrides = emptyOverrides();
          const stepTree = new StepTree(root, overrides, this.context.asRoot, this.context.store.tmp, baseline, (archive, paths) => this.provenance.extracted(archive, paths));
          this.tree = stepTree;
          tree = { tree: stepTree, overrides };
        }
        return tree.tree;
      },
      appendLayer: async (tarPath: string): Promise<void> => {
        if (tree) throw new StepFailure("appendLayer must come before tree(): layers go below the changes made to the tree");
        if (!existsSync(tarPath)) throw new StepFailure(`appendLayer: ${tarPath} does not exist`);
        const lower = rootfsOf([...base.layers, ...appended]);
        this.writeLog(`importing ${tarPath} as a layer`);
        const layer = await layers.importArchive(tarPath, { sourceDateEpoch: settings.sourceDateEpoch, lower, keepWhiteouts: lower.layers.length > 0 });
        appended.push(layer);
        this.provenance.appended(tarPath, layer.digest);
      },
    };
    await step.node.spec.run(this.prepared.options, ctx as never);
    let result: RootfsValue = rootfsOf([...base.layers, ...appended]);
    if (tree) {
      this.writeLog("recording the changes to the tree as a layer");
      const committed = await layers.commitScratch(tree.tree.root, treeBase, tree.tree.baselineCtimeMs, tree.overrides, settings.sourceDateEpoch);
      const added = committed.rootfs.layers.length > treeBase.layers.length ? committed.rootfs.layers[committed.rootfs.layers.length - 1] : undefined;
      this.writeLog(added ? `new layer ${added.digest} (${added.size} bytes)` : "the step changed nothing: no new layer");
      for (const socket of committed.skippedSockets) this.emit({ type: "warning", id: step.id, message: `socket /${socket} left out of the layer (tar cannot hold sockets)` });
      result = committed.rootfs;
    }
    return { kind: "rootfs", digest: result.digest, layers: result.layers };
  }

  private async runBlobStep(inputs: Array<RootfsInput | BlobInput>, names: readonly string[]): Promise<Record<string, StoredArtifact>> {
    const step = this.prepared.step;
    const outDir = join(this.scratch, "out");
    mkdirSync(outDir);
    const pathOf = (name = "out"): string => {
      if (!names.includes(name)) throw new StepFailure(`outputPath('${name}'): this step's outputs are ${names.join(", ")}`);
      return join(outDir, name);
    };
    const ctx = { ...this.commonContext(inputs), outputPath: pathOf };
    await step.node.spec.run(this.prepared.options, ctx as never);
    const outputs: Record<string, StoredArtifact> = {};
    for (const name of names) {
      const file = pathOf(name);
      const stats = await stat(file).catch(() => undefined);
      if (!stats?.isFile()) throw new StepFailure(`the step did not write its output${names.length > 1 ? ` '${name}'` : ""} (expected a file at outputPath(${names.length > 1 ? `'${name}'` : ""}))`);
      const recordDigest = this.stageOutput?.(name, file);
      const stored = await this.context.store.adoptFile(file, (digest) => `osbuild:blob:${digest}`, { stepId: step.id, output: name });
      recordDigest?.(stored.digest);
      outputs[name] = { kind: "blob", digest: stored.digest, size: stored.size };
    }
    return outputs;
  }

  private commonContext(inputs: Array<RootfsInput | BlobInput>) {
    const step = this.prepared.step;
    const settings = this.context.settings;
    return {
      id: step.id,
      key: this.key as string,
      arch: settings.arch,
      hostArch: machineArch(),
      sourceDateEpoch: settings.sourceDateEpoch,
      cores: availableParallelism(),
      inputs,
      log: (message: string) => this.writeLog(message),
      hasTool: (command: string) => {
        const version = this.prepared.tools[command];
        if (version === undefined) throw new StepFailure(`hasTool('${command}'): the step does not declare that tool in its 'tools'`);
        return version !== TOOL_NOT_INSTALLED;
      },
      exec: (command: string, args: readonly string[], options?: ExecOptions) => this.exec(command, args, options),
      tempDir: () => mkdtemp(join(this.scratch, "tmp-")), // removed with the scratch directory
      fail: (message: string): never => {
        throw new StepFailure(message);
      },
      reuse: (key: unknown, make: (path: string) => Promise<void>) => this.reuse(key, make),
      provenance: this.provenance,
    };
  }

  private async reuse(key: unknown, make: (path: string) => Promise<void>): Promise<string> {
    const spec = this.prepared.step.node.spec;
    const store = this.context.store;
    const settings = this.context.settings;
    const scope = { kind: spec.kind, version: spec.version, tools: this.prepared.tools, arch: settings.arch, sourceDateEpoch: settings.sourceDateEpoch };
    const indexKey = `osbuild:part:${sha256Hex(canonicalJson({ ...scope, key }))}`;
    const found = await store.lookup(indexKey);
    if (found && store.hasContent(found.digest)) {
      const path = store.contentPath(found.digest);
      if ((await hashFile(path)) === found.digest) return path;
      await store.removeContent(found.digest);
    }
    const temp = store.tempPath("part");
    try {
      await make(temp);
      const stored = await store.adoptFile(temp, indexKey);
      return store.contentPath(stored.digest);
    } finally {
      await rm(temp, { force: true });
    }
  }

  private writeLog(message: string): void {
    // Seconds since the step started: where a step's time goes, line by line.
    const stamp = `[${((performance.now() - this.started) / 1000).toFixed(2).padStart(6)}s] `;
    this.log?.write(`${stamp}${message.endsWith("\n") ? message.slice(0, -1) : message}\n`);
    if (this.context.settings.verbose) this.emit({ type: "log", id: this.prepared.step.id, message });
  }

  private exec(command: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.writeLog(`$ ${[command, ...args].map(shellWord).join(" ")}`);
    return new Promise((resolve, reject) => {
      const stdoutMode = options.stdout ?? "capture";
      const child = spawn(command, args, {
        cwd: options.cwd,
        env: this.environment(options.env),
        stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      });
      const stdoutChunks: Buffer[] = [];
      let stderr = "";
      let fileStream: WriteStream | undefined;
      let fileError: Error | undefined;
      if (typeof stdoutMode === "object") {
        fileStream = createWriteStream(stdoutMode.file);
        child.stdout!.pipe(fileStream);
        // pipe() leaves the file's errors (a full disk) to us: the program is stopped and its step fails with them.
        fileStream.on("error", (error) => {
          fileError = error;
          child.stdout!.unpipe(fileStream);
          child.stdout!.resume();
          child.kill("SIGTERM");
        });
      } else {
        child.stdout!.on("data", (chunk: Buffer) => {
          if (stdoutMode === "capture") stdoutChunks.push(chunk);
          else this.writeLog(chunk.toString().trimEnd());
        });
      }
      child.stderr!.on("data", (chunk: Buffer) => {
        const text = chunk.toString();
        stderr = (stderr + text).slice(-STDERR_TAIL);
        this.writeLog(text.trimEnd());
      });
      const input = options.input;
      let inputError: unknown;
      if (input instanceof Readable) {
        pipeline(input, child.stdin!).catch((error: unknown) => {
          // The program must not be taken to have succeeded on a truncated input.
          inputError = error;
          child.kill("SIGTERM");
        });
      } else if (input !== undefined) child.stdin!.end(input);
      child.on("error", (error) => {
        const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
        reject(new StepFailure(missing ? `cannot run '${command}': it is not installed or not on PATH` : `cannot run '${command}': ${error.message}`));
      });
      child.on("close", async (code, signal) => {
        if (fileStream && !fileStream.closed) await new Promise<void>((done) => fileStream!.on("close", () => done()));
        if (fileError !== undefined) {
          reject(new StepFailure(`writing the output of ${command} to ${(stdoutMode as { file: string }).file} failed: ${fileError.message}`));
          return;
        }
        if (inputError !== undefined && (inputError as NodeJS.ErrnoException).code !== "EPIPE") {
          reject(inputError);
          return;
        }
        if (code === 0) {
          resolve({ stdout: Buffer.concat(stdoutChunks), stderr });
          return;
        }
        const status = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        const tail = stderr.trim().split("\n").slice(-8).join("\n");
        reject(new StepFailure(`${command} ${status}${tail ? `:\n${tail}` : ""}`));
      });
    });
  }

  /** The clean environment (see toolEnvironment) plus what the step sets; HOME is private to the step. */
  private environment(extra: ExecOptions["env"]): Record<string, string> {
    const home = join(this.scratch, "home");
    mkdirSync(home, { recursive: true });
    const env = toolEnvironment(home);
    for (const [name, value] of Object.entries(extra ?? {})) if (value !== undefined) env[name] = value;
    return env;
  }

  /** Attaches the log's path to a failure. */
  private withLog(error: unknown): unknown {
    if (error instanceof StepFailure) return new StepError(error.message, this.prepared.step.id, undefined, this.logPath);
    return error;
  }
}

function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
