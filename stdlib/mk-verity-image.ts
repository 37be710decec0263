// mkVerityImage: osbuilder's measured rootfs (MEASURED_ROOTFS=yes): the disk image of mkExt4
// plus a second partition with the dm-verity hash tree, the root hash file in osbuilder's
// format, and the kernel parameters Kata's runtime derives from it (dm-mod.create=...).

import { writeFileSync } from "node:fs";
import { defineStep } from "../engine/index.js";
import { DISK_IMAGE_TOOLS, buildDiskImage, validateDiskImageOptions, type DiskImageOptions } from "./disk-image/build.js";
import { kernelParams, rootHashFile } from "./disk-image/verity.js";
import { DISK_IMAGE_MEDIA_TYPE, TEXT_MEDIA_TYPE } from "./media-types.js";

export type MkVerityImageOptions = DiskImageOptions;

export const mkVerityImage = defineStep({
  kind: "mk-verity-image",
  version: 5, // 5: osbuilder's partitions (data p1 to 99%, hash p2 to the last sector, p1 bootable)
  inputs: ["rootfs"],
  output: { blobs: ["image", "rootHash", "kernelParams"] },
  mediaTypes: { image: DISK_IMAGE_MEDIA_TYPE, rootHash: TEXT_MEDIA_TYPE, kernelParams: TEXT_MEDIA_TYPE },
  tools: (options: MkVerityImageOptions) => [...DISK_IMAGE_TOOLS(options), { command: "veritysetup", versionArgs: ["--version"], package: "cryptsetup-bin" }],
  validate: (options: MkVerityImageOptions) => validateDiskImageOptions(options),
  async run(options: MkVerityImageOptions, ctx) {
    const { verity, layout } = await buildDiskImage(ctx, ctx.inputs[0], ctx.outputPath("image"), options, true);
    writeFileSync(ctx.outputPath("rootHash"), rootHashFile(verity!));
    // Kata boots the image as an NVDIMM (pmem) with the DAX header, else on virtio-blk.
    const device = layout.daxHeader ? "pmem" : "virtio";
    writeFileSync(ctx.outputPath("kernelParams"), `${kernelParams(verity!, { device, fsType: options.fsType ?? "ext4" })}\n`);
  },
});
