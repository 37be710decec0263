// apk's database (Alpine): lib/apk/db/installed, one block per package (P: name, V: version,
// A: architecture, o: origin, the source package) with its files (F: a directory, R: a
// file in it).

import { existsSync, readFileSync } from "node:fs";
import type { Component, Tree } from "../../engine/index.js";
import { TreePaths } from "./tree-paths.js";

export const APK_INSTALLED = "lib/apk/db/installed";

export function readApkDatabase(tree: Tree, vendor: string, distro: string | undefined): Component[] | undefined {
  const databasePath = tree.path(APK_INSTALLED);
  if (!existsSync(databasePath)) return undefined;
  const paths = new TreePaths(tree);
  const components: Component[] = [];
  for (const block of readFileSync(databasePath, "utf8").split(/\n\n+/)) {
    const fields = new Map<string, string>();
    const files: string[] = [];
    let dir = "";
    for (const line of block.split("\n")) {
      const key = line.slice(0, 2);
      const value = line.slice(2);
      if (key === "F:") dir = value;
      else if (key === "R:") {
        const path = paths.installed(dir === "" ? value : `${dir}/${value}`);
        if (path !== undefined) files.push(path);
      } else if (/^[A-Za-z]:$/.test(key) && !fields.has(key[0]!)) fields.set(key[0]!, value);
    }
    const name = fields.get("P");
    // apk's package names; anything else in a base's database is not a package to list
    if (!name || !/^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/.test(name)) continue;
    const version = fields.get("V") ?? "";
    const architecture = fields.get("A") ?? "";
    const qualifiers = [architecture ? `arch=${encodeURIComponent(architecture)}` : "", distro ? `distro=${encodeURIComponent(distro)}` : ""].filter(Boolean).join("&");
    components.push({
      name,
      version,
      ...(architecture ? { architecture } : {}),
      purl: `pkg:apk/${encodeURIComponent(vendor)}/${encodeURIComponent(name)}@${encodeURIComponent(version)}${qualifiers ? `?${qualifiers}` : ""}`,
      source: { name: fields.get("o") ?? name, version },
      files: files.sort(),
    });
  }
  return components.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
