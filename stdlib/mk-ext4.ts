// mkExt4: a Kata disk image (osbuilder's image_builder.sh): one partition at 1 MiB holding
// the rootfs as ext4 (or xfs, or erofs), an MBR or GPT, and by default osbuilder's NVDIMM
// DAX header. Sized from the layers, made without root, mounts or loop devices, and
// byte-for-byte reproducible: ids derive from the input, times from the source date.

import { closeSync, ftruncateSync, openSync } from "node:fs";
import { createHash } from "node:crypto";
import { defineStep, type RootfsInput } from "../engine/index.js";
import { guidFromHash } from "../formats/gpt.js";
import { checkBootable } from "./checks.js";
import { planLayout, writePartitionTables, type DiskLayout, type PartitionTable } from "./disk-image/layout.js";
import { makeExt4, planExt4 } from "./disk-image/ext4.js";
import { OSBUILDER_YAML_PATH } from "./facts.js";

export type ImageFilesystem = "ext4";

export interface MkExt4Options {
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
  /** Reserved blocks in percent (osbuilder runs tune2fs -m 3). Default 3. */
  reservedPercent?: number;
  /** osbuilder's checks before packing. Default: on for rootfs made by installAgent. */
  checks?: boolean;
}

export const mkExt4 = defineStep({
  kind: "mk-ext4",
  version: 1,
  inputs: ["rootfs"],
  output: "blob",
  tools: [
    { command: "mke2fs", versionArgs: ["-V"], package: "e2fsprogs" },
    { command: "debugfs", versionArgs: ["-V"], package: "e2fsprogs" },
  ],
  validate(options: MkExt4Options) {
    const table = options.partitionTable ?? "mbr";
    if (table !== "mbr" && table !== "gpt") return `partitionTable must be "mbr" or "gpt", got ${JSON.stringify(table)}`;
    if ((options.daxHeader ?? true) && table === "gpt") return 'the DAX header needs partitionTable: "mbr" (as osbuilder); set daxHeader: false for GPT';
    if (options.extraFreeMiB !== undefined && !(options.extraFreeMiB >= 0)) return "extraFreeMiB must be 0 or more";
    if (options.alignMiB !== undefined && !(Number.isInteger(options.alignMiB) && options.alignMiB >= 1)) return "alignMiB must be a whole number of MiB, 1 or more";
    return undefined;
  },
  async run(options: MkExt4Options, ctx) {
    const [rootfs] = ctx.inputs;
    await runChecks(rootfs, options.checks, ctx.fail);
    const entries = await rootfs.entries();
    const reservedPercent = options.reservedPercent ?? 3;
    const plan = planExt4(entries, { extraFreeMiB: options.extraFreeMiB ?? 0, reservedPercent, blockSize: options.blockSize });
    const layout = fixedOrPlanned(options, plan.bytes, ctx.fail);
    const ids = identities(rootfs.digest, options);
    ctx.log(`filesystem ${mib(layout.filesystemBytes)} MiB for ${entries.length} entries (${plan.inodes} inodes); image ${mib(layout.fileBytes)} MiB`);

    const image = ctx.outputPath();
    const fd = openSync(image, "w");
    ftruncateSync(fd, layout.fileBytes); // sparse: only what is written takes space
    closeSync(fd);
    const tree = await rootfs.materialize();
    await makeExt4(ctx.exec, image, { offset: layout.filesystemOffset, bytes: layout.filesystemBytes }, tree, entries, {
      plan,
      identity: { uuid: ids.filesystemUuid, hashSeed: ids.hashSeed, time: ctx.sourceDateEpoch },
      reservedPercent,
      label: "rootfs",
      asRoot: process.getuid?.() === 0,
      workDir: await ctx.tempDir(),
      blockSize: options.blockSize,
    });
    writePartitionTables(image, layout, ids);
  },
});

export async function runChecks(rootfs: RootfsInput, wanted: boolean | undefined, fail: (message: string) => never): Promise<void> {
  if (!(wanted ?? (await rootfs.stat(OSBUILDER_YAML_PATH)) !== undefined)) return;
  const problem = await checkBootable(rootfs);
  if (problem) fail(problem);
}

function fixedOrPlanned(options: MkExt4Options, filesystemBytes: number, fail: (message: string) => never): DiskLayout {
  const request = { filesystemBytes, partitionTable: options.partitionTable ?? "mbr", daxHeader: options.daxHeader ?? true, alignMiB: options.alignMiB ?? 128 } as const;
  if (options.sizeMiB === undefined) return planLayout(request);
  const planned = planLayout({ ...request, alignMiB: 1 });
  if (options.sizeMiB * 1024 * 1024 < planned.fileBytes) fail(`sizeMiB ${options.sizeMiB} is too small: the rootfs needs at least ${mib(planned.fileBytes)} MiB`);
  return planLayout({ ...request, alignMiB: options.sizeMiB });
}

/** Filesystem UUID, hash seed and partition ids: fixed for a given input and options. */
export function identities(rootfsDigest: string, options: object): { filesystemUuid: string; hashSeed: string; diskGuid: string; partitionGuids: string[]; diskSignature: number } {
  const hash = (label: string): string => createHash("sha256").update(`${label}\0${rootfsDigest}\0${JSON.stringify(options)}`).digest("hex");
  return {
    filesystemUuid: guidFromHash(hash("filesystem")).toLowerCase(),
    hashSeed: guidFromHash(hash("hash-seed")).toLowerCase(),
    diskGuid: guidFromHash(hash("disk")),
    partitionGuids: [guidFromHash(hash("partition-1")), guidFromHash(hash("partition-2"))],
    diskSignature: parseInt(hash("mbr").slice(0, 8), 16),
  };
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(0);
}
