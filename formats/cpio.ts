// cpio "newc" (SVR4 without CRC), the format the kernel unpacks an initramfs from.
// See Linux usr/gen_init_cpio.c and Documentation/driver-api/early-userspace/buffer-format.rst.

export const NEWC_MAGIC = "070701";
export const TRAILER_NAME = "TRAILER!!!";

const S_IFMT = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
} as const;

export type CpioType = keyof typeof S_IFMT;

export interface CpioEntry {
  /** Path as stored, e.g. "usr/bin/env" or "." for the root. */
  name: string;
  type: CpioType;
  /** Permission bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  /** Bytes of data that follow the header (file content, or a symlink's target). */
  size: number;
  ino: number;
  rdevMajor?: number;
  rdevMinor?: number;
}

/** Header + name + padding; the caller writes `size` bytes of data and then `padding(size)`. */
export function encodeNewcHeader(entry: CpioEntry): Buffer {
  const name = Buffer.from(`${entry.name}\0`, "utf8");
  const fields = [
    entry.ino,
    S_IFMT[entry.type] | (entry.mode & 0o7777),
    entry.uid,
    entry.gid,
    entry.nlink,
    Math.max(0, entry.mtime),
    entry.size,
    0, // devmajor of the filesystem: meaningless here, kept 0 for reproducibility
    0, // devminor
    entry.rdevMajor ?? 0,
    entry.rdevMinor ?? 0,
    name.length,
    0, // check: only used by the CRC format
  ];
  for (const value of fields) {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`cpio field value ${value} of '${entry.name}' does not fit in 32 bits`);
  }
  const header = NEWC_MAGIC + fields.map((value) => value.toString(16).padStart(8, "0")).join("");
  const head = Buffer.concat([Buffer.from(header, "latin1"), name]);
  return Buffer.concat([head, Buffer.alloc(newcPadding(head.length))]);
}

/** Zero bytes that align `length` to the 4-byte boundary newc requires. */
export function newcPadding(length: number): number {
  return (4 - (length % 4)) % 4;
}

/** The closing entry of an archive. */
export function newcTrailer(): Buffer {
  return encodeNewcHeader({ name: TRAILER_NAME, type: "file", mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, size: 0, ino: 0 });
}

export interface ParsedNewcEntry extends CpioEntry {
  /** Offset of the entry's data in the archive. */
  dataOffset: number;
}

/** Reads every entry of an uncompressed newc archive (for tests and `fromInitrd`). */
export function parseNewc(archive: Buffer): ParsedNewcEntry[] {
  const entries: ParsedNewcEntry[] = [];
  let offset = 0;
  while (offset + 110 <= archive.length) {
    const magic = archive.toString("latin1", offset, offset + 6);
    if (magic !== NEWC_MAGIC && magic !== "070702") {
      // Concatenated archives may be separated by zero padding.
      if (archive[offset] === 0) {
        offset += 4;
        continue;
      }
      throw new Error(`bad cpio magic '${magic}' at offset ${offset}`);
    }
    const field = (index: number): number => parseInt(archive.toString("latin1", offset + 6 + index * 8, offset + 14 + index * 8), 16);
    const mode = field(1);
    const nameSize = field(11);
    const size = field(6);
    const nameStart = offset + 110;
    const name = archive.toString("utf8", nameStart, nameStart + nameSize - 1);
    const dataOffset = nameStart + nameSize + newcPadding(110 + nameSize);
    offset = dataOffset + size + newcPadding(size);
    if (name === TRAILER_NAME) continue;
    const format = mode & 0o170000;
    const type = (Object.entries(S_IFMT).find(([, bits]) => bits === format)?.[0] ?? "file") as CpioType;
    entries.push({
      name,
      type,
      mode: mode & 0o7777,
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      size,
      ino: field(0),
      rdevMajor: field(9),
      rdevMinor: field(10),
      dataOffset,
    });
  }
  return entries;
}
