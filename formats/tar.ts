// POSIX tar (ustar + pax extended headers): a push parser and a deterministic header writer.
//
// The parser is push-based (`write(chunk)` → callbacks) so that one implementation serves
// synchronous loops in worker threads and async streams alike, and never buffers entry
// bodies. The writer emits only what a reproducible layer needs: numeric owners, integer
// mtimes, and pax records for anything ustar cannot hold (long names, xattrs, big numbers).
// Archives come from anywhere: every number is checked against the format (a header that
// says otherwise is refused, naming its entry), and names are bytes (see names.ts).

import { decodeName, encodeName } from "./names.js";

export const BLOCK = 512;

export type TarEntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface TarHeader {
  /** Normalized path: no leading "./" or "/", no trailing "/"; "" never occurs. */
  path: string;
  /** The name exactly as stored in the archive, for error messages. */
  rawPath: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Symlink target as stored, or the (raw) path a hardlink points to. */
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, Buffer>;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarFormatError";
  }
}

// ---------------------------------------------------------------------------
// Writer

const TYPE_FLAGS: Record<TarEntryType, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6",
};

const OCTAL_LIMIT_8 = 0o7777777; // 7 digits + NUL
const OCTAL_LIMIT_12 = 0o77777777777; // 11 digits + NUL

export type TarWritable = Pick<TarHeader, "path" | "type" | "mode" | "uid" | "gid" | "size" | "mtime"> &
  Partial<Pick<TarHeader, "linkTarget" | "devMajor" | "devMinor" | "xattrs">>;

/** The header block(s) of one entry: a pax extended header when needed, then ustar. */
export function encodeTarHeader(entry: TarWritable): Buffer {
  const name = entry.type === "dir" ? `${entry.path}/` : entry.path;
  const pax: Array<[string, Buffer]> = [];
  const nameBytes = encodeName(name);
  if (nameBytes.length > 100 || !isPrintableAscii(nameBytes)) pax.push(["path", nameBytes]);
  const linkBytes = encodeName(entry.linkTarget ?? "");
  if (linkBytes.length > 100 || !isPrintableAscii(linkBytes)) pax.push(["linkpath", linkBytes]);
  const size = entry.type === "file" ? entry.size : 0;
  if (size > OCTAL_LIMIT_12) pax.push(["size", Buffer.from(String(size))]);
  if (entry.uid > OCTAL_LIMIT_8) pax.push(["uid", Buffer.from(String(entry.uid))]);
  if (entry.gid > OCTAL_LIMIT_8) pax.push(["gid", Buffer.from(String(entry.gid))]);
  if (entry.mtime < 0 || entry.mtime > OCTAL_LIMIT_12) pax.push(["mtime", Buffer.from(String(entry.mtime))]);
  if (entry.xattrs) {
    for (const key of Object.keys(entry.xattrs).sort()) pax.push([`SCHILY.xattr.${key}`, entry.xattrs[key]!]);
  }

  const ustar = Buffer.alloc(BLOCK);
  // With a pax record, the ustar fields hold a prefix of the bytes: the record is what counts.
  nameBytes.copy(ustar, 0, 0, Math.min(nameBytes.length, 100));
  writeOctal(ustar, 100, 8, entry.mode & 0o7777);
  writeOctal(ustar, 108, 8, Math.min(entry.uid, OCTAL_LIMIT_8));
  writeOctal(ustar, 116, 8, Math.min(entry.gid, OCTAL_LIMIT_8));
  writeOctal(ustar, 124, 12, Math.min(size, OCTAL_LIMIT_12));
  writeOctal(ustar, 136, 12, Math.max(0, Math.min(entry.mtime, OCTAL_LIMIT_12)));
  ustar.write(TYPE_FLAGS[entry.type], 156, "latin1");
  linkBytes.copy(ustar, 157, 0, Math.min(linkBytes.length, 100));
  ustar.write("ustar\u000000", 257, "latin1");
  if (entry.type === "char" || entry.type === "block") {
    writeOctal(ustar, 329, 8, entry.devMajor ?? 0);
    writeOctal(ustar, 337, 8, entry.devMinor ?? 0);
  }
  writeChecksum(ustar);

  if (pax.length === 0) return ustar;
  const records = Buffer.concat(pax.map(([key, value]) => encodePaxRecord(key, value)));
  const paxHeader = Buffer.alloc(BLOCK);
  paxHeader.write("PaxHeader", 0, 100, "latin1");
  writeOctal(paxHeader, 100, 8, 0o644);
  writeOctal(paxHeader, 108, 8, 0);
  writeOctal(paxHeader, 116, 8, 0);
  writeOctal(paxHeader, 124, 12, records.length);
  writeOctal(paxHeader, 136, 12, 0);
  paxHeader.write("x", 156, "latin1");
  paxHeader.write("ustar\u000000", 257, "latin1");
  writeChecksum(paxHeader);
  return Buffer.concat([paxHeader, records, Buffer.alloc(paddingFor(records.length)), ustar]);
}

