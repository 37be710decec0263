// osbuilder's rootfs directory (${ROOTFS_BUILD_DEST}/${DISTRO}_rootfs) from mkTar's archive
// of the merged tree. GNU tar unpacks it into a fresh directory beside the destination,
// which then replaces the old one: one archive into an empty directory, so no entry can be
// led through a symlink (tar creates links last). As root the tree is exact (owners,
// devices, xattrs); otherwise it is what a plain directory can hold (the device nodes are
// left out, every file is the builder's), and the summary says what is missing.

import { spawnSync } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { TarParser } from "../../formats/tar.js";

export interface TreeSummary {
  entries: number;
  /** Device nodes the archive holds (not unpacked without root). */
  devicePaths: string[];
  /** Entries owned by someone else than root (all become the builder's without root). */
  notRootOwned: number;
}

/** make's marker file for a rootfs directory: ${ROOTFS_BUILD_DEST}/.${DISTRO}_rootfs.done */
export function markerOf(rootfsDir: string): string {
  return join(dirname(rootfsDir), `.${basename(rootfsDir)}.done`);
}

/**
 * Unpacks `archive` as `rootfsDir`, unless `memoFile` says that directory was unpacked from
 * this very archive file already (same inode, size and time: the engine rewrites an output
 * only when its content changed). Returns whether it was written, and without root what the
 * directory could not hold.
 */
export async function writeRootfsDir(archive: string, rootfsDir: string, asRoot: boolean, memoFile: string): Promise<{ written: boolean; missing?: TreeSummary }> {
  const stats = statSync(archive);
  const stamp = `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;
  const memo = readMemo(memoFile);
  if (existsSync(rootfsDir) && memo[rootfsDir] === stamp) return { written: false };
  const summary = asRoot ? undefined : await summarize(archive);
  const parent = dirname(rootfsDir);
  mkdirSync(parent, { recursive: true });
  const fresh = join(parent, `.${basename(rootfsDir)}.osbuild-new-${process.pid}`);
  removeTree(fresh);
  mkdirSync(fresh, { mode: 0o755 });
  const args = ["--extract", "--file", archive, "--directory", fresh, "--numeric-owner", "--preserve-permissions"];
  if (asRoot) args.push("--same-owner", "--xattrs", "--xattrs-include=*");
  else {
    // Names taken literally, from the archive's root: a device node that could not be named
    // this way (a newline in it) makes tar fail on it rather than be skipped silently.
    const excludes = join(parent, `.${basename(rootfsDir)}.osbuild-devices-${process.pid}`);
    writeFileSync(excludes, summary!.devicePaths.filter((path) => !path.includes("\n")).map((path) => `${path}\n`).join(""));
    args.push("--no-same-owner", "--anchored", "--no-wildcards", `--exclude-from=${excludes}`);
  }
  const result = spawnSync("tar", args, { encoding: "utf8", env: { PATH: process.env.PATH, LC_ALL: "C" } });
  rmSync(join(parent, `.${basename(rootfsDir)}.osbuild-devices-${process.pid}`), { force: true });
  if (result.error || result.status !== 0) {
    removeTree(fresh);
    throw new Error(`unpacking the rootfs into ${rootfsDir} failed: ${result.error?.message ?? result.stderr.trim()}`);
  }
  if (existsSync(rootfsDir)) {
    const old = join(parent, `.${basename(rootfsDir)}.osbuild-old-${process.pid}`);
    renameSync(rootfsDir, old);
    renameSync(fresh, rootfsDir);
    removeTree(old);
  } else renameSync(fresh, rootfsDir);
  memo[rootfsDir] = stamp;
  mkdirSync(dirname(memoFile), { recursive: true });
  writeFileSync(`${memoFile}.${process.pid}`, JSON.stringify(memo));
  renameSync(`${memoFile}.${process.pid}`, memoFile);
  return { written: true, missing: summary };
}

function readMemo(file: string): Record<string, string> {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
  } catch {
    return {};
  }
}

/** rm -rf, also of a tree whose directories are not writable (an unprivileged unpack keeps 0555 modes). */
export function removeTree(path: string): void {
  if (!existsSync(path)) return;
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    spawnSync("chmod", ["-R", "u+rwX", path]);
    rmSync(path, { recursive: true, force: true });
  }
}

/** What a plain directory cannot hold, from the archive's headers (its data is skipped). */
async function summarize(archive: string): Promise<TreeSummary> {
  const summary: TreeSummary = { entries: 0, devicePaths: [], notRootOwned: 0 };
  const parser = new TarParser({
    onEntry: (header) => {
      summary.entries++;
      if (header.type === "char" || header.type === "block") summary.devicePaths.push(header.path);
      if (header.uid !== 0 || header.gid !== 0) summary.notRootOwned++;
    },
  });
  for await (const chunk of createReadStream(archive)) parser.write(chunk as Buffer);
  return summary;
}
