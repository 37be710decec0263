// The boot image headers of Linux kernels (what `qemu -kernel` is given): enough to tell which
// architecture a vmlinuz is for before a boot that would only hang.

/** Bytes a reader needs from the start of the image. */
export const KERNEL_HEADER_BYTES = 0x10010;

/**
 * The architecture (uname -m name) of a kernel image from its first bytes: x86's bzImage
 * ("HdrS" at 0x202), arm64's Image ("ARM\x64" at 0x38), s390's image ("S390EP" at 0x10008).
 * undefined for anything else (a compressed or an ELF vmlinux, another architecture).
 */
export function kernelImageArchitecture(head: Buffer): "x86_64" | "aarch64" | "s390x" | undefined {
  const text = (offset: number, length: number): string => head.subarray(offset, offset + length).toString("latin1");
  if (head.length >= 0x206 && text(0x202, 4) === "HdrS") return "x86_64";
  if (head.length >= 0x40 && text(0x38, 4) === "ARM\x64") return "aarch64";
  if (head.length >= 0x1000e && text(0x10008, 6) === "S390EP") return "s390x";
  return undefined;
}
