// Just enough of the ext4 on-disk format to set inode times in place, with the inode
// checksums metadata_csum needs. mke2fs -d copies each file's atime and ctime from the files
// it reads; no one can set a host file's ctime, so they are made equal to the mtime here,
// which comes from the layers. (See Documentation/filesystems/ext4/ in Linux.)

import { crc32cUpdate } from "./crc32c.js";
import { readExact, writeAll } from "./io.js";

const SUPERBLOCK_OFFSET = 1024;
const EXT4_MAGIC = 0xef53;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_CSUM_SEED = 0x2000;
const RO_COMPAT_METADATA_CSUM = 0x400;
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
  return {
    blockSize,
    inodeSize: sb.readUInt16LE(88),
    inodesPerGroup: sb.readUInt32LE(40),
    groups: Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup),
    firstInode: sb.readUInt32LE(84),
    metadataCsum,
    checksumSeed,
    descriptorSize: incompat & INCOMPAT_64BIT ? sb.readUInt16LE(0xfe) : 32,
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
