// mkCpio: an initrd (newc cpio, compressed) streamed from the rootfs layers, without root
// and without a copy of the tree. The archive is one cpio stream, but each layer's entries
// are compressed on their own (gzip members / zstd frames ending on entry boundaries, which
// both the kernel and `zcat | cpio -i` read as one archive). A layer's part is reused from
// the store when its share of the tree is unchanged, so changing the top layer recompresses
// only that layer. Compression runs on every core: gzip in runs of about 16 MiB, each a
// member of its own made by libdeflate-gzip (a Debian rootfs: 0.99x the size of osbuilder's
// gzip -9 at -6, in under a third of pigz -6's time), one process per core; zstd with its threads.

import { createReadStream, createWriteStream } from "node:fs";
import { once } from "node:events";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { defineStep, type ExecOptions, type ExecResult, type FileEntry, type LayerEvent } from "../engine/index.js";
import { encodeNewcHeader, newcPadding, newcTrailer, type CpioEntry } from "../formats/cpio.js";
import { encodeName } from "../formats/names.js";
import { checkBootable, type BootChecks } from "./checks.js";
import { archiveLayerRuns, type ArchivePiece } from "./layer-archive.js";
import { initrdMediaType } from "./media-types.js";

export type CpioCompression = "gzip" | "zstd" | "none";

export interface MkCpioOptions {
  /** Default "gzip", which every kernel can unpack. */
  compression?: CpioCompression;
  /**
   * gzip 1–9 (default 6: on a Debian rootfs libdeflate -6 on two cores is 31× faster than
   * osbuilder's gzip -9 for a 1.4% smaller initrd), zstd 1–19 (default 9).
   */
  level?: number;
  /** Adds `/init` as a symlink to this path when the rootfs has no /init, as osbuilder does. Default "/sbin/init"; false to skip. */
  initLink?: string | false;
  /**
   * osbuilder's checks before packing (an executable /sbin/init; systemd or the agent as
   * init, as osbuilder.yaml says, or as given). Default: on for rootfs made by installAgent.
   */
  checks?: BootChecks;
}

const DEFAULT_LEVEL: Record<CpioCompression, number> = { gzip: 6, zstd: 9, none: 0 };
/** libdeflate compresses whole buffers: the uncompressed bytes of one gzip member. */
const RUN_BYTES = 16 << 20;
/** A layer holding a file this large goes through pigz, which streams, so memory stays bounded. */
const STREAMED_FILE_BYTES = 32 << 20;
const LIBDEFLATE = { command: "libdeflate-gzip", versionArgs: ["-V"], package: "libdeflate-tools" };
const PIGZ = { command: "pigz", package: "pigz" };

