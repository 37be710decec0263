// The ELF identification header: enough to tell whether a binary is an executable for a
// given architecture before it goes into an image.

export interface ElfInfo {
  bits: 32 | 64;
  endian: "little" | "big";
  /** e_machine */
  machine: number;
  /** e_type: 2 executable, 3 shared object / PIE */
  type: number;
}

/** e_machine values by `uname -m` architecture. */
export const ELF_MACHINES: Readonly<Record<string, { machine: number; bits: 32 | 64; endian: "little" | "big" }>> = {
  x86_64: { machine: 62, bits: 64, endian: "little" },
  aarch64: { machine: 183, bits: 64, endian: "little" },
  ppc64le: { machine: 21, bits: 64, endian: "little" },
  s390x: { machine: 22, bits: 64, endian: "big" },
};

/** Parses the first 20 bytes of a file; undefined when it is not ELF. */
export function parseElfHeader(head: Buffer): ElfInfo | undefined {
  if (head.length < 20 || head.readUInt32BE(0) !== 0x7f454c46) return undefined;
  const bits = head[4] === 2 ? 64 : head[4] === 1 ? 32 : undefined;
  const endian = head[5] === 1 ? "little" : head[5] === 2 ? "big" : undefined;
  if (!bits || !endian) return undefined;
  const read16 = (offset: number): number => (endian === "little" ? head.readUInt16LE(offset) : head.readUInt16BE(offset));
  return { bits, endian, type: read16(16), machine: read16(18) };
}

/** The architecture (uname -m name) an ELF header is for, if osbuild knows it. */
export function elfArchitecture(info: ElfInfo): string | undefined {
  return Object.entries(ELF_MACHINES).find(([, want]) => want.machine === info.machine && want.bits === info.bits && want.endian === info.endian)?.[0];
}

/**
 * Whether the program headers name a dynamic loader (PT_INTERP): static and static-pie
 * programs have none. `read(offset, length)` reads the file; `head` is its first 64 bytes.
 */
export function hasProgramInterpreter(info: ElfInfo, head: Buffer, read: (offset: number, length: number) => Buffer): boolean {
  const little = info.endian === "little";
  const u16 = (buffer: Buffer, offset: number): number => (little ? buffer.readUInt16LE(offset) : buffer.readUInt16BE(offset));
  const u32 = (buffer: Buffer, offset: number): number => (little ? buffer.readUInt32LE(offset) : buffer.readUInt32BE(offset));
  const tableOffset = info.bits === 64 ? Number(little ? head.readBigUInt64LE(0x20) : head.readBigUInt64BE(0x20)) : u32(head, 0x1c);
  const entrySize = u16(head, info.bits === 64 ? 0x36 : 0x2a);
  const count = u16(head, info.bits === 64 ? 0x38 : 0x2c);
  if (entrySize < 4 || count === 0) return false;
  const table = read(tableOffset, entrySize * count);
  const PT_INTERP = 3;
  for (let index = 0; index < count; index++) if (u32(table, index * entrySize) === PT_INTERP) return true;
  return false;
}
