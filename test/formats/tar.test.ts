import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { TarParser, encodeTarHeader, paddingFor, tarTrailer, type TarHeader, type TarWritable } from "../../formats/tar.js";
import { isRoot, sh, tempDir } from "../helpers.js";

function writeArchive(entries: Array<TarWritable & { data?: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(encodeTarHeader(entry));
    if (entry.type === "file" && entry.data) parts.push(entry.data, Buffer.alloc(paddingFor(entry.data.length)));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

function parseArchive(archive: Buffer, chunkSize = 777): Array<TarHeader & { data: Buffer }> {
  const entries: Array<TarHeader & { data: Buffer }> = [];
  let chunks: Buffer[] = [];
  const parser = new TarParser({
    onEntry: (header) => {
      chunks = [];
      entries.push({ ...header, data: Buffer.alloc(0) });
    },
    onData: (chunk) => chunks.push(Buffer.from(chunk)),
    onEntryEnd: () => (entries[entries.length - 1]!.data = Buffer.concat(chunks)),
  });
  for (let offset = 0; offset < archive.length; offset += chunkSize) parser.write(archive.subarray(offset, offset + chunkSize));
  parser.end();
  return entries;
}

const longName = `usr/share/${"very-long-directory-name/".repeat(6)}file-with-a-long-name.txt`;
const capability = Buffer.from("0100000200200000000000000000000000000000", "hex"); // cap_net_raw+ep, binary

const sample: Array<TarWritable & { data?: Buffer }> = [
  { path: "etc", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000 },
  { path: "etc/passwd", type: "file", mode: 0o644, uid: 0, gid: 0, size: 5, mtime: 1700000000, data: Buffer.from("root\n") },
  { path: "etc/shadow", type: "file", mode: 0o640, uid: 0, gid: 42, size: 0, mtime: 1700000000, data: Buffer.alloc(0) },
  { path: "etc/hard", type: "hardlink", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1700000000, linkTarget: "etc/passwd" },
  { path: "bin", type: "symlink", mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 1700000000, linkTarget: "usr/bin" },
  { path: "usr", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000 },
  { path: "usr/bin", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000 },
  { path: "usr/bin/ping", type: "file", mode: 0o4755, uid: 0, gid: 0, size: 3, mtime: 1600000000, data: Buffer.from("elf"), xattrs: { "security.capability": capability, "user.note": Buffer.from("x") } },
  { path: "usr/share", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000 },
  { path: longName, type: "file", mode: 0o600, uid: 3000000, gid: 3000000, size: 2, mtime: 1700000000, data: Buffer.from("hi") },
  { path: "usr/share/ünïcode", type: "symlink", mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 1700000000, linkTarget: `../${"x".repeat(150)}` },
  { path: "dev", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000 },
  { path: "dev/null", type: "char", mode: 0o666, uid: 0, gid: 0, size: 0, mtime: 1700000000, devMajor: 1, devMinor: 3 },
  { path: "dev/sda", type: "block", mode: 0o660, uid: 0, gid: 6, size: 0, mtime: 1700000000, devMajor: 8, devMinor: 0 },
  { path: "run-fifo", type: "fifo", mode: 0o600, uid: 0, gid: 0, size: 0, mtime: 1700000000 },
];

describe("tar writer", () => {
  it("writes archives that GNU tar lists exactly", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "a.tar"), writeArchive(sample));
    const listing = sh(`tar --numeric-owner --full-time -tvf a.tar`, dir).trim().split("\n");
    expect(listing).toHaveLength(sample.length);
    expect(listing[0]).toMatch(/^drwxr-xr-x 0\/0\s+0 2023-11-14 22:13:20 etc\/$/);
    expect(listing[3]).toMatch(/^hrw-r--r-- 0\/0\s+0 .* etc\/hard link to etc\/passwd$/);
    expect(listing[7]).toMatch(/^-rwsr-xr-x 0\/0\s+3 2020-09-13 .* usr\/bin\/ping$/);
    expect(listing[9]).toContain(`3000000/3000000`);
    expect(listing[9]).toContain(longName);
    expect(listing[10]).toContain(`usr/share/ünïcode -> ../${"x".repeat(150)}`);
    expect(listing[12]).toMatch(/^crw-rw-rw- 0\/0\s+1,3 .* dev\/null$/);
    expect(listing[13]).toMatch(/^brw-rw---- 0\/6\s+8,0 .* dev\/sda$/);
    expect(listing[14]).toMatch(/^prw------- .* run-fifo$/);
  });

  it.runIf(isRoot)("writes xattrs (binary security.capability included) that GNU tar restores", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "a.tar"), writeArchive(sample.filter((entry) => entry.type !== "symlink" || entry.path === "bin")));
    sh("mkdir x && tar --xattrs --xattrs-include='*' -xpf a.tar -C x", dir);
    expect(sh("getfattr -n security.capability -e hex --absolute-names x/usr/bin/ping", dir)).toContain("0x0100000200200000");
    expect(sh("getcap x/usr/bin/ping || true", dir)).toMatch(/cap_net_raw[=+]ep/);
    expect(readFileSync(join(dir, "x", longName), "utf8")).toBe("hi");
  });

  it("is deterministic: the same entries give the same bytes", () => {
    expect(writeArchive(sample).equals(writeArchive(sample))).toBe(true);
  });
});

