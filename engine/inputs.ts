// What a running step sees of its input artifacts: merged metadata, single files, verified
// layer streams, and materialized trees.

import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { TarParser } from "../formats/tar.js";
import { CorruptContentError } from "./errors.js";
import { hashFile, type Store } from "./store.js";
import type { Digest } from "./key.js";
import type { MergedFile, MergedView } from "./layers/merge.js";
import { toFileEntry } from "./layers/toc.js";
import type { Layers, RootfsValue } from "./rootfs.js";
import type { BlobInput, FileEntry, LayerEvent, RootfsInput } from "./types.js";

/** Layers this process hashed whole (for TOCs without file digests). */
const verifiedLayers = new Set<Digest>();

export class RootfsInputImpl implements RootfsInput {
  readonly kind = "rootfs";
  readonly digest: string;
  readonly layers: readonly { readonly digest: string; readonly size: number }[];

  constructor(
    readonly value: RootfsValue,
    private readonly store: Layers,
  ) {
    this.digest = value.digest;
    this.layers = value.layers.map(({ digest, size }) => ({ digest, size }));
  }

  private view(): Promise<MergedView> {
    return this.store.view(this.value);
  }

  async entries(): Promise<readonly FileEntry[]> {
    return (await this.view()).entries().map(toFileEntry);
  }

  async stat(path: string, options?: { follow?: boolean }): Promise<FileEntry | undefined> {
    const entry = (await this.view()).resolve(path, options?.follow ?? false);
    return entry && toFileEntry(entry);
  }

  async readFile(path: string): Promise<Buffer> {
    const entry = (await this.view()).resolve(path, true);
    if (!entry) throw new Error(`${path}: no such file in the rootfs`);
    if (entry.type !== "file") throw new Error(`${path}: is a ${entry.type}, not a regular file`);
    const layer = this.value.layers[entry.dataLayer!]!.digest as Digest;
    const content = readRange(this.store.store.contentPath(layer), entry.offset!, entry.size);
    await this.checkContent(entry, layer, createHash("sha256").update(content).digest("hex"));
    return content;
  }

  /**
   * Stored bytes read on their own are checked against the TOC's digest of the file (a
   * TOC from before files had digests: the whole layer, once).
   */
  private async checkContent(entry: MergedFile, layer: Digest, sha256: string): Promise<void> {
    if (entry.sha256 !== undefined) {
      if (sha256 !== entry.sha256) throw new CorruptContentError(layer, `/${entry.path} reads back as sha256 ${sha256}, the layer's table of contents says ${entry.sha256}`);
      return;
    }
    if (verifiedLayers.has(layer)) return;
    for await (const _chunk of this.store.store.openVerified(layer)) {
      /* hashing is the point */
    }
    verifiedLayers.add(layer);
  }

  async materialize(): Promise<string> {
    return this.store.materialize(this.value);
  }

  async layerParts(): Promise<ReadonlyArray<{ readonly digest: string; readonly entries: readonly FileEntry[] }>> {
    const view = await this.view();
    return Promise.all(
      this.value.layers.map(async (layer, index) => {
        const toc = await this.store.toc(layer);
        const entries: FileEntry[] = [];
        for (const entry of toc.entries) {
          if (entry.type === "whiteout" || entry.type === "opaque") continue;
          const merged = survivor(view, entry.path, entry.type, index);
          if (merged) entries.push(toFileEntry(merged));
        }
        return { digest: layer.digest, entries };
      }),
    );
  }

