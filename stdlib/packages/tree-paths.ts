// The paths a package database lists, as layers spell them: parents resolved through the
// tree's own symlinks (dpkg lists /bin/ls, which a merged-/usr tree holds at usr/bin/ls),
// and only what is there (not what the bootstrap pruned, such as usr/share/doc).

import { lstatSync } from "node:fs";
import { join } from "node:path";
import type { Tree } from "../../engine/index.js";

export class TreePaths {
  private readonly parents = new Map<string, string>();

  constructor(private readonly tree: Tree) {}

  /** The layer path of `listed` ("/usr/bin/ls" or "usr/bin/ls"), or undefined when the tree does not have it. */
  installed(listed: string): string | undefined {
    const parts = listed.split("/").filter((part) => part !== "" && part !== ".");
    if (parts.length === 0 || parts.includes("..")) return undefined;
    const name = parts.pop()!;
    const parentKey = parts.join("/");
    let parent = this.parents.get(parentKey);
    if (parent === undefined) {
      const host = this.tree.path(parentKey === "" ? "/" : parentKey);
      parent = host === this.tree.root ? "" : host.slice(this.tree.root.length + 1);
      this.parents.set(parentKey, parent);
    }
    const path = parent === "" ? name : `${parent}/${name}`;
    return lstatSync(join(this.tree.root, path), { throwIfNoEntry: false }) ? path : undefined;
  }
}
