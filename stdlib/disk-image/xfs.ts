// An xfs filesystem from the layers, without root, mounts or loop devices. mkfs.xfs builds
// the whole tree from a protofile (-p) written from `entries`: owners, modes, device nodes
// and link targets come from the layers, file contents from the materialized tree. What a
// protofile cannot say, xfs_db -x writes into the inodes afterwards:
//   - times: mkfs.xfs 6.1 stamps every inode with the clock (SOURCE_DATE_EPOCH is ignored),
//     so atime/mtime/ctime become the entry's mtime and crtime the build time;
//   - the sticky bit: the protofile mode is "[-bcdlp][u-][g-]NNN", with no place for it;
//   - xattrs: set with attr_set, then their values written (in-inode xattrs only);
//   - hardlinks: the protofile has no syntax for them. Each extra name is made as a
//     throw-away inode, its directory entry is pointed at the real inode, the throw-away
//     inode is marked free, and xfs_repair puts the inode maps and link counts right.
// Everything else mkfs.xfs writes is a function of its input and the fixed UUID, so the
// result is the same bytes on every run (xfs_repair, too, writes the same bytes each time).
// mkfs.xfs writes each file as one extent and can't say when it didn't get one: every file's
// block map is checked. mkfs.xfs cannot write at an offset: the filesystem is made in a
// file of its own and copied into the image, sparse. Limits of the protofile: names and
// symlink targets can't contain blanks or start with ':' (refused with an error), files
// must be under 2 GiB (mkfs.xfs reads each into memory), and the partition must be 300 MiB
// or more (mkfs.xfs's minimum; planXfsBytes never plans less).

import { rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { decodeName, encodeName, hostPath } from "../../formats/names.js";
import { hardlinkTarget } from "./entries.js";
import { roundUp } from "./layout.js";
import { copyIntoImage } from "./sparse.js";
import { join } from "node:path";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";
import { modeOf } from "../../formats/mode.js";

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

const MiB = 1024 * 1024;
const BLOCK = 4096;
const INODE_SIZE = 512;
/** mkfs.xfs (xfsprogs 5.19 and later) refuses a data section smaller than this. */
export const XFS_MIN_BYTES = 300 * MiB;
/** mkfs.xfs's internal log from 300 MiB up to about 64 GiB. */
const LOG_BYTES = 64 * MiB;
/** Directory data blocks live below this file offset; leaf and free-index blocks above. */
const DIR_LEAF_OFFSET = 32 * 1024 * MiB;

/**
 * A size that surely holds `entries` plus `extraFreeMiB` of free space: data and directory
 * blocks, inode chunks, the log, AG headers, the blocks the kernel keeps in reserve, and
 * never less than mkfs.xfs's minimum of 300 MiB.
 */
export function planXfsBytes(entries: readonly FileEntry[], extraFreeMiB: number, blockSize: number = BLOCK): number {
  const blocksFor = (bytes: number): number => Math.ceil(bytes / blockSize);
  let dataBlocks = 0;
  let inodes = 3; // root, realtime bitmap and summary
  let largestFile = 0;
  const dirBytes = new Map<string, number>();
  for (const entry of entries) {
    const parent = parentOf(entry.path);
    // a data-block directory entry: inode number, name length, name, file type, tag; 8-byte aligned
    dirBytes.set(parent, (dirBytes.get(parent) ?? 64) + Math.ceil((12 + Buffer.byteLength(nameOf(entry.path))) / 8) * 8);
    if (entry.type === "hardlink") continue;
    inodes++;
    if (entry.type === "file") {
      dataBlocks += blocksFor(entry.size);
      largestFile = Math.max(largestFile, entry.size);
    } else if (entry.type === "symlink" && Buffer.byteLength(entry.linkTarget ?? "") > 256) dataBlocks += 1;
    else if (entry.type === "dir") dirBytes.set(entry.path, dirBytes.get(entry.path) ?? 64);
  }
  // Small directories live in the inode; bigger ones take data blocks plus leaf/index blocks.
  for (const bytes of dirBytes.values()) if (bytes > 256) dataBlocks += blocksFor(bytes * 1.3) + (bytes > blockSize ? blocksFor(bytes / 4) + 1 : 0);
  const inodeBytes = Math.ceil((inodes * 1.05) / 64) * 64 * INODE_SIZE; // inodes come in chunks of 64
  const content = dataBlocks * blockSize + inodeBytes;
  // The protofile writes each file as one extent, found in any AG, but files go to their
  // directory's AG first, so AGs fill unevenly. With 4 × the largest file free at the end,
  // some AG always has it in one piece (makeXfs checks that every file got one extent).
  const forLargestFile = 4 * (largestFile + 4 * MiB);
  // 4 AGs of headers, free-space and inode btrees; the reserve the kernel holds back at mount
  // (min(5%, 8192 blocks)), so that extraFreeMiB is really free.
  const reserve = Math.min(8192 * blockSize, (content + extraFreeMiB * MiB) / 20);
  const needed = content * 1.1 + 4 * MiB + reserve + extraFreeMiB * MiB + forLargestFile;
  const log = Math.max(LOG_BYTES, needed / 2048);
  return roundUp(Math.max(XFS_MIN_BYTES, needed + log), MiB);
}

export interface XfsOptions {
  uuid: string;
  /** Seconds: the root's and the internal inodes' times, and every inode's crtime. */
  time: number;
  workDir: string;
  /** Default 4096, as osbuilder. */
  blockSize?: number;
  /** The materialized tree: regular files' contents are read from here. */
  tree: string;
}

/** An xfs filesystem of `layout.bytes` holding `entries`, written into `image` at `layout.offset`. */
export async function makeXfs(exec: Exec, image: string, layout: { offset: number; bytes: number }, allEntries: readonly FileEntry[], options: XfsOptions): Promise<void> {
  const entries = allEntries.filter((entry) => entry.path !== "" && entry.path !== "."); // the root is made by mkfs.xfs
  const blockSize = options.blockSize ?? BLOCK;
  const bytes = Math.floor(layout.bytes / blockSize) * blockSize;
  if (bytes < XFS_MIN_BYTES) {
    throw new Error(`an xfs filesystem needs at least 300 MiB (mkfs.xfs refuses less), the partition has ${(layout.bytes / MiB).toFixed(1)} MiB: give a larger size (planXfsBytes never plans less)`);
  }
  const file = join(options.workDir, "xfs.img");
  const proto = writeProtofile(entries, options.tree, options.workDir);
  rmSync(file, { force: true });
  writeFileSync(file, "");
  truncateSync(file, bytes);
  await exec(
    "mkfs.xfs",
    [
      "-q",
      "-K", // nothing to discard in a fresh file
      "-b",
      `size=${blockSize}`,
      // osbuilder's reflink=0; the rest are xfsprogs 6.1's defaults, spelled out because the
      // timestamp fix-up depends on bigtime and the image should not depend on the defaults.
      "-m",
      `crc=1,finobt=1,rmapbt=0,reflink=0,bigtime=1,inobtcount=1,uuid=${options.uuid}`,
      "-i",
      `size=${INODE_SIZE},sparse=1`,
      "-n",
      "ftype=1",
      "-p",
      proto.path,
      file,
    ],
    { env: { LC_ALL: "C" } },
  );
  const db = new XfsDb(exec, file);
  const inodes = await db.inodeNumbers();
  await checkOneExtentEach(db, entries, inodes, blockSize);
  if (proto.hardlinks.length > 0) {
    await linkHardlinks(db, inodes, proto.hardlinks, blockSize);
    // Frees the throw-away inodes in the inode btrees and sets the link counts.
    await exec("xfs_repair", ["-f", file], { env: { LC_ALL: "C" } });
    // ... and nothing else: had it found more to mend (a lost+found made), the count is off.
    const inUse = await db.inodesInUse();
    const expected = BigInt(entries.filter((entry) => entry.type !== "hardlink").length + 1 + inodes.internal.length);
    if (inUse !== expected) throw new Error(`xfs: after linking the hardlinks, xfs_repair left ${inUse} inodes in use, not ${expected}`);
  }
  await db.run(fixupCommands(entries, inodes, options.time), { check: "writes" });
  await exec("xfs_repair", ["-n", "-f", file], { env: { LC_ALL: "C" } }); // fails loudly should the fix-up have broken anything
  copyIntoImage(file, image, layout.offset);
  rmSync(file, { force: true });
}

interface Hardlink {
  path: string;
  target: string;
}

/**
 * The protofile for `entries`: the tree depth first, each directory's entries sorted by name
 * (inode numbers follow this order, so it must not depend on the host). Names are tokens
 * split at blanks, so names with blanks can't be said at all; content paths with blanks
 * are given through a symlink in the work directory.
 */
function writeProtofile(entries: readonly FileEntry[], tree: string, workDir: string): { path: string; hardlinks: Hardlink[] } {
  const byPath = new Map(entries.map((entry) => [entry.path, entry]));
  const children = new Map<string, FileEntry[]>([["", []]]);
  for (const entry of entries) {
    if (entry.type === "dir") children.set(entry.path, children.get(entry.path) ?? []);
    const siblings = children.get(parentOf(entry.path)) ?? [];
    siblings.push(entry);
    children.set(parentOf(entry.path), siblings);
  }
  for (const [dir, list] of children) {
    if (dir !== "" && byPath.get(dir)?.type !== "dir") throw new Error(`xfs: '${list[0]?.path}' is in '${dir}', which the layers don't have as a directory`);
    list.sort((a, b) => Buffer.compare(Buffer.from(nameOf(a.path)), Buffer.from(nameOf(b.path))));
  }

  const empty = join(workDir, "xfs-empty");
  writeFileSync(empty, "");
  let aliases = 0;
  const contentPath = (path: string): string => {
    const onDisk = join(tree, path);
    if (isToken(onDisk)) return onDisk;
    const alias = join(workDir, `xfs-content-${aliases++}`);
    symlinkSync(hostPath(onDisk), alias);
    if (!isToken(alias)) throw new Error(`xfs: the work directory '${workDir}' has blanks in its path, which a protofile can't name`);
    return alias;
  };
  const hardlinks: Hardlink[] = [];
  const lines = ["osbuild", "0 0", "d--755 0 0"]; // the root: root's, 0755, as mkfs.xfs makes it
  const emit = (dir: string, depth: number): void => {
    const indent = " ".repeat(depth);
    for (const entry of children.get(dir) ?? []) {
      const name = nameOf(entry.path);
      if (!isToken(name) || name.startsWith(":") || name === "$") {
        throw new Error(`xfs: '${entry.path}' can't be put in an xfs protofile (names with blanks, names starting with ':' and the name '$' can't be written): rename it, or use ext4 or erofs`);
      }
      let spec = entry;
      if (entry.type === "hardlink") {
        const target = hardlinkTarget(entry, byPath, "xfs");
        hardlinks.push({ path: entry.path, target: target.path });
        spec = target;
      }
      const head = `${indent}${name} ${modeString(spec)} ${spec.uid} ${spec.gid}`;
      switch (spec.type) {
        case "file":
          if (spec.size >= 2 ** 31) throw new Error(`xfs: '${spec.path}' is 2 GiB or more, more than mkfs.xfs's protofile can copy (it reads each file into memory with an int length): use ext4 or erofs`);
          // A hardlink's throw-away inode gets no data: it is freed again.
          lines.push(`${head} ${entry.type === "hardlink" ? empty : contentPath(spec.path)}`);
          break;
        case "symlink": {
          const target = spec.linkTarget ?? "";
          if (!isToken(target) || target.startsWith(":")) throw new Error(`xfs: the symlink '${spec.path}' → '${target}' can't be put in an xfs protofile (targets with blanks or starting with ':' can't be written): use ext4 or erofs`);
          lines.push(`${head} ${target}`);
          break;
        }
        case "char":
        case "block":
          lines.push(`${head} ${spec.devMajor ?? 0} ${spec.devMinor ?? 0}`);
          break;
        case "dir":
          lines.push(head);
          if (entry.type === "dir") emit(entry.path, depth + 1);
          lines.push(`${indent} $`);
          break;
        default:
          lines.push(head);
      }
    }
  };
  emit("", 1);
  lines.push("$", "");
  const path = join(workDir, "xfs.proto");
  writeFileSync(path, encodeName(lines.join("\n"))); // names as their bytes
  return { path, hardlinks };
}

/** "[type][u-][g-]NNN": the protofile's mode; the sticky bit is set by the fix-up. */
function modeString(entry: FileEntry): string {
  const type = { file: "-", dir: "d", symlink: "l", char: "c", block: "b", fifo: "p", hardlink: "-" }[entry.type];
  return `${type}${entry.mode & 0o4000 ? "u" : "-"}${entry.mode & 0o2000 ? "g" : "-"}${(entry.mode & 0o777).toString(8).padStart(3, "0")}`;
}

/**
 * A protofile token: anything without the blanks that separate tokens. mkfs.xfs splits at
 * isspace(3), which is also \v, \f and \r: a name holding one of those could otherwise say
 * "this file's content is /etc/shadow".
 */
function isToken(text: string): boolean {
  return text.length > 0 && !/[ \t\n\v\f\r]/.test(text);
}

interface InodeMap {
  /** path (no leading "/", "" for the root) → inode number */
  byPath: Map<string, bigint>;
  internal: bigint[];
  dirBlockFsbs: number;
}

/** xfs_db on the filesystem file, commands on stdin; it exits 0 whatever happens, so its output is checked. */
class XfsDb {
  constructor(
    private readonly exec: Exec,
    private readonly file: string,
  ) {}

  async run(commands: readonly string[], options: { check?: "writes" } = {}): Promise<string[]> {
    const result = await this.exec("xfs_db", ["-x", this.file], { input: `${commands.join("\n")}\n`, env: { LC_ALL: "C", TZ: "UTC" } });
    // (echo ends its line with a blank)
    const lines = decodeName(result.stdout).split("\n").map((line) => line.trimEnd()).filter((line) => line !== "");
    if (options.check === "writes") {
      // Successful writes echo "field = value"; anything else is xfs_db saying what failed.
      const failure = lines.find((line) => !/^[\w.[\]]+ = /.test(line));
      if (failure !== undefined) throw new Error(`xfs: xfs_db could not apply the metadata fix-up: ${failure}`);
    }
    return lines;
  }

  async inodesInUse(): Promise<bigint> {
    const lines = await this.run(["sb 0", "print icount ifree"]);
    const count = (name: string): bigint => BigInt(/= (\d+)$/.exec(lines.find((line) => line.startsWith(`${name} = `)) ?? "")?.[1] ?? -1);
    return count("icount") - count("ifree");
  }

  /** Every path's inode number (ncheck lists them all in one go), and the internal inodes. */
  async inodeNumbers(): Promise<InodeMap> {
    const lines = await this.run(["sb 0", "print rootino rbmino rsumino dirblklog", "blockget -n", "ncheck"]);
    const field = (name: string): bigint => {
      const value = lines.find((line) => line.startsWith(`${name} = `))?.slice(name.length + 3);
      if (value === undefined || !/^\d+$/.test(value)) throw new Error(`xfs: xfs_db printed no ${name}: ${lines.slice(0, 5).join(" | ")}`);
      return BigInt(value);
    };
    const byPath = new Map<string, bigint>([["", field("rootino")]]);
    for (const line of lines) {
      const match = /^\s*(\d+) (.+)$/.exec(line);
      if (!match) continue;
      const path = match[2]!.endsWith("/.") ? match[2]!.slice(0, -2) : match[2]!;
      byPath.set(path, BigInt(match[1]!));
    }
    return { byPath, internal: [field("rbmino"), field("rsumino")], dirBlockFsbs: 2 ** Number(field("dirblklog")) };
  }
}

/**
 * mkfs.xfs 6.1 asks for each file's blocks in one allocation and copies the whole file from
 * the start of whatever extent it got: should free space be too fragmented to give it in one
 * piece, the copy runs over into blocks that are not the file's. xfs_repair can't see that,
 * so each file's block map is checked here.
 */
async function checkOneExtentEach(db: XfsDb, entries: readonly FileEntry[], inodes: InodeMap, blockSize: number): Promise<void> {
  const files = entries.filter((entry) => entry.type === "file" && entry.size > 0);
  const lines = await db.run(files.flatMap((entry, index) => [`echo @${index}`, `inode ${inodes.byPath.get(entry.path)}`, "bmap"]));
  const extents = files.map((): Array<{ offset: number; count: number }> => []);
  let current: number | undefined;
  for (const line of lines) {
    const marker = /^@(\d+)$/.exec(line);
    if (marker) current = Number(marker[1]);
    const extent = /^data offset (\d+) startblock \d+ \(\d+\/\d+\) count (\d+)/.exec(line);
    if (extent && current !== undefined) extents[current]!.push({ offset: Number(extent[1]), count: Number(extent[2]) });
  }
  files.forEach((entry, index) => {
    const got = extents[index]!;
    if (got.length !== 1 || got[0]!.offset !== 0 || got[0]!.count !== Math.ceil(entry.size / blockSize)) {
      throw new Error(
        `xfs: mkfs.xfs could not give '${entry.path}' (${entry.size} bytes) one contiguous extent (it got ${JSON.stringify(got)}): the filesystem is too full for mkfs.xfs's protofile writes; give it more space (planXfsBytes plans enough)`,
      );
    }
  });
}

/**
 * Points each hardlink's directory entry at its target's inode and marks the throw-away
 * inode the protofile made for it free. The directory entry is found by the inode number it
 * holds, in the directory's inode (short form) or its data blocks.
 */
async function linkHardlinks(db: XfsDb, inodes: InodeMap, hardlinks: readonly Hardlink[], blockSize: number): Promise<void> {
  const inode = (path: string): bigint => {
    const number = inodes.byPath.get(path);
    if (number === undefined) throw new Error(`xfs: '${path}' is missing from the filesystem mkfs.xfs made`);
    return number;
  };
  const parents = [...new Set(hardlinks.map((link) => parentOf(link.path)))];
  // Where each parent directory keeps its entries.
  const layout = await db.run(parents.flatMap((parent) => [`echo @dir ${inode(parent)}`, `inode ${inode(parent)}`, "bmap"]));
  const dataBlocks = new Map<bigint, number[]>();
  let current: bigint | undefined;
  for (const line of layout) {
    const dir = /^@dir (\d+)$/.exec(line);
    if (dir) {
      current = BigInt(dir[1]!);
      dataBlocks.set(current, []);
      continue;
    }
    const extent = /^data offset (\d+) startblock \d+ \(\d+\/\d+\) count (\d+)/.exec(line);
    if (!extent || current === undefined) continue;
    const [start, count] = [Number(extent[1]), Number(extent[2])];
    for (let block = start; block < start + count && block * blockSize < DIR_LEAF_OFFSET; block++) {
      if (block % inodes.dirBlockFsbs === 0) dataBlocks.get(current)!.push(block);
    }
  }
  const listing = await db.run(
    parents.flatMap((parent) => {
      const number = inode(parent);
      const blocks = dataBlocks.get(number) ?? [];
      if (blocks.length === 0) return [`echo @at ${number} -`, `inode ${number}`, "print u3"];
      return blocks.flatMap((block) => [`echo @at ${number} ${block}`, `inode ${number}`, `dblock ${block}`, "print"]);
    }),
  );
  // "inode number held" → how to rewrite it: the field and where it is.
  const places = new Map<bigint, { dir: bigint; block: string; field: string }>();
  let at: { dir: bigint; block: string } | undefined;
  for (const line of listing) {
    const where = /^@at (\d+) (\S+)$/.exec(line);
    if (where) {
      at = { dir: BigInt(where[1]!), block: where[2]! };
      continue;
    }
    const entry = /^((?:u3\.sfdir3\.list|bu|du)\[\d+\]\.inumber(?:\.i[48])?) = (\d+)$/.exec(line);
    if (entry && at) places.set(BigInt(entry[2]!), { ...at, field: entry[1]! });
  }
  const commands: string[] = [];
  for (const link of hardlinks) {
    const placeholder = inode(link.path);
    const target = inode(link.target);
    const place = places.get(placeholder);
    if (!place) throw new Error(`xfs: could not find the directory entry of the hardlink '${link.path}' (inode ${placeholder}) to point it at '${link.target}'`);
    if (place.field.endsWith(".i4") && target > 0xffffffffn) throw new Error(`xfs: the hardlink '${link.path}' needs a 64-bit inode number in a short-form directory; use ext4 or erofs`);
    commands.push(`inode ${place.dir}`, ...(place.block === "-" ? [] : [`dblock ${place.block}`]), `write ${place.field} ${target}`);
    commands.push(`inode ${placeholder}`, "write core.mode 0");
  }
  await db.run(commands, { check: "writes" });
}

/** xfs_db commands that set what the protofile could not: times, the sticky bit, xattrs. */
function fixupCommands(entries: readonly FileEntry[], inodes: InodeMap, time: number): string[] {
  const commands: string[] = [];
  const setTimes = (inode: bigint, mtime: number): void => {
    commands.push(`inode ${inode}`);
    for (const field of ["core.atime", "core.mtime", "core.ctime"]) commands.push(`write ${field}.sec ${bigtime(mtime)}`);
    commands.push(`write v3.crtime.sec ${bigtime(time)}`);
  };
  setTimes(inodes.byPath.get("")!, time);
  for (const internal of inodes.internal) setTimes(internal, time);
  for (const entry of entries) {
    if (entry.type === "hardlink") continue;
    const inode = inodes.byPath.get(entry.path);
    if (inode === undefined) throw new Error(`xfs: '${entry.path}' is missing from the filesystem mkfs.xfs made`);
    commands.push(`inode ${inode}`);
    // xattrs first: attr_set stamps the inode's ctime with the clock.
    Object.entries(entry.xattrs ?? {}).forEach(([name, value], index) => {
      const dot = name.indexOf(".");
      const namespace = XATTR_NAMESPACES[name.slice(0, dot)];
      const bare = name.slice(dot + 1);
      if (!namespace || !isToken(bare)) throw new Error(`xfs: the xattr '${name}' of '${entry.path}' can't be written by xfs_db (only user., trusted. and security. names without blanks): use ext4`);
      if (value.length === 0) throw new Error(`xfs: the xattr '${name}' of '${entry.path}' is empty, which xfs_db can't set: use ext4`);
      // attr_set makes a value of N bytes 'v'; then the real bytes go in. Short-form (in-inode)
      // xattrs keep the order they were added in.
      commands.push(`attr_set ${namespace} -v ${value.length} ${bare}`, `write a.sfattr.list[${index}].value #${value.toString("hex")}`);
    });
    if (entry.mode & 0o1000) commands.push(`write core.mode 0${modeOf(entry.type, entry.mode).toString(8)}`);
    setTimes(inode, entry.mtime); // (selects the inode again: harmless)
  }
  return commands;
}

const XATTR_NAMESPACES: Record<string, string> = { user: "-u", trusted: "-r", security: "-s" };


/**
 * The raw on-disk value of a bigtime timestamp: nanoseconds since 1901-12-13 (the Unix epoch
 * minus 2^31 s). xfs_db 6.1 writes a bigtime ".sec" field as this whole 64-bit value.
 */
function bigtime(seconds: number): string {
  return ((BigInt(seconds) + 2n ** 31n) * 1_000_000_000n).toString();
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

function nameOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
