// Rootfs values (stacks of layers) and everything done to them: storing layers with their
// TOCs, merged views, and materialized trees kept in a cache of their own so that a chain
// of steps never re-extracts the layers below.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { CorruptContentError } from "./errors.js";
import { canonicalJson, digestOf, type Digest } from "./key.js";
import { diskMode } from "./layers/extract.js";
import { emptyOverrides, walkTree, fileTypeOf } from "./layers/diff.js";
import { MergedView } from "./layers/merge.js";
import type { Toc } from "./layers/toc.js";
import type { WrittenLayer } from "./layers/writer.js";
import { hexOf, type Store } from "./store.js";
import { runTask } from "./workers.js";
import { ctimeBaseline } from "./layers/ctime.js";
import { TreeLeases } from "./tree-leases.js";
import { planRevert, revertTreeSync } from "./layers/revert.js";
import { toolEnvironment } from "./tool-environment.js";
import type { CommitArgs, CommitResult } from "./worker-tasks.js";

export interface LayerRef {
  digest: Digest;
  size: number;
  /** Digest of the layer's TOC (JSON). */
  toc: Digest;
}

export interface RootfsValue {
  digest: Digest;
  layers: LayerRef[];
}

export function rootfsOf(layers: LayerRef[]): RootfsValue {
  return { digest: digestOf(canonicalJson(layers.map((layer) => layer.digest))), layers };
}

export const EMPTY_ROOTFS: RootfsValue = rootfsOf([]);

/** How many materialized trees to keep between runs (each is a whole rootfs on disk). */
const KEPT_TREES = 6;

export class Layers {
  private readonly tocs = new Map<string, Promise<Toc>>();
  private readonly views = new Map<string, Promise<MergedView>>();
  private readonly materializing = new Map<string, Promise<string>>();
  private readonly verifiedTrees = new Set<string>();
  readonly treesDir: string;
  /** The layer stack of each kept tree, by the tree's name: what a tree can be turned back into. */
  private readonly stacksDir: string;
  private readonly leases: TreeLeases;

  private diskXattrs(): boolean {
    return this.asRoot && (typeof this.readDiskXattrs === "function" ? this.readDiskXattrs() : this.readDiskXattrs);
  }

  constructor(
    readonly store: Store,
    readonly asRoot: boolean,
    /** Whether xattrs can be read from disk; a function is asked only when a tree is read as root (it may spawn getfattr). */
    private readonly readDiskXattrs: boolean | (() => boolean),
    /** Where to say that a cached tree had to be extracted again. */
    private readonly warn: (message: string) => void = () => undefined,
  ) {
    this.treesDir = join(store.dir, "trees");
    this.stacksDir = join(this.treesDir, ".stacks");
    mkdirSync(this.stacksDir, { recursive: true });
    this.leases = new TreeLeases(this.treesDir);
  }

  /** Gives up this process's leases on kept trees (at the end of a build: its steps are done reading). */
  releaseLeases(): void {
    this.leases.releaseAll();
  }

  /** Stores a layer tar written at `tarPath` (consumed) with its TOC. */
  async addLayer(tarPath: string, written: WrittenLayer): Promise<LayerRef> {
    const toc = await this.store.putJson(`osbuild:toc:${written.digest}`, written.toc);
    await this.store.adoptFile(tarPath, `osbuild:layer:${written.digest}`, { toc: toc.digest }, written.digest);
    this.tocs.set(written.digest, Promise.resolve(written.toc));
    return { digest: written.digest, size: written.size, toc: toc.digest };
  }

  async toc(layer: LayerRef): Promise<Toc> {
    let pending = this.tocs.get(layer.digest);
    if (!pending) {
      pending = (async () => {
        const data = this.store.readBytesSync(layer.toc);
        if (!data) throw new CorruptContentError(layer.toc, "missing");
        return JSON.parse(data.toString("utf8")) as Toc;
      })();
      this.tocs.set(layer.digest, pending);
      pending.catch(() => this.tocs.delete(layer.digest));
    }
    return pending;
  }

