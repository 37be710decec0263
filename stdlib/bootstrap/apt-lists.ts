// What apt's lists say about a bootstrap, before mmdebstrap cleans them up: each mirror
// suite's release file (its digest and date pin the mirror's snapshot) and where each
// installed package was downloaded from (its pool URL and the .deb's sha256).

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ResolvedInput } from "../../engine/index.js";
import { downloadKey } from "../packages/index.js";

export interface AptListsReading {
  /** One per mirror line: its release file, by sha256. */
  snapshots: ResolvedInput[];
  /** downloadKey(name, version, architecture) → the .deb's URL and sha256. */
  downloads: Map<string, { url: string; sha256?: string }>;
}

/** A mirror line as mmdebstrap takes it: "deb [options] URI SUITE COMPONENT...". */
export function parseMirrorLine(line: string): { uri: string; suite: string; components: string[] } | undefined {
  const match = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line.trim());
  return match ? { uri: match[1]!.replace(/\/+$/, ""), suite: match[2]!, components: match[3]!.split(/\s+/).filter(Boolean) } : undefined;
}

/** apt's name for the list file of a URI (URItoFileName): no scheme or credentials, odd characters %-quoted, "/" → "_". */
export function aptListName(uri: string): string {
  const withoutScheme = uri.replace(/^[a-z][a-z0-9+.-]*:(\/\/)?/i, "").replace(/^[^/@]*@/, "");
  const quoted = [...withoutScheme].map((char) => (/[\\|{}[\]<>"^~_=!@#$%&*]/.test(char) || char <= " " || char >= "\x7f" ? `%${char.charCodeAt(0).toString(16).padStart(2, "0")}` : char)).join("");
  return quoted.replace(/\//g, "_");
}

const FILENAME = /^(?!.*\.\.)[A-Za-z0-9+._~/-]+$/;
const SHA256 = /^[0-9a-f]{64}$/;

/**
 * Reads the lists apt left in `listsDir` for `mirrorLines`. `wanted` names the installed
 * packages (only their entries of the big Packages files are kept).
 */
export function readAptLists(listsDir: string, mirrorLines: readonly string[], debianArch: string, wanted: ReadonlySet<string>): AptListsReading {
  const reading: AptListsReading = { snapshots: [], downloads: new Map() };
  for (const line of mirrorLines) {
    const mirror = parseMirrorLine(line);
    if (!mirror) continue;
    const prefix = aptListName(`${mirror.uri}/dists/${mirror.suite}/`);
    const releaseName = ["InRelease", "Release"].find((name) => existsSync(join(listsDir, `${prefix}${name}`)));
    const snapshot: ResolvedInput = { name: `${mirror.uri} ${mirror.suite}`, uri: `${mirror.uri}/dists/${mirror.suite}/${releaseName ?? "InRelease"}` };
    if (releaseName) {
      const release = readFileSync(join(listsDir, `${prefix}${releaseName}`));
      const text = release.toString("utf8");
      const field = (name: string): string | undefined => new RegExp(`^${name}: (.+)$`, "m").exec(text)?.[1]?.trim();
      const annotations: Record<string, string> = { components: mirror.components.join(" ") };
      for (const name of ["Origin", "Suite", "Codename", "Version", "Date"]) {
        const value = field(name);
        if (value !== undefined) annotations[name.toLowerCase()] = value;
      }
      Object.assign(snapshot, { digest: { sha256: createHash("sha256").update(release).digest("hex") }, annotations });
    }
    reading.snapshots.push(snapshot);
    for (const component of mirror.components) {
      for (const arch of [debianArch, "all"]) {
        const packagesPath = join(listsDir, aptListName(`${mirror.uri}/dists/${mirror.suite}/${component}/binary-${arch}/Packages`));
        // latin1: the fields read here are ASCII, and it decodes 50 MB faster than UTF-8.
        if (existsSync(packagesPath)) readPackagesIndex(readFileSync(packagesPath, "latin1"), mirror.uri, wanted, reading.downloads);
      }
    }
  }
  return reading;
}

/** The entries of a Packages index for the `wanted` packages: their pool URL and sha256. */
function readPackagesIndex(index: string, uri: string, wanted: ReadonlySet<string>, downloads: AptListsReading["downloads"]): void {
  // A Packages file is ~50 MB: each block's name is read where apt puts it (its first line),
  // and only the blocks of installed packages are parsed.
  for (let start = 0; start < index.length; ) {
    let end = index.indexOf("\n\n", start);
    if (end < 0) end = index.length;
    const lineEnd = index.indexOf("\n", start);
    const first = index.slice(start, lineEnd < 0 || lineEnd > end ? end : lineEnd);
    const block = first.startsWith("Package: ") && !wanted.has(first.slice(9).trim()) ? undefined : index.slice(start, end);
    start = end + 2;
    if (block === undefined) continue;
    const name = /^Package: (\S+)$/m.exec(block)?.[1];
    if (name === undefined || !wanted.has(name)) continue;
    const field = (key: string): string | undefined => new RegExp(`^${key}: (\\S+)$`, "m").exec(block)?.[1];
    const version = field("Version");
    const architecture = field("Architecture");
    const filename = field("Filename");
    if (version === undefined || architecture === undefined || filename === undefined || !FILENAME.test(filename)) continue;
    const key = downloadKey(name, version, architecture);
    if (downloads.has(key)) continue; // the first mirror that has it, in the order apt was given them
    const sha256 = field("SHA256");
    downloads.set(key, { url: `${uri}/${filename}`, ...(sha256 !== undefined && SHA256.test(sha256) ? { sha256 } : {}) });
  }
}
