// xfs, erofs and dm-verity for disk images, against the real tools: each filesystem is made
// from a small tree with what a rootfs has (directories small and large, a 3 MiB file,
// symlinks, hardlinks, setuid and sticky modes, files of other users, and as root a device
// node, a fifo and a file capability), placed 1 MiB into an image file, checked with the
// tools' own checkers and read back, and made twice from two copies of the tree to show
// that the bytes are the same.

import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, chownSync, closeSync, copyFileSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, symlinkSync, linkSync, statSync, truncateSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";
import { makeErofs } from "../../stdlib/disk-image/erofs.js";
import { formatVerity, hashTreeBytes, kernelParams, parseFormatOutput, rootHashFile } from "../../stdlib/disk-image/verity.js";
import { makeXfs, planXfsBytes, XFS_MIN_BYTES } from "../../stdlib/disk-image/xfs.js";
import { isRoot, sh, tempDir } from "../helpers.js";

const MiB = 1024 * 1024;
const OFFSET = MiB;
const TIME = 1_700_000_000;
const UUID = "6a1f2d3c-4b5a-4c6d-8e7f-901a2b3c4d5e";
const CAPABILITY = Buffer.from("0100000200200000000000000000000000000000", "hex"); // cap_net_raw+ep

/** The engine's exec, in small: runs a program, fails with its stderr on a non-zero exit. */
function exec(command: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve({ stdout: Buffer.concat(stdout), stderr });
      else reject(new Error(`${command} ${args.join(" ")} exited with ${code}:\n${stderr}${Buffer.concat(stdout).toString().slice(-2000)}`));
    });
    if (typeof options.input === "string" || Buffer.isBuffer(options.input)) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

const has = (tool: string): boolean => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;

/** 3 MiB: half incompressible, half text, so that compression has something to do. */
function bigContent(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length * 32 < 1.5 * MiB; i++) parts.push(createHash("sha256").update(String(i)).digest());
  const text = Buffer.from("the quick brown fox jumps over the lazy dog\n".repeat(Math.ceil((1.5 * MiB) / 44)));
  return Buffer.concat([...parts, text]).subarray(0, 3 * MiB);
}