  async view(rootfs: RootfsValue): Promise<MergedView> {
    let pending = this.views.get(rootfs.digest);
    if (!pending) {
      const merged = (): Promise<MergedView> => Promise.all(rootfs.layers.map((layer) => this.toc(layer))).then((tocs) => MergedView.of(tocs));
      // A step's output is its input plus one layer: with the input's view at hand, only that layer is merged.
      const parent = rootfs.layers.length > 1 ? this.views.get(rootfsOf(rootfs.layers.slice(0, -1)).digest) : undefined;
      pending = parent
        ? Promise.all([parent.catch(() => undefined), this.toc(rootfs.layers[rootfs.layers.length - 1]!)]).then(([base, top]) => (base && MergedView.extend(base, top)) || merged())
        : merged();
      this.views.set(rootfs.digest, pending);
      pending.catch(() => this.views.delete(rootfs.digest));
    }
    return pending;
  }

  /** Imports a tar archive (any compression) as a canonical layer. */
  async importArchive(archivePath: string, options: { sourceDateEpoch: number; lower?: RootfsValue; keepWhiteouts: boolean }): Promise<LayerRef> {
    const outPath = this.store.tempPath("layer");
    const spoolPath = this.store.tempPath("spool");
    const lowerTocs = options.lower ? await Promise.all(options.lower.layers.map((layer) => this.toc(layer))) : undefined;
    try {
      const written = await runTask("importArchive", {
        archivePath,
        spoolPath,
        outPath,
        sourceDateEpoch: options.sourceDateEpoch,
        lowerTocs,
        keepWhiteouts: options.keepWhiteouts,
      });
      return await this.addLayer(outPath, written);
    } finally {
      // (the task removes its spool, unless its worker thread died)
      for (const path of [outPath, spoolPath]) rmSync(path, { force: true });
    }
  }

  /** Records everything under `dir` (a host directory) as one layer. */
  async layerFromDirectory(dir: string, sourceDateEpoch: number): Promise<LayerRef> {
    const outPath = this.store.tempPath("layer");
    try {
      const written = await this.commit({
        root: dir,
        baseTocs: [],
        asRoot: this.asRoot,
        sourceDateEpoch,
        baselineCtimeMs: Number.POSITIVE_INFINITY,
        overrides: emptyOverrides(),
        readDiskXattrs: this.diskXattrs(),
        outPath,
        normalizeTimes: false,
      });
      return await this.addLayer(outPath, written);
    } finally {
      rmSync(outPath, { force: true });
    }
  }

  private commit(args: CommitArgs): Promise<CommitResult> {
    return runTask("commitTree", args);
  }

  // -------------------------------------------------------------------------
  // Trees

  private treePath(rootfs: RootfsValue): string {
    return join(this.treesDir, hexOf(rootfs.digest));
  }

  /**
   * A shared, read-only directory holding the merged tree of `rootfs`, verified against
   * the layers' TOCs the first time this process uses it.
   */
  async materialize(rootfs: RootfsValue): Promise<string> {
    let pending = this.materializing.get(rootfs.digest);
    if (pending && !existsSync(await pending.catch(() => ""))) {
      // Removed since (pruned by another process): build it again.
      this.verifiedTrees.delete(this.treePath(rootfs));
      pending = undefined;
    }
    if (!pending) {
      pending = this.materializeUncached(rootfs);
      this.materializing.set(rootfs.digest, pending);
      pending.catch(() => this.materializing.delete(rootfs.digest));
    }
    return pending;
  }

