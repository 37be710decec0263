// How a host path is written in what osbuild records: relative to the config when inside its
// directory (so records don't depend on where a checkout lives), absolute otherwise.

import { relative, resolve } from "node:path";

/** A host path as SBOMs and provenance show it: relative to the config's directory when inside it. */
export function displayPathFor(configFile: string): (path: string) => string {
  const configDir = resolve(configFile, "..");
  return (path) => {
    const inside = relative(configDir, path);
    return inside !== "" && !inside.startsWith("..") && !inside.startsWith("/") ? inside : path;
  };
}
