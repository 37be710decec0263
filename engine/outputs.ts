// Writes targets to the output directory, atomically (temp name + rename), and skips those
// already there: a blob becomes a file, a rootfs an OCI image layout directory. Bytes come
// out of the store by reflink or a sparse copy written past the page cache (placeFromStore),
// never a hardlink; a blob this build makes is copied while the store hashes it (StagedOutputs).

import { spawn } from "node:child_process";
import { closeSync, constants, existsSync, linkSync, mkdirSync, openSync, renameSync, statSync } from "node:fs";
import { chmod, copyFile, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { MEDIA_TYPES, OCI_LAYOUT, imageConfig, imageIndex, imageManifest, type Descriptor } from "../formats/oci.js";
import type { BuildContext, BuildSettings, StoredArtifact } from "./build.js";
import type { EventSink } from "./events.js";
import { CorruptContentError } from "./errors.js";
import { sha256Hex, type Digest } from "./key.js";
import { readMemoFile, writeMemoFile } from "./memo.js";
import { hashFile, hexOf, ownedName, removeLeftovers } from "./store.js";
import { toolEnvironment } from "./tool-environment.js";

interface OutputState {
  digest: string;
  stat: string;
  /** A rootfs layout's layer files, by hex digest: their statKey when written. */
  layers?: Record<string, string>;
}

/**
 * Writes each target into the output directory. Content this process wrote into the store
 * itself is copied as is; anything older is verified against its digest on the way.
 */
export async function writeTargets(context: BuildContext, targets: ReadonlyMap<string, StoredArtifact>, emit: EventSink, staged: StagedOutputs): Promise<Record<string, string>> {
  const outDir = resolve(context.settings.outDir);
  mkdirSync(outDir, { recursive: true });
  removeOutputLeftovers(outDir); // what killed builds left half-written or half-removed
  const stateFile = join(context.settings.cacheDir, "memo", "outputs.json");
  const state = readMemoFile<Record<string, OutputState>>(stateFile, {});
  const written: Record<string, string> = {};
  let stateChanged = false;
  await Promise.all(
    [...targets].map(async ([name, artifact]) => {
      const path = join(outDir, name);
      const marker = artifact.kind === "blob" ? path : join(path, "index.json");
      const known = state[path];
      const upToDate = known?.digest === artifact.digest && known.stat === statKey(marker);
      if (!upToDate) {
        let layers: Record<string, string> | undefined;
        if (artifact.kind === "blob") await writeBlob(context, artifact.digest, path, staged, await staged.take(name, artifact.digest));
        else layers = await writeOciLayout(context, artifact, path, known?.layers ?? {});
        state[path] = { digest: artifact.digest, stat: statKey(marker), ...(layers ? { layers } : {}) };
        stateChanged = true;
      }
      written[name] = path;
      emit({ type: "output", target: name, path, digest: artifact.digest, size: artifact.kind === "blob" ? artifact.size : artifact.layers.reduce((sum, layer) => sum + layer.size, 0), written: !upToDate });
    }),
  );
  if (stateChanged) writeMemoFile(stateFile, state);
  return written;
}

/**
 * A name of this process's own in the output directory `dir`: for an output being written
 * ("out") or one being replaced ("old"). Hidden, and what removeOutputLeftovers clears.
 */
function outputScratch(dir: string, label: "out" | "old"): string {
  return join(dir, `.${ownedName(label)}`);
}

/** Removes what builds left in `outDir` under outputScratch names: every build's, or one process's (`pid`). */
export function removeOutputLeftovers(outDir: string, owner: { pid?: number } = {}): void {
  removeLeftovers(outDir, { ...owner, prefix: ".", labels: ["out", "old"] });
}

/** What tells that a file in the output directory is still the one written (changed by no one since). */
export function statKey(path: string): string {
  try {
    const stats = statSync(path);
    return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;
  } catch {
    return "missing";
  }
}

/**
 * Puts the store's bytes of `digest` at `target` (a new name) without passing them through
 * this process:
 * - a reflink (FICLONE) where the filesystem can (btrfs, xfs, bcachefs): no bytes copied,
 *   and the output's blocks are copied on write, so writing to it never reaches the store;
 * - else a sparse copy, written past the page cache (sparseCopy).
 * Never a hardlink: the store's files are read-only (0444), but root writes through modes,
 * and a disk image is exactly what someone boots read-write, as root, in QEMU. Content this
 * process did not write into the store is hashed on the way out (the copy is what is hashed,
 * so what lands is what was checked).
 */
async function placeFromStore(context: BuildContext, digest: StoredArtifact["digest"], target: string): Promise<void> {
  const source = context.store.contentPath(digest);
  if (!existsSync(source)) throw new CorruptContentError(digest, "missing");
  if (!(await reflink(source, target))) await sparseCopy(source, target);
  await chmod(target, 0o644);
  if (!context.store.wroteThisRun(digest) && (await hashFile(target)) !== digest) throw new CorruptContentError(digest, "changed in the store");
}

/** A reflink of `source` at `target` (a new name), where the filesystem can make one. */
async function reflink(source: string, target: string): Promise<boolean> {
  try {
    await copyFile(source, target, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    await rm(target, { force: true });
    return false;
  }
}

/**
 * A copy of `source` (a path, or an open descriptor: it becomes the tool's stdin) at `target`
 * (a new name) that leaves 1 MiB runs of zeros as holes. dd reads it (holes too) and writes
 * the rest with O_DIRECT, so the copy's data takes no page cache: writing a fresh 150 MB into
 * the page cache costs more than the disk does where memory new to it is slow to touch (here,
 * in a VM, a 256 MiB disk image: 0.55 s by cp, 0.15 s by dd; README, "How it works"). Where the
 * filesystem refuses O_DIRECT (EINVAL), cp copies it through the page cache; any other failure
 * (no space, a signal) is the copy's.
 */
async function sparseCopy(source: string | number, target: string): Promise<void> {
  const input = typeof source === "number" ? source : undefined;
  const from = input === undefined ? [`if=${source}`] : []; // dd reads its stdin without an if=
  try {
    await runCopier("dd", [...from, `of=${target}`, "bs=1M", "oflag=direct", "conv=sparse,excl", "status=none"], input, target);
  } catch (error) {
    if (!(error instanceof CopyError && error.refusedDirectIo)) throw error;
    await rm(target, { force: true });
    await runCopier("cp", ["--sparse=always", "--reflink=never", "--no-preserve=all", input === undefined ? (source as string) : "/dev/stdin", target], input, target);
  }
}

class CopyError extends Error {
  /** dd exited (no signal) saying EINVAL: the filesystem does not take O_DIRECT. */
  readonly refusedDirectIo: boolean;

  constructor(command: string, target: string, code: number | null, signal: NodeJS.Signals | null, stderr: string) {
    super(`${command} could not write ${target}: ${stderr.trim() || (signal ? `killed by ${signal}` : `exit status ${code}`)}`);
    this.refusedDirectIo = command === "dd" && signal === null && /Invalid argument/.test(stderr);
  }
}

function runCopier(command: string, args: readonly string[], stdin: number | undefined, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [stdin ?? "ignore", "ignore", "pipe"], env: { ...toolEnvironment(), LC_ALL: "C" } });
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => (code === 0 ? resolve() : reject(new CopyError(command, target, code, signal, stderr))));
  });
}

