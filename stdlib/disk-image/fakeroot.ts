// A materialized tree is a cache of the layers, and not a faithful one: without root it holds
// the builder's owners, placeholder files for device nodes and no security xattrs, and even
// as root the host's filesystem lists xattrs in an order of its own. The layers hold the
// truth. mke2fs -d and mkfs.erofs read a tree through stat(2) and listxattr(2), so they run
// in a fakeroot session whose answers come from the layers: faked's database (device and inode of each file on disk → its mode
// with type bits, owner and device number) is written from the entries, and the xattrs are
// put into the session with setfattr --restore. Both are data files; nothing from a layer
// becomes a command, an option or a path outside the tree. The filesystem tool reads the
// file contents from disk as usual.
//
// A session costs: every stat(2) of the tool is a round trip to faked (mke2fs -d of a Debian
// rootfs takes 1.9 s in one, 0.5 s without). So where the disk already answers as the
// session would (as root, the tree's every mode, owner and device number equal to the
// layers', and no xattrs in the layers or on disk, so no order of theirs to differ), the tool
// runs without one: the same calls get the same answers, and the image the same bytes.

import { spawn } from "node:child_process";
import { existsSync, lstatSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, FileEntry, ToolSpec } from "../../engine/index.js";
import { modeOf } from "../../formats/mode.js";
import { hostPath } from "../../formats/names.js";
import { encodeXattrDump } from "../../formats/xattr-dump.js";

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

/** The programs a session runs (their versions go into the step's cache key). */
export const FAKEROOT_TOOLS: readonly ToolSpec[] = [
  { command: "faked-sysv", versionArgs: ["--version"], package: "fakeroot" },
  { command: "setfattr", versionArgs: ["--version"], package: "attr" },
];

/**
 * Runs `work` with the environment of a fakeroot session in which every file of `tree` has
 * the metadata `entries` give it (the root directory: 0755, root's). `work` passes that
 * environment to the filesystem tool it runs.
 */
export async function withLayerMetadata<T>(exec: Exec, tree: string, entries: readonly FileEntry[], workDir: string, work: (env: Record<string, string>) => Promise<T>): Promise<T> {
  // Only as root can the disk agree; getfattr then walks the tree while this thread stats it.
  const layerXattrs = entries.some((entry) => entry.xattrs && Object.keys(entry.xattrs).length > 0);
  const diskXattrs = process.getuid?.() === 0 && !layerXattrs ? hasDiskXattrs(tree) : undefined;
  let made: ReturnType<typeof fakedDatabase> | undefined;
  try {
    made = fakedDatabase(tree, entries);
  } finally {
    if (!made?.diskAgrees) diskXattrs?.stop(); // its answer no longer matters
  }
  const { database, diskAgrees } = made;
  if (diskAgrees && diskXattrs && !(await diskXattrs.found)) return work({});
  const faked = await startFaked(database);
  try {
    const env = { FAKEROOTKEY: faked.key, LD_PRELOAD: libfakeroot() };
    const withXattrs = entries.filter((entry) => entry.type !== "hardlink" && entry.xattrs && Object.keys(entry.xattrs).length > 0);
    if (withXattrs.length > 0) {
      const dump = join(workDir, "xattrs.dump");
      // faked lists an inode's xattrs newest first: given in reverse, they come out in order.
      const reversed = (xattrs: Readonly<Record<string, Buffer>>): Record<string, Buffer> => Object.fromEntries(Object.entries(xattrs).reverse());
      writeFileSync(dump, encodeXattrDump(withXattrs.map((entry) => ({ path: entry.path, xattrs: reversed(entry.xattrs!) }))));
      await exec("setfattr", ["-h", `--restore=${dump}`], { cwd: tree, env });
    }
    return await work(env);
  } finally {
    await faked.stop();
  }
}

/**
 * faked's saved-state format: one line per inode, "dev=HEX,ino=N,mode=OCTAL,uid=N,gid=N,nlink=N,rdev=N";
 * and whether the disk already says all of it (true only as root: elsewhere owners differ).
 */
