// fromInitrd: turns an initrd back into a rootfs, as osbuilder's dracut build method does
// to make a rootfs (and then a disk image) from a dracut initrd: there with
// `cpio --extract`, here streamed into the tree without root, keeping numeric owners,
// modes, symlinks, hardlinks, device nodes and fifos.
//
// An initrd is what the kernel unpacks: segments back to back, each a newc cpio stream
// (several archives, each ending with TRAILER!!!, zero padding between them), plain or
// compressed. Segments are found by their magic as the kernel finds them: a plain part (an
// early microcode archive) may come before a compressed one. gzip is read with node:zlib,
// zstd and xz by their programs. Nothing is held in memory but headers and symlink targets.

import { closeSync, createReadStream, fstatSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, readSync, rmSync, statSync, symlinkSync, chmodSync, utimesSync, writeSync } from "node:fs";
import { join, relative } from "node:path";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { defineStep, type RootfsStepContext, type Tree } from "../engine/index.js";
import { CpioFormatError, CpioParser, type CpioHeader } from "../formats/cpio.js";
import { hostPath } from "../formats/names.js";

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** Compressions the kernel knows that osbuild does not unpack, named in the error. */
const UNSUPPORTED: ReadonlyArray<[string, Buffer]> = [
  ["bzip2", Buffer.from("BZh", "latin1")],
  ["lz4", Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ["lz4", Buffer.from([0x04, 0x22, 0x4d, 0x18])],
  ["lzo", Buffer.from([0x89, 0x4c, 0x5a, 0x4f])],
  ["lzma", Buffer.from([0x5d, 0x00, 0x00])],
];

/** fromInitrd takes no options but the common ones (id). */
export type FromInitrdOptions = Record<never, never>;

export const fromInitrd = defineStep({
  kind: "from-initrd",
  version: 1,
  inputs: ["blob"],
  output: "rootfs",
  async run(_options: FromInitrdOptions, ctx) {
    const [initrd] = ctx.inputs;
    const file = await initrd.path();
    const tree = await ctx.tree();
    const writer = new TreeWriter(tree, ctx);
    try {
      await unpackSegments(file, writer, ctx);
    } finally {
      writer.close();
    }
    writer.finishDirectories();
  },
});

type Ctx = RootfsStepContext<readonly ["blob"]>;

/** Walks the initrd segment by segment, as the kernel's unpack_to_rootfs does. */
async function unpackSegments(file: string, writer: TreeWriter, ctx: Ctx): Promise<void> {
  const fd = openSync(file, "r");
  try {
    const size = fstatSync(fd).size;
    if (size === 0) ctx.fail(`the initrd is empty: the step that made it wrote nothing`);
    let offset = 0;
    let segments = 0;
    while (offset < size) {
      const head = Buffer.alloc(6);
      const got = readSync(fd, head, 0, head.length, offset);
      if (head[0] === 0) {
        offset = skipZeros(fd, offset, size);
        continue;
      }
      const start = head.subarray(0, got);
      segments++;
      if (head[0] === 0x30 /* "0": a plain cpio archive */) {
        if (offset % 4 !== 0) ctx.fail(`the initrd has a cpio archive at byte ${offset}, which is not a multiple of 4: it is corrupted`);
        offset = await unpackPlain(file, offset, size, writer, ctx);
      } else if (startsWith(start, GZIP_MAGIC)) {
        // zlib reads gzip members one after another and ignores trailing zero padding, so the
        // segment runs to the end of the file (the kernel's usual layout: compressed part last).
        const source = createReadStream(file, { start: offset, highWaterMark: 1 << 20 });
        const gunzip = source.pipe(createGunzip());
        source.on("error", (error) => gunzip.destroy(error));
        try {
          await parseDecompressed(gunzip, writer, `the gzip part at byte ${offset}`, ctx);
        } finally {
          source.destroy();
        }
        offset = size;
      } else if (startsWith(start, ZSTD_MAGIC)) {
        // zstd refuses trailing bytes, so its frames are measured first and only they decompressed.
        const end = zstdFramesEnd(fd, offset, size, ctx.fail);
        await parseWithProgram(ctx, "zstd", "zstd", file, offset, end, writer);
        offset = end;
      } else if (startsWith(start, XZ_MAGIC)) {
        // xz reads concatenated streams and their zero padding to the end of the file.
        await parseWithProgram(ctx, "xz", "xz-utils", file, offset, size, writer);
        offset = size;
      } else {
        const known = UNSUPPORTED.find(([, magic]) => startsWith(start, magic));
        if (known) ctx.fail(`the initrd part at byte ${offset} is compressed with ${known[0]}, which osbuild does not unpack: recompress the initrd with gzip, zstd or xz`);
        const what = segments === 1 ? "the initrd is not a cpio archive" : `the initrd has data that is neither cpio nor compressed at byte ${offset}`;
        ctx.fail(`${what} (it starts with ${start.toString("hex")}): give an initrd (newc cpio, plain or compressed with gzip, zstd or xz)`);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Parses a plain cpio part from `offset`; returns where it stopped (the end, or other data). */
async function unpackPlain(file: string, offset: number, size: number, writer: TreeWriter, ctx: Ctx): Promise<number> {
  const parser = writer.parser();
  const stream = createReadStream(file, { start: offset, highWaterMark: 1 << 20 });
  let position = offset;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const consumed = parser.write(chunk);
      position += consumed;
      if (parser.stopped) return position; // something else follows: a compressed part
    }
    parser.end();
  } catch (error) {
    throw explain(error, `the cpio part at byte ${offset}`, ctx);
  } finally {
    stream.destroy();
  }
  return size;
}

/** Feeds decompressed bytes to a parser; inside a compressed part, only cpio may follow cpio. */
async function parseDecompressed(stream: Readable, writer: TreeWriter, what: string, ctx: Ctx): Promise<void> {
  const parser = writer.parser();
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      parser.write(chunk);
      if (parser.stopped) ctx.fail(`${what} holds data that is not cpio after byte ${parser.position} of its content: the initrd is corrupted`);
    }
    parser.end();
  } catch (error) {
    throw explain(error, what, ctx);
  } finally {
    stream.destroy();
  }
}

/** zstd and xz run as programs: their output goes to a private file, then through the parser. */
async function parseWithProgram(ctx: Ctx, program: "zstd" | "xz", debianPackage: string, file: string, start: number, end: number, writer: TreeWriter): Promise<void> {
  const decompressed = join(await ctx.tempDir(), "segment.cpio");
  try {
    await ctx.exec(program, ["-dc"], { input: createReadStream(file, { start, end: end - 1 }), stdout: { file: decompressed } });
  } catch (error) {
    const message = (error as Error).message;
    if (/cannot run/.test(message)) ctx.fail(`the initrd is compressed with ${program}, but '${program}' is not installed: install the Debian package ${debianPackage}`);
    ctx.fail(`cannot decompress the ${program} part at byte ${start} of the initrd: ${message}`);
  }
  try {
    await parseDecompressed(createReadStream(decompressed, { highWaterMark: 1 << 20 }), writer, `the ${program} part at byte ${start}`, ctx);
  } finally {
    rmSync(decompressed, { force: true });
  }
}

/** Turns format and decompression errors into step failures that say where. */
function explain(error: unknown, what: string, ctx: Ctx): unknown {
  if (error instanceof CpioFormatError) ctx.fail(`${what} of the initrd: ${error.message}`);
  const code = (error as NodeJS.ErrnoException).code;
  if (typeof code === "string" && code.startsWith("Z_")) {
    ctx.fail(`cannot decompress ${what} of the initrd: ${(error as Error).message} (osbuild reads a gzip part to the end of the file; only zero padding may follow it)`);
  }
  return error;
}

function skipZeros(fd: number, offset: number, size: number): number {
  const buffer = Buffer.alloc(64 * 1024);
  let position = offset;
  while (position < size) {
    const got = readSync(fd, buffer, 0, Math.min(buffer.length, size - position), position);
    if (got === 0) return size;
    let zeros = 0;
    while (zeros < got && buffer[zeros] === 0) zeros++;
    position += zeros;
    if (zeros < got) return position;
  }
  return position;
}

/**
 * Where the zstd frames (and skippable frames) starting at `offset` end, from their headers
 * and block sizes (RFC 8878), without decompressing anything.
 */
function zstdFramesEnd(fd: number, offset: number, size: number, fail: (message: string) => never): number {
  const bytes = Buffer.alloc(18);
  const read = (position: number, length: number): Buffer => {
    if (position + length > size) fail(`the zstd part of the initrd is truncated at byte ${size}`);
    readSync(fd, bytes, 0, length, position);
    return bytes.subarray(0, length);
  };
  let position = offset;
  while (position + 4 <= size) {
    const magic = read(position, 4).readUInt32LE(0);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      position += 8 + read(position + 4, 4).readUInt32LE(0); // skippable frame
      continue;
    }
    if (magic !== 0xfd2fb528) break;
    const descriptor = read(position + 4, 1)[0]!;
    const contentSizeFlag = descriptor >> 6;
    const singleSegment = (descriptor >> 5) & 1;
    const hasChecksum = (descriptor >> 2) & 1;
    const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3]!;
    const contentSizeBytes = contentSizeFlag === 0 ? singleSegment : [0, 2, 4, 8][contentSizeFlag]!;
    position += 5 + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
    for (;;) {
      const header = read(position, 3).readUIntLE(0, 3);
      const last = header & 1;
      const type = (header >> 1) & 3;
      const blockSize = header >>> 3;
      if (type === 3) fail(`the zstd part of the initrd has a reserved block type at byte ${position}: it is corrupted`);
      position += 3 + (type === 1 ? 1 : blockSize);
      if (last) break;
    }
    if (hasChecksum) position += 4;
    if (position > size) fail(`the zstd part of the initrd is truncated at byte ${size}`);
  }
  return position;
}

