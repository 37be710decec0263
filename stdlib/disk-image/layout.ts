// Where everything goes in a Kata disk image, and the partition tables that say so.
//
// Without the DAX header (osbuilder's SKIP_DAX_HEADER=yes):
//   [0] MBR or GPT · [1 MiB] filesystem partition (· [..] verity hash partition) · end
// With the DAX header (osbuilder's default, MBR only):
//   [0] MBR #1 (partition at 3 MiB) · [4 KiB] NVDIMM PFN info block · [2 MiB] MBR #2
//   (partition at 1 MiB of the inner disk) · [3 MiB] filesystem · end
// virtio-blk reads MBR #1; the guest's NVDIMM driver honours the PFN block and sees the
// inner disk from 2 MiB, where MBR #2 puts the same filesystem 2 MiB-aligned for DAX.

import { closeSync, openSync } from "node:fs";
import { encodeGpt, LINUX_FILESYSTEM_GUID } from "../../formats/gpt.js";
import { encodeMbr, MBR_TYPE_LINUX, SECTOR_SIZE } from "../../formats/mbr.js";
import { encodePfnInfoBlock, KATA_DAX_ALIGNMENT, KATA_DAX_HEADER_SIZE, PFN_INFO_OFFSET } from "../../formats/pfn.js";
import { writeAll } from "../../formats/io.js";

const MiB = 1024 * 1024;

export type PartitionTable = "mbr" | "gpt";

export interface LayoutRequest {
  /** Smallest filesystem that holds the tree (bytes). */
  filesystemBytes: number;
  /** A second partition after the filesystem (the verity hash tree), sized for the filesystem's bytes. */
  hashBytesFor?: (filesystemBytes: number) => number;
  partitionTable: PartitionTable;
  daxHeader: boolean;
  /** The file size is rounded up to this (osbuilder's IMAGE_SIZE_ALIGNMENT_MB=128: NVDIMM sizes must be aligned). */
  alignMiB: number;
}

export interface DiskLayout {
  fileBytes: number;
  /** Where the (outer) partition table starts seeing the disk: 0, or 2 MiB inside with DAX. */
  innerDiskOffset: number;
  filesystemOffset: number;
  /** The whole partition: the filesystem is made to fill it. */
  filesystemBytes: number;
  hashOffset?: number;
  hashBytes?: number;
  partitionTable: PartitionTable;
  daxHeader: boolean;
}

export function planLayout(request: LayoutRequest): DiskLayout {
  if (request.daxHeader && request.partitionTable !== "mbr") throw new Error("the DAX header needs an MBR partition table (as osbuilder makes it)");
  const head = (request.daxHeader ? KATA_DAX_HEADER_SIZE : 0) + MiB;
  // GPT keeps a backup table in the last 33 sectors; MBR needs the last sector free (parted -1s).
  const tail = request.partitionTable === "gpt" ? 33 * SECTOR_SIZE : SECTOR_SIZE;
  const hashFor = (bytes: number): number => (request.hashBytesFor ? roundUp(request.hashBytesFor(bytes), MiB) : 0);
  const minimum = head + roundUp(request.filesystemBytes, MiB) + hashFor(request.filesystemBytes) + tail;
  // The filesystem grows to fill the aligned size; its hash tree is sized for at most all of it.
  const fileBytes = roundUp(minimum + (request.hashBytesFor ? MiB : 0), request.alignMiB * MiB);
  const hash = hashFor(fileBytes - head - tail);
  const filesystemBytes = roundDown(fileBytes - head - hash - tail, 4096);
  const layout: DiskLayout = {
    fileBytes,
    innerDiskOffset: request.daxHeader ? KATA_DAX_HEADER_SIZE : 0,
    filesystemOffset: head,
    filesystemBytes,
    partitionTable: request.partitionTable,
    daxHeader: request.daxHeader,
  };
  if (hash > 0) {
    layout.hashOffset = head + filesystemBytes;
    layout.hashBytes = fileBytes - tail - layout.hashOffset;
  }
  return layout;
}

/** Writes the partition table(s) and, with DAX, the PFN info block. Ids come from `guids`. */
export function writePartitionTables(file: string, layout: DiskLayout, ids: { diskGuid: string; partitionGuids: string[]; diskSignature: number }): void {
  const fd = openSync(file, "r+");
  try {
    const write = (data: Buffer, offset: number): void => writeAll(fd, data, offset);
    const sectors = (bytes: number): number => bytes / SECTOR_SIZE;
    const parts = [{ offset: layout.filesystemOffset, bytes: layout.filesystemBytes }];
    if (layout.hashOffset !== undefined && layout.hashBytes !== undefined) parts.push({ offset: layout.hashOffset, bytes: layout.hashBytes });

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
    // MBR: the last partition runs to the disk's last sector, as `parted mkpart ... -1s`.
    const mbrFor = (diskOffset: number, diskBytes: number): Buffer =>
      encodeMbr(
        parts.map((part, index) => {
          const start = sectors(part.offset - diskOffset);
          const end = index === parts.length - 1 ? sectors(diskBytes) - 1 : sectors(part.offset - diskOffset + part.bytes) - 1;
          return { startLba: start, sizeLba: end - start + 1, type: MBR_TYPE_LINUX, bootable: parts.length > 1 && index === 0 };
        }),
        { diskSignature: ids.diskSignature },
      );
    if (layout.daxHeader) {
      // MBR #1 sees the partitions from the file's start (the filesystem at 3 MiB).
      write(mbrFor(0, layout.fileBytes), 0);
      write(encodePfnInfoBlock({ dataOffset: KATA_DAX_HEADER_SIZE, alignment: KATA_DAX_ALIGNMENT }), PFN_INFO_OFFSET);
    }
    write(mbrFor(layout.innerDiskOffset, layout.fileBytes - layout.innerDiskOffset), layout.innerDiskOffset);
  } finally {
    closeSync(fd);
  }
}

export function roundUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}

function roundDown(value: number, unit: number): number {
  return Math.floor(value / unit) * unit;
}
