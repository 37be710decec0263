// A tree as lines of text, one a path, holding everything a rootfs must keep: type, content
// hash, hardlinks, link targets, device numbers, mode, owner (as root), xattrs, and with
// `times` every mtime. Two trees are equal when their listings are.

import { createHash } from "node:crypto";
import { lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { splitDevice } from "../engine/layers/diff.js";
import { isRoot, sh } from "./helpers.js";

export function treeListing(root: string, options: { times?: boolean } = {}): string[] {
  const lines: string[] = [];
  const firstOfInode = new Map<number, string>();
  const xattrs = new Map<string, string>();
  for (const block of sh(`getfattr -R -h -d -m - -e hex --absolute-names . 2>/dev/null; true`, root).split("\n\n")) {
    const [head, ...values] = block.trim().split("\n");
    if (head?.startsWith("# file: ")) xattrs.set(head.slice("# file: ./".length), values.sort().join(","));
  }
  const visit = (relative: string): void => {
    for (const name of readdirSync(join(root, relative)).sort()) {
      const path = relative ? `${relative}/${name}` : name;
      const full = join(root, path);
      const stats = lstatSync(full);
      const owner = isRoot ? `${stats.uid}:${stats.gid}` : "";
      let kind: string;
      if (stats.isFile()) {
        const first = firstOfInode.get(stats.ino);
        if (first && stats.nlink > 1) kind = `hardlink→${first}`;
        else {
          firstOfInode.set(stats.ino, path);
          kind = `file ${createHash("sha256").update(readFileSync(full)).digest("hex").slice(0, 12)} nlink=${stats.nlink}`;
        }
      } else if (stats.isDirectory()) kind = "dir";
      else if (stats.isSymbolicLink()) kind = `symlink→${readlinkSync(full)}`;
      else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
        const { major, minor } = splitDevice(stats.rdev);
        kind = `${stats.isCharacterDevice() ? "char" : "block"} ${major},${minor}`;
      } else if (stats.isFIFO()) kind = "fifo";
      else kind = "other";
      const mode = stats.isSymbolicLink() ? "" : (stats.mode & 0o7777).toString(8);
      const time = options.times ? `mtime=${Math.floor(stats.mtimeMs / 1000)}` : "";
      lines.push(`${path} ${kind} ${mode} ${owner} ${time} ${xattrs.get(path) ?? ""}`.trimEnd());
      if (stats.isDirectory()) visit(path);
    }
  };
  visit("");
  return lines;
}
