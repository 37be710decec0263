// What the filesystem writers need to know of the layers' entries beyond each entry itself.

import type { FileEntry } from "../../engine/index.js";

/** The entry a hardlink stands for (following links to links), or an error naming `filesystem`. */
export function hardlinkTarget(entry: FileEntry, byPath: ReadonlyMap<string, FileEntry>, filesystem: string): FileEntry {
  let target: FileEntry | undefined = entry;
  for (let hops = 0; target?.type === "hardlink" && hops < 64; hops++) target = byPath.get((target.linkTarget ?? "").replace(/^\/+/, ""));
  if (!target || target.type === "hardlink" || target.type === "dir") throw new Error(`${filesystem}: the hardlink '${entry.path}' → '${entry.linkTarget}' has no file to link to in the layers`);
  return target;
}