describe("tar parser", () => {
  it("reads back what the writer wrote, in any chunking", () => {
    const archive = writeArchive(sample);
    for (const chunkSize of [1, 511, 512, 513, 100_000]) {
      const parsed = parseArchive(archive, chunkSize);
      expect(parsed.map((entry) => entry.path)).toEqual(sample.map((entry) => entry.path));
      const ping = parsed.find((entry) => entry.path === "usr/bin/ping")!;
      expect(ping.mode).toBe(0o4755);
      expect(ping.xattrs!["security.capability"]!.equals(capability)).toBe(true);
      expect(ping.data.toString()).toBe("elf");
      expect(parsed.find((entry) => entry.path === longName)!.uid).toBe(3000000);
      expect(parsed.find((entry) => entry.path === "dev/sda")).toMatchObject({ type: "block", devMajor: 8, devMinor: 0 });
      expect(parsed.find((entry) => entry.path === "etc/hard")).toMatchObject({ type: "hardlink", linkTarget: "etc/passwd" });
    }
  });

  it("reads GNU tar's own formats: gnu long names, pax, ustar prefixes", () => {
    const dir = tempDir();
    sh(`mkdir -p src/${"d".repeat(120)} && echo data > src/${"d".repeat(120)}/${"f".repeat(120)} && ln -s target src/link && ln src/${"d".repeat(120)}/${"f".repeat(120)} src/hard`, dir);
    for (const format of ["gnu", "pax", "posix", "ustar"]) {
      if (format === "ustar") {
        sh(`tar --format=ustar -cf ${format}.tar -C src link`, dir);
        expect(parseArchive(readFileSync(join(dir, `${format}.tar`))).map((entry) => entry.path)).toEqual(["link"]);
        continue;
      }
      sh(`tar --format=${format} --sort=name -cf ${format}.tar -C src .`, dir);
      const parsed = parseArchive(readFileSync(join(dir, `${format}.tar`)));
      const file = parsed.find((entry) => entry.path === `${"d".repeat(120)}/${"f".repeat(120)}`);
      const hard = parsed.find((entry) => entry.path === "hard");
      expect(file?.type ?? hard?.type).toBeDefined();
      expect(parsed.find((entry) => entry.path === "link")).toMatchObject({ type: "symlink", linkTarget: "target" });
      // GNU tar stores the data with whichever name it meets first; the other is a hardlink.
      const withData = [file, hard].find((entry) => entry?.type === "file")!;
      expect(withData.data.toString()).toBe("data\n");
    }
  });

  it("rejects a corrupted header with a clear message", () => {
    const archive = writeArchive(sample);
    archive[100] = 0x39; // inside the first header's mode field
    expect(() => parseArchive(archive)).toThrow(/bad header checksum at byte 0/);
  });

  it("reports a truncated archive", () => {
    const archive = writeArchive(sample);
    expect(() => parseArchive(archive.subarray(0, 1024 + 100))).toThrow(/truncated/);
  });
});