  private async materializeUncached(rootfs: RootfsValue): Promise<string> {
    const target = this.treePath(rootfs);
    // Leased before it is looked at: from here on no other build moves it.
    await this.leases.acquire(hexOf(rootfs.digest));
    if (existsSync(target)) {
      const problem = await this.checkTree(target, rootfs);
      if (!problem) {
        touch(target);
        return target;
      }
      this.warn(`the cached tree of ${rootfs.digest} does not match its layers (${problem}): extracting it again`);
      if (!(await this.discardTree(target))) {
        throw new CorruptContentError(rootfs.layers[rootfs.layers.length - 1]!.digest, `its cached tree ${target} is damaged and another build is reading it; run again when that build is done`);
      }
      await this.leases.acquire(hexOf(rootfs.digest));
    }
    const temp = this.store.tempPath("tree");
    try {
      if (!(await this.revertDescendant(rootfs, temp))) await this.buildTree(rootfs, temp);
      try {
        renameSync(temp, target);
        this.recordStack(rootfs);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error; // another process won the race
      }
      this.verifiedTrees.add(target);
      touch(target);
      return target;
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  }

  private recordStack(rootfs: RootfsValue): void {
    writeFileSync(join(this.stacksDir, hexOf(rootfs.digest)), JSON.stringify(rootfs.layers));
  }

  /** Kept trees whose stacks start with all of `rootfs`'s layers, nearest first. */
  private keptDescendants(rootfs: RootfsValue): RootfsValue[] {
    const found: RootfsValue[] = [];
    for (const name of readdirSync(this.stacksDir)) {
      let layers: LayerRef[];
      try {
        layers = JSON.parse(readFileSync(join(this.stacksDir, name), "utf8")) as LayerRef[];
      } catch {
        continue; // being written, or damaged: not a candidate
      }
      if (!Array.isArray(layers) || layers.length <= rootfs.layers.length) continue;
      if (!rootfs.layers.every((layer, index) => layers[index]?.digest === layer.digest)) continue;
      const descendant = rootfsOf(layers);
      if (hexOf(descendant.digest) === name && existsSync(this.treePath(descendant))) found.push(descendant);
    }
    return found.sort((a, b) => a.layers.length - b.layers.length);
  }

  /**
   * Builds the tree of `rootfs` in `dest` by taking a kept tree of a stack on top of it and
   * undoing the layers above (layers/revert.ts): when only a step above changed, this
   * touches what that step touched instead of the whole tree. False when no kept tree
   * qualifies (none, in use by a build, or too much to undo); `dest` is then left absent.
   */
  private async revertDescendant(rootfs: RootfsValue, dest: string): Promise<boolean> {
    if (rootfs.layers.length === 0) return false;
    const lower = await this.view(rootfs);
    for (const descendant of this.keptDescendants(rootfs)) {
      const name = hexOf(descendant.digest);
      if (this.leases.holds(name)) continue; // a step of this build may be reading it
      const plan = planRevert(await this.view(descendant), lower, rootfs.layers.length);
      if ("refused" in plan) continue;
      const source = this.treePath(descendant);
      let moved = false;
      this.leases.exclusively(name, () => {
        try {
          renameSync(source, dest);
          moved = true;
        } catch {
          /* pruned meanwhile */
        }
      });
      if (!moved) continue;
      this.materializing.delete(descendant.digest);
      this.verifiedTrees.delete(source);
      rmSync(join(this.stacksDir, name), { force: true });
      try {
        const layers = rootfs.layers.map((layer) => ({ path: this.store.contentPath(layer.digest), digest: layer.digest }));
        revertTreeSync(dest, plan, { asRoot: this.asRoot, layers, tempDir: this.store.tmp, dirTimes: directoryTimes(lower) });
        const problem = compareTree(dest, lower, this.asRoot);
        if (problem) throw new Error(problem);
        return true;
      } catch (error) {
        this.warn(`undoing the layers above ${rootfs.digest} in a kept tree failed (${(error as Error).message}): extracting the tree instead`);
        await rm(dest, { recursive: true, force: true });
        return false;
      }
    }
    return false;
  }

  /** Builds the tree in `dest`: from the longest cached prefix of the stack, plus the rest. */
  private async buildTree(rootfs: RootfsValue, dest: string): Promise<void> {
    let start = 0;
    for (let count = rootfs.layers.length - 1; count > 0; count--) {
      const prefix = rootfsOf(rootfs.layers.slice(0, count));
      const prefixTree = this.treePath(prefix);
      if (!existsSync(prefixTree)) continue;
      await this.leases.acquire(hexOf(prefix.digest));
      if (existsSync(prefixTree) && !(await this.checkTree(prefixTree, prefix))) {
        await copyTree(prefixTree, dest);
        start = count;
        break;
      }
    }
    if (start === 0) await mkdir(dest, { recursive: true });
    const view = await this.view(rootfs);
    const layers = await Promise.all(
      rootfs.layers.slice(start).map(async (layer) => ({ path: this.store.contentPath(layer.digest), digest: layer.digest, toc: await this.toc(layer) })),
    );
    for (const layer of layers) if (!existsSync(layer.path)) throw new CorruptContentError(layer.digest, "missing");
    await runTask("extractLayers", { root: dest, layers, asRoot: this.asRoot, fresh: start === 0, tempDir: this.store.tmp, dirTimes: directoryTimes(view) });
  }

  /** Compares a tree on disk with the merged TOCs; returns the first difference. */
  private async checkTree(dir: string, rootfs: RootfsValue): Promise<string | undefined> {
    if (this.verifiedTrees.has(dir)) return undefined;
    const view = await this.view(rootfs);
    const problem = compareTree(dir, view, this.asRoot);
    if (!problem) this.verifiedTrees.add(dir);
    return problem;
  }

  /** Moves a kept tree away and deletes it, unless another build is reading it; returns whether it did. */
  private async discardTree(dir: string): Promise<boolean> {
    this.verifiedTrees.delete(dir);
    const trash = this.store.tempPath("trash");
    let moved = false;
    this.leases.exclusively(basename(dir), () => {
      try {
        renameSync(dir, trash);
        moved = true;
      } catch {
        /* gone already */
      }
    });
    if (moved) await rm(trash, { recursive: true, force: true });
    return moved;
  }

  /**
   * A private, writable copy of `rootfs` at `dest`, and the ctime baseline after which any
   * change counts as the step's. With `take`, the cached tree itself is moved there instead
   * of copied (the caller knows nothing else in this build wants it): when it is wanted
   * again, it is made from the step's kept output by undoing the step's layer.
   */
  async scratchCopy(rootfs: RootfsValue, dest: string, options: { take?: boolean } = {}): Promise<number> {
    if (rootfs.layers.length === 0) await mkdir(dest, { recursive: true });
    else {
      const tree = await this.materialize(rootfs);
      if (!(options.take && this.takeTree(rootfs, tree, dest))) {
        try {
          await copyTree(tree, dest);
        } catch (error) {
          // Another process may have taken or pruned the tree meanwhile: rebuild and copy once more.
          if (existsSync(tree)) throw error;
          await rm(dest, { recursive: true, force: true });
          await copyTree(await this.materialize(rootfs), dest);
        }
      }
    }
    return ctimeBaseline(this.store.tmp);
  }

  /** Moves the kept tree to `dest` for a step to change, unless another build is reading it. */
  private takeTree(rootfs: RootfsValue, tree: string, dest: string): boolean {
    let taken = false;
    this.leases.exclusively(hexOf(rootfs.digest), () => {
      try {
        renameSync(tree, dest);
        taken = true;
      } catch {
        /* gone: copied instead */
      }
    });
    if (!taken) return false;
    rmSync(join(this.stacksDir, hexOf(rootfs.digest)), { force: true });
    this.materializing.delete(rootfs.digest);
    this.verifiedTrees.delete(tree);
    return true;
  }

  /** Turns the changes made in a scratch tree into a layer on top of `base`, and caches the tree. */
  async commitScratch(
    root: string,
    base: RootfsValue,
    baselineCtimeMs: number,
    overrides: CommitArgs["overrides"],
    sourceDateEpoch: number,
  ): Promise<{ rootfs: RootfsValue; skippedSockets: string[] }> {
    const outPath = this.store.tempPath("layer");
    try {
      const baseTocs = await Promise.all(base.layers.map((layer) => this.toc(layer)));
      const result = await this.commit({
        root,
        baseTocs,
        asRoot: this.asRoot,
        sourceDateEpoch,
        baselineCtimeMs,
        overrides,
        readDiskXattrs: this.diskXattrs(),
        outPath,
        normalizeTimes: true,
      });
      if (result.changes === 0) return { rootfs: base, skippedSockets: result.skippedSockets };
      const layer = await this.addLayer(outPath, result);
      const rootfs = rootfsOf([...base.layers, layer]);
      // The scratch tree now equals the new rootfs: keep it instead of extracting again later.
      if (!existsSync(this.treePath(rootfs))) {
        try {
          renameSync(root, this.treePath(rootfs));
          this.recordStack(rootfs);
          touch(this.treePath(rootfs));
          // It is exactly what the diff just read: no need to check it against the layers.
          this.verifiedTrees.add(this.treePath(rootfs));
        } catch {
          /* another process cached it first */
        }
      }
      return { rootfs, skippedSockets: result.skippedSockets };
    } finally {
      rmSync(outPath, { force: true });
    }
  }

  /** Keeps the most recently used trees, removes the rest. */
  async pruneTrees(keep = KEPT_TREES): Promise<number> {
    const trees = readdirSync(this.treesDir)
      .filter((name) => !name.startsWith("."))
      .map((name) => ({ name, used: statSync(join(this.treesDir, name)).mtimeMs }))
      .sort((a, b) => b.used - a.used);
    let removed = 0;
    for (const tree of trees.slice(keep)) if (await this.discardTree(join(this.treesDir, tree.name))) removed++;
    for (const name of readdirSync(this.stacksDir)) if (!existsSync(join(this.treesDir, name))) rmSync(join(this.stacksDir, name), { force: true });
    return removed;
  }
}

/** Removes every kept tree no build is reading (they are derived data, extracted again on demand). */
export async function discardKeptTrees(store: Store): Promise<number> {
  return new Layers(store, process.getuid?.() === 0, false).pruneTrees(0);
}

/** cp -a keeps owners (as root), modes, times, links, devices and xattrs; reflinks when it can. */
async function copyTree(source: string, dest: string): Promise<void> {
  await mkdir(dest, { recursive: true });
  await new Promise<void>((resolve, reject) => {
    const child = spawn("cp", ["-a", "--reflink=auto", "--no-target-directory", `${source}/.`, dest], { stdio: ["ignore", "ignore", "pipe"], env: toolEnvironment() });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`cp -a ${source} ${dest} failed: ${stderr.trim()}`))));
  });
}

