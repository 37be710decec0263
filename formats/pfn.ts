// The NVDIMM "PFN info block" (Linux `struct nd_pfn_sb`) that lets a Kata guest use its root
// disk image as a DAX-capable pmem device.
//
// Sources: Linux drivers/nvdimm/pfn.h (struct), pfn_devs.c (`nd_pfn_validate`, `nd_pfn_init`),
// claim.c (`nd_sb_checksum`), core.c (`nd_fletcher64`); Kata tools/osbuilder/image-builder/
// nsdax.gpl.c (what osbuilder writes) and image_builder.sh (`set_dax_header`, `create_disk`).
//
// Image layout osbuilder produces (image_builder.sh, with rootfs_start=1, dax_header_sz=2,
// dax_alignment=2, all in MiB; N = image size in MiB):
//
//   1. The inner image: an (N-2) MiB disk with `parted mklabel msdos mkpart primary <fs> 1MiB -1s`
//      (MBR #2, one partition from 1 MiB to the last sector) and the root filesystem in it.
//   2. A "header disk" of N MiB, partitioned the same way but with the partition at 3 MiB
//      (MBR #1), on which `nsdax <header> 2097152 2097152` writes this block at byte 4096.
//   3. The final image = the first 2 MiB of the header disk followed by the whole inner image:
//
//        0        MBR #1: partition 1 = 3 MiB .. end of image
//        4 KiB    PFN info block (this module), dataoff = 2 MiB, align = 2 MiB
//        2 MiB    MBR #2: partition 1 = 1 MiB .. end (relative to 2 MiB)
//        3 MiB    root filesystem
//
// Booted as a plain block device (virtio-blk), the guest reads MBR #1 and finds the filesystem at
// 3 MiB. Attached as an NVDIMM, the kernel's pfn driver finds this block at namespace offset 4 KiB,
// exposes /dev/pmem0 starting at `dataoff` (2 MiB), and the guest reads MBR #2 there, which again
// puts the filesystem at 2 + 1 = 3 MiB of the image. Both tables describe the same bytes.
//
// What nsdax.gpl.c fills in, and hence the defaults here: signature "NVDIMM_PFN_INFO\0",
// mode = PFN_MODE_RAM (1), align, dataoff, version_minor = 2 and the checksum. Everything else
// stays zero: uuid, parent_uuid (matches the null UUID of a label-less namespace, which the kernel
// compares against), flags, version_major (0: nsdax never sets it and the kernel never checks it),
// npfns (unused in RAM mode), start_pad, end_trunc. As version_minor < 4, the kernel assumes
// page_size = PAGE_SIZE and page_struct_size = 64 and ignores those fields.

/** Where the block lives in the namespace (and in the image): `nvdimm_read_bytes(ndns, SZ_4K, ...)`. */
export const PFN_INFO_OFFSET = 4096;
export const PFN_INFO_SIZE = 4096;
export const PFN_SIGNATURE = "NVDIMM_PFN_INFO";

/** osbuilder's `dax_header_sz` and `dax_alignment`: 2 MiB each (huge-page aligned data). */
export const KATA_DAX_HEADER_SIZE = 2 * 1024 * 1024;
export const KATA_DAX_ALIGNMENT = 2 * 1024 * 1024;

export const PfnMode = { none: 0, ram: 1, pmem: 2 } as const;
export type PfnModeValue = (typeof PfnMode)[keyof typeof PfnMode];

// Byte offsets of the fields of struct nd_pfn_sb (all little-endian).
const FIELD = {
  signature: 0, // u8[16]
  uuid: 16, // u8[16]
  parentUuid: 32, // u8[16]
  flags: 48, // le32
  versionMajor: 52, // le16
  versionMinor: 54, // le16
  dataOffset: 56, // le64, relative to namespace base + start_pad
  npfns: 64, // le64
  mode: 72, // le32
  startPad: 76, // le32, minor version 1
  endTrunc: 80, // le32, minor version 1
  align: 84, // le32, minor version 2
  pageSize: 88, // le32, minor version 4
  pageStructSize: 92, // le16, minor version 4
  // 94..4087 padding
  checksum: 4088, // le64
} as const;

const SZ_8K = 8192;
const PAGE = 4096;

export interface PfnInfoOptions {
  /** Bytes from the namespace start to the data the pmem device exposes, e.g. 2 MiB. */
  dataOffset: number;
  /** Base alignment of the mapping, e.g. 2 MiB. */
  alignment: number;
  /** Defaults to 0 like nsdax; only PFN_MODE_PMEM uses it. */
  npfns?: number;
  /** Defaults to 16 zero bytes like nsdax. */
  uuid?: Buffer;
  /** Must equal the namespace's UUID; zero (the default) for a label-less namespace. */
  parentUuid?: Buffer;
  /** Defaults to PFN_MODE_RAM: the kernel keeps the page map in RAM, not on the device. */
  mode?: PfnModeValue;
  /** Defaults to 0 and 2, as nsdax writes. */
  versionMajor?: number;
  versionMinor?: number;
}

