// The file-type bits of a POSIX st_mode, as cpio, ext4, xfs and erofs store them.

export const FILE_TYPE_BITS = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
} as const;

export type FileTypeName = keyof typeof FILE_TYPE_BITS;

/** The st_mode of an entry: its type's bits and its permission bits (a hardlink is a regular file). */
export function modeOf(type: FileTypeName | "hardlink", permissions: number): number {
  return FILE_TYPE_BITS[type === "hardlink" ? "file" : type] | (permissions & 0o7777);
}
