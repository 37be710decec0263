// osbuilder's rootfs directory (${ROOTFS_BUILD_DEST}/${DISTRO}_rootfs) from mkTar's archive
// of the merged tree. GNU tar unpacks it into a fresh directory beside the destination,
// which then replaces the old one: one archive into an empty directory, so no entry can be
// led through a symlink (tar creates links last). As root the tree is exact (owners,
// devices, xattrs); otherwise it is what a plain directory can hold, and this says what not.

import { spawnSync } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { TarParser } from "../../formats/tar.js";

export interface TreeSummary {
  entries: number;
  /** Device nodes the archive holds (not unpacked without root). */
  devices: number;
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
 * only when its content changed). Returns whether it was written.
 */
export function writeRootfsDir(archive: string, rootfsDir: string, asRoot: boolean, memoFile: string): boolean {
  const stats = statSync(archive);
  const stamp = `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;
  const memo = readMemo(memoFile);
  if (existsSync(rootfsDir) && memo[rootfsDir] === stamp) return false;
  const parent = dirname(rootfsDir);
  mkdirSync(parent, { recursive: true });
  const fresh = join(parent, `.${basename(rootfsDir)}.osbuild-new-${process.pid}`);
  removeTree(fresh);
  mkdirSync(fresh, { mode: 0o755 });
  const args = ["--extract", "--file", archive, "--directory", fresh, "--numeric-owner", "--preserve-permissions"];
  if (asRoot) args.push("--same-owner", "--xattrs", "--xattrs-include=*");
  else args.push("--no-same-owner");
  const result = spawnSync("tar", args, { encoding: "utf8" });
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
  return true;
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

/** Counts what a plain directory cannot hold, from the archive's headers. */
export async function summarize(archive: string): Promise<TreeSummary> {
  const summary: TreeSummary = { entries: 0, devices: 0, notRootOwned: 0 };
  const parser = new TarParser({
    onEntry: (header) => {
      summary.entries++;
      if (header.type === "char" || header.type === "block") summary.devices++;
      if (header.uid !== 0 || header.gid !== 0) summary.notRootOwned++;
    },
  });
  for await (const chunk of createReadStream(archive)) parser.write(chunk as Buffer);
  return summary;
}