/**
 * Copies of the blob targets a build makes, begun as soon as the step has written the file,
 * while the store hashes it: the copy (the kernel's work, in dd) and the hash (this thread's)
 * then take the two cores at once instead of one after the other (for a 256 MiB disk image,
 * ~0.15 s and ~0.3 s here). The copy reads the step's file through a descriptor opened before
 * the store moves it, so it copies the very bytes the store hashes. writeTargets moves a copy
 * into place once the target's digest is the one the store gave those bytes; a copy nothing
 * takes (the output was up to date, the build failed) is removed by `discard`, or, after a
 * crash, by the next build's removeOutputLeftovers (they have outputScratch names).
 */
export class StagedOutputs {
  private readonly copies = new Map<string, { temp: string; copied: Promise<boolean>; digest?: Digest }>();
  private readonly removals: Array<Promise<void>> = [];

  constructor(private readonly outDir: string) {}

  /** Starts copying `file`, the step's output that `target` names; reflinks where the filesystem can. */
  stage(target: string, file: string): void {
    this.removals.push(this.drop(target)); // a copy from an earlier round of the build (Build.run) is of other bytes
    const temp = outputScratch(this.outDir, "out");
    let fd: number;
    try {
      mkdirSync(this.outDir, { recursive: true });
      fd = openSync(file, "r");
    } catch {
      return; // writeTargets copies from the store, and reports what fails there
    }
    const copied = (async (): Promise<boolean> => {
      try {
        if (!(await reflink(file, temp))) await sparseCopy(fd, temp);
        await chmod(temp, 0o644);
        return true;
      } catch {
        await rm(temp, { force: true });
        return false; // writeTargets copies from the store instead, and reports what fails there
      } finally {
        closeSync(fd);
      }
    })();
    this.copies.set(target, { temp, copied });
  }

  /** Records the digest the store gave the bytes `target`'s copy is being made of. */
  recordDigest(target: string, digest: Digest): void {
    const copy = this.copies.get(target);
    if (copy) copy.digest = digest;
  }

  /** The finished copy of `target` if it holds `digest` (it is then the caller's to move), else undefined. */
  async take(target: string, digest: Digest): Promise<string | undefined> {
    const copy = this.copies.get(target);
    if (!copy || copy.digest !== digest) return undefined;
    this.copies.delete(target);
    return (await copy.copied) ? copy.temp : undefined;
  }

  /**
   * Removes `file` (an output just replaced) in the background, before `discard` returns. A
   * removal that fails is left to the next build (removeOutputLeftovers knows the name).
   */
  removeLater(file: string): void {
    this.removals.push(rm(file, { force: true }).catch(() => undefined));
  }

