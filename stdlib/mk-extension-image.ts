// mkExtensionImage: a Kata guest extension image (docs/design/composable-vm-images.md): the
// tree as erofs in partition 1 of an MBR disk, its dm-verity hash tree in partition 2, no
// DAX header (extensions are always virtio-blk) and no bootability checks (an extension has
// no init). What Kata builds with image_builder.sh FS_TYPE=erofs MEASURED_ROOTFS=yes
// SKIP_DAX_HEADER=yes SKIP_ROOTFS_CHECK=yes. Outputs the image, the root hash file in
// osbuilder's format, and the `verity_params` value the runtime's guest_extension_images
// entry carries and puts on the kernel command line as kata.extension.<name>.verity_params=.
// The salt derives from the content, so the root hash is the same on every build.

import { writeFileSync } from "node:fs";
import { defineStep } from "../engine/index.js";
import { DISK_IMAGE_TOOLS, buildDiskImage } from "./disk-image/build.js";
import { rootHashFile, verityParams } from "./disk-image/verity.js";
import { DISK_IMAGE_MEDIA_TYPE, TEXT_MEDIA_TYPE } from "./media-types.js";

export interface MkExtensionImageOptions {
  /** The dm-verity hash partition (MEASURED_ROOTFS). Default true; false gives an unmeasured extension (empty verity_params). */
  verity?: boolean;
  /** erofs compression. Default "lz4hc", as osbuilder. */
  compression?: "lz4hc" | "none";
  /** The file size is rounded up to this many MiB. Default 1 (osbuilder does not align erofs images). */
  alignMiB?: number;
}

const VERITYSETUP = { command: "veritysetup", versionArgs: ["--version"], package: "cryptsetup-bin" };

export const mkExtensionImage = defineStep({
  kind: "mk-extension-image",
  version: 1,
  inputs: ["rootfs"],
  output: { blobs: ["image", "rootHash", "verityParams"] },
  mediaTypes: { image: DISK_IMAGE_MEDIA_TYPE, rootHash: TEXT_MEDIA_TYPE, verityParams: TEXT_MEDIA_TYPE },
  tools: (options: MkExtensionImageOptions) => [...DISK_IMAGE_TOOLS({ fsType: "erofs" }), ...(options.verity === false ? [] : [VERITYSETUP])],
  validate(options: MkExtensionImageOptions) {
    if (options.compression !== undefined && !["lz4hc", "none"].includes(options.compression)) return `compression must be "lz4hc" or "none", got ${JSON.stringify(options.compression)}`;
    if (options.alignMiB !== undefined && !(Number.isInteger(options.alignMiB) && options.alignMiB >= 1)) return "alignMiB must be a whole number of MiB, 1 or more";
    return undefined;
  },
  async run(options: MkExtensionImageOptions, ctx) {
    const withVerity = options.verity ?? true;
    const { verity } = await buildDiskImage(
      ctx,
      ctx.inputs[0],
      ctx.outputPath("image"),
      { fsType: "erofs", erofsCompression: options.compression ?? "lz4hc", daxHeader: false, checks: false, partitionTable: "mbr", alignMiB: options.alignMiB ?? 1 },
      withVerity,
    );
    writeFileSync(ctx.outputPath("rootHash"), verity ? rootHashFile(verity) : "");
    writeFileSync(ctx.outputPath("verityParams"), verity ? verityParams(verity) : "");
  },
});