export const mkCpio = defineStep({
  kind: "mk-cpio",
  version: 7,
  inputs: ["rootfs"],
  output: "blob",
  mediaTypes: (options: MkCpioOptions) => ({ out: initrdMediaType(options.compression ?? "gzip") }),
  tools: (options: MkCpioOptions) => {
    const compression = options.compression ?? "gzip";
    if (compression === "gzip") return [LIBDEFLATE, PIGZ];
    if (compression === "zstd") return [{ command: "zstd", versionArgs: ["-V"], package: "zstd" }];
    return [];
  },
  validate(options: MkCpioOptions) {
    const compression = options.compression ?? "gzip";
    if (!["gzip", "zstd", "none"].includes(compression)) return `compression must be "gzip", "zstd" or "none", got "${compression}"`;
    if (options.level !== undefined) {
      const max = compression === "zstd" ? 19 : 9;
      if (!Number.isInteger(options.level) || options.level < 1 || options.level > max) return `level for ${compression} must be 1..${max}`;
    }
    if (typeof options.initLink === "string" && !options.initLink.startsWith("/")) return `initLink must be an absolute path, got '${options.initLink}'`;
    return undefined;
  },
  async run(options: MkCpioOptions, ctx) {
    const [rootfs] = ctx.inputs;
    const problem = await checkBootable(rootfs, options.checks);
    if (problem) ctx.fail(problem);
    const compression = options.compression ?? "gzip";
    const level = options.level ?? DEFAULT_LEVEL[compression];
    const compressor = { compression, level, cores: ctx.cores, exec: ctx.exec };
    const parts = await rootfs.layerParts();

    // Inode numbers run through the whole initrd, so each part knows where it starts; a
    // hardlink may name a file of a lower layer's part, so links are counted across parts.
    const links = new Map<string, { ino: number; nlink: number }>();
    let nextIno = 2; // 1 is the root directory
    for (const part of parts) {
      for (const entry of part.entries) {
        const ino = nextIno++;
        if (entry.type === "file") links.set(entry.path, { ino, nlink: 1 });
      }
    }
    for (const part of parts) for (const entry of part.entries) if (entry.type === "hardlink" && links.has(entry.linkTarget!)) links.get(entry.linkTarget!)!.nlink++;
    nextIno = 2;
    const segments: string[] = [];
    for (const [index, part] of parts.entries()) {
      const firstIno = nextIno;
      nextIno += part.entries.length;
      const withRoot = index === 0;
      // The part's bytes also hold its files' link counts and the inode numbers its links share.
      const shared = part.entries.map((entry) => (entry.type === "file" ? links.get(entry.path)!.nlink : entry.type === "hardlink" ? (links.get(entry.linkTarget!)?.ino ?? null) : null));
      // Whole-buffer runs, unless a file is too large to hold in memory.
      const runBytes = compression === "gzip" && part.entries.every((entry) => entry.type !== "file" || entry.size <= STREAMED_FILE_BYTES) ? RUN_BYTES : undefined;
      const key = { layer: part.digest, entries: part.entries.map(entryKey), shared, firstIno, withRoot, compression, level, runBytes: runBytes ?? null };
      const make = (path: string): Promise<void> =>
        compressTo(layerArchive(rootfs.readLayer(index), firstIno, links, withRoot ? rootEntry(ctx.sourceDateEpoch) : undefined, runBytes ?? Number.POSITIVE_INFINITY), path, { ...compressor, runs: runBytes !== undefined });
      // Without every file's digest (a layer stored before TOCs had them) the key can't say what the bytes are.
      const keyed = part.entries.every((entry) => entry.type !== "file" || entry.sha256 !== undefined);
      segments.push(keyed ? await ctx.reuse(key, make) : await madeOnce(ctx, make));
    }
    // The tail: the root when there are no layers, /init when missing, and the trailer.
    const wanted = options.initLink ?? "/sbin/init";
    const initLink = wanted !== false && !(await rootfs.stat("init")) ? wanted : undefined;
    const tailKey = { tail: true, withRoot: parts.length === 0, initLink: initLink ?? false, ino: nextIno, compression, level };
    segments.push(
      await ctx.reuse(tailKey, (path) => {
        const tail: Buffer[] = [];
        if (parts.length === 0) tail.push(encodeNewcHeader(rootEntry(ctx.sourceDateEpoch)));
        if (initLink !== undefined) {
          const target = Buffer.from(initLink);
          tail.push(encodeNewcHeader({ name: "init", type: "symlink", mode: 0o777, uid: 0, gid: 0, nlink: 1, mtime: ctx.sourceDateEpoch, size: target.length, ino: nextIno }), target, Buffer.alloc(newcPadding(target.length)));
        }
        tail.push(newcTrailer());
        return compressTo(single(Buffer.concat(tail)), path, { ...compressor, runs: true });
      }),
    );
    await concatenate(segments, ctx.outputPath());
  },
});

/** A part made for this build only, in the step's temporary directory. */
async function madeOnce(ctx: { tempDir(): Promise<string> }, make: (path: string) => Promise<void>): Promise<string> {
  const path = join(await ctx.tempDir(), "part");
  await make(path);
  return path;
}

function rootEntry(mtime: number): CpioEntry {
  return { name: ".", type: "dir", mode: 0o755, uid: 0, gid: 0, nlink: 2, mtime, size: 0, ino: 1 };
}

/**
 * What makes a layer's part of the archive: the metadata of every entry it holds and the
 * digest of every file's content, which for a promoted hardlink comes from another layer.
 */
function entryKey(entry: FileEntry): unknown[] {
  return [entry.path, entry.type, entry.mode, entry.uid, entry.gid, entry.size, entry.sha256 ?? null, entry.mtime, entry.linkTarget ?? null, entry.devMajor ?? null, entry.devMinor ?? null];
}

async function* single(bytes: Buffer): AsyncGenerator<ArchivePiece> {
  yield { bytes, runEnds: true };
}

/**
 * One layer's part of the archive as newc bytes, in runs ending on entry boundaries (see
 * archiveLayerRuns). Ends without a trailer: the parts are concatenated and the tail closes
 * the archive.
 */