function fakedDatabase(tree: string, entries: readonly FileEntry[]): { database: string; diskAgrees: boolean } {
  const lines: string[] = [];
  let diskAgrees = process.getuid?.() === 0;
  const line = (path: string, mode: number, uid: number, gid: number, rdev: bigint): void => {
    const stats = lstatSync(hostPath(path), { bigint: true });
    lines.push(`dev=${stats.dev.toString(16)},ino=${stats.ino},mode=${mode.toString(8)},uid=${uid},gid=${gid},nlink=${stats.nlink},rdev=${rdev}`);
    if (diskAgrees && (Number(stats.mode) !== mode || Number(stats.uid) !== uid || Number(stats.gid) !== gid || stats.rdev !== rdev)) diskAgrees = false;
  };
  line(tree, modeOf("dir", 0o755), 0, 0, 0n);
  for (const entry of entries) {
    if (entry.type === "hardlink") continue; // the same inode as its target
    const rdev = entry.type === "char" || entry.type === "block" ? makedev(entry.devMajor ?? 0, entry.devMinor ?? 0) : 0n;
    line(join(tree, entry.path), modeOf(entry.type, entry.mode), entry.uid, entry.gid, rdev);
  }
  return { database: `${lines.join("\n")}\n`, diskAgrees };
}

/**
 * Whether anything in the tree has an xattr (of any namespace: a host's SELinux labels too),
 * asked of getfattr, which stops at the first one found (or when `stop` is called).
 */
function hasDiskXattrs(tree: string): { found: Promise<boolean>; stop(): void } {
  const child = spawn("getfattr", ["-R", "-h", "-m", "-", "--absolute-names", "."], { cwd: tree, stdio: ["ignore", "pipe", "ignore"], env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" } });
  let seen = false;
  const found = new Promise<boolean>((resolve) => {
    child.stdout.on("data", (chunk: Buffer) => {
      if (seen || chunk.toString("latin1").trim() === "") return;
      seen = true;
      child.kill(); // one is enough
    });
    child.on("error", () => resolve(true)); // cannot tell: the session decides
    child.on("close", (code) => resolve(seen || code !== 0));
  });
  return { found, stop: () => void child.kill() };
}

/** glibc's makedev: the dev_t that stat(2) reports for a major and minor number. */
function makedev(major: number, minor: number): bigint {
  const high = BigInt(major);
  const low = BigInt(minor);
  return ((high & 0xfffff000n) << 32n) | ((high & 0xfffn) << 8n) | ((low & 0xffffff00n) << 12n) | (low & 0xffn);
}

/**
 * faked in the foreground, its database loaded from stdin. It prints "KEY:PID" once ready.
 * setpriv gives it a parent-death signal, so that a build killed outright leaves no daemon.
 */
async function startFaked(database: string): Promise<{ key: string; stop(): Promise<void> }> {
  const child = spawn("setpriv", ["--pdeathsig", "TERM", "faked-sysv", "--foreground", "--load"], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
  });
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.on("error", () => undefined); // reported below as faked's exit
  child.stdin.end(database);
  const key = await new Promise<string>((resolve, reject) => {
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /^(\d+):\d+\n/.exec(output);
      if (match) resolve(match[1]!);
    });
    child.once("error", (error) => reject(new Error(`cannot run faked-sysv: ${error.message} (install the Debian package fakeroot)`)));
    child.once("close", (code) => reject(new Error(`faked-sysv exited (status ${code}) before it was ready${stderr ? `: ${stderr.trim()}` : ""}`)));
  });
  return {
    key,
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

let libraryPath: string | undefined;

/** Where the fakeroot library is: /usr/lib/<multiarch>/libfakeroot/ on Debian. */
function libfakeroot(): string {
  if (libraryPath) return libraryPath;
  const candidates = ["/usr/lib/libfakeroot", ...readdirSync("/usr/lib").map((name) => `/usr/lib/${name}/libfakeroot`)];
  const found = candidates.map((dir) => `${dir}/libfakeroot-sysv.so`).find((file) => existsSync(file));
  if (!found) throw new Error("libfakeroot-sysv.so is missing: install the Debian package fakeroot");
  libraryPath = found;
  return found;
}
