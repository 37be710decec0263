// Where everything goes in a Kata disk image, and the partition tables that say so, with
// osbuilder's geometry (image_builder.sh's create_disk and set_dax_header).
//
// The inner disk is a whole number of MiB, S. Without a hash partition, the filesystem
// partition runs from 1 MiB to the disk's last sector. With one (MEASURED_ROOTFS=yes), the
// filesystem runs from 1 MiB to H = 99% of S (in whole MiB, as osbuilder's awk rounds it)
// and the dm-verity hash partition from H to the last sector, the first marked bootable.
// With the DAX header (osbuilder's default, MBR only):
//   [0] MBR #1 · [4 KiB] NVDIMM PFN info block · [2 MiB] the inner disk: MBR #2, the
//   partitions from 1 MiB of it (3 MiB of the file)
// MBR #1 describes a disk of S + 2 MiB with the same rule, partitions from 3 MiB. virtio-blk
// reads MBR #1; the guest's NVDIMM driver honours the PFN block and sees the inner disk from
// 2 MiB, so the filesystem is 2 MiB-aligned for DAX.

import { closeSync, openSync } from "node:fs";
import { encodeGpt, LINUX_FILESYSTEM_GUID } from "../../formats/gpt.js";
import { encodeMbr, MBR_TYPE_LINUX, SECTOR_SIZE } from "../../formats/mbr.js";
import { encodePfnInfoBlock, KATA_DAX_ALIGNMENT, KATA_DAX_HEADER_SIZE, PFN_INFO_OFFSET } from "../../formats/pfn.js";
import { writeAll } from "../../formats/io.js";

const MiB = 1024 * 1024;
const DAX_MiB = KATA_DAX_HEADER_SIZE / MiB;
/** GPT keeps its backup table (and header) in the disk's last 33 sectors. */
const GPT_TAIL_SECTORS = 33;

export type PartitionTable = "mbr" | "gpt";

export interface LayoutRequest {
  /** Smallest filesystem that holds the tree (bytes). */
  filesystemBytes: number;
  /** A dm-verity hash partition after the filesystem; gives the hash tree's size for a data size. */
  hashBytesFor?: (dataBytes: number) => number;
  partitionTable: PartitionTable;
  daxHeader: boolean;
  /** The file size is rounded up to this (osbuilder's IMAGE_SIZE_ALIGNMENT_MB=128: NVDIMM sizes must be aligned). */
  alignMiB: number;
  /**
   * Size the inner disk as image_builder.sh does for erofs: the filesystem in MiB plus two
   * (plus one percent and one MiB with a hash partition), instead of the smallest that fits.
   */
  osbuilderErofsSizing?: boolean;
  /** A fixed file size in MiB instead of the computed one; undefined if too small. */
  fileMiB?: number;
}

/** A partition, in bytes from the start of the file. */
export interface Extent {
  offset: number;
  bytes: number;
}

export interface DiskLayout {
  fileBytes: number;
  /** Where the inner disk (the one MBR #2 or the GPT describes) starts: 0, or 2 MiB with DAX. */
  innerDiskOffset: number;
  /** The filesystem partition (the filesystem is made to fill it, rounded down to 4 KiB). */
  filesystem: Extent;
  /** The dm-verity hash partition. */
  hash?: Extent;
  /** With DAX: the partitions MBR #1 describes (the same rule on the whole file). */
  outerPartitions?: Extent[];
  partitionTable: PartitionTable;
  daxHeader: boolean;
}

/** The layout, or undefined when `fileMiB` is too small for the filesystem. */
export function planLayout(request: LayoutRequest): DiskLayout | undefined {
  if (request.daxHeader && request.partitionTable !== "mbr") throw new Error("the DAX header needs an MBR partition table (as osbuilder makes it)");
  const daxMiB = request.daxHeader ? DAX_MiB : 0;
  if (request.fileMiB !== undefined) {
    const layout = layoutFor(request.fileMiB - daxMiB, request);
    return layout && fits(layout, request) ? layout : undefined;
  }
  let innerMiB = 2;
  if (request.osbuilderErofsSizing) {
    // image_builder.sh: ((bytes + 1 MiB) / 1 MiB) + 1 + 1, then * 100 / 99 + 1 with a hash partition
    innerMiB = Math.floor((request.filesystemBytes + MiB) / MiB) + 2;
    if (request.hashBytesFor) innerMiB = Math.floor((innerMiB * 100) / 99) + 1;
  } else innerMiB = Math.max(innerMiB, Math.ceil(request.filesystemBytes / MiB) + 1);
  // Grow until it fits (at most a few MiB past the estimate; a hash tree is under 1% of its data).
  let layout = layoutFor(innerMiB, request);
  while (!layout || !fits(layout, request)) layout = layoutFor(++innerMiB, request);
  const fileMiB = roundUp(innerMiB + daxMiB, request.alignMiB);
  return layoutFor(fileMiB - daxMiB, request)!;
}

