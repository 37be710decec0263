// cpio "newc" (SVR4 without CRC), the format the kernel unpacks an initramfs from.
// See Linux usr/gen_init_cpio.c and Documentation/driver-api/early-userspace/buffer-format.rst.

import { FILE_TYPE_BITS, modeOf } from "./mode.js";
import { decodeName, encodeName } from "./names.js";

export const NEWC_MAGIC = "070701";
export const TRAILER_NAME = "TRAILER!!!";

export type CpioType = keyof typeof FILE_TYPE_BITS;

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
  const name = Buffer.concat([encodeName(entry.name), Buffer.of(0)]);
  const fields = [
    entry.ino,
    modeOf(entry.type, entry.mode),
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

// ---------------------------------------------------------------------------
// Streaming parser

/** The "check" field is a sum of the data bytes in the "crc" variant (magic 070702). */
export const NEWC_CRC_MAGIC = "070702";
/** The longest name the kernel's initramfs unpacker accepts (PATH_MAX), NUL included. */
export const MAX_NAME_SIZE = 4096;
const HEADER_SIZE = 110;
const S_IFSOCK = 0o140000;

export type CpioHeaderType = CpioType | "socket";

/** One entry as a parser reads it. */
export interface CpioHeader {
  /** The name exactly as stored (without its NUL), e.g. "usr/bin/env", "./etc" or ".". */
  name: string;
  type: CpioHeaderType;
  /** Permission bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  /** Bytes of data: a file's content (a symlink's target is given in `linkTarget` instead). */
  size: number;
  ino: number;
  /** The filesystem the entry came from: with `ino`, what makes hardlinks one file. */
  devMajor: number;
  devMinor: number;
  /** The device a char or block node stands for. */
  rdevMajor: number;
  rdevMinor: number;
  /** A symlink's target. */
  linkTarget?: string;
  format: "newc" | "crc";
}

export interface CpioParserEvents {
  /** A new entry; a regular file's `size` bytes of data follow through `onData`. */
  onEntry(header: CpioHeader, dataOffset: number): void;
  onData?(chunk: Buffer): void;
  onEntryEnd?(): void;
  /** A TRAILER!!! entry: one archive of the stream ends (the kernel forgets hardlinks here). */
  onTrailer?(): void;
}

export class CpioFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CpioFormatError";
  }
}

type CpioParserState =
  /** Before an archive, or after one's trailer: zero padding, then another archive or the end. */
  | { kind: "between" }
  | { kind: "header" }
  | { kind: "data"; name: string; remaining: number; padding: number; crc?: { expected: number; sum: number } }
  | { kind: "link"; header: CpioHeader; dataOffset: number; remaining: number; padding: number; parts: Buffer[] }
  /** Padding, a trailer's data, or data the kernel ignores; then `next`. */
  | { kind: "skip"; remaining: number; next: "header" | "between" }
  /** Met bytes that are not cpio after an archive's end (e.g. a compressed part of an initrd). */
  | { kind: "stopped" };

/**
 * Streaming newc ("070701") and crc ("070702") cpio parser, push-based like TarParser: feed
 * it bytes with `write`, call `end` when the input is done. It reads what the kernel's
 * initramfs unpacker reads: several archives back to back, each ending with TRAILER!!!,
 * with zero padding between them. File data passes through in the chunks it arrived in and
 * is never gathered; only headers (at most PATH_MAX of name) and symlink targets are.
 *
 * After an archive's trailer and padding, bytes that cannot start a header (anything but
 * "0") stop the parser: `write` returns how many bytes of its chunk it consumed, and
 * `stopped` turns true, so a caller can go on with what follows (an initrd's compressed part).
 */
export class CpioParser {
  private state: CpioParserState = { kind: "between" };
  private pending: Buffer = Buffer.alloc(0);
  private offset = 0;
  private trailers = 0;
  private entries = 0;

  constructor(private readonly events: CpioParserEvents) {}

  /** Bytes consumed so far, headers and padding included. */
  get position(): number {
    return this.offset;
  }

  /** True once the parser met data that is not cpio after an archive (see the class doc). */
  get stopped(): boolean {
    return this.state.kind === "stopped";
  }

  /** How many archives (trailers) were read. */
  get archives(): number {
    return this.trailers;
  }

