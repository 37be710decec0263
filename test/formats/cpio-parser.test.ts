// The streaming newc parser against archives GNU cpio writes (newc and crc), several
// archives back to back, chunking at every boundary, and broken input.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CpioFormatError, CpioParser, type CpioHeader } from "../../formats/cpio.js";
import { archive, parseNewc } from "./newc-reference.js";
import { sh, tempDir } from "../helpers.js";

interface Parsed {
  header: CpioHeader;
  dataOffset: number;
  data: Buffer;
  /** The largest chunk onData passed for this entry. */
  largestChunk: number;
}

/** Parses `archive` fed in chunks of `chunkSize` bytes; returns entries, trailers and consumed bytes. */
function parse(archive: Buffer, chunkSize = archive.length): { entries: Parsed[]; trailers: number; consumed: number; parser: CpioParser } {
  const entries: Parsed[] = [];
  let trailers = 0;
  let current: { header: CpioHeader; dataOffset: number; parts: Buffer[]; largestChunk: number } | undefined;
  const parser = new CpioParser({
    onEntry: (header, dataOffset) => {
      current = { header, dataOffset, parts: [], largestChunk: 0 };
    },
    onData: (chunk) => {
      current!.parts.push(Buffer.from(chunk));
      current!.largestChunk = Math.max(current!.largestChunk, chunk.length);
    },
    onEntryEnd: () => {
      entries.push({ header: current!.header, dataOffset: current!.dataOffset, data: Buffer.concat(current!.parts), largestChunk: current!.largestChunk });
      current = undefined;
    },
    onTrailer: () => trailers++,
  });
  let consumed = 0;
  for (let offset = 0; offset < archive.length && !parser.stopped; offset += chunkSize) consumed += parser.write(archive.subarray(offset, offset + chunkSize));
  parser.end();
  return { entries, trailers, consumed, parser };
}

const base = { mode: 0o644, uid: 0, gid: 0, nlink: 1, mtime: 1700000000 } as const;

/** A tree with every kind of entry GNU cpio can write without root, archived by GNU cpio. */
function gnuArchive(format: "newc" | "crc"): { dir: string; bytes: Buffer } {
  const dir = tempDir("cpio-parser");
  sh(
    [
      "mkdir -p src/d/sub src/empty",
      "printf 'hello\\n' > src/d/file",
      "head -c 300000 /dev/urandom > src/d/big",
      ": > src/d/zero-length",
      "ln src/d/file src/d/hard1 && ln src/d/file src/sub-hard",
      "ln -s file src/d/link && ln -s /absolute/target src/d/abs-link",
      "mkfifo src/d/fifo",
      "printf x > 'src/d/name with spaces é'",
      "chmod 4755 src/d/big && chmod 1777 src/empty",
      `cd src && find . | LC_ALL=C sort | cpio --quiet -o -H ${format} > ../archive.cpio`,
    ].join(" && "),
    dir,
  );
  return { dir, bytes: readFileSync(join(dir, "archive.cpio")) };
}

