// Writes a canonical layer: sorted entries, numeric owners, clamped mtimes, OCI whiteouts.
// Synchronous and streaming (a 1 MiB buffer), so it can run in a worker thread.

import { createHash, type Hash } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { hostPath } from "../../formats/names.js";
import { encodeTarHeader, paddingFor, tarTrailer } from "../../formats/tar.js";
import type { Digest } from "../key.js";
import { type Toc, type TocEntry, type TocFile, isFile, markerTarPath, decodeXattrs } from "./toc.js";

/** Where a regular file's bytes come from. */
export type ContentSource = { path: string } | { fd: number; offset: number };

export interface LayerItem {
  entry: TocEntry;
  content?: ContentSource;
}

export interface WrittenLayer {
  digest: Digest;
  size: number;
  toc: Toc;
}

const BUFFER_SIZE = 1 << 20;

class HashingFileWriter {
  private readonly fd: number;
  private readonly buffer = Buffer.allocUnsafe(BUFFER_SIZE);
  private used = 0;
  private readonly hash: Hash = createHash("sha256");
  written = 0;

  constructor(path: string) {
    this.fd = openSync(path, "wx", 0o644);
  }

  write(data: Buffer): void {
    let input = data;
    while (input.length > 0) {
      if (this.used === 0 && input.length >= BUFFER_SIZE) {
        this.flushBytes(input);
        return;
      }
      const take = Math.min(BUFFER_SIZE - this.used, input.length);
      input.copy(this.buffer, this.used, 0, take);
      this.used += take;
      input = input.subarray(take);
      if (this.used === BUFFER_SIZE) this.flush();
    }
  }

  /** Reads `size` bytes from `fd` at `position` (null: current position) straight into the output; returns their sha256 (hex). */
  copyFrom(fd: number, position: number | null, size: number, what: string): string {
    const content = createHash("sha256");
    let remaining = size;
    let at = position;
    while (remaining > 0) {
      if (this.used === BUFFER_SIZE) this.flush();
      const want = Math.min(BUFFER_SIZE - this.used, remaining);
      const read = readSync(fd, this.buffer, this.used, want, at);
      if (read === 0) throw new Error(`${what} shrank while it was being read (${size - remaining} of ${size} bytes)`);
      content.update(this.buffer.subarray(this.used, this.used + read));
      this.used += read;
      remaining -= read;
      if (at !== null) at += read;
    }
    return content.digest("hex");
  }

  private flush(): void {
    this.flushBytes(this.buffer.subarray(0, this.used));
    this.used = 0;
  }

  private flushBytes(bytes: Buffer): void {
    this.hash.update(bytes);
    let offset = 0;
    while (offset < bytes.length) offset += writeSync(this.fd, bytes, offset, bytes.length - offset);
    this.written += bytes.length;
  }

  get position(): number {
    return this.written + this.used;
  }

  finish(): Digest {
    this.flush();
    closeSync(this.fd);
    return `sha256:${this.hash.digest("hex")}` as Digest;
  }

  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

/**
 * Writes `items` (already sorted by path, whiteouts included) as a tar layer at `outPath`.
 * Returns its digest and TOC. The file must not exist yet.
 */
export function writeLayerSync(outPath: string, items: Iterable<LayerItem>): WrittenLayer {
  const out = new HashingFileWriter(outPath);
  const entries: TocEntry[] = [];
  try {
    for (const item of items) {
      const entry = item.entry;
      if (!isFile(entry)) {
        out.write(encodeTarHeader({ path: markerTarPath(entry), type: "file", mode: 0, uid: 0, gid: 0, size: 0, mtime: 0 }));
        entries.push(entry);
        continue;
      }
      out.write(
        encodeTarHeader({
          path: entry.path,
          type: entry.type,
          mode: entry.mode,
          uid: entry.uid,
          gid: entry.gid,
          size: entry.type === "file" ? entry.size : 0,
          mtime: entry.mtime,
          linkTarget: entry.linkTarget,
          devMajor: entry.devMajor,
          devMinor: entry.devMinor,
          xattrs: decodeXattrs(entry.xattrs),
        }),
      );
      const recorded: TocFile = { ...entry };
      if (entry.type === "file") {
        recorded.offset = out.position;
        recorded.sha256 = entry.size > 0 ? copyContent(out, entry, item.content) : EMPTY_SHA256;
        out.write(Buffer.alloc(paddingFor(entry.size)));
      } else {
        delete recorded.offset;
        delete recorded.sha256;
      }
      entries.push(recorded);
    }
    out.write(tarTrailer());
    const digest = out.finish();
    return { digest, size: out.written, toc: { version: 1, entries } };
  } catch (error) {
    out.abort();
    throw error;
  }
}

/** Copies a file's bytes into the layer; returns their sha256 (hex), which the TOC keeps. */
function copyContent(out: HashingFileWriter, entry: TocFile, content: ContentSource | undefined): string {
  if (!content) throw new Error(`no content given for ${entry.path}`);
  if ("fd" in content) return out.copyFrom(content.fd, content.offset, entry.size, entry.path);
  const fd = openSync(hostPath(content.path), "r");
  try {
    const actual = fstatSync(fd).size;
    if (actual !== entry.size) throw new Error(`${content.path} changed size while the layer was written (${entry.size} → ${actual} bytes)`);
    return out.copyFrom(fd, null, entry.size, content.path);
  } finally {
    closeSync(fd);
  }
}

const EMPTY_SHA256 = createHash("sha256").digest("hex");