/** First difference between a tree on disk and a merged view, or undefined. */
function compareTree(dir: string, view: MergedView, asRoot: boolean): string | undefined {
  const walked = walkTree(dir);
  const entries = view.entries();
  if (walked.length !== entries.length) return `${walked.length} entries on disk, ${entries.length} in the layers`;
  for (let index = 0; index < walked.length; index++) {
    const { path, stats } = walked[index]!;
    const entry = entries[index]!;
    if (entry.path !== path) return `'${path}' on disk where the layers have '${entry.path}'`;
    let type = fileTypeOf(stats);
    if (entry.type === "hardlink" && type === "file") type = "hardlink";
    const placeholder = !asRoot && (entry.type === "char" || entry.type === "block") && type === "file";
    if (type !== entry.type && !placeholder) return `'${path}' is a ${type}, the layers say ${entry.type}`;
    if (entry.type === "file" && stats.size !== entry.size) return `'${path}' has ${stats.size} bytes, the layers say ${entry.size}`;
    if ((entry.type === "file" || entry.type === "symlink") && Math.floor(stats.mtimeMs / 1000) !== entry.mtime) return `'${path}' was modified`;
    if (asRoot && (stats.uid !== entry.uid || stats.gid !== entry.gid) && entry.type !== "hardlink") return `'${path}' is owned by ${stats.uid}:${stats.gid}, the layers say ${entry.uid}:${entry.gid}`;
    if ((entry.type === "file" || entry.type === "dir") && (stats.mode & 0o7777) !== diskMode(entry.type, entry.mode, asRoot)) return `'${path}' has mode ${(stats.mode & 0o7777).toString(8)}`;
  }
  return undefined;
}

/** Every directory of a merged view with its time: what a tree's directories are set to last. */
function directoryTimes(view: MergedView): Array<{ path: string; mtime: number }> {
  return view.entries().filter((entry) => entry.type === "dir").map((entry) => ({ path: entry.path, mtime: entry.mtime }));
}

function touch(path: string): void {
  const now = new Date();
  try {
    utimesSync(path, now, now);
  } catch {
    /* removed meanwhile */
  }
}