async function* layerArchive(
  batches: AsyncIterable<readonly LayerEvent[]>,
  firstIno: number,
  links: ReadonlyMap<string, { ino: number; nlink: number }>,
  root: CpioEntry | undefined,
  runBytes: number,
): AsyncGenerator<ArchivePiece> {
  // Hardlinked files share one inode number (counted over the whole initrd); the data goes
  // with the first name, which is the file's, in this part or a lower one.
  let ino = firstIno;
  const rootHeader = root ? [encodeNewcHeader(root)] : [];
  const header = (entry: FileEntry): Buffer[] => {
    const own = ino++;
    const base = { name: entry.path, mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime, nlink: 1, ino: own };
    switch (entry.type) {
      case "file":
        return [encodeNewcHeader({ ...base, type: "file", nlink: links.get(entry.path)?.nlink ?? 1, size: entry.size })];
      case "hardlink": {
        const target = links.get(entry.linkTarget!);
        if (target === undefined) throw new Error(`hardlink ${entry.path} → ${entry.linkTarget}: the layers have no such file`);
        return [encodeNewcHeader({ ...base, type: "file", nlink: target.nlink, size: 0, ino: target.ino })];
      }
      case "dir":
        return [encodeNewcHeader({ ...base, type: "dir", nlink: 2, size: 0 })];
      case "symlink": {
        const target = encodeName(entry.linkTarget!);
        return [encodeNewcHeader({ ...base, type: "symlink", size: target.length }), target, Buffer.alloc(newcPadding(target.length))];
      }
      case "char":
      case "block":
      case "fifo":
        return [encodeNewcHeader({ ...base, type: entry.type, size: 0, rdevMajor: entry.devMajor ?? 0, rdevMinor: entry.devMinor ?? 0 })];
    }
  };
  let first = true;
  for await (const piece of archiveLayerRuns(batches, { header, padding: newcPadding }, runBytes)) {
    yield first && rootHeader.length > 0 ? { ...piece, bytes: Buffer.concat([...rootHeader, piece.bytes]) } : piece;
    first = false;
  }
  if (first && rootHeader.length > 0) yield { bytes: Buffer.concat(rootHeader), runEnds: true };
}

interface Compressor {
  compression: CpioCompression;
  level: number;
  cores: number;
  exec: (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;
  /** gzip: each run becomes a member of its own, made by libdeflate-gzip; otherwise pigz streams them all. */
  runs: boolean;
}

async function compressTo(pieces: AsyncIterable<ArchivePiece>, outPath: string, compressor: Compressor): Promise<void> {
  const { compression, level, cores, exec } = compressor;
  const stream = (): Readable => Readable.from(bytesOf(pieces));
  if (compression === "none") {
    await pipeline(stream(), createWriteStream(outPath));
    return;
  }
  if (compression === "zstd") {
    await exec("zstd", ["-q", "-c", `-${level}`, `-T${cores}`], { input: stream(), stdout: { file: outPath } });
    return;
  }
  // pigz -n: no name and no time in the gzip header (libdeflate-gzip writes neither from stdin).
  if (!compressor.runs) {
    await exec("pigz", ["-c", "-n", `-${level}`, "-p", String(cores)], { input: stream(), stdout: { file: outPath } });
    return;
  }
  await deflateRuns(pieces, outPath, level, cores, exec);
}

async function* bytesOf(pieces: AsyncIterable<ArchivePiece>): AsyncGenerator<Buffer> {
  for await (const piece of pieces) yield piece.bytes;
}

/**
 * One libdeflate-gzip a run, as many at once as there are cores, the bytes streamed into it
 * as they are made (libdeflate holds a run, this process holds none); the members go out in
 * the runs' order.
 */
async function deflateRuns(pieces: AsyncIterable<ArchivePiece>, outPath: string, level: number, cores: number, exec: Compressor["exec"]): Promise<void> {
  const out = createWriteStream(outPath);
  const failed = new Promise<never>((_, reject) => out.on("error", reject));
  failed.catch(() => undefined);
  const inFlight: Array<Promise<ExecResult>> = [];
  const writeOldest = async (): Promise<void> => {
    const { stdout } = await inFlight.shift()!;
    if (!out.write(stdout)) await Promise.race([once(out, "drain"), failed]);
  };
  let member: { input: PassThrough; result: Promise<ExecResult> } | undefined;
  const endMember = async (): Promise<void> => {
    member!.input.end();
    inFlight.push(member!.result);
    member = undefined;
    if (inFlight.length >= Math.max(1, cores)) await writeOldest();
  };
  try {
    for await (const piece of pieces) {
      if (!member) {
        const input = new PassThrough();
        const result = exec(LIBDEFLATE.command, ["-c", `-${level}`], { input });
        result.catch(() => undefined); // awaited in order below
        member = { input, result };
      }
      if (piece.bytes.length > 0 && !member.input.write(piece.bytes)) await Promise.race([once(member.input, "drain"), member.result]);
      if (piece.runEnds) await endMember();
    }
    if (member) await endMember();
    while (inFlight.length > 0) await writeOldest();
    out.end();
    await Promise.race([once(out, "close"), failed]);
  } finally {
    member?.input.destroy();
    out.destroy();
  }
}

async function concatenate(parts: readonly string[], outPath: string): Promise<void> {
  const out = createWriteStream(outPath);
  for (const part of parts) await pipeline(createReadStream(part), out, { end: false });
  out.end();
  await once(out, "close");
}
