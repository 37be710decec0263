// GUID Partition Table (UEFI spec, chapter "GUID Partition Table (GPT) Disk Layout"), 512-byte sectors.
//
// Disk layout written here:
//   LBA 0        protective MBR: one 0xEE partition covering the disk, so MBR-only tools keep off
//   LBA 1        primary header
//   LBA 2..33    primary partition entry array (128 entries × 128 bytes)
//   LBA 34..N-34 usable space
//   LBA N-33..N-2 backup entry array (same bytes as the primary one)
//   LBA N-1      backup header (same fields, with its own and the other header's LBA swapped)
//
// Everything is a function of the inputs (no random GUIDs, no timestamps) so a cached image
// is bit-for-bit reproducible; use `guidFromHash` to derive GUIDs from a cache key.

import { encodeMbr, MBR_TYPE_GPT_PROTECTIVE, SECTOR_SIZE } from "./mbr.js";

export const LINUX_FILESYSTEM_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

const SIGNATURE = "EFI PART";
const REVISION_1_0 = 0x00010000;
const HEADER_SIZE = 92;
const ENTRY_COUNT = 128;
const ENTRY_SIZE = 128;
const ENTRY_ARRAY_SECTORS = (ENTRY_COUNT * ENTRY_SIZE) / SECTOR_SIZE; // 32
/** Protective MBR + header + entry array. */
const FIRST_USABLE_LBA = 2 + ENTRY_ARRAY_SECTORS; // 34
const NAME_UNITS = 36; // UTF-16 code units in the 72-byte name field
const EMPTY_GUID = "00000000-0000-0000-0000-000000000000";
const GUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface GptPartition {
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
  typeGuid: string;
  uniqueGuid: string;
  /** At most 36 UTF-16 code units. */
  name: string;
  /** Bit 0 required, 1 no-block-io, 2 legacy-BIOS-bootable, 48..63 type specific. */
  attributes?: bigint;
}

export interface EncodedGpt {
  /** LBA 0..33: protective MBR, primary header, primary entry array. Goes at byte 0. */
  primary: Buffer;
  /** LBA N-33..N-1: backup entry array, then backup header. Goes at `backupOffset`. */
  backup: Buffer;
  backupOffset: number;
}

export function encodeGpt(diskSizeBytes: number, partitions: readonly GptPartition[], options: { diskGuid: string; sectorSize?: 512 }): EncodedGpt {
  const sectorSize = options.sectorSize ?? SECTOR_SIZE;
  if (sectorSize !== SECTOR_SIZE) throw new RangeError(`only ${SECTOR_SIZE}-byte sectors are supported, got ${String(sectorSize)}`);
  if (!Number.isSafeInteger(diskSizeBytes) || diskSizeBytes % SECTOR_SIZE !== 0) throw new RangeError(`disk size ${diskSizeBytes} is not a whole number of ${SECTOR_SIZE}-byte sectors`);
  const diskSectors = diskSizeBytes / SECTOR_SIZE;
  const lastLba = diskSectors - 1;
  const lastUsableLba = lastLba - 1 - ENTRY_ARRAY_SECTORS;
  if (lastUsableLba < FIRST_USABLE_LBA) throw new RangeError(`a ${diskSizeBytes}-byte disk is too small for a GPT`);
  if (partitions.length > ENTRY_COUNT) throw new RangeError(`a GPT holds at most ${ENTRY_COUNT} partitions, got ${partitions.length}`);

  const entries = Buffer.alloc(ENTRY_COUNT * ENTRY_SIZE);
  partitions.forEach((partition, index) => {
    checkPartition(partition, index, lastUsableLba);
    for (const other of partitions.slice(0, index)) {
      if (partition.firstLba <= other.lastLba && other.firstLba <= partition.lastLba) throw new RangeError(`GPT partition ${index + 1} overlaps an earlier partition`);
    }
    encodeEntry(partition).copy(entries, index * ENTRY_SIZE);
  });
  const entriesCrc = crc32(entries);

  const header = (myLba: number, alternateLba: number, entriesLba: number): Buffer => {
    const sector = Buffer.alloc(SECTOR_SIZE);
    sector.write(SIGNATURE, 0, "latin1");
    sector.writeUInt32LE(REVISION_1_0, 8);
    sector.writeUInt32LE(HEADER_SIZE, 12);
    // 16: header CRC, computed over the header with this field zero; 20: reserved
    sector.writeBigUInt64LE(BigInt(myLba), 24);
    sector.writeBigUInt64LE(BigInt(alternateLba), 32);
    sector.writeBigUInt64LE(BigInt(FIRST_USABLE_LBA), 40);
    sector.writeBigUInt64LE(BigInt(lastUsableLba), 48);
    encodeGuid(options.diskGuid, "disk GUID").copy(sector, 56);
    sector.writeBigUInt64LE(BigInt(entriesLba), 72);
    sector.writeUInt32LE(ENTRY_COUNT, 80);
    sector.writeUInt32LE(ENTRY_SIZE, 84);
    sector.writeUInt32LE(entriesCrc, 88);
    sector.writeUInt32LE(crc32(sector.subarray(0, HEADER_SIZE)), 16);
    return sector;
  };

  // The 0xEE partition covers LBA 1 to the end of the disk, or as much as 32 bits can say.
  const protectiveMbr = encodeMbr([{ startLba: 1, sizeLba: Math.min(diskSectors - 1, 0xffffffff), type: MBR_TYPE_GPT_PROTECTIVE }], { diskSignature: 0 });
  const backupEntriesLba = lastLba - ENTRY_ARRAY_SECTORS;
  return {
    primary: Buffer.concat([protectiveMbr, header(1, lastLba, 2), entries]),
    backup: Buffer.concat([entries, header(lastLba, 1, backupEntriesLba)]),
    backupOffset: backupEntriesLba * SECTOR_SIZE,
  };
}

