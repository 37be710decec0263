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
