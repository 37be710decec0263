// mkExt4: a Kata disk image (osbuilder's image_builder.sh): one partition at 1 MiB holding
// the rootfs as ext4 (or xfs or erofs, osbuilder's -f), an MBR or GPT, and by default
// osbuilder's NVDIMM DAX header. Sized from the layers, made without root, mounts or loop
// devices, and byte-for-byte reproducible: ids derive from the input, times from the source
// date. (The dm-verity variant, with its root hash, is mkVerityImage.)

import { defineStep } from "../engine/index.js";
import { DISK_IMAGE_TOOLS, buildDiskImage, validateDiskImageOptions, type DiskImageOptions } from "./disk-image/build.js";
import { DISK_IMAGE_MEDIA_TYPE } from "./media-types.js";

export type MkExt4Options = DiskImageOptions;

export const mkExt4 = defineStep({
  kind: "mk-ext4",
  version: 7, // 7: the partition fills the disk to its last sector, as osbuilder's parted does; erofs sized as osbuilder sizes it
  inputs: ["rootfs"],
  output: "blob",
  mediaTypes: { out: DISK_IMAGE_MEDIA_TYPE },
  tools: (options: MkExt4Options) => DISK_IMAGE_TOOLS(options),
  validate: (options: MkExt4Options) => validateDiskImageOptions(options),
  async run(options: MkExt4Options, ctx) {
    await buildDiskImage(ctx, ctx.inputs[0], ctx.outputPath(), options, false);
  },
});
