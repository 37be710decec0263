// Writes targets to the output directory, atomically (temp name + rename), and skips those
// already there: a blob becomes a file, a rootfs an OCI image layout directory.

import { createReadStream, existsSync, linkSync, mkdirSync, renameSync, statSync } from "node:fs";
import { chmod, mkdir, open, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { MEDIA_TYPES, OCI_LAYOUT, imageConfig, imageIndex, imageManifest, type Descriptor } from "../formats/oci.js";
import { isAllZero } from "../formats/io.js";
import type { BuildContext, BuildSettings, StoredArtifact } from "./build.js";
import type { EventSink } from "./events.js";
import { CorruptContentError } from "./errors.js";
import { sha256Hex } from "./key.js";
import { readMemoFile, writeMemoFile } from "./memo.js";
import { hashFile, hexOf, ownedName, removeLeftovers } from "./store.js";

interface OutputState {
  digest: string;
  stat: string;
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
        if (artifact.kind === "blob") await writeBlob(context, artifact.digest, path);
        else await writeOciLayout(context, artifact, path);
        state[path] = { digest: artifact.digest, stat: statKey(marker) };
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
 * Copies content out of the store, verifying it on the way, and keeping it sparse: runs of
 * zeros (a disk image's free space) are skipped rather than written.
 */
async function copyOut(context: BuildContext, digest: StoredArtifact["digest"], path: string, verify: boolean): Promise<void> {
  const out = await open(path, "wx", 0o644);
  let position = 0;
  try {
    const source = verify ? context.store.openVerified(digest) : createReadStream(context.store.contentPath(digest), { highWaterMark: 1 << 20 });
    for await (const chunk of source) {
      const bytes = chunk as Buffer;
      for (let start = 0; start < bytes.length; start += SPARSE_BLOCK) {
        const piece = bytes.subarray(start, start + SPARSE_BLOCK);
        if (!isAllZero(piece)) await out.write(piece, 0, piece.length, position);
        position += piece.length;
      }
    }
    await out.truncate(position);
  } finally {
    await out.close();
  }
}

const SPARSE_BLOCK = 64 * 1024;

async function writeBlob(context: BuildContext, digest: StoredArtifact["digest"], path: string): Promise<void> {
  const temp = join(path, "..", `.${ownedName("out")}`);
  try {
    await copyOut(context, digest, temp, !context.store.wroteThisRun(digest));
    await chmod(temp, 0o644);
    if (existsSync(path) && statSync(path).isDirectory()) await rm(path, { recursive: true });
    renameSync(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
}

/**
 * Layer blobs are immutable and read-only in the store: the layout links to them instead of
 * copying (another filesystem gets a copy). Either way, a layer this process did not write
 * is read once to verify it.
 */
async function linkOrCopy(context: BuildContext, digest: StoredArtifact["digest"], target: string): Promise<void> {
  const verify = !context.store.wroteThisRun(digest);
  try {
    linkSync(context.store.contentPath(digest), target);
  } catch {
    await copyOut(context, digest, target, verify);
    return;
  }
  if (verify && (await hashFile(target)) !== digest) throw new CorruptContentError(digest, "changed in the store");
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

/** A rootfs as an OCI image layout: `skopeo copy oci:out/NAME docker://...` pushes it. */
async function writeOciLayout(context: BuildContext, artifact: Extract<StoredArtifact, { kind: "rootfs" }>, path: string): Promise<void> {
  const temp = join(path, "..", `.${ownedName("out")}`);
  const blobs = join(temp, "blobs", "sha256");
  try {
    await mkdir(blobs, { recursive: true });
    for (const layer of artifact.layers) {
      const target = join(blobs, hexOf(layer.digest));
      if (!existsSync(target)) await linkOrCopy(context, layer.digest, target);
    }
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
}