// ---------------------------------------------------------------------------
// Reader

/** Random access to a disk image: `length` bytes at byte `offset`. */
export type ReadAt = (offset: number, length: number) => Buffer;

export interface ParsedGpt {
  diskGuid: string;
  firstUsableLba: number;
  lastUsableLba: number;
  /** Where the primary header says the backup header is (the disk's last LBA). */
  backupLba: number;
  entriesLba: number;
  /** Used entries (non-zero type GUID), in entry order. */
  partitions: Array<Required<GptPartition>>;
  /** The backup header at `backupLba` has a valid CRC, points back at LBA 1, and its entry array matches. */
  backupValid: boolean;
}

/** Reads the primary GPT (throwing when its signature or CRCs are wrong) and checks the backup. */
export function parseGpt(image: Buffer | ReadAt): ParsedGpt {
  const readAt: ReadAt = Buffer.isBuffer(image) ? bufferReader(image) : image;
  const primary = readHeader(readAt, 1);
  if (typeof primary === "string") throw new Error(`no valid primary GPT header: ${primary}`);
  const partitions: Array<Required<GptPartition>> = [];
  for (let index = 0; index < primary.entryCount; index++) {
    const entry = primary.entries.subarray(index * primary.entrySize, index * primary.entrySize + ENTRY_SIZE);
    const typeGuid = decodeGuid(entry, 0);
    if (typeGuid === EMPTY_GUID) continue;
    const nameField = entry.subarray(56, 56 + NAME_UNITS * 2);
    let nameUnits = 0;
    while (nameUnits < NAME_UNITS && nameField.readUInt16LE(nameUnits * 2) !== 0) nameUnits++;
    partitions.push({
      firstLba: toNumber(entry.readBigUInt64LE(32)),
      lastLba: toNumber(entry.readBigUInt64LE(40)),
      typeGuid,
      uniqueGuid: decodeGuid(entry, 16),
      name: nameField.toString("utf16le", 0, nameUnits * 2),
      attributes: entry.readBigUInt64LE(48),
    });
  }
  let backupValid = false;
  try {
    const backup = readHeader(readAt, primary.alternateLba);
    backupValid = typeof backup !== "string" && backup.alternateLba === 1 && backup.entries.equals(primary.entries) && backup.diskGuid === primary.diskGuid;
  } catch {
    /* unreadable (image shorter than the header says): not valid */
  }
  return {
    diskGuid: primary.diskGuid,
    firstUsableLba: primary.firstUsableLba,
    lastUsableLba: primary.lastUsableLba,
    backupLba: primary.alternateLba,
    entriesLba: primary.entriesLba,
    partitions,
    backupValid,
  };
}

interface RawHeader {
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entries: Buffer;
}

/** The header at `lba` with its entry array, or why it is not a valid one. */
function readHeader(readAt: ReadAt, lba: number): RawHeader | string {
  const sector = readAt(lba * SECTOR_SIZE, SECTOR_SIZE);
  if (sector.toString("latin1", 0, 8) !== SIGNATURE) return `no "${SIGNATURE}" signature at LBA ${lba}`;
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < HEADER_SIZE || headerSize > SECTOR_SIZE) return `header size ${headerSize}`;
  const copy = Buffer.from(sector.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== sector.readUInt32LE(16)) return `header CRC mismatch at LBA ${lba}`;
  if (toNumber(sector.readBigUInt64LE(24)) !== lba) return `header at LBA ${lba} says it is at another LBA`;
  const entryCount = sector.readUInt32LE(80);
  const entrySize = sector.readUInt32LE(84);
  if (entrySize < ENTRY_SIZE || entrySize % 8 !== 0 || entryCount * entrySize > 1 << 24) return `unsupported entry array (${entryCount} × ${entrySize})`;
  const entriesLba = toNumber(sector.readBigUInt64LE(72));
  const entries = readAt(entriesLba * SECTOR_SIZE, entryCount * entrySize);
  if (crc32(entries) !== sector.readUInt32LE(88)) return `entry array CRC mismatch (header at LBA ${lba})`;
  return {
    alternateLba: toNumber(sector.readBigUInt64LE(32)),
    firstUsableLba: toNumber(sector.readBigUInt64LE(40)),
    lastUsableLba: toNumber(sector.readBigUInt64LE(48)),
    diskGuid: decodeGuid(sector, 56),
    entriesLba,
    entryCount,
    entrySize,
    entries,
  };
}

