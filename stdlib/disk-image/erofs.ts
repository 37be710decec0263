// An erofs filesystem from a tree, as osbuilder makes it (mkfs.erofs -zlz4hc -Enoinline_data),
// without root, mounts or loop devices. erofs is read-only and as big as its content, so it
// is built into a file of its own, copied into the image at the offset (sparse), and its
// size returned for the caller to lay out the rest.
//
// Reproducible: -T gives every inode the same time (mkfs.erofs would otherwise copy each
// file's mtime, and use the clock for the superblock), -U fixes the UUID; directories are
// sorted and hardlinks found by inode, so two copies of a tree give the same bytes.
//
// mkfs.erofs 1.5 takes owners, modes, device nodes and xattrs from the files on disk and has
// no manifest to take them from instead. The tree holds them exactly only when built as
// root; otherwise owners are the builder's and device nodes are empty placeholder files. So
// from `entries` this module rewrites, in the finished image, each inode's owner and mode,
// turns placeholders into device nodes (inode and directory entry), and recomputes the
// superblock checksum. That gives the same bytes as a build as root, within two limits:
// xattrs can't be added afterwards (without root, entries with xattrs other than user.* are
// refused), and an owner above 65535 needs the 64-byte inode form, which mkfs.erofs makes
// only from the tree's own owners (without root, such an owner is refused).

import { closeSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";
import { crc32cUpdate } from "../../formats/crc32c.js";
import { readExact, writeAll } from "../../formats/io.js";
import { FILE_TYPE_BITS, modeOf } from "../../formats/mode.js";
import { hardlinkTarget } from "./entries.js";
import { copyIntoImage } from "./sparse.js";

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

export interface ErofsOptions {
  uuid: string;
  /** Seconds: every inode's time and the superblock's build time. */
  time: number;
  /** Default "lz4hc", as osbuilder. */
  compression?: "lz4hc" | "none";
  workDir: string;
  /**
   * The layers' metadata. Owners, modes and device nodes are set from it in the image, so
   * the result doesn't depend on the tree's owners. Required without root.
   */
  entries?: readonly FileEntry[];
  /** Whether the tree's owners, devices and xattrs are exact. Default: running as root. */
  asRoot?: boolean;
}

/** Makes the erofs image of `tree`, writes it into `image` at `layout.offset`, returns its size in bytes. */
export async function makeErofs(exec: Exec, image: string, layout: { offset: number }, tree: string, options: ErofsOptions): Promise<number> {
  const asRoot = options.asRoot ?? process.getuid?.() === 0;
  const entries = options.entries;
  if (!asRoot && !entries) throw new Error("erofs without root: the tree's owners and device nodes are not the layers'; pass `entries` so that they are set from the layers");
  if (!asRoot && entries) {
    const withXattrs = entries.find((entry) => Object.keys(entry.xattrs ?? {}).some((name) => !name.startsWith("user.")));
    if (withXattrs) {
      throw new Error(
        `erofs without root can't carry the xattrs of '${withXattrs.path}' (${Object.keys(withXattrs.xattrs ?? {}).join(", ")}): mkfs.erofs copies xattrs from the tree, which has them only when built as root. Build as root, or use ext4 or xfs`,
      );
    }
  }
  const anyXattrs = entries?.some((entry) => Object.keys(entry.xattrs ?? {}).length > 0) ?? true;
  const file = join(options.workDir, "erofs.img");
  rmSync(file, { force: true });
  await exec(
    "mkfs.erofs",
    [
      "--quiet",
      ...((options.compression ?? "lz4hc") === "lz4hc" ? ["-zlz4hc"] : []),
      "-Enoinline_data",
      `-T${options.time}`,
      `-U${options.uuid}`,
      // Without root, the tree's owners are the builder's: start from root and set them below.
      ...(asRoot ? [] : ["--all-root"]),
      // When the layers have no xattrs, the host's (an SELinux label) must not slip in.
      ...(anyXattrs ? [] : ["-x-1"]),
      file,
      tree,
    ],
    { env: { LC_ALL: "C" } },
  );
  if (entries) applyEntries(file, entries);
  const bytes = copyIntoImage(file, image, layout.offset);
  rmSync(file, { force: true });
  return bytes;
}

// On-disk format (include/erofs_fs.h in erofs-utils).
const SUPER_OFFSET = 1024;
const SUPER_MAGIC = 0xe0f5e1e2;
const FEATURE_COMPAT_SB_CHKSUM = 0x1;
const LAYOUT_FLAT_PLAIN = 0;
const LAYOUT_FLAT_INLINE = 2;
const DIRENT_SIZE = 12;
const FILE_TYPES: Record<Exclude<FileEntry["type"], "hardlink">, number> = { file: 1, dir: 2, char: 3, block: 4, fifo: 5, symlink: 7 };

interface Inode {
  offset: number;
  extended: boolean;
  layout: number;
  mode: number;
  size: number;
  /** raw block address, or the device number */
  dataOrDevice: number;
  /** Where inline data starts: after the inode and its inline xattrs. */
  inlineOffset: number;
}

interface Located {
  nid: number;
  /** Offset in the image of the file-type byte of the entry's directory entry. */
  typeOffset: number;
}

/** Sets every entry's owner and mode, and makes device nodes of placeholders, in the image `file`. */
function applyEntries(file: string, entries: readonly FileEntry[]): void {
  const fd = openSync(file, "r+");
  try {
    const image = new ErofsImage(fd);
    const located = image.walk();
    const byPath = new Map(entries.map((entry) => [entry.path, entry]));
    image.setInode(image.rootNid, { type: "dir", mode: 0o755, uid: 0, gid: 0 }, "/");
    for (const entry of entries) {
      const place = located.get(entry.path);
      if (!place) throw new Error(`erofs: '${entry.path}' from the layers is missing from the tree mkfs.erofs read`);
      const meta = entry.type === "hardlink" ? hardlinkTarget(entry, byPath, "erofs") : entry;
      if (meta.type === "hardlink") continue; // narrows the type: hardlinkTarget gives a file or throws
      image.write(place.typeOffset, Buffer.from([FILE_TYPES[meta.type]]));
      if (entry.type !== "hardlink") image.setInode(place.nid, { ...meta, type: meta.type }, entry.path);
    }
    image.updateChecksum();
  } finally {
    closeSync(fd);
  }
}

class ErofsImage {
  readonly rootNid: number;
  private readonly blockSize: number;
  private readonly metaStart: number;
  private readonly checksummed: boolean;

  constructor(private readonly fd: number) {
    const sb = this.read(SUPER_OFFSET, 128);
    if (sb.readUInt32LE(0) !== SUPER_MAGIC) throw new Error("erofs: mkfs.erofs wrote no erofs superblock");
    this.checksummed = (sb.readUInt32LE(8) & FEATURE_COMPAT_SB_CHKSUM) !== 0;
    this.blockSize = 2 ** sb.readUInt8(12);
    this.rootNid = sb.readUInt16LE(14);
    this.metaStart = sb.readUInt32LE(40) * this.blockSize;
  }

  read(offset: number, length: number): Buffer {
    return readExact(this.fd, offset, length, "erofs");
  }

  write(offset: number, data: Buffer): void {
    writeAll(this.fd, data, offset);
  }

  inode(nid: number): Inode {
    const offset = this.metaStart + nid * 32;
    const raw = this.read(offset, 64);
    const format = raw.readUInt16LE(0);
    const extended = (format & 1) === 1;
    const xattrCount = raw.readUInt16LE(2);
    const xattrBytes = xattrCount === 0 ? 0 : 12 + 4 * (xattrCount - 1);
    return {
      offset,
      extended,
      layout: (format >> 1) & 7,
      mode: raw.readUInt16LE(4),
      size: extended ? Number(raw.readBigUInt64LE(8)) : raw.readUInt32LE(8),
      dataOrDevice: raw.readUInt32LE(16),
      inlineOffset: offset + (extended ? 64 : 32) + xattrBytes,
    };
  }

  /** Every path in the image, with its inode and where its directory entry's type is. */
  walk(): Map<string, Located> {
    const found = new Map<string, Located>();
    const pending: Array<{ nid: number; path: string }> = [{ nid: this.rootNid, path: "" }];
    for (let next = pending.pop(); next; next = pending.pop()) {
      for (const entry of this.directory(next.nid)) {
        if (entry.name === "." || entry.name === "..") continue;
        const path = next.path ? `${next.path}/${entry.name}` : entry.name;
        found.set(path, { nid: entry.nid, typeOffset: entry.typeOffset });
        if (entry.type === FILE_TYPES.dir) pending.push({ nid: entry.nid, path });
      }
    }
    return found;
  }

  /** A directory's entries: blocks of 12-byte dirents, then their names. */
  private directory(nid: number): Array<{ name: string; nid: number; type: number; typeOffset: number }> {
    const inode = this.inode(nid);
    if (inode.layout !== LAYOUT_FLAT_PLAIN && inode.layout !== LAYOUT_FLAT_INLINE) throw new Error(`erofs: directory inode ${nid} has data layout ${inode.layout}, which this reader doesn't know`);
    const entries: Array<{ name: string; nid: number; type: number; typeOffset: number }> = [];
    const blocks = Math.ceil(inode.size / this.blockSize);
    for (let index = 0; index < blocks; index++) {
      const length = Math.min(this.blockSize, inode.size - index * this.blockSize);
      // With the inline layout the last, partial block sits right after the inode.
      const inline = inode.layout === LAYOUT_FLAT_INLINE && index === blocks - 1;
      const start = inline ? inode.inlineOffset : (inode.dataOrDevice + index) * this.blockSize;
      const block = this.read(start, length);
      const count = block.readUInt16LE(8) / DIRENT_SIZE;
      for (let i = 0; i < count; i++) {
        const nameStart = block.readUInt16LE(i * DIRENT_SIZE + 8);
        const nameEnd = i + 1 < count ? block.readUInt16LE((i + 1) * DIRENT_SIZE + 8) : length;
        const name = block.subarray(nameStart, nameEnd).toString("utf8").replace(/\0+$/, "");
        entries.push({ name, nid: Number(block.readBigUInt64LE(i * DIRENT_SIZE)), type: block.readUInt8(i * DIRENT_SIZE + 10), typeOffset: start + i * DIRENT_SIZE + 10 });
      }
    }
    return entries;
  }

  /** Writes mode and owner, and for a device the device number, into inode `nid`. */
  setInode(nid: number, meta: { type: Exclude<FileEntry["type"], "hardlink">; mode: number; uid: number; gid: number; devMajor?: number; devMinor?: number }, path: string): void {
    const inode = this.inode(nid);
    const isDevice = meta.type === "char" || meta.type === "block";
    const wasType = inode.mode & 0o170000;
    if (wasType !== FILE_TYPE_BITS[meta.type]) {
      // Only a placeholder becomes something else: an empty regular file stored flat.
      const placeholder = wasType === FILE_TYPE_BITS.file && inode.size === 0 && inode.layout === LAYOUT_FLAT_PLAIN && (isDevice || meta.type === "fifo");
      if (!placeholder) throw new Error(`erofs: '${path}' is a ${meta.type} in the layers but not in the tree mkfs.erofs read`);
    }
    const mode = Buffer.alloc(2);
    mode.writeUInt16LE(modeOf(meta.type, meta.mode));
    this.write(inode.offset + 4, mode);
    if (isDevice || meta.type === "fifo") {
      const device = Buffer.alloc(4);
      device.writeUInt32LE(isDevice ? encodeDevice(meta.devMajor ?? 0, meta.devMinor ?? 0) : 0);
      this.write(inode.offset + 16, device);
    }
    if (inode.extended) {
      const owner = Buffer.alloc(8);
      owner.writeUInt32LE(meta.uid, 0);
      owner.writeUInt32LE(meta.gid, 4);
      this.write(inode.offset + 24, owner);
    } else {
      if (meta.uid > 0xffff || meta.gid > 0xffff) {
        throw new Error(`erofs: '${path}' is owned by ${meta.uid}:${meta.gid}, which needs the extended inode form that mkfs.erofs makes only from the tree's own owners: build as root`);
      }
      const owner = Buffer.alloc(4);
      owner.writeUInt16LE(meta.uid, 0);
      owner.writeUInt16LE(meta.gid, 2);
      this.write(inode.offset + 24, owner);
    }
  }

  /** The superblock's crc32c covers the rest of block 0, where the first inodes are. */
  updateChecksum(): void {
    if (!this.checksummed) return;
    const rest = this.read(SUPER_OFFSET, this.blockSize - SUPER_OFFSET);
    rest.writeUInt32LE(0, 4);
    const checksum = Buffer.alloc(4);
    checksum.writeUInt32LE(crc32cUpdate(0xffffffff, rest)); // as the kernel's erofs: seed ~0, no final inversion
    this.write(SUPER_OFFSET + 4, checksum);
  }
}

/** Linux's new_encode_dev, which erofs stores. */
function encodeDevice(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}