  async *readLayer(index: number): AsyncIterable<readonly LayerEvent[]> {
    if (!Number.isInteger(index) || index < 0 || index >= this.value.layers.length) throw new RangeError(`layer ${index} does not exist (${this.value.layers.length} layers)`);
    const view = await this.view();
    const layer = this.value.layers[index]!;
    let batch: LayerEvent[] = [];
    let passing = false; // the current tar entry belongs to this layer's part
    const parser = new TarParser({
      onEntry: (header) => {
        const merged = survivor(view, header.path, header.type, index);
        passing = merged !== undefined;
        if (!merged) return;
        batch.push({ type: "entry", entry: toFileEntry(merged) });
        // A promoted hardlink's data sits at its original target, not in this tar entry.
        if (merged.type === "file" && merged.size > 0 && !(header.type === "file" && merged.dataLayer === index)) {
          passing = false;
          for (const chunk of this.readElsewhere(merged)) batch.push({ type: "data", chunk });
          batch.push({ type: "end" });
        }
      },
      onData: (chunk) => {
        if (passing) batch.push({ type: "data", chunk: Buffer.from(chunk) });
      },
      onEntryEnd: () => {
        if (passing) batch.push({ type: "end" });
        passing = false;
      },
    });
    for await (const chunk of this.store.store.openVerified(layer.digest as Digest)) {
      if (!parser.ended) parser.write(chunk as Buffer);
      if (batch.length > 0) {
        yield batch;
        batch = [];
      }
    }
    parser.end();
    if (batch.length > 0) yield batch;
  }

  /**
   * Data of a promoted hardlink: at its original target, in another layer or earlier in this
   * one. Checked against the file's digest at its end: a mismatch throws before the reader
   * can finish (and so before anything made from it is stored).
   */
  private *readElsewhere(entry: MergedFile): Generator<Buffer> {
    const layer = this.value.layers[entry.dataLayer!]!.digest as Digest;
    const path = this.store.store.contentPath(layer);
    const hash = createHash("sha256");
    const fd = openSync(path, "r");
    try {
      for (let done = 0; done < entry.size; ) {
        const chunk = Buffer.allocUnsafe(Math.min(1 << 20, entry.size - done));
        const read = readSync(fd, chunk, 0, chunk.length, entry.offset! + done);
        if (read === 0) throw new CorruptContentError(layer, `ends early`);
        done += read;
        hash.update(chunk.subarray(0, read));
        yield chunk.subarray(0, read);
      }
    } finally {
      closeSync(fd);
    }
    const sha256 = hash.digest("hex");
    if (entry.sha256 !== undefined && sha256 !== entry.sha256) throw new CorruptContentError(layer, `/${entry.path} reads back as sha256 ${sha256}, the layer's table of contents says ${entry.sha256}`);
  }
}

/**
 * The merged entry a layer's entry stands for, if it is part of that layer's share: its own
 * surviving entries; a directory belongs to the lowest layer that has it (with its final
 * metadata), so that every path appears once and lower parts never wait for upper ones.
 */
function survivor(view: MergedView, path: string, type: string, layer: number): MergedFile | undefined {
  const merged = view.get(path);
  if (!merged) return undefined;
  if (merged.type === "dir") return type === "dir" && (merged.firstLayer ?? merged.layer) === layer ? merged : undefined;
  return merged.layer === layer ? merged : undefined;
}

export class BlobInputImpl implements BlobInput {
  readonly kind = "blob";
  private verified = false;

  constructor(
    readonly digest: string,
    readonly size: number,
    private readonly store: Store,
  ) {}

  async path(): Promise<string> {
    const path = this.store.contentPath(this.digest as Digest);
    if (!this.verified) {
      let actual: string;
      try {
        actual = await hashFile(path);
      } catch {
        throw new CorruptContentError(this.digest as Digest, "missing");
      }
      if (actual !== this.digest) throw new CorruptContentError(this.digest as Digest, `read ${actual}`);
      this.verified = true;
    }
    return path;
  }
}

function readRange(path: string, offset: number, size: number): Buffer {
  const buffer = Buffer.allocUnsafe(size);
  const fd = openSync(path, "r");
  try {
    let done = 0;
    while (done < size) {
      const read = readSync(fd, buffer, done, size - done, offset + done);
      if (read === 0) throw new Error(`layer ${path} ends early`);
      done += read;
    }
  } finally {
    closeSync(fd);
  }
  return buffer;
}
