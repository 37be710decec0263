// What apt's lists say about a bootstrap, before mmdebstrap cleans them up: each mirror
// suite's release file (its digest and date pin the mirror's snapshot) and where each
// installed package was downloaded from (its pool URL and the .deb's sha256).

import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, readSync } from "node:fs";
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
        if (existsSync(packagesPath)) readPackagesIndex(packagesPath, mirror.uri, wanted, reading.downloads);
      }
    }
  }
  return reading;
}

/** The entries of a Packages index for the `wanted` packages: their pool URL and sha256. */
function readPackagesIndex(path: string, uri: string, wanted: ReadonlySet<string>, downloads: AptListsReading["downloads"]): void {
  for (const bytes of paragraphs(path)) {
    // Each block's name is where apt puts it (its first line): only installed packages' blocks
    // are decoded and parsed. latin1: the fields read here are ASCII, and it decodes fastest.
    const lineEnd = bytes.indexOf(NEWLINE);
    const first = bytes.toString("latin1", 0, lineEnd < 0 ? bytes.length : lineEnd);
    if (first.startsWith("Package: ") && !wanted.has(first.slice(9).trim())) continue;
    const block = bytes.toString("latin1");
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

const NEWLINE = 0x0a;
const SEPARATOR = Buffer.from("\n\n");
/** Read this much of a Packages file at a time; a paragraph longer than PARAGRAPH_LIMIT is not apt's and is skipped. */
const CHUNK = 1 << 20;
const PARAGRAPH_LIMIT = 16 << 20;

/**
 * The paragraphs (blocks between blank lines) of a Packages file, as bytes, read into one
 * buffer a chunk at a time: the file is ~50 MB, and read whole (with its decoded text) it was a
 * cold build's peak of memory. Each paragraph is valid only until the next one is asked for.
 */
function* paragraphs(path: string): Generator<Buffer> {
  const fd = openSync(path, "r");
  try {
    let buffer = Buffer.allocUnsafe(CHUNK);
    let filled = 0;
    let skipping = false;
    for (;;) {
      if (filled === buffer.length) {
        // One paragraph fills the buffer: a bigger one, up to the limit; past it, skip to its end.
        if (buffer.length < PARAGRAPH_LIMIT) {
          const bigger = Buffer.allocUnsafe(buffer.length * 2);
          buffer.copy(bigger, 0, 0, filled);
          buffer = bigger;
        } else {
          buffer[0] = buffer[filled - 1]!; // it may be the first newline of the separator
          filled = 1;
          skipping = true;
        }
      }
      const searchFrom = Math.max(0, filled - 1); // a separator can straddle what was there and what is read
      const read = readSync(fd, buffer, filled, buffer.length - filled, null);
      filled += read;
      const view = buffer.subarray(0, filled);
      let start = 0;
      for (let end = view.indexOf(SEPARATOR, searchFrom); end >= 0; end = view.indexOf(SEPARATOR, start)) {
        if (!skipping) yield view.subarray(start, end);
        skipping = false;
        start = end + 2;
      }
      if (read === 0) {
        if (start < filled && !skipping) yield view.subarray(start, filled);
        return;
      }
      buffer.copy(buffer, 0, start, filled);
      filled -= start;
    }
  } finally {
    closeSync(fd);
  }
}