function startsWith(data: Buffer, magic: Buffer): boolean {
  return data.length >= magic.length && data.subarray(0, magic.length).equals(magic);
}

/**
 * Writes cpio entries into the tree as the kernel would unpack them, through the Tree API:
 * paths never leave the tree, owners and device nodes are recorded without root.
 */
class TreeWriter {
  /** The file whose data is arriving. */
  private current?: { fd: number; path: string; header: CpioHeader };
  /** Files with several names seen in this archive: (device, inode) → first path. */
  private readonly links = new Map<string, string>();
  /** Directory modes and times are set last: a read-only directory must still take its entries. */
  private readonly directories: Array<{ path: string; mode: number; mtime: number }> = [];

  constructor(
    private readonly tree: Tree,
    private readonly ctx: Ctx,
  ) {}

  parser(): CpioParser {
    return new CpioParser({
      onEntry: (header) => this.entry(header),
      onData: (chunk) => this.data(chunk),
      onEntryEnd: () => this.entryEnd(),
      // The kernel forgets hardlinks at each trailer: inode numbers restart in the next archive.
      onTrailer: () => this.links.clear(),
    });
  }

  close(): void {
    if (this.current) closeSync(this.current.fd);
    this.current = undefined;
  }

  finishDirectories(): void {
    for (const directory of this.directories.reverse()) {
      const host = this.tree.path(directory.path, { followSymlink: false });
      try {
        if (!lstatSync(hostPath(host)).isDirectory()) continue; // replaced by a later entry
      } catch {
        continue;
      }
      chmodSync(hostPath(host), directory.mode);
      utimesSync(hostPath(host), directory.mtime, directory.mtime);
    }
  }

