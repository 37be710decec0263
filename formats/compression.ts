// Which compression a file starts with, by its magic bytes (of the ones osbuild reads or
// the kernel takes for an initrd).

export type Compression = "none" | "gzip" | "zstd" | "xz" | "bzip2";

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** The compression of data starting with `head` (its first 6 bytes or more). */
export function compressionOf(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.subarray(0, 6).equals(XZ_MAGIC)) return "xz";
  if (head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  return "none";
}
