// osbuild's own version (package.json), for what it records: osbuilder.yaml, SBOMs, provenance.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findPackageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 4; depth++) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "osbuild" && pkg.version) return pkg.version;
    }
    dir = dirname(dir);
  }
  return "unknown";
}

export const OSBUILD_VERSION = findPackageVersion();