  private entry(header: CpioHeader): void {
    const path = this.checkedPath(header.name);
    if (path === "") return; // the archive's root: the tree keeps its own
    if (header.type === "dir") return this.directory(path, header);
    if (header.type === "socket") {
      this.ctx.log(`skipping the socket /${path}: a rootfs layer cannot hold sockets (programs make them when they run)`);
      return;
    }
    const slash = path.lastIndexOf("/");
    const parent = this.tree.path(slash < 0 ? "" : path.slice(0, slash));
    mkdirSync(hostPath(parent), { recursive: true });
    const target = join(parent, path.slice(slash + 1));
    switch (header.type) {
      case "file":
        this.current = { fd: this.openFile(path, target, header), path, header };
        return;
      case "symlink":
        rmSync(hostPath(target), { recursive: true, force: true });
        symlinkSync(hostPath(header.linkTarget!), hostPath(target));
        this.tree.chown(path, header.uid, header.gid);
        lutimesSync(hostPath(target), header.mtime, header.mtime);
        return;
      default:
        rmSync(hostPath(target), { recursive: true, force: true });
        this.tree.mknod(path, { type: header.type, major: header.rdevMajor, minor: header.rdevMinor, mode: header.mode, uid: header.uid, gid: header.gid });
        lutimesSync(hostPath(target), header.mtime, header.mtime);
    }
  }

