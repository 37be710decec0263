// Finds the first difference between two builds of the same artifact, in the artifact's own
// terms: a partition table, a field of the ext4 superblock, a file of the filesystem, a cpio
// entry, a tar entry of a layer. What `osbuild verify-reproducible` reports.

import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, createReadStream, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { compressionOf } from "../../formats/compression.js";
import { CpioParser } from "../../formats/cpio.js";
import { parseMbr } from "../../formats/mbr.js";
import { TarParser, type TarHeader } from "../../formats/tar.js";

/** A description of the first difference, or undefined when the two are identical. */
export async function firstDifference(a: string, b: string): Promise<string | undefined> {
  const dirA = statSync(a).isDirectory();
  if (dirA !== statSync(b).isDirectory()) return "one is a directory, the other a file";
  if (dirA) return compareOciLayouts(a, b);
  if (sameBytes(a, b)) return undefined;
  const head = readAt(a, 0, 512);
  if (head[0] === 0x7b /* "{": an SBOM or a provenance statement */) return compareLines(a, b);
  if (["gzip", "zstd"].includes(compressionOf(head)) || head.toString("latin1", 0, 6) === "070701") return compareCpio(a, b);
  if (head[510] === 0x55 && head[511] === 0xaa) return compareDiskImages(a, b);
  return `byte ${firstDifferingByte(a, b)} differs`;
}

// ---------------------------------------------------------------------------
// Disk images

async function compareDiskImages(a: string, b: string): Promise<string> {
  if (statSync(a).size !== statSync(b).size) return `image size: ${statSync(a).size} vs ${statSync(b).size} bytes`;
  const regions: Array<[string, number, number]> = [
    ["partition table (sector 0)", 0, 512],
    ["GPT header and entries (sectors 1-33)", 512, 33 * 512],
    ["NVDIMM PFN info block (4 KiB)", 4096, 4096],
  ];
  const inner = 2 * 1024 * 1024;
  if (readAt(a, inner + 510, 2).readUInt16LE(0) === 0xaa55) regions.push(["inner partition table (at 2 MiB, DAX)", inner, 512]);
  // Disk and filesystem ids derive from the rootfs: when they differ, so did the input, and
  // every checksum below differs with them.
  const derivedIds = "the ids osbuild derives from the rootfs differ, so the rootfs itself differs: compare it (add the rootfs as a target) to see which file";
  if (!readAt(a, 440, 4).equals(readAt(b, 440, 4))) return `partition table: disk signature ${readAt(a, 440, 4).toString("hex")} vs ${readAt(b, 440, 4).toString("hex")}; ${derivedIds}`;
  for (const [name, offset, length] of regions) {
    const diff = firstDiffIn(readAt(a, offset, length), readAt(b, offset, length));
    if (diff !== undefined) return `${name}: byte ${offset + diff} differs`;
  }
  const partition = parseMbr(readAt(a, 0, 512)).partitions.find((entry) => entry.type === 0x83);
  if (!partition) return `byte ${firstDifferingByte(a, b)} differs`;
  const fsOffset = partition.startLba * 512;
  const superA = readAt(a, fsOffset + 1024, 1024);
  const superB = readAt(b, fsOffset + 1024, 1024);
  if (superA.readUInt16LE(56) === 0xef53) {
    for (const [field, offset, length] of EXT4_SUPERBLOCK_FIELDS) {
      if (!superA.subarray(offset, offset + length).equals(superB.subarray(offset, offset + length))) {
        const detail = `ext4 superblock field ${field}: ${superA.subarray(offset, offset + length).toString("hex")} vs ${superB.subarray(offset, offset + length).toString("hex")}`;
        return field === "s_uuid" || field === "s_hash_seed" ? `${detail}; ${derivedIds}` : detail;
      }
    }
    const byte = firstDifferingByte(a, b);
    const block = Math.floor((byte - fsOffset) / 4096);
    return `ext4 block ${block} differs${ownerOfBlock(a, fsOffset, block)}`;
  }
  return `byte ${firstDifferingByte(a, b)} differs (inside the filesystem)`;
}

