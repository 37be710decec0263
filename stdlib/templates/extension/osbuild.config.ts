// A Kata guest extension image (Kata's composable VM images): the files under ./extension as
// an erofs filesystem with a dm-verity hash tree behind it. Kata's runtime attaches it as a
// virtio-blk disk, and the guest mounts it at /run/kata-extensions/<name>/ after checking it
// against the root hash.
//
//   npx osbuild run        # builds out/image and out/root_hash
//
// Every step and option is typed (hover over them in your editor): `npx osbuild check`
// reports a mistake at its file:line:col before anything runs.

import { defineConfig, fetchBase, mkVerityImage } from "osbuild";

export default defineConfig({
  // Every mtime in the outputs is clamped to this (2025-01-01); SOURCE_DATE_EPOCH overrides it.
  sourceDateEpoch: 1735689600,
  targets: () => {
    // Files copied without root are owned by root in the image.
    const files = fetchBase({ directory: "./extension" });
    // No DAX header (it is attached as virtio-blk, not as an NVDIMM) and no root filesystem
    // checks (it has no /sbin/init: it is not a root filesystem).
    const { image, rootHash } = mkVerityImage(files, { fsType: "erofs", daxHeader: false, checks: false });
    return { image, root_hash: rootHash };
  },
});
