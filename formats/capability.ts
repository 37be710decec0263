// security.capability values (struct vfs_cap_data / vfs_ns_cap_data, linux/capability.h).
// Version 2 is a file capability for any user namespace's root; version 3 also names the
// host uid of the namespace root it was set for.

const REVISION_MASK = 0xff000000;
const REVISION_2 = 0x02000000;
const REVISION_3 = 0x03000000;
const V2_SIZE = 20;
const V3_SIZE = 24;

/**
 * A version 3 capability set for the namespace whose root is host uid `rootId`, as the
 * version 2 value it stands for in a rootfs of its own; any other value as it is.
 */
export function withoutRootId(value: Buffer, rootId: number): Buffer {
  if (value.length !== V3_SIZE) return value;
  const magic = value.readUInt32LE(0);
  if ((magic & REVISION_MASK) >>> 0 !== REVISION_3 || value.readUInt32LE(V2_SIZE) !== rootId) return value;
  const plain = Buffer.from(value.subarray(0, V2_SIZE));
  plain.writeUInt32LE(((magic & ~REVISION_MASK) | REVISION_2) >>> 0, 0);
  return plain;
}