describe("CpioParser", () => {
  it("reads a GNU cpio newc archive in any chunking, as parseNewc does", () => {
    const { dir, bytes } = gnuArchive("newc");
    const whole = parse(bytes);
    const reference = parseNewc(bytes);
    expect(whole.entries.map((entry) => entry.header.name)).toEqual(reference.map((entry) => entry.name));
    expect(whole.trailers).toBe(1);
    expect(whole.consumed).toBe(bytes.length); // GNU cpio pads to 512 bytes after the trailer
    const byName = new Map(whole.entries.map((entry) => [entry.header.name, entry]));
    expect(byName.get("d/big")!.data.equals(readFileSync(join(dir, "src/d/big")))).toBe(true);
    expect(byName.get("d/big")!.header.mode).toBe(0o4755);
    expect(byName.get("empty")!.header).toMatchObject({ type: "dir", mode: 0o1777 });
    expect(byName.get("d/link")!.header).toMatchObject({ type: "symlink", linkTarget: "file", size: 4 });
    expect(byName.get("d/link")!.data.length).toBe(0); // the target comes in the header, not as data
    expect(byName.get("d/abs-link")!.header.linkTarget).toBe("/absolute/target");
    expect(byName.get("d/fifo")!.header.type).toBe("fifo");
    expect(byName.get("d/name with spaces é")!.data.toString()).toBe("x");
    // GNU cpio sends a hardlinked file's data with its last name; the others have none.
    const links = ["d/file", "d/hard1", "sub-hard"].map((name) => byName.get(name)!.header);
    expect(new Set(links.map((header) => `${header.devMajor}:${header.devMinor}:${header.ino}`)).size).toBe(1);
    expect(links.map((header) => header.nlink)).toEqual([3, 3, 3]);
    expect(links.map((header) => header.size)).toEqual([0, 0, 6]);
    for (const entry of reference) expect(byName.get(entry.name)!.dataOffset).toBe(entry.dataOffset);

    for (const chunkSize of [1, 3, 110, 111, 4096, 65537]) {
      const chunked = parse(bytes, chunkSize);
      expect(chunked.entries.map((entry) => [entry.header, entry.dataOffset, entry.data.toString("hex")])).toEqual(whole.entries.map((entry) => [entry.header, entry.dataOffset, entry.data.toString("hex")]));
      // Streaming: data passes in the chunks it came in, never gathered.
      expect(Math.max(...chunked.entries.map((entry) => entry.largestChunk))).toBeLessThanOrEqual(chunkSize);
    }
  });

  it("verifies the crc variant's checksums", () => {
    const { bytes } = gnuArchive("crc");
    const parsed = parse(bytes, 1000);
    expect(parsed.entries.every((entry) => entry.header.format === "crc")).toBe(true);
    expect(parsed.entries.find((entry) => entry.header.name === "sub-hard")?.data.toString()).toBe("hello\n");
    const corrupted = Buffer.from(bytes);
    const at = corrupted.indexOf("hello\n");
    corrupted[at] = "j".charCodeAt(0);
    expect(() => parse(corrupted)).toThrow(/checksum mismatch in 'sub-hard'/);
  });

  it("reads archives back to back with zero padding between, as the kernel does", () => {
    const first = archive([{ ...base, name: "a", type: "file", size: 3, ino: 1, data: Buffer.from("one") }]);
    const second = archive([
      { ...base, name: "b", type: "dir", mode: 0o755, size: 0, ino: 1 },
      { ...base, name: "b/c", type: "file", size: 5, ino: 2, data: Buffer.from("three") },
    ]);
    const bytes = Buffer.concat([first, Buffer.alloc(512 - (first.length % 512)), second, Buffer.alloc(8)]);
    for (const chunkSize of [1, 7, bytes.length]) {
      const parsed = parse(bytes, chunkSize);
      expect(parsed.entries.map((entry) => [entry.header.name, entry.data.toString()])).toEqual([
        ["a", "one"],
        ["b", ""],
        ["b/c", "three"],
      ]);
      expect(parsed.trailers).toBe(2);
      expect(parsed.parser.archives).toBe(2);
    }
  });

  it("stops at data that is not cpio after an archive, saying how much it consumed", () => {
    const cpio = archive([{ ...base, name: "early", type: "file", size: 2, ino: 1, data: Buffer.from("mc") }]);
    const padded = Buffer.concat([cpio, Buffer.alloc(12)]);
    const bytes = Buffer.concat([padded, Buffer.from([0x1f, 0x8b, 8, 0]), randomBytes(100)]);
    for (const chunkSize of [1, 5, 64, bytes.length]) {
      const parsed = parse(bytes, chunkSize);
      expect(parsed.parser.stopped).toBe(true);
      expect(parsed.consumed).toBe(padded.length);
      expect(parsed.parser.position).toBe(padded.length);
      expect(parsed.entries.map((entry) => entry.header.name)).toEqual(["early"]);
    }
  });

  it("refuses truncated, corrupted and foreign input with what is wrong and where", () => {
    const bytes = archive([{ ...base, name: "file", type: "file", size: 10, ino: 1, data: Buffer.from("0123456789") }]);
    expect(() => parse(bytes.subarray(0, 120))).toThrow(/truncated at byte 120, in the data of 'file' \(6 bytes missing\)/);
    expect(() => parse(archive([{ ...base, name: "file", type: "file", size: 0, ino: 1 }], false))).toThrow(/without its TRAILER!!! entry: it is truncated/);
    expect(() => parse(bytes.subarray(0, 50))).toThrow(/truncated at byte 50/);
    expect(() => parse(Buffer.alloc(0))).toThrow(/empty/);
    const odc = Buffer.from(bytes);
    odc.write("070707", 0, "latin1");
    expect(() => parse(odc)).toThrow(/bad cpio magic '070707' at byte 0: an odc .* read newc/);
    const badField = Buffer.from(bytes);
    badField.write("zz", 20, "latin1");
    expect(() => parse(badField)).toThrow(CpioFormatError);
    const noNul = Buffer.from(bytes);
    noNul[110 + 4] = 0x41; // the NUL after "file"
    expect(() => parse(noNul)).toThrow(/does not end with a NUL/);
    const longName = Buffer.from(bytes);
    longName.write((5000).toString(16).padStart(8, "0"), 6 + 11 * 8, "latin1");
    expect(() => parse(longName)).toThrow(/name of 5000 bytes/);
    const misaligned = Buffer.concat([archive([]), Buffer.alloc(2), bytes]);
    expect(() => parse(misaligned)).toThrow(/broken padding/);
  });

  it("lists the names GNU cpio lists", () => {
    const { dir, bytes } = gnuArchive("newc");
    const names = parse(bytes).entries.map((entry) => entry.header.name);
    const listed = sh("cpio -it --quiet < archive.cpio", dir).trim().split("\n");
    expect(names).toEqual(listed);
  });
});