/** Zero bytes that follow `size` bytes of entry data up to the next block. */
export function paddingFor(size: number): number {
  const rest = size % BLOCK;
  return rest === 0 ? 0 : BLOCK - rest;
}

/** The end-of-archive marker: two zero blocks. */
export function tarTrailer(): Buffer {
  return Buffer.alloc(BLOCK * 2);
}

function encodePaxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(" "), encodeName(key), Buffer.from("="), value, Buffer.from("\n")]);
  // The length prefix counts its own digits, so grow it until it is self-consistent.
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

function isPrintableAscii(bytes: Buffer): boolean {
  for (const byte of bytes) if (byte > 0x7e || byte < 0x20) return false;
  return true;
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  const digits = value.toString(8).padStart(length - 1, "0");
  block.write(`${digits}\0`, offset, length, "latin1");
}

function writeChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i]!;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
}

// ---------------------------------------------------------------------------
// Parser

export interface TarParserEvents {
  /** A new entry; its `size` bytes of data follow through `onData`. */
  onEntry(header: TarHeader, dataOffset: number): void;
  onData?(chunk: Buffer): void;
  onEntryEnd?(): void;
}

type ParserState =
  | { kind: "header" }
  | { kind: "data"; remaining: number; padding: number }
  | { kind: "meta"; remaining: number; padding: number; typeflag: string; parts: Buffer[] }
  | { kind: "padding"; remaining: number }
  | { kind: "end" };

/**
 * Streaming tar parser. Feed it bytes with `write`; call `end` when the input is done.
 * Understands ustar, pax (`x`, `g`), GNU long names (`L`, `K`) and base-256 numbers.
 */
export class TarParser {
  private state: ParserState = { kind: "header" };
  private pending: Buffer = Buffer.alloc(0);
  private offset = 0; // bytes consumed so far
  private pax: Record<string, Buffer> = {};
  private globalPax: Record<string, Buffer> = {};
  private longName?: string;
  private longLink?: string;
  private zeroBlocks = 0;

  constructor(private readonly events: TarParserEvents) {}

  /** Total bytes consumed, including headers and padding. */
  get position(): number {
    return this.offset;
  }

  get ended(): boolean {
    return this.state.kind === "end";
  }

  write(chunk: Buffer): void {
    let input = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    while (input.length > 0 && this.state.kind !== "end") {
      const state = this.state;
      if (state.kind === "header") {
        if (input.length < BLOCK) break;
        const block = input.subarray(0, BLOCK);
        input = input.subarray(BLOCK);
        this.offset += BLOCK;
        this.readHeader(block);
      } else if (state.kind === "data") {
        const take = Math.min(state.remaining, input.length);
        if (take > 0) this.events.onData?.(input.subarray(0, take));
        input = input.subarray(take);
        this.offset += take;
        state.remaining -= take;
        if (state.remaining === 0) {
          this.events.onEntryEnd?.();
          this.state = state.padding > 0 ? { kind: "padding", remaining: state.padding } : { kind: "header" };
        }
      } else if (state.kind === "meta") {
        const take = Math.min(state.remaining, input.length);
        state.parts.push(Buffer.from(input.subarray(0, take)));
        input = input.subarray(take);
        this.offset += take;
        state.remaining -= take;
        if (state.remaining === 0) {
          this.finishMeta(state.typeflag, Buffer.concat(state.parts));
          this.state = state.padding > 0 ? { kind: "padding", remaining: state.padding } : { kind: "header" };
        }
      } else if (state.kind === "padding") {
        const take = Math.min(state.remaining, input.length);
        input = input.subarray(take);
        this.offset += take;
        state.remaining -= take;
        if (state.remaining === 0) this.state = { kind: "header" };
      }
    }
    if (input.length > 0 && this.state.kind !== "end") this.pending = Buffer.from(input);
  }

  /** Signals the end of input; throws when the archive was cut short. */
  end(): void {
    if (this.state.kind === "end") return;
    if (this.state.kind === "header" && this.pending.length === 0) return; // no trailer: tolerated, like GNU tar
    throw new TarFormatError(`archive is truncated at byte ${this.offset + this.pending.length}`);
  }

