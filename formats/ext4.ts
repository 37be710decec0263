// Just enough of the ext4 on-disk format to take out of an image what depends on the host
// rather than on the tree, with the checksums metadata_csum needs:
// - inode times: mke2fs -d copies each file's atime and ctime from the files it reads; no one
//   can set a host file's ctime, so they are made equal to the mtime, which comes from the layers;
// - the superblocks' lifetime write counter: mke2fs counts the bytes its I/O wrote, which varies
//   with the host tree it read (the same layers extracted afresh or copied from a kept tree).
// (See Documentation/filesystems/ext4/ in Linux.)

import { crc32cUpdate } from "./crc32c.js";
import { readExact, writeAll } from "./io.js";

const SUPERBLOCK_OFFSET = 1024;
const EXT4_MAGIC = 0xef53;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_CSUM_SEED = 0x2000;
const RO_COMPAT_METADATA_CSUM = 0x400;
const RO_COMPAT_SPARSE_SUPER = 0x1;
const COMPAT_SPARSE_SUPER2 = 0x200;

// superblock fields
const S_KBYTES_WRITTEN = 0x178;
const S_BACKUP_BGS = 0x24c;
const S_CHECKSUM = 0x3fc;
const GOOD_OLD_INODE_SIZE = 128;

// inode fields
const I_MODE = 0x00;
const I_ATIME = 0x08;
const I_CTIME = 0x0c;
const I_MTIME = 0x10;
const I_LINKS_COUNT = 0x1a;
const I_GENERATION = 0x64;
const I_CHECKSUM_LO = 0x7c;
const I_EXTRA_ISIZE = 0x80;
const I_CHECKSUM_HI = 0x82;
const I_CTIME_EXTRA = 0x84;
const I_MTIME_EXTRA = 0x88;
const I_ATIME_EXTRA = 0x8c;

interface Ext4Geometry {
  blockSize: number;
  inodeSize: number;
  inodesPerGroup: number;
  groups: number;
  firstInode: number;
  metadataCsum: boolean;
  checksumSeed: number;
  /** Bytes per group descriptor: 64 with the 64bit feature, else 32. */
  descriptorSize: number;
  blocksPerGroup: number;
  firstDataBlock: number;
  /** The groups holding a superblock: 0 and, per the sparse_super features, the backups. */
  superblockGroups: number[];
}

