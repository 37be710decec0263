// Test-only newc helpers: an archive builder from the project's header encoder, and a
// reference reader kept separate from formats/cpio.ts's streaming CpioParser.

import { FILE_TYPE_BITS } from "../../formats/mode.js";
import { NEWC_MAGIC, TRAILER_NAME, encodeNewcHeader, newcPadding, newcTrailer, type CpioEntry, type CpioType } from "../../formats/cpio.js";

/** Headers, data and padding of `entries`, and the trailer unless told otherwise. */
export function archive(entries: Array<CpioEntry & { data?: Buffer }>, trailer = true): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(encodeNewcHeader(entry));
    if (entry.data) parts.push(entry.data, Buffer.alloc(newcPadding(entry.data.length)));
  }
  if (trailer) parts.push(newcTrailer());
  return Buffer.concat(parts);
}

export interface ParsedNewcEntry extends CpioEntry {
  /** Offset of the entry's data in the archive. */
  dataOffset: number;
}

/** Reads every entry of an uncompressed newc archive: a whole-buffer reader written apart from CpioParser, to check it against. */
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
    const type = (Object.entries(FILE_TYPE_BITS).find(([, bits]) => bits === format)?.[0] ?? "file") as CpioType;
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
