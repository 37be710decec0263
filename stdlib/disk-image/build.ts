// Builds a Kata disk image from a rootfs input: checks, sizing from the layers, the
// filesystem (ext4, xfs or erofs) at its partition's offset, the optional dm-verity hash
// partition, and the partition tables. Shared by mkExt4 and mkVerityImage.

import { createHash } from "node:crypto";
import { closeSync, ftruncateSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { BlobStepContext, RootfsInput, ToolSpec } from "../../engine/index.js";
import { guidFromHash } from "../../formats/gpt.js";
import { checkBootable, type BootChecks } from "../checks.js";
import { makeErofs } from "./erofs.js";
import { FAKEROOT_TOOLS } from "./fakeroot.js";
import { makeExt4, planExt4 } from "./ext4.js";
import { KATA_DAX_HEADER_SIZE } from "../../formats/pfn.js";
import { filesystemBytesOf, planLayout, writePartitionTables, type DiskLayout, type PartitionTable } from "./layout.js";
import { copyIntoImage, copyOutOfImage } from "./sparse.js";
import { formatVerity, hashTreeBytes, type VerityInfo } from "./verity.js";
import { makeXfs, planXfsBytes } from "./xfs.js";

export type ImageFilesystem = "ext4" | "xfs" | "erofs";

export interface DiskImageOptions {
  /** Default "ext4"; "xfs" and "erofs" as osbuilder's -f. */
  fsType?: ImageFilesystem;
  /** Default "mbr", as osbuilder (parted mklabel msdos). */
  partitionTable?: PartitionTable;
  /** A fixed image size in MiB instead of the computed one (an error if too small). */
  sizeMiB?: number;
  /** Free space to leave in the filesystem, in MiB (osbuilder's -r). Default 0. */
  extraFreeMiB?: number;
  /** Default 4096, as osbuilder. */
  blockSize?: 1024 | 2048 | 4096;
  /** osbuilder's NVDIMM DAX header (PFN block + second MBR). Default true, as osbuilder (SKIP_DAX_HEADER unset). */
  daxHeader?: boolean;
  /** The file size is rounded up to this many MiB. Default 128 (osbuilder's IMAGE_SIZE_ALIGNMENT_MB). */
  alignMiB?: number;
  /** ext4 reserved blocks in percent (osbuilder runs tune2fs -m 3). Default 3. */
  reservedPercent?: number;
  /** ext4 journal (osbuilder's mkfs.ext4 makes one). Default true; Kata mounts the rootfs read-only. */
  journal?: boolean;
  /** ext4 metadata checksums (mke2fs's default). Default true; off makes mke2fs about 40% faster. */
  metadataChecksums?: boolean;
  /** osbuilder's checks before packing (or the init to check for). Default: on for rootfs made by installAgent. */
  checks?: BootChecks;
  /** erofs compression. Default "lz4hc" (osbuilder's -zlz4hc). */
  erofsCompression?: "lz4hc" | "none";
}

export function validateDiskImageOptions(options: DiskImageOptions): string | undefined {
  const table = options.partitionTable ?? "mbr";
  if (table !== "mbr" && table !== "gpt") return `partitionTable must be "mbr" or "gpt", got ${JSON.stringify(table)}`;
  if ((options.daxHeader ?? true) && table === "gpt") return 'the DAX header needs partitionTable: "mbr" (as osbuilder); set daxHeader: false for GPT';
  if (options.fsType !== undefined && !["ext4", "xfs", "erofs"].includes(options.fsType)) return `fsType must be "ext4", "xfs" or "erofs", got ${JSON.stringify(options.fsType)}`;
  if (options.extraFreeMiB !== undefined && !(options.extraFreeMiB >= 0)) return "extraFreeMiB must be 0 or more";
  if (options.alignMiB !== undefined && !(Number.isInteger(options.alignMiB) && options.alignMiB >= 1)) return "alignMiB must be a whole number of MiB, 1 or more";
  return undefined;
}

export const DISK_IMAGE_TOOLS = (options: DiskImageOptions): ToolSpec[] => {
  switch (options.fsType ?? "ext4") {
    case "xfs":
      return [{ command: "mkfs.xfs", versionArgs: ["-V"], package: "xfsprogs" }];
    case "erofs":
      return [{ command: "mkfs.erofs", versionArgs: ["--help"], package: "erofs-utils" }, ...FAKEROOT_TOOLS];
    default:
      return [{ command: "mke2fs", versionArgs: ["-V"], package: "e2fsprogs" }, ...FAKEROOT_TOOLS];
  }
};

export interface BuiltDiskImage {
  layout: DiskLayout;
  verity?: VerityInfo;
}

/** Writes the disk image of `rootfs` at `image`, with a verity hash partition when asked. */
export async function buildDiskImage(ctx: BlobStepContext<readonly ["rootfs"]>, rootfs: RootfsInput, image: string, options: DiskImageOptions, withVerity: boolean): Promise<BuiltDiskImage> {
  const problem = await checkBootable(rootfs, options.checks);
  if (problem) ctx.fail(problem);
  const [entries, tree] = await Promise.all([rootfs.entries(), rootfs.materialize()]);
  const fsType = options.fsType ?? "ext4";
  const ids = identities(ctx.key);
  const workDir = await ctx.tempDir();
  const extraFreeMiB = options.extraFreeMiB ?? 0;
  const reservedPercent = options.reservedPercent ?? 3;
  const request = { partitionTable: options.partitionTable ?? "mbr", daxHeader: options.daxHeader ?? true, alignMiB: options.alignMiB ?? 128, osbuilderErofsSizing: fsType === "erofs" } as const;
  const hashBytesFor = withVerity ? (bytes: number): number => hashTreeBytes(bytes) : undefined;
  const plan = (filesystemBytes: number): DiskLayout => {
    const layout = planLayout({ ...request, filesystemBytes, hashBytesFor, fileMiB: options.sizeMiB });
    if (layout) return layout;
    const smallest = planLayout({ ...request, filesystemBytes, hashBytesFor, alignMiB: 1 })!;
    ctx.fail(`sizeMiB ${options.sizeMiB} is too small: the rootfs needs at least ${Math.ceil(smallest.fileBytes / 1024 / 1024)} MiB`);
  };
  const createFile = (bytes: number): void => {
    const fd = openSync(image, "w");
    ftruncateSync(fd, bytes); // sparse: only what is written takes space
    closeSync(fd);
  };

  let layout: DiskLayout;
  if (fsType === "erofs") {
    // erofs is as large as its content: make it first, then lay the disk out around it.
    const offset = (request.daxHeader ? KATA_DAX_HEADER_SIZE : 0) + 1024 * 1024;
    createFile(offset);
    const used = await makeErofs(ctx.exec, image, { offset }, tree, { uuid: ids.filesystemUuid, time: ctx.sourceDateEpoch, workDir, entries, compression: options.erofsCompression });
    layout = plan(used);
    const fd = openSync(image, "r+");
    ftruncateSync(fd, layout.fileBytes);
    closeSync(fd);
  } else {
    const ext4 = planExt4(entries, { extraFreeMiB, reservedPercent, blockSize: options.blockSize, journal: options.journal ?? true });
    layout = plan(fsType === "xfs" ? planXfsBytes(entries, extraFreeMiB, options.blockSize) : ext4.bytes);
    createFile(layout.fileBytes);
    const region = { offset: layout.filesystem.offset, bytes: filesystemBytesOf(layout) };
    if (fsType === "xfs") await makeXfs(ctx.exec, image, region, entries, { uuid: ids.filesystemUuid, time: ctx.sourceDateEpoch, workDir, blockSize: options.blockSize, tree });
    else {
      const features = { journal: options.journal ?? true, metadataChecksums: options.metadataChecksums ?? true };
      await makeExt4(ctx.exec, image, region, tree, entries, { plan: ext4, identity: { uuid: ids.filesystemUuid, hashSeed: ids.hashSeed, time: ctx.sourceDateEpoch }, reservedPercent, label: "rootfs", workDir, blockSize: options.blockSize, ...features });
    }
  }
  ctx.log(`${fsType} filesystem of ${mib(filesystemBytesOf(layout))} MiB for ${entries.length} entries in an image of ${mib(layout.fileBytes)} MiB`);

  let verity: VerityInfo | undefined;
  if (withVerity) {
    // veritysetup works on whole files: the filesystem goes out, its hash tree comes back in.
    const data = join(workDir, "data.img");
    const hash = join(workDir, "hash.img");
    const dataBytes = filesystemBytesOf(layout);
    copyOutOfImage(image, layout.filesystem.offset, dataBytes, data);
    verity = await formatVerity(ctx.exec, data, hash, { dataBlocks: dataBytes / 4096, salt: ids.veritySalt });
    copyIntoImage(hash, image, layout.hash!.offset);
    rmSync(data);
    rmSync(hash);
  }
  writePartitionTables(image, layout, ids);
  return { layout, verity };
}

/** Filesystem UUID, hash seed, partition ids and verity salt: fixed by the step's cache key. */
function identities(key: string): { filesystemUuid: string; hashSeed: string; diskGuid: string; partitionGuids: string[]; diskSignature: number; veritySalt: string } {
  const hash = (label: string): string => createHash("sha256").update(`${label}\0${key}`).digest("hex");
  return {
    filesystemUuid: guidFromHash(hash("filesystem")).toLowerCase(),
    hashSeed: guidFromHash(hash("hash-seed")).toLowerCase(),
    diskGuid: guidFromHash(hash("disk")),
    partitionGuids: [guidFromHash(hash("partition-1")), guidFromHash(hash("partition-2"))],
    diskSignature: parseInt(hash("mbr").slice(0, 8), 16),
    veritySalt: hash("verity-salt"),
  };
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(0);
}