  /** Removes every copy nothing took, and what removeLater was given. */
  async discard(): Promise<void> {
    await Promise.all([...this.copies.keys()].map((target) => this.drop(target)));
    await Promise.all(this.removals.splice(0));
  }

  private async drop(target: string): Promise<void> {
    const copy = this.copies.get(target);
    if (!copy) return;
    this.copies.delete(target);
    await copy.copied;
    await rm(copy.temp, { force: true }).catch(() => undefined); // else the next build's removeOutputLeftovers
  }
}

/** Puts the blob at `path`: a copy already made (`staged`), else one from the store. */
async function writeBlob(context: BuildContext, digest: StoredArtifact["digest"], path: string, outputs: StagedOutputs, staged?: string): Promise<void> {
  const temp = staged ?? outputScratch(join(path, ".."), "out");
  try {
    if (!staged) await placeFromStore(context, digest, temp);
    const old = statSync(path, { throwIfNoEntry: false });
    if (old?.isDirectory()) await rm(path, { recursive: true });
    // Freeing the last output's blocks and pages (a disk image's: ~0.1 s of kernel time)
    // waits for no one: the rename drops a name of it, and a second name, removed in the
    // background, frees it (StagedOutputs.removeLater; the build waits for it at its end).
    let trash = old?.isFile() ? outputScratch(join(path, ".."), "old") : undefined;
    if (trash && !tryLink(path, trash)) trash = undefined; // no hardlinks there: the rename frees it
    try {
      await rename(temp, path);
    } finally {
      if (trash) outputs.removeLater(trash);
    }
  } finally {
    await rm(temp, { force: true });
  }
}

type JsonBlob = Descriptor & { data: Buffer };

/**
 * The image config and manifest of a rootfs as its OCI layout holds them. The manifest's
 * digest is what names the image (in a registry, and as the subject of its provenance).
 */
export function ociDocuments(settings: Pick<BuildSettings, "arch" | "sourceDateEpoch">, artifact: Extract<StoredArtifact, { kind: "rootfs" }>): { config: JsonBlob; manifest: JsonBlob } {
  const blob = (mediaType: string, value: unknown): JsonBlob => {
    const data = Buffer.from(JSON.stringify(value));
    return { mediaType, digest: `sha256:${sha256Hex(data)}`, size: data.length, data };
  };
  const layers: Descriptor[] = artifact.layers.map((layer) => ({ mediaType: MEDIA_TYPES.layerTar, digest: layer.digest, size: layer.size }));
  const config = blob(MEDIA_TYPES.config, imageConfig(settings.arch, artifact.layers.map((layer) => layer.digest), new Date(settings.sourceDateEpoch * 1000)));
  const manifest = blob(MEDIA_TYPES.manifest, imageManifest({ mediaType: MEDIA_TYPES.config, digest: config.digest, size: config.size }, layers));
  return { config, manifest };
}

/**
 * A rootfs as an OCI image layout: `skopeo copy oci:out/NAME docker://...` pushes it. A layer
 * the layout written before already holds, unchanged since (the same inode, size and mtime),
 * is linked from there (an output to an output: the store is not involved); the others come
 * from the store (placeFromStore).
 */
async function writeOciLayout(context: BuildContext, artifact: Extract<StoredArtifact, { kind: "rootfs" }>, path: string, previous: Record<string, string>): Promise<Record<string, string>> {
  const temp = outputScratch(join(path, ".."), "out");
  const blobs = join(temp, "blobs", "sha256");
  const layerStats: Record<string, string> = {};
  try {
    await mkdir(blobs, { recursive: true });
    for (const layer of artifact.layers) {
      const name = hexOf(layer.digest);
      const target = join(blobs, name);
      if (existsSync(target)) continue;
      const old = join(path, "blobs", "sha256", name);
      const reusable = previous[name] !== undefined && previous[name] === statKey(old) && !sameInode(old, context.store.contentPath(layer.digest)); // not a link to the store an older osbuild made
      if (!(reusable && tryLink(old, target))) await placeFromStore(context, layer.digest, target);
    }
    for (const layer of artifact.layers) layerStats[hexOf(layer.digest)] = statKey(join(blobs, hexOf(layer.digest)));
    const { config, manifest } = ociDocuments(context.settings, artifact);
    for (const document of [config, manifest]) await writeFile(join(blobs, hexOf(document.digest)), document.data);
    await writeFile(join(temp, "oci-layout"), JSON.stringify(OCI_LAYOUT));
    await writeFile(
      join(temp, "index.json"),
      JSON.stringify(imageIndex([{ mediaType: MEDIA_TYPES.manifest, digest: manifest.digest, size: manifest.size, annotations: { "org.opencontainers.image.ref.name": "latest" } }])),
    );
    if (existsSync(path)) {
      const trash = outputScratch(join(path, ".."), "old");
      renameSync(path, trash);
      renameSync(temp, path);
      await rm(trash, { recursive: true, force: true });
    } else renameSync(temp, path);
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
  return layerStats;
}

function sameInode(a: string, b: string): boolean {
  try {
    const [x, y] = [statSync(a), statSync(b)];
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

function tryLink(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch {
    return false;
  }
}
