// dm-verity for a Kata disk image, as osbuilder does it: `veritysetup format --no-superblock`
// writes the hash tree of the filesystem into a separate hash partition; the root hash goes
// into a root-hash file (osbuilder's format) and the kernel command line (Kata runtime's
// dm-mod.create format). veritysetup reads and writes plain files: no root, no loop device.
// Given the same data and salt, the hash tree and root hash are the same bytes every time.

import type { ExecOptions, ExecResult } from "../../engine/index.js";

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

const SECTOR = 512;
const DIGEST_BYTES = 32; // sha256

export interface VerityInfo {
  rootHash: string;
  salt: string;
  dataBlocks: number;
  dataBlockSize: number;
  hashBlockSize: number;
  hashAlgorithm: "sha256";
}

export interface VerityFormatOptions {
  /** How many blocks of `dataFile` the tree covers (the filesystem, not the whole file). */
  dataBlocks: number;
  /** Hex. Fixed by the caller (veritysetup would pick a random one) so that the root hash is reproducible. */
  salt: string;
  /** Only stored with a superblock, which osbuilder's layout has not; passed on for completeness. */
  uuid?: string;
  dataBlockSize?: 4096;
  hashBlockSize?: 4096;
}

/** Writes the hash tree of `dataFile`'s first `dataBlocks` blocks into `hashFile`; returns what the kernel needs. */
export async function formatVerity(exec: Exec, dataFile: string, hashFile: string, options: VerityFormatOptions): Promise<VerityInfo> {
  const dataBlockSize = options.dataBlockSize ?? 4096;
  const hashBlockSize = options.hashBlockSize ?? 4096;
  if (!/^(?:[0-9a-f]{2})+$/i.test(options.salt)) throw new Error(`verity: the salt must be an even number of hex digits, got '${options.salt}'`);
  if (!(Number.isInteger(options.dataBlocks) && options.dataBlocks > 0)) throw new Error(`verity: dataBlocks must be a whole number above 0, got ${options.dataBlocks}`);
  const { stdout } = await exec(
    "veritysetup",
    [
      "format",
      "--no-superblock",
      "--hash=sha256",
      `--salt=${options.salt}`,
      `--data-blocks=${options.dataBlocks}`,
      `--data-block-size=${dataBlockSize}`,
      `--hash-block-size=${hashBlockSize}`,
      ...(options.uuid ? [`--uuid=${options.uuid}`] : []),
      dataFile,
      hashFile,
    ],
    { env: { LC_ALL: "C" } },
  );
  const info = parseFormatOutput(stdout.toString("utf8"));
  if (info.dataBlocks !== options.dataBlocks || info.dataBlockSize !== dataBlockSize || info.hashBlockSize !== hashBlockSize || info.salt !== options.salt.toLowerCase()) {
    throw new Error(`verity: veritysetup reports ${JSON.stringify(info)}, not what was asked for`);
  }
  return info;
}

/** The fields of `veritysetup format`'s report ("Root hash:", "Salt:", ...). */
export function parseFormatOutput(output: string): VerityInfo {
  const fields = new Map<string, string>();
  for (const line of output.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const text = (label: string): string => {
    const value = fields.get(label);
    if (value === undefined || value === "") throw new Error(`verity: veritysetup printed no '${label}:' line:\n${output}`);
    return value;
  };
  const number = (label: string): number => {
    const value = Number(text(label));
    if (!Number.isInteger(value)) throw new Error(`verity: veritysetup's '${label}:' is not a number: ${text(label)}`);
    return value;
  };
  const algorithm = fields.get("Hash algorithm") ?? "sha256";
  if (algorithm !== "sha256") throw new Error(`verity: veritysetup used ${algorithm}, osbuilder's images use sha256`);
  return {
    rootHash: text("Root hash"),
    salt: text("Salt"),
    dataBlocks: number("Data blocks"),
    dataBlockSize: number("Data block size"),
    hashBlockSize: number("Hash block size"),
    hashAlgorithm: "sha256",
  };
}

/** The key=value pairs osbuilder writes and Kata's runtime passes on (an extension's verity_params). */
export function verityParams(info: VerityInfo): string {
  return `root_hash=${info.rootHash},salt=${info.salt},data_blocks=${info.dataBlocks},data_block_size=${info.dataBlockSize},hash_block_size=${info.hashBlockSize}`;
}

/** osbuilder's root-hash file (root_hash_<variant>.txt): the verity params on one line. */
export function rootHashFile(info: VerityInfo): string {
  return `${verityParams(info)}\n`;
}

/**
 * The kernel parameters that make the verity device the root filesystem, as the Kata
 * runtime writes them: partition 1 holds the data, partition 2 the hash tree.
 */
export function kernelParams(info: VerityInfo, options: { device: "pmem" | "virtio"; fsType: "ext4" | "xfs" | "erofs" }): string {
  const [dataDevice, hashDevice] = options.device === "pmem" ? ["/dev/pmem0p1", "/dev/pmem0p2"] : ["/dev/vda1", "/dev/vda2"];
  const dataSectors = (info.dataBlockSize / SECTOR) * info.dataBlocks;
  const table = `dm-verity,,,ro,0 ${dataSectors} verity 1 ${dataDevice} ${hashDevice} ${info.dataBlockSize} ${info.hashBlockSize} ${info.dataBlocks} 0 ${info.hashAlgorithm} ${info.rootHash} ${info.salt}`;
  const rootFlags = options.fsType === "ext4" ? "data=ordered,errors=remount-ro ro" : "ro";
  return `dm-mod.create="${table}" root=/dev/dm-0 rootflags=${rootFlags} rootfstype=${options.fsType}`;
}

/**
 * Bytes of the hash tree veritysetup writes for `dataBytes` of data: each level holds one
 * digest per block of the level below, until one block remains (whose digest is the root
 * hash). A single data block needs no tree at all.
 */
export function hashTreeBytes(dataBytes: number, blockSize: number = 4096): number {
  const perBlock = blockSize / DIGEST_BYTES;
  let blocks = Math.ceil(dataBytes / blockSize);
  let total = 0;
  while (blocks > 1) {
    blocks = Math.ceil(blocks / perBlock);
    total += blocks;
  }
  return total * blockSize;
}
