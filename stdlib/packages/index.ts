// Which packages a rootfs holds, from whichever package database it has (dpkg or apk),
// told to the engine as the step's provenance (ctx.provenance.packages): the SBOM lists
// them and `osbuild why` names the package that installed a file. The image keeps nothing
// of this; provision reads the databases before it removes var/lib.

import { readFileSync } from "node:fs";
import type { StepProvenance, Tree } from "../../engine/index.js";
import { osReleaseValue } from "../os-release.js";
import { readApkDatabase } from "./apk.js";
import { readDpkgDatabase, type DpkgReading } from "./dpkg.js";

export { downloadKey } from "./dpkg.js";

/** Records the packages of `tree` (nothing when it has no database osbuild reads); returns how many. */
export function recordInstalledPackages(provenance: StepProvenance, tree: Tree, downloads?: DpkgReading["downloads"]): number {
  let osRelease = "";
  for (const path of ["etc/os-release", "usr/lib/os-release"]) {
    try {
      osRelease = readFileSync(tree.path(path), "utf8");
      break;
    } catch {
      /* the next one */
    }
  }
  const id = osReleaseValue(osRelease, "ID");
  const release = osReleaseValue(osRelease, "VERSION_ID") || osReleaseValue(osRelease, "VERSION_CODENAME");
  const distro = id && release ? `${id}-${release}` : undefined;
  let count = 0;
  const dpkg = readDpkgDatabase(tree, { vendor: id || "debian", ...(distro ? { distro } : {}), ...(downloads ? { downloads } : {}) });
  if (dpkg) {
    provenance.packages("dpkg", dpkg);
    count += dpkg.length;
  }
  const apk = readApkDatabase(tree, id || "alpine", distro);
  if (apk) {
    provenance.packages("apk", apk);
    count += apk.length;
  }
  return count;
}