/** ext4 superblock fields worth naming: [name, offset, length]. */
const EXT4_SUPERBLOCK_FIELDS: Array<[string, number, number]> = [
  ["s_inodes_count", 0, 4],
  ["s_blocks_count", 4, 4],
  ["s_free_blocks_count", 12, 4],
  ["s_free_inodes_count", 16, 4],
  ["s_mtime (last mount)", 44, 4],
  ["s_wtime (last write)", 48, 4],
  ["s_mnt_count", 52, 2],
  ["s_lastcheck", 64, 4],
  ["s_feature_compat", 92, 4],
  ["s_feature_incompat", 96, 4],
  ["s_feature_ro_compat", 100, 4],
  ["s_uuid", 104, 16],
  ["s_volume_name", 120, 16],
  ["s_journal_uuid", 208, 16],
  ["s_hash_seed", 236, 16],
  ["s_mkfs_time", 264, 4],
  ["s_kbytes_written", 376, 8],
  ["s_checksum_seed", 624, 4],
  ["s_checksum", 1020, 4],
];

/** Which file a filesystem block belongs to, by debugfs's icheck and ncheck. */
function ownerOfBlock(image: string, fsOffset: number, block: number): string {
  const device = `${image}?offset=${fsOffset}`;
  const icheck = spawnSync("debugfs", ["-R", `icheck ${block}`, device], { encoding: "utf8" }).stdout;
  const inode = /^\d+\s+(\d+)$/m.exec(icheck)?.[1];
  if (!inode) return " (filesystem metadata, not a file)";
  const ncheck = spawnSync("debugfs", ["-R", `ncheck ${inode}`, device], { encoding: "utf8" }).stdout;
  const path = new RegExp(`^${inode}\\s+(.+)$`, "m").exec(ncheck)?.[1];
  return `: it belongs to inode ${inode}${path ? ` (${path})` : ""}`;
}

// ---------------------------------------------------------------------------
// Initrds

interface EntrySummary {
  name: string;
  fields: string;
  data: string;
}

async function compareCpio(a: string, b: string): Promise<string> {
  const [entriesA, entriesB] = await Promise.all([cpioEntries(a), cpioEntries(b)]);
  for (let index = 0; index < Math.max(entriesA.length, entriesB.length); index++) {
    const x = entriesA[index];
    const y = entriesB[index];
    if (!x || !y) return `cpio entry ${index}: only one build has '${(x ?? y)!.name}'`;
    if (x.name !== y.name) return `cpio entry ${index}: '${x.name}' vs '${y.name}'`;
    if (x.fields !== y.fields) return `cpio entry ${index} '${x.name}': header ${x.fields} vs ${y.fields}`;
    if (x.data !== y.data) return `cpio entry ${index} '${x.name}': content differs`;
  }
  return "the archives hold the same entries; the compression differs";
}

async function cpioEntries(file: string): Promise<EntrySummary[]> {
  const entries: EntrySummary[] = [];
  let hash = createHash("sha256");
  const parser = new CpioParser({
    onEntry(entry) {
      hash = createHash("sha256");
      const { name, type, mode, uid, gid, nlink, mtime, size, ino, rdevMajor, rdevMinor } = entry;
      entries.push({ name, fields: JSON.stringify({ type, mode: mode.toString(8), uid, gid, nlink, mtime, size, ino, rdev: `${rdevMajor ?? 0}:${rdevMinor ?? 0}` }), data: "" });
    },
    onData(chunk) {
      hash.update(chunk);
    },
    onEntryEnd() {
      const last = entries[entries.length - 1];
      if (last) last.data = hash.digest("hex");
    },
  });
  for await (const chunk of decompressed(file)) parser.write(chunk as Buffer);
  parser.end();
  return entries;
}

function decompressed(file: string): Readable {
  const compression = compressionOf(readAt(file, 0, 6));
  if (compression === "gzip") return createReadStream(file).pipe(createGunzip());
  if (compression === "zstd") return spawn("zstd", ["-dc", file], { stdio: ["ignore", "pipe", "ignore"] }).stdout;
  return createReadStream(file);
}

/** The first line that differs between two text files. */
function compareLines(a: string, b: string): string {
  const [linesA, linesB] = [readFileSync(a, "utf8").split("\n"), readFileSync(b, "utf8").split("\n")];
  const index = linesA.findIndex((line, at) => line !== linesB[at]);
  const at = index < 0 ? linesA.length : index;
  const show = (line: string | undefined): string => (line === undefined ? "(end of file)" : JSON.stringify(line.trim().slice(0, 160)));
  return `line ${at + 1}: ${show(linesA[at])} vs ${show(linesB[at])}`;
}