  /** Feeds bytes; returns how many of `chunk` were consumed (all of it unless the parser stopped). */
  write(chunk: Buffer): number {
    if (this.state.kind === "stopped") return 0;
    let input = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    while (input.length > 0) {
      const state: CpioParserState = this.state;
      if (state.kind === "stopped") break;
      if (state.kind === "between") {
        let zeros = 0;
        while (zeros < input.length && input[zeros] === 0) zeros++;
        input = input.subarray(zeros);
        this.offset += zeros;
        if (input.length === 0) break;
        if (input[0] !== 0x30 /* "0", as in 070701 */) {
          this.state = { kind: "stopped" };
          break;
        }
        if (this.offset % 4 !== 0) throw new CpioFormatError(`broken padding: an archive starts at byte ${this.offset}, which is not a multiple of 4`);
        this.state = { kind: "header" };
      } else if (state.kind === "header") {
        const needed = this.headerLength(input);
        if (needed === undefined || input.length < needed) {
          this.pending = Buffer.from(input);
          input = input.subarray(input.length);
          break;
        }
        const block = input.subarray(0, needed);
        input = input.subarray(needed);
        this.offset += needed;
        this.readHeader(block);
      } else if (state.kind === "data") {
        const take = Math.min(state.remaining, input.length);
        if (take > 0) {
          const data = input.subarray(0, take);
          if (state.crc) for (let i = 0; i < data.length; i++) state.crc.sum = (state.crc.sum + data[i]!) >>> 0;
          this.events.onData?.(data);
        }
        input = input.subarray(take);
        this.offset += take;
        state.remaining -= take;
        if (state.remaining === 0) {
          if (state.crc && state.crc.sum !== state.crc.expected) {
            throw new CpioFormatError(`checksum mismatch in '${state.name}': the header says ${state.crc.expected}, the data sums to ${state.crc.sum} (the archive is corrupted)`);
          }
          this.events.onEntryEnd?.();
          this.state = state.padding > 0 ? { kind: "skip", remaining: state.padding, next: "header" } : { kind: "header" };
        }
      } else if (state.kind === "link") {
        const take = Math.min(state.remaining, input.length);
        state.parts.push(Buffer.from(input.subarray(0, take)));
        input = input.subarray(take);
        this.offset += take;
        state.remaining -= take;
        if (state.remaining === 0) {
          const target = Buffer.concat(state.parts);
          // Some writers count a NUL after the target; the kernel stops at it too.
          const end = target.indexOf(0);
          const header = { ...state.header, linkTarget: decodeName(target.subarray(0, end < 0 ? target.length : end)) };
          this.events.onEntry(header, state.dataOffset);
          this.events.onEntryEnd?.();
          this.state = state.padding > 0 ? { kind: "skip", remaining: state.padding, next: "header" } : { kind: "header" };
        }
      } else {
        const take = Math.min(state.remaining, input.length);
        input = input.subarray(take);
        this.offset += take;
        state.remaining -= take;
        if (state.remaining === 0) this.state = { kind: state.next };
      }
    }
    return Math.max(0, chunk.length - input.length);
  }

  /** Signals the end of input; throws when an archive was cut short or there was none. */
  end(): void {
    const state = this.state;
    if (state.kind === "stopped") return;
    if (state.kind === "between") {
      if (this.trailers === 0) throw new CpioFormatError(this.offset === 0 ? "the input is empty: no cpio archive" : "the input holds only zero bytes: no cpio archive");
      return;
    }
    const where = `at byte ${this.offset + this.pending.length}`;
    if (state.kind === "data") throw new CpioFormatError(`the archive is truncated ${where}, in the data of '${state.name}' (${state.remaining} bytes missing)`);
    if (state.kind === "link") throw new CpioFormatError(`the archive is truncated ${where}, in the target of the symlink '${state.header.name}'`);
    if (state.kind === "header" && this.pending.length === 0 && this.entries > 0) {
      throw new CpioFormatError(`the archive ends ${where} without its TRAILER!!! entry: it is truncated`);
    }
    throw new CpioFormatError(`the archive is truncated ${where}`);
  }