/** A small rootfs: everything a packer must get right. */
function makeTree(root: string): void {
  const dir = (path: string, mode = 0o755): void => {
    mkdirSync(join(root, path), { recursive: true });
    chmodSync(join(root, path), mode);
  };
  const file = (path: string, content: string | Buffer, mode = 0o644): void => {
    writeFileSync(join(root, path), content);
    chmodSync(join(root, path), mode);
  };
  for (const path of ["etc", "usr/bin", "usr/lib", "usr/share/many", "home/user", "var/empty", "dev"]) dir(path);
  dir("tmp", 0o1777);
  dir("var/empty", 0o700);
  file("etc/hostname", "kata\n");
  file("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640);
  file("usr/bin/big", bigContent(), 0o755);
  file("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755);
  linkSync(join(root, "usr/bin/tool"), join(root, "usr/bin/tool-again")); // a hardlink in a small (in-inode) directory
  file("usr/bin/sudo", "setuid\n", 0o4755);
  file("usr/bin/wall", "setgid\n", 0o2755);
  file("usr/bin/ping", "ping\n", 0o755);
  file("usr/lib/empty", "");
  symlinkSync("../bin/tool", join(root, "usr/lib/tool-symlink"));
  symlinkSync("usr/lib", join(root, "lib"));
  symlinkSync(`/usr/share/${"long-target-".repeat(8)}end`, join(root, "usr/lib/long-symlink"));
  // A directory too big to live in its inode, with a hardlink in it.
  for (let i = 0; i < 300; i++) file(`usr/share/many/file-${String(i).padStart(3, "0")}`, `file ${i}\n`);
  linkSync(join(root, "usr/share/many/file-007"), join(root, "usr/share/many/zz-hardlink"));
  // One that fills one directory block, with a hardlink to a file elsewhere.
  dir("usr/share/some");
  for (let i = 0; i < 40; i++) file(`usr/share/some/entry-${i}`, `entry ${i}\n`);
  linkSync(join(root, "usr/bin/tool"), join(root, "usr/share/some/tool-third"));
  file("home/user/.profile", "export PS1='$ '\n", 0o600);
  file("home/user/notes", "mine\n");
  file("var/nobody-file", "nobody\n");
  utimesSync(join(root, "etc/hostname"), 1_000_000, 1_000_000); // older than TIME: kept
  if (isRoot) {
    for (const path of ["home/user", "home/user/.profile", "home/user/notes"]) chownSync(join(root, path), 1000, 1000);
    chownSync(join(root, "var/nobody-file"), 65534, 65534);
    chownSync(join(root, "etc/shadow"), 0, 42);
    chownSync(join(root, "usr/bin/wall"), 0, 5);
    chmodSync(join(root, "usr/bin/wall"), 0o2755); // chown cleared the setgid bit
    sh(`mknod -m 666 ${join(root, "dev/null")} c 1 3 && mkfifo -m 600 ${join(root, "dev/initctl")} && mknod -m 660 ${join(root, "dev/vda")} b 254 0`);
    sh(`setfattr -n security.capability -v 0x${CAPABILITY.toString("hex")} ${join(root, "usr/bin/ping")}`);
  }
}

/** FileEntry objects for a tree, as the layers would have them (lstat walk, sorted by path). */
function entriesOf(root: string, time: number): FileEntry[] {
  const paths: string[] = [];
  const walk = (relative: string): void => {
    for (const name of readdirSync(join(root, relative)).sort()) {
      const path = relative ? `${relative}/${name}` : name;
      paths.push(path);
      if (lstatSync(join(root, path)).isDirectory()) walk(path);
    }
  };
  walk("");
  paths.sort();
  const firstByInode = new Map<string, string>();
  return paths.map((path): FileEntry => {
    const stats = lstatSync(join(root, path), { bigint: true });
    const base = { path, mode: Number(stats.mode & 0o7777n), uid: Number(stats.uid), gid: Number(stats.gid), size: 0, mtime: Math.min(Number(stats.mtimeMs / 1000n), time) };
    if (stats.isDirectory()) return { ...base, type: "dir" };
    if (stats.isSymbolicLink()) return { ...base, type: "symlink", linkTarget: readlinkSync(join(root, path)) };
    if (stats.isFIFO()) return { ...base, type: "fifo" };
    if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      const rdev = Number(stats.rdev);
      return { ...base, type: stats.isCharacterDevice() ? "char" : "block", devMajor: (rdev >> 8) & 0xfff, devMinor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
    }
    const key = `${stats.dev}:${stats.ino}`;
    const first = firstByInode.get(key);
    if (first !== undefined) return { ...base, type: "hardlink", linkTarget: first };
    if (stats.nlink > 1n) firstByInode.set(key, path);
    const xattrs = path === "usr/bin/ping" && isRoot ? { "security.capability": CAPABILITY } : undefined;
    return { ...base, type: "file", size: Number(stats.size), ...(xattrs ? { xattrs } : {}) };
  });
}

/** A second copy of the tree, made later and stamped with the time of copying. */
function copyOfTree(source: string, dest: string): void {
  sh(`cp -a ${source} ${dest} && sleep 1.1 && find ${dest} -exec touch -h {} +`);
}

function freshImage(path: string, bytes: number): void {
  rmSync(path, { force: true });
  writeFileSync(path, "");
  truncateSync(path, bytes);
}

/** `length` bytes of `file` from `offset` into a file of their own (dd skip=...). */
function extract(file: string, offset: number, length: number, dest: string): void {
  const input = openSync(file, "r");
  const output = openSync(dest, "w");
  const chunk = Buffer.alloc(MiB);
  try {
    for (let done = 0; done < length; ) {
      const read = readSync(input, chunk, 0, Math.min(chunk.length, length - done), offset + done);
      if (read === 0) break;
      writeSync(output, chunk, 0, read, done);
      done += read;
    }
  } finally {
    closeSync(input);
    closeSync(output);
  }
  truncateSync(dest, length);
}

function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** The UTC ctime() text xfs_db prints for a time. */
function ctime(seconds: number): string {
  const date = new Date(seconds * 1000);
  const [weekday, month, day, year, clock] = [
    date.toLocaleString("en-US", { weekday: "short", timeZone: "UTC" }),
    date.toLocaleString("en-US", { month: "short", timeZone: "UTC" }),
    String(date.getUTCDate()).padStart(2, " "),
    date.getUTCFullYear(),
    date.toISOString().slice(11, 19),
  ];
  return `${weekday} ${month} ${day} ${clock} ${year}`;
}

let work: string;
let tree: string;
let entries: FileEntry[];

beforeAll(() => {
  work = tempDir("disk-filesystems");
  tree = join(work, "tree");
  mkdirSync(tree);
  makeTree(tree);
  entries = entriesOf(tree, TIME);
});

const entry = (path: string): FileEntry => {
  const found = entries.find((candidate) => candidate.path === path);
  if (!found) throw new Error(`no entry ${path}`);
  return found;
};

describe.skipIf(!has("mkfs.xfs"))("xfs", () => {
  let image: string;
  let filesystem: string;
  let bytes: number;

  /** xfs_db on the extracted filesystem, read-only. */
  const db = (...commands: string[]): string => sh(`xfs_db -r ${commands.map((command) => `-c '${command}'`).join(" ")} ${filesystem}`);
  const field = (path: string, name: string): string => {
    const match = new RegExp(`^${name.replace(/[.[\]]/g, "\\$&")} = (.*)$`, "m").exec(db(`path /${path}`, `print ${name}`));
    if (!match) throw new Error(`no ${name} for ${path}`);
    return match[1]!;
  };
  /** A file's content, read straight from its (single) extent. */
  const content = (path: string): Buffer => {
    const size = Number(field(path, "core.size"));
    // "startblock N (AG/block in AG)": the block's place on disk is AG × AG size + block in AG
    const extent = /startblock \d+ \((\d+)\/(\d+)\) count \d+/.exec(db(`path /${path}`, "bmap"));
    if (!extent) return Buffer.alloc(0);
    const agBlocks = Number(/agblocks = (\d+)/.exec(db("sb 0", "print agblocks"))?.[1]);
    const data = Buffer.alloc(size);
    const fd = openSync(filesystem, "r");
    readSync(fd, data, 0, size, (Number(extent[1]) * agBlocks + Number(extent[2])) * 4096);
    closeSync(fd);
    return data;
  };

  beforeAll(async () => {
    bytes = planXfsBytes(entries, 0);
    image = join(work, "xfs-disk.img");
    freshImage(image, OFFSET + bytes + MiB);
    const workDir = join(work, "xfs-work");
    mkdirSync(workDir);
    await makeXfs(exec, image, { offset: OFFSET, bytes }, entries, { uuid: UUID, time: TIME, workDir, tree });
    filesystem = join(work, "xfs-part.img");
    extract(image, OFFSET, bytes, filesystem);
  });

  it("plans at least mkfs.xfs's 300 MiB, and more for more content", () => {
    expect(bytes).toBe(XFS_MIN_BYTES);
    const many: FileEntry[] = Array.from({ length: 20_000 }, (_, i) => ({ path: `f${i}`, type: "file", mode: 0o644, uid: 0, gid: 0, size: 40_000, mtime: 0 }));
    const planned = planXfsBytes(many, 100);
    expect(planned).toBeGreaterThan(20_000 * 40_960 + 100 * MiB + 64 * MiB);
    // One file must fit in one allocation group, a quarter of the filesystem.
    expect(planXfsBytes([{ path: "huge", type: "file", mode: 0o644, uid: 0, gid: 0, size: 1024 * MiB, mtime: 0 }], 0)).toBeGreaterThan(4 * 1024 * MiB);
  });

  it("refuses a partition below mkfs.xfs's minimum", async () => {
    await expect(makeXfs(exec, join(work, "small.img"), { offset: 0, bytes: 200 * MiB }, entries, { uuid: UUID, time: TIME, workDir: work, tree })).rejects.toThrow(/at least 300 MiB/);
  });

  it("is a consistent xfs at the offset, and nothing before it is touched", () => {
    sh(`xfs_repair -n -f ${filesystem}`);
    const head = Buffer.alloc(OFFSET);
    const fd = openSync(image, "r");
    readSync(fd, head, 0, OFFSET, 0);
    closeSync(fd);
    expect(head.every((byte) => byte === 0)).toBe(true);
    expect(db("uuid")).toContain(UUID);
    expect(statSync(image).blocks * 512).toBeLessThan(bytes / 2); // copied sparse
  });

  it("holds every entry with the layers' type, owner and mode", () => {
    const listing = sh(`xfs_db -r -c 'blockget -n' -c ncheck ${filesystem}`);
    // (ncheck names each inode once: the hardlinks' second names are checked below)
    for (const item of entries.filter((candidate) => candidate.type !== "hardlink")) expect(listing).toMatch(new RegExp(`^\\s*\\d+ ${item.path.replace(/[.$]/g, "\\$&")}(/\\.)?$`, "m"));
    expect(field("usr/bin/sudo", "core.mode")).toBe("0104755");
    expect(field("usr/bin/wall", "core.mode")).toBe("0102755");
    expect(field("tmp", "core.mode")).toBe("041777"); // the sticky bit, which a protofile can't say
    expect(field("var/empty", "core.mode")).toBe("040700");
    expect(field("etc/shadow", "core.mode")).toBe("0100640");
    expect(field("usr/lib/tool-symlink", "u3.symlink")).toBe('"../bin/tool"');
    expect(field("usr/lib/long-symlink", "u3.symlink")).toBe(`"${entry("usr/lib/long-symlink").linkTarget}"`);
    expect(content("usr/bin/big").equals(bigContent())).toBe(true);
    expect(content("usr/share/many/file-123").toString()).toBe("file 123\n");
    if (isRoot) {
      expect([field("home/user/.profile", "core.uid"), field("home/user/.profile", "core.gid")]).toEqual(["1000", "1000"]);
      expect(field("var/nobody-file", "core.uid")).toBe("65534");
      expect(field("etc/shadow", "core.gid")).toBe("42");
      expect(field("dev/null", "core.mode")).toBe("020666");
      expect(field("dev/null", "u3.dev")).toBe("0x40003"); // major 1, minor 3 in xfs's 14:18 form
      expect(field("dev/vda", "core.mode")).toBe("060660");
      expect(field("dev/initctl", "core.mode")).toBe("010600");
      // security.capability, written byte for byte into the inode's xattrs
      const xattrs = db("path /usr/bin/ping", "print a");
      expect(xattrs).toContain('a.sfattr.list[0].name = "capability"');
      expect(xattrs).toContain("a.sfattr.list[0].secure = 1");
      expect(xattrs).toContain('a.sfattr.list[0].value = "\\001\\000\\000\\002\\000 \\000');
    }
  });

  it("keeps hardlinks as one inode with two names, also in a large directory", () => {
    for (const [first, second] of [
      ["usr/bin/tool", "usr/bin/tool-again"],
      ["usr/bin/tool", "usr/share/some/tool-third"],
      ["usr/share/many/file-007", "usr/share/many/zz-hardlink"],
    ] as const) {
      expect(field(second, "v3.inumber")).toBe(field(first, "v3.inumber"));
    }
    expect(field("usr/bin/tool", "core.nlinkv2")).toBe("3");
    expect(field("usr/share/many/file-007", "core.nlinkv2")).toBe("2");
    // The directories' forms: in the inode, one block, and data blocks with a leaf block.
    expect(field("usr/bin", "core.format")).toBe("1 (local)");
    expect(db("path /usr/share/some", "bmap")).toMatch(/^data offset 0 .* count 1 flag 0\s*$/);
    expect(db("path /usr/share/many", "bmap")).toContain("data offset 8388608"); // the leaf block
  });

  it("has the layers' times, not the clock's", () => {
    expect(field("etc/hostname", "core.mtime.sec")).toBe(ctime(1_000_000));
    expect(field("etc/hostname", "core.atime.sec")).toBe(ctime(1_000_000));
    expect(field("etc/hostname", "v3.crtime.sec")).toBe(ctime(TIME));
    expect(field("usr/bin/tool", "core.ctime.sec")).toBe(ctime(entry("usr/bin/tool").mtime));
    expect(field("", "core.mtime.sec")).toBe(ctime(TIME));
    expect(field("usr/bin/tool", "core.mtime.nsec")).toBe("0");
  });

  it("is the same bytes when made again from another copy of the tree", async () => {
    const copy = join(work, "xfs-tree-copy");
    copyOfTree(tree, copy);
    const again = join(work, "xfs-disk-again.img");
    freshImage(again, OFFSET + bytes + MiB);
    const workDir = join(work, "xfs-work-again");
    mkdirSync(workDir);
    await makeXfs(exec, again, { offset: OFFSET, bytes }, entries, { uuid: UUID, time: TIME, workDir, tree: copy });
    expect(sha256(again)).toBe(sha256(image));
  });
});

describe.skipIf(!has("mkfs.erofs"))("erofs", () => {
  /** Builds into a fresh image; returns the filesystem's size and a copy of it on its own. */
  const build = async (name: string, from: string, options: { entries: readonly FileEntry[]; compression?: "lz4hc" | "none" }): Promise<{ image: string; filesystem: string; size: number }> => {
    const image = join(work, `erofs-${name}-disk.img`);
    freshImage(image, OFFSET);
    const workDir = join(work, `erofs-${name}-work`);
    mkdirSync(workDir);
    const size = await makeErofs(exec, image, { offset: OFFSET }, from, { uuid: UUID, time: TIME, workDir, ...options });
    const filesystem = join(work, `erofs-${name}.img`);
    extract(image, OFFSET, size, filesystem);
    return { image, filesystem, size };
  };
  const dump = (filesystem: string, path: string): string => sh(`dump.erofs --path=/${path} ${filesystem}`);
  /** i_mode, read from the inode dump.erofs locates. */
  const modeOf = (filesystem: string, path: string): number => {
    const nid = Number(/NID: (\d+)/.exec(dump(filesystem, path))?.[1]);
    const metaBlock = Number(/inode metadata start block:\s+(\d+)/.exec(sh(`dump.erofs -s ${filesystem}`))?.[1]);
    const raw = Buffer.alloc(2);
    const fd = openSync(filesystem, "r");
    readSync(fd, raw, 0, 2, metaBlock * 4096 + nid * 32 + 4);
    closeSync(fd);
    return raw.readUInt16LE(0);
  };

  it("is a consistent erofs at the offset that reads back as the tree", async () => {
    const { image, filesystem, size } = await build("root", tree, { entries });
    expect(statSync(image).size).toBe(OFFSET + size);
    expect(size % 4096).toBe(0);
    sh(`fsck.erofs ${filesystem}`);
    const out = join(work, "erofs-extracted");
    sh(`fsck.erofs --extract=${out} ${filesystem}`);
    expect(readFileSync(join(out, "usr/bin/big")).equals(bigContent())).toBe(true);
    expect(readFileSync(join(out, "usr/share/many/file-299"), "utf8")).toBe("file 299\n");
    expect(readlinkSync(join(out, "usr/lib/tool-symlink"))).toBe("../bin/tool");
    expect(readlinkSync(join(out, "usr/lib/long-symlink"))).toBe(entry("usr/lib/long-symlink").linkTarget);
    // (fsck.erofs 1.5 extracts setuid files without the bit, dump.erofs shows only 0777)
    expect(modeOf(filesystem, "usr/bin/sudo")).toBe(0o104755);
    expect(modeOf(filesystem, "usr/bin/wall")).toBe(0o102755);
    expect(modeOf(filesystem, "tmp")).toBe(0o41777);
    // Every inode has the build time (-T), and the superblock says it too.
    expect(dump(filesystem, "etc/hostname")).toContain("Timestamp: 2023-11-14 22:13:20");
    expect(sh(`dump.erofs -s ${filesystem}`)).toContain(`Filesystem UUID:                              ${UUID}`);
    // Hardlinks are one inode.
    const tool = /NID: (\d+)\s+Links: (\d+)/.exec(dump(filesystem, "usr/bin/tool"));
    expect(/NID: (\d+)/.exec(dump(filesystem, "usr/bin/tool-again"))?.[1]).toBe(tool?.[1]);
    expect(tool?.[2]).toBe("3");
    if (isRoot) {
      expect(dump(filesystem, "home/user/.profile")).toMatch(/Uid: 1000\s+Gid: 1000\s+Access: 0600/);
      expect(dump(filesystem, "var/nobody-file")).toMatch(/Uid: 65534\s+Gid: 65534/);
      expect(dump(filesystem, "dev/null")).toContain("char dev");
      expect(lstatSync(join(out, "dev/null")).rdev).toBe(statSync("/dev/null").rdev);
      expect(lstatSync(join(out, "dev/initctl")).isFIFO()).toBe(true);
      expect(dump(filesystem, "usr/bin/ping")).not.toContain("Xattr size: 0");
    }
  });

  it("is the same bytes when made again from another copy of the tree", async () => {
    const copy = join(work, "erofs-tree-copy");
    copyOfTree(tree, copy);
    const first = await build("first", tree, { entries });
    const second = await build("second", copy, { entries });
    expect(sha256(second.filesystem)).toBe(sha256(first.filesystem));
    // Uncompressed, too (and then the 3 MiB file takes its full size).
    const plain = await build("plain", tree, { entries, compression: "none" });
    sh(`fsck.erofs ${plain.filesystem}`);
    expect(plain.size).toBeGreaterThan(first.size);
  });

  it.skipIf(!isRoot)("takes owners, modes, device nodes and xattrs from the entries, not the tree: a tree of placeholders, as one without root has, gives the same bytes", async () => {
    // What a tree materialized without root looks like: the builder's owners, empty files
    // for device nodes, no security xattrs, and modes the builder's umask touched.
    const placeholders = join(work, "erofs-tree-unprivileged");
    copyOfTree(tree, placeholders);
    for (const path of ["dev/null", "dev/vda"]) {
      rmSync(join(placeholders, path));
      writeFileSync(join(placeholders, path), "");
    }
    sh(`setfattr -x security.capability ${join(placeholders, "usr/bin/ping")} && chown -R -h 4321:4321 ${placeholders} && chmod 0700 ${placeholders} ${join(placeholders, "var/empty")} && chmod 0644 ${join(placeholders, "usr/bin/tool")}`);
    const unprivileged = await build("unprivileged", placeholders, { entries });
    const privileged = await build("privileged", tree, { entries });
    sh(`fsck.erofs ${unprivileged.filesystem}`);
    expect(dump(unprivileged.filesystem, "dev/vda")).toContain("block dev");
    expect(dump(unprivileged.filesystem, "usr/bin/tool")).toMatch(/Uid: 0\s+Gid: 0\s+Access: 0755/);
    expect(dump(unprivileged.filesystem, "usr/bin/ping")).not.toContain("Xattr size: 0");
    expect(sha256(unprivileged.filesystem)).toBe(sha256(privileged.filesystem));
  });
});

describe.skipIf(!has("veritysetup") || !has("mke2fs"))("dm-verity", () => {
  const SALT = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  let data: string;
  const dataBytes = 8 * MiB;

  const verify = (dataFile: string, hashFile: string, rootHash: string): number =>
    spawnSync("veritysetup", ["verify", "--no-superblock", `--salt=${SALT}`, `--data-blocks=${dataBytes / 4096}`, "--data-block-size=4096", "--hash-block-size=4096", dataFile, hashFile, rootHash]).status ?? -1;

  beforeAll(() => {
    const source = join(work, "verity-tree");
    mkdirSync(source);
    writeFileSync(join(source, "hello"), "hello verity\n");
    copyFileSync(join(tree, "usr/bin/big"), join(source, "big"));
    data = join(work, "verity-data.img");
    sh(
      `E2FSPROGS_FAKE_TIME=${TIME} MKE2FS_CONFIG=/dev/null mke2fs -q -F -t ext4 -b 4096 -U ${UUID} -E hash_seed=${UUID},root_owner=0:0,lazy_itable_init=0 -d ${source} ${data} ${dataBytes / 4096}`,
    );
  });

  it("formats the hash tree into a file, which veritysetup verifies, and not once the data changes", async () => {
    const hash = join(work, "verity-hash.img");
    const info = await formatVerity(exec, data, hash, { dataBlocks: dataBytes / 4096, salt: SALT });
    expect(info).toMatchObject({ salt: SALT, dataBlocks: 2048, dataBlockSize: 4096, hashBlockSize: 4096, hashAlgorithm: "sha256" });
    expect(info.rootHash).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(hash).size).toBe(hashTreeBytes(dataBytes));
    expect(verify(data, hash, info.rootHash)).toBe(0);

    const tampered = join(work, "verity-data-tampered.img");
    copyFileSync(data, tampered);
    const fd = openSync(tampered, "r+");
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, 5 * MiB + 17);
    writeSync(fd, Buffer.from([byte[0]! ^ 0xff]), 0, 1, 5 * MiB + 17);
    closeSync(fd);
    expect(verify(tampered, hash, info.rootHash)).not.toBe(0);
  });

  it("gives the same root hash and hash tree for the same data and salt", async () => {
    const [first, second] = [join(work, "verity-hash-1.img"), join(work, "verity-hash-2.img")];
    const one = await formatVerity(exec, data, first, { dataBlocks: dataBytes / 4096, salt: SALT });
    const two = await formatVerity(exec, data, second, { dataBlocks: dataBytes / 4096, salt: SALT });
    expect(two).toEqual(one);
    expect(sha256(second)).toBe(sha256(first));
    const otherSalt = await formatVerity(exec, data, join(work, "verity-hash-3.img"), { dataBlocks: dataBytes / 4096, salt: "00ff" });
    expect(otherSalt.rootHash).not.toBe(one.rootHash);
  });

  it("refuses a salt that is not hex", async () => {
    await expect(formatVerity(exec, data, join(work, "verity-x.img"), { dataBlocks: 1, salt: "not hex" })).rejects.toThrow(/hex digits/);
  });

  it("reads veritysetup's report", () => {
    const report = [
      "VERITY header information for hash",
      "UUID:            \t",
      "Hash type:       \t1",
      "Data blocks:     \t300",
      "Data block size: \t4096",
      "Hash blocks:     \t4",
      "Hash block size: \t4096",
      "Hash algorithm:  \tsha256",
      "Salt:            \t00112233",
      "Root hash:      \t312fc9ea27cb0fcc5db199c0258702ecfc49a4797ea26ca91571448e36c7ade7",
      "Hash device size: \t16384 [bytes]",
    ].join("\n");
    expect(parseFormatOutput(report)).toEqual({
      rootHash: "312fc9ea27cb0fcc5db199c0258702ecfc49a4797ea26ca91571448e36c7ade7",
      salt: "00112233",
      dataBlocks: 300,
      dataBlockSize: 4096,
      hashBlockSize: 4096,
      hashAlgorithm: "sha256",
    });
    expect(() => parseFormatOutput("Salt: 00\n")).toThrow(/no 'Root hash:' line/);
  });

  it("writes osbuilder's root-hash file and the Kata runtime's kernel parameters", () => {
    const info = { rootHash: "ab".repeat(32), salt: "cd".repeat(32), dataBlocks: 92041, dataBlockSize: 4096, hashBlockSize: 4096, hashAlgorithm: "sha256" } as const;
    expect(rootHashFile(info)).toBe(`root_hash=${"ab".repeat(32)},salt=${"cd".repeat(32)},data_blocks=92041,data_block_size=4096,hash_block_size=4096\n`);
    expect(kernelParams(info, { device: "virtio", fsType: "ext4" })).toBe(
      `dm-mod.create="dm-verity,,,ro,0 736328 verity 1 /dev/vda1 /dev/vda2 4096 4096 92041 0 sha256 ${"ab".repeat(32)} ${"cd".repeat(32)}" root=/dev/dm-0 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4`,
    );
    expect(kernelParams(info, { device: "pmem", fsType: "erofs" })).toBe(
      `dm-mod.create="dm-verity,,,ro,0 736328 verity 1 /dev/pmem0p1 /dev/pmem0p2 4096 4096 92041 0 sha256 ${"ab".repeat(32)} ${"cd".repeat(32)}" root=/dev/dm-0 rootflags=ro rootfstype=erofs`,
    );
    expect(kernelParams(info, { device: "virtio", fsType: "xfs" })).toMatch(/root=\/dev\/dm-0 rootflags=ro rootfstype=xfs$/);
  });

  it("sizes the hash tree as veritysetup writes it", () => {
    // Checked against veritysetup format: 1 block needs no tree; 129 blocks two levels.
    expect(hashTreeBytes(4096)).toBe(0);
    expect(hashTreeBytes(2 * 4096)).toBe(4096);
    expect(hashTreeBytes(128 * 4096)).toBe(4096);
    expect(hashTreeBytes(129 * 4096)).toBe(3 * 4096);
    expect(hashTreeBytes(16384 * 4096)).toBe(129 * 4096);
    expect(hashTreeBytes(16385 * 4096)).toBe(132 * 4096);
    expect(hashTreeBytes(16385 * 4096 - 100)).toBe(132 * 4096); // a partial block counts
  });
});