function readGeometry(fd: number, fsOffset: number): Ext4Geometry {
  const sb = readExact(fd, fsOffset + SUPERBLOCK_OFFSET, 1024, "ext4");
  if (sb.readUInt16LE(56) !== EXT4_MAGIC) throw new Error(`no ext4 superblock at byte ${fsOffset + SUPERBLOCK_OFFSET}`);
  const incompat = sb.readUInt32LE(96);
  const roCompat = sb.readUInt32LE(100);
  const blockSize = 1024 << sb.readUInt32LE(24);
  const blocksCount = sb.readUInt32LE(4) + (incompat & INCOMPAT_64BIT ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = sb.readUInt32LE(20);
  const blocksPerGroup = sb.readUInt32LE(32);
  const metadataCsum = (roCompat & RO_COMPAT_METADATA_CSUM) !== 0;
  const checksumSeed = incompat & INCOMPAT_CSUM_SEED ? sb.readUInt32LE(0x270) : crc32cUpdate(0xffffffff, sb.subarray(104, 120));
  const groups = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  return {
    blockSize,
    inodeSize: sb.readUInt16LE(88),
    inodesPerGroup: sb.readUInt32LE(40),
    groups,
    firstInode: sb.readUInt32LE(84),
    metadataCsum,
    checksumSeed,
    descriptorSize: incompat & INCOMPAT_64BIT ? sb.readUInt16LE(0xfe) : 32,
    blocksPerGroup,
    firstDataBlock,
    superblockGroups: superblockGroups(sb, groups),
  };
}

/**
 * Sets atime and ctime (with their nanosecond fields) to each inode's mtime, for every inode
 * in use after the reserved ones, and updates inode checksums. Returns how many it changed.
 */
export function setInodeTimesToMtime(fd: number, fsOffset: number): number {
  const geometry = readGeometry(fd, fsOffset);
  const descriptorSize = geometry.descriptorSize;
  const descriptorsAt = fsOffset + (geometry.blockSize === 1024 ? 2 : 1) * geometry.blockSize;
  const descriptors = readExact(fd, descriptorsAt, geometry.groups * descriptorSize, "ext4");
  let changed = 0;
  for (let group = 0; group < geometry.groups; group++) {
    const descriptor = descriptors.subarray(group * descriptorSize, (group + 1) * descriptorSize);
    const tableBlock = descriptor.readUInt32LE(8) + (descriptorSize >= 64 ? descriptor.readUInt32LE(0x28) * 2 ** 32 : 0);
    const unused = descriptor.readUInt16LE(0x1c) + (descriptorSize >= 64 ? descriptor.readUInt16LE(0x32) * 65536 : 0);
    const used = geometry.inodesPerGroup - unused;
    if (used <= 0) continue;
    const tableAt = fsOffset + tableBlock * geometry.blockSize;
    const table = readExact(fd, tableAt, used * geometry.inodeSize, "ext4");
    let dirty = false;
    for (let index = 0; index < used; index++) {
      const number = group * geometry.inodesPerGroup + index + 1;
      if (number <= geometry.firstInode) continue; // reserved, root and lost+found: mke2fs's own times
      const inode = table.subarray(index * geometry.inodeSize, (index + 1) * geometry.inodeSize);
      if (inode.readUInt16LE(I_MODE) === 0 && inode.readUInt16LE(I_LINKS_COUNT) === 0) continue;
      const mtime = inode.readUInt32LE(I_MTIME);
      const extra = geometry.inodeSize > GOOD_OLD_INODE_SIZE ? inode.readUInt16LE(I_EXTRA_ISIZE) : 0;
      const hasExtraTimes = extra >= I_ATIME_EXTRA + 4 - GOOD_OLD_INODE_SIZE;
      const mtimeExtra = hasExtraTimes ? inode.readUInt32LE(I_MTIME_EXTRA) : 0;
      if (inode.readUInt32LE(I_ATIME) === mtime && inode.readUInt32LE(I_CTIME) === mtime && (!hasExtraTimes || (inode.readUInt32LE(I_ATIME_EXTRA) === mtimeExtra && inode.readUInt32LE(I_CTIME_EXTRA) === mtimeExtra))) continue;
      inode.writeUInt32LE(mtime, I_ATIME);
      inode.writeUInt32LE(mtime, I_CTIME);
      if (hasExtraTimes) {
        inode.writeUInt32LE(mtimeExtra, I_ATIME_EXTRA);
        inode.writeUInt32LE(mtimeExtra, I_CTIME_EXTRA);
      }
      if (geometry.metadataCsum) writeInodeChecksum(inode, number, geometry);
      dirty = true;
      changed++;
    }
    if (dirty) writeAll(fd, table, tableAt);
  }
  return changed;
}

/** ext4_inode_csum: crc32c over the seed, inode number, generation and the inode, checksum fields as zero. */
function inodeChecksum(inode: Buffer, number: number, geometry: Pick<Ext4Geometry, "inodeSize" | "checksumSeed">): number {
  const le32 = (value: number): Buffer => {
    const buffer = Buffer.alloc(4);
    buffer.writeUInt32LE(value >>> 0);
    return buffer;
  };
  const zero16 = Buffer.alloc(2);
  let crc = crc32cUpdate(geometry.checksumSeed, le32(number));
  crc = crc32cUpdate(crc, inode.subarray(I_GENERATION, I_GENERATION + 4));
  crc = crc32cUpdate(crc, inode.subarray(0, I_CHECKSUM_LO));
  crc = crc32cUpdate(crc, zero16);
  crc = crc32cUpdate(crc, inode.subarray(I_CHECKSUM_LO + 2, GOOD_OLD_INODE_SIZE));
  if (geometry.inodeSize > GOOD_OLD_INODE_SIZE) {
    crc = crc32cUpdate(crc, inode.subarray(GOOD_OLD_INODE_SIZE, I_CHECKSUM_HI));
    let offset = I_CHECKSUM_HI;
    if (checksumHiFits(inode)) {
      crc = crc32cUpdate(crc, zero16);
      offset += 2;
    }
    crc = crc32cUpdate(crc, inode.subarray(offset, geometry.inodeSize));
  }
  return crc;
}

function checksumHiFits(inode: Buffer): boolean {
  return GOOD_OLD_INODE_SIZE + inode.readUInt16LE(I_EXTRA_ISIZE) >= I_CHECKSUM_HI + 2;
}

function writeInodeChecksum(inode: Buffer, number: number, geometry: Ext4Geometry): void {
  const crc = inodeChecksum(inode, number, geometry);
  inode.writeUInt16LE(crc & 0xffff, I_CHECKSUM_LO);
  if (geometry.inodeSize > GOOD_OLD_INODE_SIZE && checksumHiFits(inode)) inode.writeUInt16LE(crc >>> 16, I_CHECKSUM_HI);
}

/** Groups 0, 1 and the powers of 3, 5 and 7 with sparse_super; the two listed with sparse_super2; else all. */
function superblockGroups(sb: Buffer, groups: number): number[] {
  if (sb.readUInt32LE(92) & COMPAT_SPARSE_SUPER2) return [0, sb.readUInt32LE(S_BACKUP_BGS), sb.readUInt32LE(S_BACKUP_BGS + 4)].filter((group, index) => index === 0 || (group > 0 && group < groups));
  if (!(sb.readUInt32LE(100) & RO_COMPAT_SPARSE_SUPER)) return Array.from({ length: groups }, (_, group) => group);
  const found = new Set([0, 1]);
  for (const base of [3, 5, 7]) for (let power = base; power < groups; power *= base) found.add(power);
  return [...found].filter((group) => group < groups).sort((a, b) => a - b);
}

/**
 * Sets s_kbytes_written to 0 (unknown) in the superblock and every backup of it, with their
 * checksums. Returns how many superblocks it rewrote.
 */
export function clearLifetimeWrites(fd: number, fsOffset: number): number {
  const geometry = readGeometry(fd, fsOffset);
  let rewritten = 0;
  for (const group of geometry.superblockGroups) {
    const at = fsOffset + (group === 0 ? SUPERBLOCK_OFFSET : (group * geometry.blocksPerGroup + geometry.firstDataBlock) * geometry.blockSize);
    const sb = readExact(fd, at, 1024, "ext4");
    if (sb.readUInt16LE(56) !== EXT4_MAGIC) throw new Error(`no ext4 superblock backup of group ${group} at byte ${at}`);
    sb.writeBigUInt64LE(0n, S_KBYTES_WRITTEN);
    if (geometry.metadataCsum) sb.writeUInt32LE(crc32cUpdate(0xffffffff, sb.subarray(0, S_CHECKSUM)), S_CHECKSUM);
    writeAll(fd, sb, at);
    rewritten++;
  }
  return rewritten;
}