function bufferReader(image: Buffer): ReadAt {
  return (offset, length) => {
    if (offset + length > image.length) throw new RangeError(`read of ${length} bytes at ${offset} is beyond the ${image.length}-byte image`);
    return image.subarray(offset, offset + length);
  };
}

function toNumber(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`GPT value ${value} is too large`);
  return Number(value);
}

// ---------------------------------------------------------------------------
// Entries and GUIDs

function encodeEntry(partition: GptPartition): Buffer {
  const entry = Buffer.alloc(ENTRY_SIZE);
  encodeGuid(partition.typeGuid, "type GUID").copy(entry, 0);
  encodeGuid(partition.uniqueGuid, "unique GUID").copy(entry, 16);
  entry.writeBigUInt64LE(BigInt(partition.firstLba), 32);
  entry.writeBigUInt64LE(BigInt(partition.lastLba), 40);
  entry.writeBigUInt64LE(partition.attributes ?? 0n, 48);
  entry.write(partition.name, 56, NAME_UNITS * 2, "utf16le");
  return entry;
}

function checkPartition(partition: GptPartition, index: number, lastUsableLba: number): void {
  const label = `GPT partition ${index + 1}`;
  const { firstLba, lastLba } = partition;
  if (!Number.isSafeInteger(firstLba) || !Number.isSafeInteger(lastLba) || firstLba > lastLba) throw new RangeError(`${label} has an invalid range ${firstLba}..${lastLba}`);
  if (firstLba < FIRST_USABLE_LBA || lastLba > lastUsableLba) throw new RangeError(`${label} (${firstLba}..${lastLba}) is outside the usable sectors ${FIRST_USABLE_LBA}..${lastUsableLba}`);
  if (partition.typeGuid.toUpperCase() === EMPTY_GUID) throw new RangeError(`${label} has the all-zero type GUID, which marks an unused entry`);
  // A name of exactly 36 units has no terminator; that is allowed (the field is fixed-size).
  if (partition.name.length > NAME_UNITS) throw new RangeError(`${label} name '${partition.name}' is longer than ${NAME_UNITS} UTF-16 code units`);
  const attributes = partition.attributes ?? 0n;
  if (attributes < 0n || attributes >= 1n << 64n) throw new RangeError(`${label} attributes do not fit in 64 bits`);
}

/**
 * The 16 on-disk bytes of a GUID string: the first three groups are little-endian integers,
 * the last two groups are bytes in the order written ("mixed-endian", as in Microsoft's GUID struct).
 */
export function encodeGuid(guid: string, what = "GUID"): Buffer {
  if (!GUID_PATTERN.test(guid)) throw new RangeError(`${what} '${guid}' is not of the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`);
  const hex = guid.replace(/-/g, "");
  const bytes = Buffer.from(hex, "hex");
  bytes.subarray(0, 4).reverse();
  bytes.subarray(4, 6).reverse();
  bytes.subarray(6, 8).reverse();
  return bytes;
}

/** The upper-case GUID string (as sgdisk and sfdisk print it) of 16 on-disk bytes at `offset`. */
export function decodeGuid(source: Buffer, offset = 0): string {
  const bytes = Buffer.from(source.subarray(offset, offset + 16));
  if (bytes.length !== 16) throw new RangeError("a GUID is 16 bytes");
  bytes.subarray(0, 4).reverse();
  bytes.subarray(4, 6).reverse();
  bytes.subarray(6, 8).reverse();
  return formatGuid(bytes);
}

/**
 * A random-looking (RFC 4122 version 4, variant 1) GUID made from the first 16 bytes of a hex
 * digest, so partition and disk GUIDs follow from a cache key instead of from a random source.
 */
export function guidFromHash(hex: string): string {
  if (!/^[0-9a-f]{32}/i.test(hex)) throw new RangeError(`need at least 32 hex digits to make a GUID, got '${hex}'`);
  const bytes = Buffer.from(hex.slice(0, 32), "hex");
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40; // version 4
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80; // variant 10xx
  return formatGuid(bytes);
}

function formatGuid(bytes: Buffer): string {
  const hex = bytes.toString("hex").toUpperCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

// ---------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as GPT requires. Node 20 has no
// zlib.crc32, and a 1 KiB table is all it takes.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let value = byte;
    for (let bit = 0; bit < 8; bit++) value = value & 1 ? 0xedb88320 ^ (value >>> 1) : value >>> 1;
    table[byte] = value >>> 0;
  }
  return table;
})();

export function crc32(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = (CRC_TABLE[(crc ^ byte) & 0xff] ?? 0) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
