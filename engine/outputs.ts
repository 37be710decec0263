// Writes targets to the output directory, atomically (temp name + rename), and skips those
// already there: a blob becomes a file, a rootfs an OCI image layout directory. Bytes come
// out of the store by reflink or an in-kernel sparse copy (placeFromStore), never a hardlink.

import { spawn } from "node:child_process";
import { constants, existsSync, linkSync, mkdirSync, renameSync, statSync } from "node:fs";
import { chmod, copyFile, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { MEDIA_TYPES, OCI_LAYOUT, imageConfig, imageIndex, imageManifest, type Descriptor } from "../formats/oci.js";
import type { BuildContext, BuildSettings, StoredArtifact } from "./build.js";
import type { EventSink } from "./events.js";
import { CorruptContentError } from "./errors.js";
import { sha256Hex } from "./key.js";
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
export async function writeTargets(context: BuildContext, targets: ReadonlyMap<string, StoredArtifact>, emit: EventSink): Promise<Record<string, string>> {
  const outDir = resolve(context.settings.outDir);
  mkdirSync(outDir, { recursive: true });
  removeLeftovers(outDir, { prefix: ".", labels: ["out", "old"] }); // what killed builds left half-written or half-removed
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
        if (artifact.kind === "blob") await writeBlob(context, artifact.digest, path);
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
 * - else a sparse copy by cp (copy_file_range and SEEK_DATA: the kernel copies, holes stay
 *   holes).
 * Never a hardlink: the store's files are read-only (0444), but root writes through modes,
 * and a disk image is exactly what someone boots read-write, as root, in QEMU. Content this
 * process did not write into the store is hashed on the way out (the copy is what is hashed,
 * so what lands is what was checked).
 */
async function placeFromStore(context: BuildContext, digest: StoredArtifact["digest"], target: string): Promise<void> {
  const source = context.store.contentPath(digest);
  if (!existsSync(source)) throw new CorruptContentError(digest, "missing");
  try {
    await copyFile(source, target, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
  } catch {
    await rm(target, { force: true });
    await sparseCopy(source, target);
  }
  await chmod(target, 0o644);
  if (!context.store.wroteThisRun(digest) && (await hashFile(target)) !== digest) throw new CorruptContentError(digest, "changed in the store");
}

function sparseCopy(source: string, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("cp", ["--sparse=always", "--reflink=never", "--no-preserve=all", source, target], { stdio: ["ignore", "ignore", "pipe"], env: toolEnvironment() });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`cp ${source} ${target} failed: ${stderr.trim()}`))));
  });
}

async function writeBlob(context: BuildContext, digest: StoredArtifact["digest"], path: string): Promise<void> {
  const temp = join(path, "..", `.${ownedName("out")}`);
  try {
    await placeFromStore(context, digest, temp);
    if (existsSync(path) && statSync(path).isDirectory()) await rm(path, { recursive: true });
    // On libuv's pool, not this thread: replacing the last output frees its blocks (a disk
    // image's: ~0.1 s of kernel time), while the other targets go on being written.
    await rename(temp, path);
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
  const temp = join(path, "..", `.${ownedName("out")}`);
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
      const trash = join(path, "..", `.${ownedName("old")}`);
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
