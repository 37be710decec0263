// An ext4 filesystem from a tree, without root, mounts or loop devices: mke2fs -d writes it
// straight into the image file at the partition's offset, then debugfs sets what mke2fs
// copied from the files on disk but should come from the layers: times always (mke2fs
// copies atime and ctime, which no one can set on a host file), and without root also
// owners, modes, device nodes and xattrs.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";

const BLOCK = 4096;
const INODE_SIZE = 256;

export interface Ext4Plan {
  /** Smallest size that holds the tree with the requested free space (bytes). */
  bytes: number;
  inodes: number;
  journalMiB: number;
}

/**
 * The size an ext4 filesystem needs for `entries`: data blocks, directory blocks, long
 * symlinks, the inode table, the journal, group metadata and reserved blocks, computed from
 * the layer metadata (no trial filesystems).
 */
export function planExt4(entries: readonly FileEntry[], options: { extraFreeMiB: number; reservedPercent: number; blockSize?: number }): Ext4Plan {
  const blockSize = options.blockSize ?? BLOCK;
  const blocksFor = (bytes: number): number => Math.ceil(bytes / blockSize);
  let dataBlocks = 0;
  let inodes = 11 + 1; // reserved inodes, lost+found
  const dirBytes = new Map<string, number>();
  for (const entry of entries) {
    const parent = entry.path.includes("/") ? entry.path.slice(0, entry.path.lastIndexOf("/")) : "";
    // a directory entry: 8 bytes of header plus the name, 4-byte aligned
    dirBytes.set(parent, (dirBytes.get(parent) ?? 24) + 8 + Math.ceil(Buffer.byteLength(entry.path.slice(parent ? parent.length + 1 : 0)) / 4) * 4);
    if (entry.type === "hardlink") continue;
    inodes++;
    if (entry.type === "file") {
      const blocks = blocksFor(entry.size);
      dataBlocks += blocks + (blocks > 4 * 32768 ? Math.ceil(blocks / 340) : 0); // extent index blocks for very large files
    } else if (entry.type === "symlink" && Buffer.byteLength(entry.linkTarget ?? "") >= 60) dataBlocks += 1;
    else if (entry.type === "dir") dirBytes.set(entry.path, dirBytes.get(entry.path) ?? 24);
  }
  for (const bytes of dirBytes.values()) dataBlocks += Math.max(1, blocksFor(bytes * 1.25)); // htree and slack
  const extraBlocks = blocksFor(options.extraFreeMiB * 1024 * 1024);
  // Room for the files written at run time needs inodes too (one per 16 KiB, mke2fs's default ratio).
  inodes = Math.ceil(inodes * 1.05) + Math.ceil((options.extraFreeMiB * 1024 * 1024) / 16384) + 64;
  const inodeBlocks = blocksFor(inodes * INODE_SIZE);
  const journalMiB = dataBlocks * blockSize < 512 * 1024 * 1024 ? 8 : 32;
  const content = dataBlocks + extraBlocks + inodeBlocks + blocksFor(journalMiB * 1024 * 1024);
  // Per 128 MiB group: superblock/GDT backups, bitmaps, flex_bg padding; plus reserved blocks.
  const withMetadata = content * 1.03 + 1024;
  const total = Math.ceil(withMetadata / (1 - options.reservedPercent / 100));
  return { bytes: total * blockSize, inodes, journalMiB };
}

export interface Ext4Identity {
  uuid: string;
  hashSeed: string;
  /** Seconds: the time mke2fs and debugfs believe it is (superblock and inode times). */
  time: number;
}

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

/** mke2fs -d into `image` at `offset`, a filesystem of `bytes`, then the debugfs fix-up. */
export async function makeExt4(
  exec: Exec,
  image: string,
  layout: { offset: number; bytes: number },
  tree: string,
  entries: readonly FileEntry[],
  options: { plan: Ext4Plan; identity: Ext4Identity; reservedPercent: number; label?: string; asRoot: boolean; workDir: string; blockSize?: number },
): Promise<void> {
  const blockSize = options.blockSize ?? BLOCK;
  const env = { E2FSPROGS_FAKE_TIME: String(options.identity.time), MKE2FS_CONFIG: "/dev/null", LC_ALL: "C" };
  const device = `${image}?offset=${layout.offset}`;
  await exec(
    "mke2fs",
    [
      "-q",
      "-F",
      "-t",
      "ext4",
      "-b",
      String(blockSize),
      "-I",
      String(INODE_SIZE),
      "-N",
      String(options.plan.inodes),
      "-m",
      String(options.reservedPercent),
      "-J",
      `size=${options.plan.journalMiB}`,
      "-U",
      options.identity.uuid,
      "-E",
      `hash_seed=${options.identity.hashSeed},offset=${layout.offset},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0`,
      // What /etc/mke2fs.conf gives ext4, spelled out so that the host's file cannot change the image.
      "-O",
      "has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize,^metadata_csum_seed,^orphan_file",
      ...(options.label ? ["-L", options.label] : []),
      "-d",
      tree,
      image,
      `${Math.floor(layout.bytes / blockSize)}`,
    ],
    { env },
  );
  const script = fixupScript(entries, options.identity.time, options.asRoot, options.workDir);
  const scriptFile = join(options.workDir, "debugfs.cmds");
  writeFileSync(scriptFile, script);
  await exec("debugfs", ["-w", "-f", scriptFile, device], { env });
}

/** debugfs commands that make every inode's metadata what the layers say. */
function fixupScript(entries: readonly FileEntry[], time: number, asRoot: boolean, workDir: string): string {
  const lines: string[] = [];
  let xattrFiles = 0;
  for (const entry of entries) {
    if (entry.type === "hardlink") continue;
    const path = quote(`/${entry.path}`);
    if (!asRoot) {
      // Without root the tree holds placeholders: recreate devices, set owners and modes.
      if (entry.type === "char" || entry.type === "block") {
        lines.push(`rm ${path}`, `mknod ${path} ${entry.type === "char" ? "c" : "b"} ${entry.devMajor ?? 0} ${entry.devMinor ?? 0}`);
      }
      lines.push(`sif ${path} uid ${entry.uid}`, `sif ${path} gid ${entry.gid}`);
      if (entry.type !== "symlink") lines.push(`sif ${path} mode 0${(typeMode(entry.type) | entry.mode).toString(8)}`);
      for (const [name, value] of Object.entries(entry.xattrs ?? {})) {
        const file = join(workDir, `xattr-${xattrFiles++}`);
        writeFileSync(file, value);
        lines.push(`ea_set -f ${quote(file)} ${path} ${name}`);
      }
    }
    // mke2fs copied atime and ctime from the files on disk; the layers only know mtime.
    lines.push(`sif ${path} atime @${entry.mtime}`, `sif ${path} ctime @${entry.mtime}`, `sif ${path} crtime @${time}`);
  }
  return `${lines.join("\n")}\n`;
}

function typeMode(type: FileEntry["type"]): number {
  return { file: 0o100000, dir: 0o040000, symlink: 0o120000, hardlink: 0o100000, char: 0o020000, block: 0o060000, fifo: 0o010000 }[type];
}

function quote(path: string): string {
  return `"${path.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}