/** What a provenance subject gives an output: its sha256, or for an OCI image layout its manifest's. */
export async function outputDigest(path: string): Promise<string> {
  if (statSync(path).isDirectory()) {
    const index = JSON.parse(readFileSync(join(path, "index.json"), "utf8")) as { manifests?: Array<{ digest?: string }> };
    const digest = index.manifests?.[0]?.digest;
    if (typeof digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new Error(`${path}/index.json names no sha256 manifest`);
    return digest.slice("sha256:".length);
  }
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

// ---------------------------------------------------------------------------
// OCI image layouts (a rootfs target)

async function compareOciLayouts(a: string, b: string): Promise<string | undefined> {
  const layers = (layout: string): string[] => {
    const blob = (digest: string): string => join(layout, "blobs", "sha256", digest.slice("sha256:".length));
    const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
    const manifest = JSON.parse(readFileSync(blob(index.manifests[0]!.digest), "utf8")) as { layers: Array<{ digest: string }> };
    return manifest.layers.map((layer) => blob(layer.digest));
  };
  if (!existsSync(join(a, "index.json")) || !existsSync(join(b, "index.json"))) return "not OCI image layouts";
  if (sameBytes(join(a, "index.json"), join(b, "index.json"))) return undefined;
  const [layersA, layersB] = [layers(a), layers(b)];
  for (let index = 0; index < Math.max(layersA.length, layersB.length); index++) {
    const x = layersA[index];
    const y = layersB[index];
    if (!x || !y) return `layer ${index}: only one build has it`;
    if (x.endsWith(y.slice(y.lastIndexOf("/")))) continue; // same digest
    const [entriesA, entriesB] = await Promise.all([tarEntries(x), tarEntries(y)]);
    for (let entry = 0; entry < Math.max(entriesA.length, entriesB.length); entry++) {
      const p = entriesA[entry];
      const q = entriesB[entry];
      if (!p || !q) return `layer ${index}, tar entry ${entry}: only one build has '${(p ?? q)!.name}'`;
      if (p.name !== q.name) return `layer ${index}, tar entry ${entry}: '${p.name}' vs '${q.name}'`;
      if (p.fields !== q.fields) return `layer ${index}, tar entry '${p.name}': ${p.fields} vs ${q.fields}`;
      if (p.data !== q.data) return `layer ${index}, tar entry '${p.name}': content differs`;
    }
    return `layer ${index}: same entries, different bytes`;
  }
  return "same layers; the image config differs";
}

async function tarEntries(file: string): Promise<EntrySummary[]> {
  const entries: EntrySummary[] = [];
  let hash = createHash("sha256");
  const parser = new TarParser({
    onEntry(header: TarHeader) {
      hash = createHash("sha256");
      const { path, type, mode, uid, gid, size, mtime, linkTarget, devMajor, devMinor, xattrs } = header;
      entries.push({ name: path, fields: JSON.stringify({ type, mode: mode.toString(8), uid, gid, size, mtime, linkTarget, devMajor, devMinor, xattrs: Object.keys(xattrs ?? {}) }), data: "" });
    },
    onData(chunk) {
      hash.update(chunk);
    },
    onEntryEnd() {
      const last = entries[entries.length - 1];
      if (last) last.data = hash.digest("hex");
    },
  });
  for await (const chunk of createReadStream(file)) if (!parser.ended) parser.write(chunk as Buffer);
  parser.end();
  return entries;
}

// ---------------------------------------------------------------------------

/** `length` bytes of `file` at `offset`. */
export function readAt(file: string, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const fd = openSync(file, "r");
  try {
    readSync(fd, buffer, 0, length, offset);
  } finally {
    closeSync(fd);
  }
  return buffer;
}

function firstDiffIn(a: Buffer, b: Buffer): number | undefined {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index;
  return a.length === b.length ? undefined : length;
}

function sameBytes(a: string, b: string): boolean {
  return statSync(a).size === statSync(b).size && firstDifferingByte(a, b) === -1;
}

/** Offset of the first differing byte, -1 when equal. Streams both files in 1 MiB chunks. */
function firstDifferingByte(a: string, b: string): number {
  const size = 1 << 20;
  const bufferA = Buffer.alloc(size);
  const bufferB = Buffer.alloc(size);
  const fdA = openSync(a, "r");
  const fdB = openSync(b, "r");
  try {
    for (let offset = 0; ; offset += size) {
      const readA = readSync(fdA, bufferA, 0, size, offset);
      const readB = readSync(fdB, bufferB, 0, size, offset);
      const diff = firstDiffIn(bufferA.subarray(0, readA), bufferB.subarray(0, readB));
      if (diff !== undefined) return offset + diff;
      if (readA === 0) return -1;
    }
  } finally {
    closeSync(fdA);
    closeSync(fdB);
  }
}
