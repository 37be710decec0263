// The media types of the files osbuild's steps make, as `osbuild push` labels them in a
// registry (there is no registered type for an initrd or a raw disk image; these are in
// osbuild's vendor tree, with the structured suffix of the compression).

export const DISK_IMAGE_MEDIA_TYPE = "application/vnd.osbuild.disk-image.v1";
export const TEXT_MEDIA_TYPE = "text/plain";

/** A newc cpio initrd, compressed as it is. */
export function initrdMediaType(compression: "gzip" | "zstd" | "none"): string {
  return `application/vnd.osbuild.initrd.v1${compression === "none" ? "" : `+${compression}`}`;
}