function fits(layout: DiskLayout, request: LayoutRequest): boolean {
  if (filesystemBytesOf(layout) < request.filesystemBytes) return false;
  if (!request.hashBytesFor) return true;
  return layout.hash!.bytes >= request.hashBytesFor(filesystemBytesOf(layout));
}

/** The filesystem's size: its partition in whole 4 KiB blocks. */
export function filesystemBytesOf(layout: DiskLayout): number {
  return Math.floor(layout.filesystem.bytes / 4096) * 4096;
}

/** The partitions of an inner disk of `innerMiB` (and, with DAX, of the whole file). */
function layoutFor(innerMiB: number, request: LayoutRequest): DiskLayout | undefined {
  const measured = request.hashBytesFor !== undefined;
  const innerDiskOffset = request.daxHeader ? KATA_DAX_HEADER_SIZE : 0;
  const tail = request.partitionTable === "gpt" ? GPT_TAIL_SECTORS * SECTOR_SIZE : 0;
  const inner = partitionsOf(innerMiB, 1, measured, tail);
  if (!inner) return undefined;
  const shift = (extent: Extent): Extent => ({ offset: extent.offset + innerDiskOffset, bytes: extent.bytes });
  const layout: DiskLayout = {
    fileBytes: innerDiskOffset + innerMiB * MiB,
    innerDiskOffset,
    filesystem: shift(inner[0]!),
    partitionTable: request.partitionTable,
    daxHeader: request.daxHeader,
  };
  if (measured) layout.hash = shift(inner[1]!);
  if (request.daxHeader) {
    const outer = partitionsOf(innerMiB + DAX_MiB, 1 + DAX_MiB, measured, 0);
    if (!outer) return undefined;
    layout.outerPartitions = outer;
  }
  return layout;
}

/**
 * create_disk's partitions on a disk of `diskMiB` from `startMiB`: one to the last sector,
 * or the data partition to 99% and the hash partition from there.
 */
function partitionsOf(diskMiB: number, startMiB: number, measured: boolean, tail: number): Extent[] | undefined {
  const end = diskMiB * MiB - tail;
  if (!measured) return end - startMiB * MiB >= 4096 ? [{ offset: startMiB * MiB, bytes: end - startMiB * MiB }] : undefined;
  const hashStart = hashPartitionStartMiB(diskMiB);
  if (hashStart <= startMiB || hashStart * MiB >= end) return undefined;
  return [
    { offset: startMiB * MiB, bytes: (hashStart - startMiB) * MiB },
    { offset: hashStart * MiB, bytes: end - hashStart * MiB },
  ];
}

/**
 * Where osbuilder starts the hash partition: `awk '{print $1 * 0.99}'` cut at the decimal
 * point. awk prints with %.6g, so from 10,000 MiB on the fraction is rounded to fewer digits
 * before the cut (and may carry into the integer part); this follows it.
 */
export function hashPartitionStartMiB(diskMiB: number): number {
  return Math.trunc(Number((diskMiB * 0.99).toPrecision(6)));
}

/** Writes the partition table(s) and, with DAX, the PFN info block. Ids come from `ids`. */
export function writePartitionTables(file: string, layout: DiskLayout, ids: { diskGuid: string; partitionGuids: string[]; diskSignature: number }): void {
  const fd = openSync(file, "r+");
  try {
    const write = (data: Buffer, offset: number): void => writeAll(fd, data, offset);
    const sectors = (bytes: number): number => bytes / SECTOR_SIZE;
    const parts = layout.hash ? [layout.filesystem, layout.hash] : [layout.filesystem];

    if (layout.partitionTable === "gpt") {
      const gpt = encodeGpt(
        layout.fileBytes,
        parts.map((part, index) => ({
          firstLba: sectors(part.offset),
          lastLba: sectors(part.offset + part.bytes) - 1,
          typeGuid: LINUX_FILESYSTEM_GUID,
          uniqueGuid: ids.partitionGuids[index]!,
          name: index === 0 ? "rootfs" : "verity",
        })),
        { diskGuid: ids.diskGuid },
      );
      write(gpt.primary, 0);
      write(gpt.backup, gpt.backupOffset);
      return;
    }
    // parted's `set 1 boot on` when there is a hash partition.
    const mbrOf = (extents: readonly Extent[], diskOffset: number): Buffer =>
      encodeMbr(
        extents.map((part, index) => ({ startLba: sectors(part.offset - diskOffset), sizeLba: sectors(part.bytes), type: MBR_TYPE_LINUX, bootable: extents.length > 1 && index === 0 })),
        { diskSignature: ids.diskSignature },
      );
    if (layout.daxHeader) {
      write(mbrOf(layout.outerPartitions!, 0), 0);
      write(encodePfnInfoBlock({ dataOffset: KATA_DAX_HEADER_SIZE, alignment: KATA_DAX_ALIGNMENT }), PFN_INFO_OFFSET);
    }
    write(mbrOf(parts, layout.innerDiskOffset), layout.innerDiskOffset);
  } finally {
    closeSync(fd);
  }
}

export function roundUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}
