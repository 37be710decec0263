// A layer's table of contents: every entry's metadata and where its data sits in the tar,
// stored beside the layer so that merging, lookups and checks never re-read the layer.

import { encodeName } from "../../formats/names.js";
import type { TarHeader } from "../../formats/tar.js";
import type { FileEntry, FileType } from "../types.js";

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";

/** A file in a layer; `offset` is where its data starts in the layer tar. */
export interface TocFile {
  path: string;
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  offset?: number;
  /** Regular files: the sha256 (hex) of the content, checked whenever it is read alone. */
  sha256?: string;
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  /** name → base64 value */
  xattrs?: Record<string, string>;
}

/** Deletes `path` (and everything below it) from the layers beneath. */
export interface TocWhiteout {
  path: string;
  type: "whiteout";
}

/** Hides everything the layers beneath have inside directory `path`. */
export interface TocOpaque {
  path: string;
  type: "opaque";
}

export type TocEntry = TocFile | TocWhiteout | TocOpaque;

export interface Toc {
  version: 1;
  entries: TocEntry[];
}

export function isFile(entry: TocEntry): entry is TocFile {
  return entry.type !== "whiteout" && entry.type !== "opaque";
}

/** The tar name of a whiteout or opaque marker. */
export function markerTarPath(entry: TocWhiteout | TocOpaque): string {
  if (entry.type === "opaque") return entry.path === "" ? OPAQUE_MARKER : `${entry.path}/${OPAQUE_MARKER}`;
  const slash = entry.path.lastIndexOf("/");
  return slash < 0 ? `${WHITEOUT_PREFIX}${entry.path}` : `${entry.path.slice(0, slash + 1)}${WHITEOUT_PREFIX}${entry.path.slice(slash + 1)}`;
}

/** Reads a tar header as a TOC entry, recognizing OCI whiteouts. */
export function tocEntryFromHeader(header: TarHeader, offset: number): TocEntry {
  const slash = header.path.lastIndexOf("/");
  const base = header.path.slice(slash + 1);
  const parent = slash < 0 ? "" : header.path.slice(0, slash);
  if (base === OPAQUE_MARKER) return { path: parent, type: "opaque" };
  if (base.startsWith(WHITEOUT_PREFIX)) {
    const name = base.slice(WHITEOUT_PREFIX.length);
    return { path: parent ? `${parent}/${name}` : name, type: "whiteout" };
  }
  const entry: TocFile = {
    path: header.path,
    type: header.type,
    mode: header.mode,
    uid: header.uid,
    gid: header.gid,
    size: header.type === "file" ? header.size : 0,
    mtime: header.mtime,
  };
  if (header.type === "file") entry.offset = offset;
  if (header.linkTarget !== undefined) entry.linkTarget = header.type === "hardlink" ? stripDotSlash(header.linkTarget) : header.linkTarget;
  if (header.devMajor !== undefined) entry.devMajor = header.devMajor;
  if (header.devMinor !== undefined) entry.devMinor = header.devMinor;
  if (header.xattrs) entry.xattrs = encodeXattrs(header.xattrs);
  return entry;
}

export function encodeXattrs(xattrs: Readonly<Record<string, Buffer>>): Record<string, string> | undefined {
  const keys = Object.keys(xattrs).sort();
  if (keys.length === 0) return undefined;
  return Object.fromEntries(keys.map((key) => [key, xattrs[key]!.toString("base64")]));
}

export function decodeXattrs(xattrs: Record<string, string> | undefined): Record<string, Buffer> | undefined {
  if (!xattrs) return undefined;
  return Object.fromEntries(Object.entries(xattrs).map(([key, value]) => [key, Buffer.from(value, "base64")]));
}

/** The public view of a TOC file entry. */
export function toFileEntry(entry: TocFile): FileEntry {
  const { offset: _offset, xattrs, ...rest } = entry;
  const decoded = decodeXattrs(xattrs);
  return decoded ? { ...rest, xattrs: decoded } : rest;
}

function stripDotSlash(path: string): string {
  let result = path;
  while (result.startsWith("./")) result = result.slice(2);
  return result;
}

/** Byte-wise path order (what `tar --sort=name` and the cpio/ext4 writers use). */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(encodeName(a), encodeName(b));
}

/** Sorts paths byte-wise, caching the UTF-8 encodings. */
export function sortByPath<T extends { path: string }>(items: T[]): T[] {
  const keyed = items.map((item) => ({ item, key: encodeName(item.path) }));
  keyed.sort((x, y) => Buffer.compare(x.key, y.key));
  return keyed.map(({ item }) => item);
}