  /** Length of the header at the start of `input` with its name and padding, once known. */
  private headerLength(input: Buffer): number | undefined {
    if (input.length < HEADER_SIZE) return undefined;
    const magic = input.toString("latin1", 0, 6);
    if (magic !== NEWC_MAGIC && magic !== NEWC_CRC_MAGIC) {
      const hint = magic === "070707" ? "an odc (portable ASCII) archive, but the kernel and osbuild read newc (cpio -H newc)" : "not a newc cpio header, or the archive is corrupted";
      throw new CpioFormatError(`bad cpio magic '${printable(magic)}' at byte ${this.offset}: ${hint}`);
    }
    const nameSize = hexField(input, 11, this.offset);
    if (nameSize < 1 || nameSize > MAX_NAME_SIZE) throw new CpioFormatError(`entry at byte ${this.offset} has a name of ${nameSize} bytes (at most ${MAX_NAME_SIZE} with its NUL): the archive is corrupted`);
    return HEADER_SIZE + nameSize + newcPadding(HEADER_SIZE + nameSize);
  }

  private readHeader(block: Buffer): void {
    const start = this.offset - block.length;
    const field = (index: number): number => hexField(block, index, start);
    const nameSize = field(11);
    const nameBytes = block.subarray(HEADER_SIZE, HEADER_SIZE + nameSize);
    if (nameBytes[nameBytes.length - 1] !== 0) throw new CpioFormatError(`the name of the entry at byte ${start} does not end with a NUL: the archive is corrupted`);
    const name = decodeName(nameBytes.subarray(0, nameSize - 1));
    const rawMode = field(1);
    const size = field(6);
    const format = block.toString("latin1", 0, 6) === NEWC_CRC_MAGIC ? "crc" : "newc";
    const padding = newcPadding(size);

    if (name === TRAILER_NAME) {
      this.trailers++;
      this.entries = 0;
      this.events.onTrailer?.();
      this.state = size + padding > 0 ? { kind: "skip", remaining: size + padding, next: "between" } : { kind: "between" };
      return;
    }
    this.entries++;
    const type = typeOfMode(rawMode);
    if (type === undefined) throw new CpioFormatError(`entry '${name}' at byte ${start} has the unknown file type ${(rawMode & 0o170000).toString(8).padStart(6, "0")}`);
    const header: CpioHeader = {
      name,
      type,
      mode: rawMode & 0o7777,
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      size,
      ino: field(0),
      devMajor: field(7),
      devMinor: field(8),
      rdevMajor: field(9),
      rdevMinor: field(10),
      format,
    };
    if (type === "symlink") {
      if (size === 0 || size > MAX_NAME_SIZE) throw new CpioFormatError(`symlink '${name}' has a target of ${size} bytes (1 to ${MAX_NAME_SIZE}): the archive is corrupted`);
      this.state = { kind: "link", header, dataOffset: this.offset, remaining: size, padding, parts: [] };
      return;
    }
    this.events.onEntry(header, this.offset);
    if (type === "file") {
      const crc = format === "crc" ? { expected: field(12), sum: 0 } : undefined;
      if (size > 0) {
        this.state = { kind: "data", name, remaining: size, padding, ...(crc ? { crc } : {}) };
        return;
      }
      if (crc && crc.expected !== 0) throw new CpioFormatError(`checksum mismatch in '${name}': the header says ${crc.expected} for an empty file`);
    }
    // Directories, nodes and empty files: the kernel skips any data they claim to have.
    this.events.onEntryEnd?.();
    this.state = size + padding > 0 ? { kind: "skip", remaining: size + padding, next: "header" } : { kind: "header" };
  }
}

function typeOfMode(mode: number): CpioHeaderType | undefined {
  const format = mode & 0o170000;
  if (format === S_IFSOCK) return "socket";
  return (Object.entries(FILE_TYPE_BITS).find(([, bits]) => bits === format)?.[0] as CpioType | undefined) ?? undefined;
}

/** Field `index` (0 = c_ino … 12 = c_check) of the header at the start of `block`. */
function hexField(block: Buffer, index: number, headerOffset: number): number {
  const text = block.toString("latin1", 6 + index * 8, 14 + index * 8);
  if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new CpioFormatError(`the cpio header at byte ${headerOffset} has '${printable(text)}' where a hexadecimal number belongs: the archive is corrupted`);
  return parseInt(text, 16);
}

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