/** The 4096-byte info block nsdax writes at byte 4096 of the header disk. */
export function encodePfnInfoBlock(options: PfnInfoOptions): Buffer {
  const { dataOffset, alignment } = options;
  const mode = options.mode ?? PfnMode.ram;
  if (!Number.isSafeInteger(alignment) || alignment < PAGE || alignment > 0xffffffff || (alignment & (alignment - 1)) !== 0) {
    throw new RangeError(`PFN alignment ${alignment} must be a power of two from ${PAGE} to 2^31`);
  }
  // nd_pfn_validate rejects an offset that is not page- and align-aligned; RAM mode also needs
  // the first 8 KiB (label space + this block) below the data.
  if (!Number.isSafeInteger(dataOffset) || dataOffset < SZ_8K || dataOffset % alignment !== 0) {
    throw new RangeError(`PFN data offset ${dataOffset} must be at least ${SZ_8K} and a multiple of the alignment ${alignment}`);
  }
  const npfns = options.npfns ?? 0;
  if (!Number.isSafeInteger(npfns) || npfns < 0) throw new RangeError(`PFN npfns ${npfns} must be a non-negative integer`);
  const block = Buffer.alloc(PFN_INFO_SIZE);
  block.write(PFN_SIGNATURE, FIELD.signature, "latin1"); // 15 characters + the NUL already there
  copyUuid(options.uuid, block, FIELD.uuid, "uuid");
  copyUuid(options.parentUuid, block, FIELD.parentUuid, "parent uuid");
  block.writeUInt16LE(options.versionMajor ?? 0, FIELD.versionMajor);
  block.writeUInt16LE(options.versionMinor ?? 2, FIELD.versionMinor);
  block.writeBigUInt64LE(BigInt(dataOffset), FIELD.dataOffset);
  block.writeBigUInt64LE(BigInt(npfns), FIELD.npfns);
  block.writeUInt32LE(mode, FIELD.mode);
  block.writeUInt32LE(alignment, FIELD.align);
  block.writeBigUInt64LE(pfnChecksum(block), FIELD.checksum);
  return block;
}

export interface ParsedPfnInfo {
  /** The signature up to its first NUL, e.g. "NVDIMM_PFN_INFO". */
  signature: string;
  uuid: Buffer;
  parentUuid: Buffer;
  flags: number;
  versionMajor: number;
  versionMinor: number;
  dataOffset: number;
  npfns: number;
  mode: number;
  startPad: number;
  endTrunc: number;
  align: number;
  /** Raw fields; only meaningful when versionMinor >= 4. */
  pageSize: number;
  pageStructSize: number;
  checksum: bigint;
  /** The stored checksum equals the kernel's `nd_sb_checksum` of the block. */
  checksumValid: boolean;
}

export function parsePfnInfoBlock(block: Buffer): ParsedPfnInfo {
  if (block.length < PFN_INFO_SIZE) throw new RangeError(`a PFN info block is ${PFN_INFO_SIZE} bytes, got ${block.length}`);
  const signatureField = block.subarray(FIELD.signature, FIELD.signature + 16);
  const nul = signatureField.indexOf(0);
  const checksum = block.readBigUInt64LE(FIELD.checksum);
  return {
    signature: signatureField.toString("latin1", 0, nul === -1 ? 16 : nul),
    uuid: Buffer.from(block.subarray(FIELD.uuid, FIELD.uuid + 16)),
    parentUuid: Buffer.from(block.subarray(FIELD.parentUuid, FIELD.parentUuid + 16)),
    flags: block.readUInt32LE(FIELD.flags),
    versionMajor: block.readUInt16LE(FIELD.versionMajor),
    versionMinor: block.readUInt16LE(FIELD.versionMinor),
    dataOffset: Number(block.readBigUInt64LE(FIELD.dataOffset)),
    npfns: Number(block.readBigUInt64LE(FIELD.npfns)),
    mode: block.readUInt32LE(FIELD.mode),
    startPad: block.readUInt32LE(FIELD.startPad),
    endTrunc: block.readUInt32LE(FIELD.endTrunc),
    align: block.readUInt32LE(FIELD.align),
    pageSize: block.readUInt32LE(FIELD.pageSize),
    pageStructSize: block.readUInt16LE(FIELD.pageStructSize),
    checksum,
    checksumValid: checksum === pfnChecksum(block.subarray(0, PFN_INFO_SIZE)),
  };
}

/**
 * The kernel's `nd_fletcher64(data, len, le=true)`: over 32-bit little-endian words, a 32-bit
 * running sum `lo` and a running sum of `lo` in `hi`; the result is `hi << 32 | lo` as a u64.
 * The kernel keeps `hi` in 64 bits, but the shift discards its upper half, so summing it modulo
 * 2^32 gives the same value. Trailing bytes beyond a multiple of 4 are ignored, as `len / 4` does.
 */
export function fletcher64(data: Buffer): bigint {
  let lo = 0;
  let hi = 0;
  const words = Math.floor(data.length / 4);
  for (let index = 0; index < words; index++) {
    lo = (lo + data.readUInt32LE(index * 4)) >>> 0;
    hi = (hi + lo) >>> 0;
  }
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** `nd_sb_checksum`: fletcher64 of the whole 4 KiB block with its checksum field taken as zero. */
function pfnChecksum(block: Buffer): bigint {
  const copy = Buffer.from(block.subarray(0, PFN_INFO_SIZE));
  copy.fill(0, FIELD.checksum, FIELD.checksum + 8);
  return fletcher64(copy);
}

function copyUuid(uuid: Buffer | undefined, block: Buffer, offset: number, what: string): void {
  if (uuid === undefined) return;
  if (uuid.length !== 16) throw new RangeError(`PFN ${what} must be 16 bytes, got ${uuid.length}`);
  uuid.copy(block, offset);
}