  private readHeader(block: Buffer): void {
    if (isZeroBlock(block)) {
      this.zeroBlocks++;
      if (this.zeroBlocks >= 2) this.state = { kind: "end" };
      return;
    }
    this.zeroBlocks = 0;
    const at = this.offset - BLOCK;
    if (!checksumMatches(block)) {
      throw new TarFormatError(`bad header checksum at byte ${at}: not a tar archive, or corrupted`);
    }
    const typeflag = String.fromCharCode(block[156]!);
    const name = this.rawPathOf(block);
    const size = readNumber(block, 124, 12, "size", name);
    const padding = paddingFor(size);
    if (typeflag === "x" || typeflag === "g" || typeflag === "L" || typeflag === "K") {
      if (size > 64 * 1024 * 1024) throw new TarFormatError(`extended header of ${size} bytes at byte ${at} is too large`);
      this.state = size > 0 ? { kind: "meta", remaining: size, padding, typeflag, parts: [] } : { kind: "header" };
      if (size === 0) this.finishMeta(typeflag, Buffer.alloc(0));
      return;
    }
    const header = this.buildHeader(block, typeflag, name, size);
    const dataSize = header.type === "file" ? header.size : 0;
    this.events.onEntry(header, this.offset);
    this.pax = {};
    this.longName = undefined;
    this.longLink = undefined;
    // Only regular files carry data we hand out; skip whatever else a header declares.
    if (dataSize > 0) this.state = { kind: "data", remaining: dataSize, padding: paddingFor(dataSize) };
    else {
      this.events.onEntryEnd?.();
      const skip = header.type === "file" ? 0 : size + padding;
      this.state = skip > 0 ? { kind: "padding", remaining: skip } : { kind: "header" };
    }
  }

  private finishMeta(typeflag: string, data: Buffer): void {
    if (typeflag === "L") this.longName = decodeName(cBytes(data));
    else if (typeflag === "K") this.longLink = decodeName(cBytes(data));
    else if (typeflag === "x") Object.assign(this.pax, parsePax(data));
    else Object.assign(this.globalPax, parsePax(data));
  }

  /** The entry's name as stored: a pax path, a GNU long name, or the ustar prefix and name. */
  private rawPathOf(block: Buffer): string {
    const paxPath = this.pax.path ?? this.globalPax.path;
    if (paxPath) return decodeName(paxPath);
    if (this.longName !== undefined) return this.longName;
    const name = decodeName(cBytes(block.subarray(0, 100)));
    const isUstar = block.subarray(257, 262).toString("latin1") === "ustar";
    const prefix = isUstar ? decodeName(cBytes(block.subarray(345, 500))) : "";
    return prefix ? `${prefix}/${name}` : name;
  }

  private buildHeader(block: Buffer, typeflag: string, rawPath: string, size: number): TarHeader {
    const pax = { ...this.globalPax, ...this.pax };
    const rawLink = pax.linkpath ? decodeName(pax.linkpath) : (this.longLink ?? decodeName(cBytes(block.subarray(157, 257))));
    let type: TarEntryType;
    switch (typeflag) {
      case "0":
      case "\0":
      case "7":
        type = rawPath.endsWith("/") ? "dir" : "file";
        break;
      case "1":
        type = "hardlink";
        break;
      case "2":
        type = "symlink";
        break;
      case "3":
        type = "char";
        break;
      case "4":
        type = "block";
        break;
      case "5":
        type = "dir";
        break;
      case "6":
        type = "fifo";
        break;
      default:
        throw new TarFormatError(`entry '${rawPath}' has tar type '${typeflag}', which is not supported (sparse or vendor-specific entries)`);
    }
    const number = (field: "uid" | "gid", offset: number): number => (pax[field] ? paxId(pax[field], field, rawPath) : readNumber(block, offset, 8, field, rawPath));
    const header: TarHeader = {
      path: normalizeTarPath(rawPath),
      rawPath,
      type,
      mode: readNumber(block, 100, 8, "mode", rawPath) & 0o7777,
      uid: number("uid", 108),
      gid: number("gid", 116),
      size: type === "file" ? (pax.size ? paxSize(pax.size, rawPath) : size) : 0,
      mtime: pax.mtime ? paxTime(pax.mtime, rawPath) : readNumber(block, 136, 12, "mtime", rawPath),
    };
    if (type === "symlink" || type === "hardlink") header.linkTarget = rawLink;
    if (type === "char" || type === "block") {
      header.devMajor = readNumber(block, 329, 8, "device major", rawPath);
      header.devMinor = readNumber(block, 337, 8, "device minor", rawPath);
    }
    const xattrs: Record<string, Buffer> = {};
    for (const [key, value] of Object.entries(pax)) {
      if (key.startsWith("SCHILY.xattr.")) xattrs[key.slice("SCHILY.xattr.".length)] = value;
    }
    if (Object.keys(xattrs).length > 0) header.xattrs = xattrs;
    return header;
  }
}