  /**
   * A regular file, or another name of one already written: the kernel links names that
   * share device, inode and type (with nlink > 1) to the first, and writes data into the
   * shared file without truncating it (GNU cpio sends the data with the last name).
   */
  private openFile(path: string, target: string, header: CpioHeader): number {
    const key = header.nlink > 1 ? `${header.devMajor}:${header.devMinor}:${header.ino}` : undefined;
    const first = key === undefined ? undefined : this.links.get(key);
    if (first !== undefined && first !== path) {
      const firstHost = this.tree.path(first, { followSymlink: false });
      let linkable = false;
      try {
        linkable = lstatSync(hostPath(firstHost)).isFile();
      } catch {
        /* removed by a later entry: this name starts the file anew */
      }
      if (linkable) {
        rmSync(hostPath(target), { recursive: true, force: true });
        linkSync(hostPath(firstHost), hostPath(target));
        return openSync(hostPath(target), "r+");
      }
    }
    rmSync(hostPath(target), { recursive: true, force: true });
    if (key !== undefined) this.links.set(key, path);
    return openSync(hostPath(target), "wx", 0o600);
  }

  private data(chunk: Buffer): void {
    const file = this.current!;
    let offset = 0;
    while (offset < chunk.length) offset += writeSync(file.fd, chunk, offset, chunk.length - offset);
  }

  private entryEnd(): void {
    const file = this.current;
    if (!file) return;
    this.current = undefined;
    closeSync(file.fd);
    const host = this.tree.path(file.path, { followSymlink: false });
    // Owner first: changing it clears setuid and setgid, which the mode then restores.
    this.tree.chown(file.path, file.header.uid, file.header.gid);
    chmodSync(hostPath(host), file.header.mode);
    utimesSync(hostPath(host), file.header.mtime, file.header.mtime);
  }

  private directory(path: string, header: CpioHeader): void {
    // An existing symlink to a directory is kept and followed, as when unpacking over a tree
    // with /lib → usr/lib; the entry's metadata then goes to the directory it points to.
    const resolved = this.tree.path(path);
    let isDirectory = false;
    try {
      isDirectory = statSync(hostPath(resolved)).isDirectory();
    } catch {
      /* missing */
    }
    if (!isDirectory) {
      rmSync(hostPath(resolved), { recursive: true, force: true });
      mkdirSync(hostPath(resolved), { recursive: true, mode: 0o755 });
    }
    const real = relative(this.tree.root, resolved);
    this.tree.chown(real, header.uid, header.gid);
    this.directories.push({ path: real, mode: header.mode, mtime: header.mtime });
  }

  /** The entry's path in the tree; names that would leave it are refused, as hostile. */
  private checkedPath(name: string): string {
    if (name.startsWith("/")) this.ctx.fail(`the initrd has an entry with the absolute name '${name}': refusing to unpack it (an initrd's names are relative to its root; the archive is broken or hostile)`);
    const parts = name.split("/").filter((part) => part !== "" && part !== ".");
    if (parts.includes("..")) this.ctx.fail(`the initrd has an entry '${name}' whose name leaves the tree through '..': refusing to unpack it (the archive is broken or hostile)`);
    return parts.join("/");
  }
}
