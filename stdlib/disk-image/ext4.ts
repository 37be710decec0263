// An ext4 filesystem from a tree, without root, mounts or loop devices: mke2fs -d writes it
// straight into the image file at the partition's offset. It runs in a fakeroot session that
// answers its stat and listxattr calls from the layers (owners, modes, device nodes, xattrs:
// see fakeroot.ts), as root too, so that the image never depends on who builds it or on the
// host's filesystem (which orders xattrs its own way). What it copies from the files but should
// come from the layers, atime and ctime (no one can set a host file's ctime), is set
// afterwards by rewriting the inode table in place, and the count of bytes mke2fs wrote
// (which varies with the host tree it read) is cleared from the superblocks.

import { closeSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";
import { clearLifetimeWrites, setInodeTimesToMtime } from "../../formats/ext4.js";
import { withLayerMetadata } from "./fakeroot.js";

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
export function planExt4(entries: readonly FileEntry[], options: { extraFreeMiB: number; reservedPercent: number; blockSize?: number; journal?: boolean }): Ext4Plan {
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
  const journalMiB = options.journal === false ? 0 : dataBlocks * blockSize < 512 * 1024 * 1024 ? 8 : 32;
  const journalBlocks = blocksFor(journalMiB * 1024 * 1024);
  const content = dataBlocks + extraBlocks + inodeBlocks + journalBlocks;
  // Per 128 MiB group: superblock/GDT backups, bitmaps, flex_bg padding; plus reserved blocks.
  const withMetadata = content * 1.03 + 1024;
  // mke2fs makes the journal before it copies the tree, and refuses one larger than half of
  // the blocks still free then (a small tree would otherwise get too small a filesystem).
  const forJournal = (2 * journalBlocks + inodeBlocks) * 1.03 + 1024;
  const total = Math.ceil(Math.max(withMetadata, forJournal) / (1 - options.reservedPercent / 100));
  return { bytes: total * blockSize, inodes, journalMiB };
}

export interface Ext4Identity {
  uuid: string;
  hashSeed: string;
  /** Seconds: the time mke2fs and debugfs believe it is (superblock and inode times). */
  time: number;
}

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

/** mke2fs -d into `image` at `offset`, a filesystem of `bytes`, then the inode times and write counters. */
export async function makeExt4(
  exec: Exec,
  image: string,
  layout: { offset: number; bytes: number },
  tree: string,
  entries: readonly FileEntry[],
  options: { plan: Ext4Plan; identity: Ext4Identity; reservedPercent: number; label?: string; workDir: string; blockSize?: number; journal?: boolean; metadataChecksums?: boolean },
): Promise<void> {
  const blockSize = options.blockSize ?? BLOCK;
  const config = join(options.workDir, "mke2fs.conf");
  writeFileSync(config, MKE2FS_CONF);
  // e2fsprogs takes a fake time of 0 for none and would use the clock: the filesystem's own
  // times (superblock, root, lost+found, creation times) are then 1 s past the epoch.
  const env = { E2FSPROGS_FAKE_TIME: String(Math.max(1, options.identity.time)), MKE2FS_CONFIG: config, LC_ALL: "C" };
  const args = [
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
    ...(options.journal === false ? ["-O", "^has_journal"] : ["-J", `size=${options.plan.journalMiB}`]),
    ...(options.metadataChecksums === false ? ["-O", "^metadata_csum"] : []),
    "-U",
    options.identity.uuid,
    "-E",
    `hash_seed=${options.identity.hashSeed},offset=${layout.offset},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard`,
    ...(options.label ? ["-L", options.label] : []),
    "-d",
    tree,
    image,
    `${Math.floor(layout.bytes / blockSize)}`,
  ];
  await withLayerMetadata(exec, tree, entries, options.workDir, (session) => exec("mke2fs", args, { env: { ...env, ...session } }));
  const fd = openSync(image, "r+");
  try {
    setInodeTimesToMtime(fd, layout.offset);
    clearLifetimeWrites(fd, layout.offset);
  } finally {
    closeSync(fd);
  }
}

/** Debian's ext4 settings, as a file of our own so that the host's /etc/mke2fs.conf cannot change the image. */
const MKE2FS_CONF = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
		inode_ratio = 16384
	}
	floppy = {
		inode_ratio = 16384
	}
	default = {
		inode_ratio = 16384
	}
`;
