// Metadata Node has no API for: device nodes, fifos and extended attributes. They are
// applied and read in batches through the coreutils and attr programs, one spawn per batch.

import { spawnSync } from "node:child_process";
import { closeSync, constants, openSync, renameSync, rmSync, writeFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { hasEscapedBytes, hostPath } from "../../formats/names.js";
import { encodeXattrDump, parseXattrDump, type XattrItem } from "../../formats/xattr-dump.js";
import { toolEnvironment } from "../tool-environment.js";

export interface SpecialNode {
  path: string;
  type: "char" | "block" | "fifo";
  major: number;
  minor: number;
}

/**
 * Creates device nodes (root only) and fifos under `root`. No name from a layer goes into a
 * command: mknod and mkfifo make each node under a name of ours in `root`, and the node is
 * then renamed into place (any name, any bytes). Parents must already be directories.
 */
export function createSpecialNodes(root: string, nodes: readonly SpecialNode[]): void {
  if (nodes.length === 0) return;
  const stage = `.osbuild-node-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const staged = (index: number): string => `${stage}-${index}`;
  const lines = nodes.map((node, index) => {
    if (node.type === "fifo") return `mkfifo -- ${staged(index)}`;
    if (!Number.isSafeInteger(node.major) || !Number.isSafeInteger(node.minor) || node.major < 0 || node.minor < 0) throw new Error(`device numbers of '${node.path}' are not numbers`);
    return `mknod -- ${staged(index)} ${node.type === "char" ? "c" : "b"} ${node.major} ${node.minor}`;
  });
  const result = spawnSync("sh", ["-e", "-c", lines.join("\n")], { cwd: root, encoding: "utf8", env: toolEnvironment() });
  try {
    if (result.status !== 0) throw new Error(`could not create device nodes or fifos: ${result.stderr.trim()}`);
    nodes.forEach((node, index) => renameSync(join(root, staged(index)), hostPath(join(root, node.path))));
  } finally {
    nodes.forEach((_, index) => rmSync(join(root, staged(index)), { force: true }));
  }
}

/** Sets extended attributes, all at once via `setfattr --restore` (a data file: names and paths escaped). */
export function applyXattrs(root: string, items: readonly XattrItem[], tempDir: string): void {
  if (items.length === 0) return;
  const file = join(tempDir, `xattrs-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, encodeXattrDump(items));
  try {
    const result = spawnSync("setfattr", ["-h", `--restore=${file}`], { cwd: root, encoding: "utf8", env: toolEnvironment() });
    if (result.error) throw new Error(`cannot run setfattr: ${result.error.message} (install the Debian package attr)`);
    if (result.status !== 0) throw new Error(`setfattr failed: ${result.stderr.trim()}`);
  } finally {
    unlinkSync(file);
  }
}

/** Reads every extended attribute of `paths` (relative to `root`); missing ones are omitted. */
export function readXattrs(root: string, paths: readonly string[]): Map<string, Record<string, Buffer>> {
  const result = new Map<string, Record<string, Buffer>>();
  // Arguments are text: a name that is not UTF-8 is read through an inherited descriptor.
  const plain = paths.filter((path) => !hasEscapedBytes(path));
  const batch = 2000;
  for (let start = 0; start < plain.length; start += batch) {
    const chunk = plain.slice(start, start + batch).map((path) => `./${path}`);
    parseXattrDump(runGetfattr(["-h", "--", ...chunk], root), (path) => path.replace(/^(\.\/)+/, ""), result);
  }
  for (const path of paths.filter(hasEscapedBytes)) {
    let fd: number;
    try {
      fd = openSync(hostPath(join(root, path)), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      continue; // a symlink (its xattrs can't be read this way) or gone
    }
    try {
      parseXattrDump(runGetfattr(["--", "/proc/self/fd/3"], root, fd), () => path, result);
    } finally {
      closeSync(fd);
    }
  }
  for (const [path, xattrs] of result) if (Object.keys(xattrs).length === 0) result.delete(path);
  return result;
}

function runGetfattr(args: readonly string[], cwd: string, fd?: number): string {
  const run = spawnSync("getfattr", ["-d", "-m", "-", "-e", "hex", ...args], { cwd, encoding: "utf8", maxBuffer: 1 << 28, env: toolEnvironment(), stdio: fd === undefined ? "pipe" : ["ignore", "pipe", "pipe", fd] });
  if (run.error) throw new Error(`cannot run getfattr: ${run.error.message} (install the Debian package attr)`);
  return run.stdout;
}

/** Whether the attr tools exist; without them xattrs are kept in layers but not on disk. */
let attrTools: boolean | undefined;

/** Whether getfattr/setfattr are installed (asked once per process). */
export function haveAttrTools(): boolean {
  attrTools ??= spawnSync("getfattr", ["--version"], { env: toolEnvironment() }).status === 0;
  return attrTools;
}