/** "./a/b/" → "a/b"; "/a" → "/a" is kept absolute so that callers can reject it. */
export function normalizeTarPath(raw: string): string {
  let path = raw;
  while (path.startsWith("./")) path = path.slice(2);
  while (path.endsWith("/") && path.length > 1) path = path.slice(0, -1);
  if (path === ".") return "";
  return path.replace(/\/\.\//g, "/").replace(/\/+/g, "/");
}

function parsePax(data: Buffer): Record<string, Buffer> {
  const records: Record<string, Buffer> = Object.create(null) as Record<string, Buffer>;
  let position = 0;
  while (position < data.length) {
    const space = data.indexOf(0x20, position);
    const digits = space < 0 ? "" : data.subarray(position, space).toString("latin1");
    const length = /^[0-9]{1,9}$/.test(digits) ? Number(digits) : NaN;
    if (!(length > digits.length + 1) || position + length > data.length || data[position + length - 1] !== 0x0a) {
      throw new TarFormatError(`malformed pax record at offset ${position}`);
    }
    const record = data.subarray(space + 1, position + length - 1); // drop the trailing newline
    const equals = record.indexOf(0x3d);
    if (equals > 0) records[decodeName(record.subarray(0, equals))] = Buffer.from(record.subarray(equals + 1));
    position += length;
  }
  return records;
}

/** The bytes of a NUL-terminated field. */
function cBytes(bytes: Buffer): Buffer {
  const nul = bytes.indexOf(0);
  return bytes.subarray(0, nul < 0 ? bytes.length : nul);
}

/**
 * A numeric header field: octal digits (with the leading blanks and trailing NUL or blank
 * tar writers use), or GNU's base-256. Anything else, and negative or huge numbers, is
 * refused: no such number may reach a filesystem.
 */
function readNumber(block: Buffer, offset: number, length: number, field: string, entry: string): number {
  const bytes = block.subarray(offset, offset + length);
  if (bytes[0]! & 0x80) {
    if (bytes[0]! & 0x40) throw new TarFormatError(`entry '${entry}' has a negative ${field} (base-256)`);
    let value = bytes[0]! & 0x3f;
    for (let i = 1; i < bytes.length; i++) value = value * 256 + bytes[i]!;
    if (!Number.isSafeInteger(value)) throw new TarFormatError(`entry '${entry}' has a ${field} too large to be true (base-256)`);
    return value;
  }
  const text = cBytes(bytes).toString("latin1").replace(/^ +| +$/g, "");
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`entry '${entry}' has a malformed ${field} field (${JSON.stringify(text)}: not an octal number)`);
  return parseInt(text, 8);
}

/** A pax uid or gid: a decimal id Linux can have (0 to 2^32 - 2). */
function paxId(value: Buffer, field: string, entry: string): number {
  const text = value.toString("latin1");
  const id = /^[0-9]{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(id <= 0xfffffffe)) throw new TarFormatError(`entry '${entry}' has the pax ${field} ${JSON.stringify(text)}, which is not a valid id`);
  return id;
}

function paxSize(value: Buffer, entry: string): number {
  const text = value.toString("latin1");
  const size = /^[0-9]{1,16}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(size)) throw new TarFormatError(`entry '${entry}' has the pax size ${JSON.stringify(text)}, which is not a byte count`);
  return size;
}

/** A pax mtime: decimal seconds, maybe negative, maybe with a fraction (dropped). */
function paxTime(value: Buffer, entry: string): number {
  const text = value.toString("latin1");
  const match = /^(-?[0-9]{1,15})(\.[0-9]*)?$/.exec(text);
  if (!match) throw new TarFormatError(`entry '${entry}' has the pax mtime ${JSON.stringify(text)}, which is not a time`);
  const seconds = Number(match[1]);
  return match[2] && seconds < 0 && /[1-9]/.test(match[2]) ? seconds - 1 : seconds;
}

function checksumMatches(block: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  const text = cBytes(block.subarray(148, 156)).toString("latin1").trim();
  if (!/^[0-7]+$/.test(text)) return false;
  const stored = parseInt(text, 8);
  return stored === unsigned || stored === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}
