import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { crc32, decodeGuid, encodeGpt, encodeGuid, guidFromHash, LINUX_FILESYSTEM_GUID, parseGpt, type GptPartition } from "../../formats/gpt.js";
import { encodeMbr, MBR_TYPE_LINUX, parseMbr } from "../../formats/mbr.js";
import { readAt, sh, tempDir } from "../helpers.js";

const MiB = 1024 * 1024;

/** A sparse image of `size` bytes with `chunks` written at their offsets. */
function writeImage(path: string, size: number, chunks: Array<{ offset: number; data: Buffer }>): void {
  writeFileSync(path, "");
  truncateSync(path, size);
  const fd = openSync(path, "r+");
  try {
    for (const { offset, data } of chunks) writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Tool output with the image's path replaced, so two images' reports compare equal. */
function report(command: string, dir: string, image: string): string {
  return sh(`${command} ${image}`, dir).split(image).join("IMG");
}

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");

describe("MBR", () => {
  const size = 64 * MiB;
  const sectors = size / 512;
  const partition = { startLba: 2048, sizeLba: sectors - 2048, type: MBR_TYPE_LINUX };

  it("writes a table sfdisk and fdisk read exactly and verify clean", () => {
    const dir = tempDir();
    writeImage(join(dir, "a.img"), size, [{ offset: 0, data: encodeMbr([partition], { diskSignature: 0x4b415441 }) }]);
    const dump = sh("sfdisk --dump a.img", dir);
    expect(dump).toContain("label: dos\nlabel-id: 0x4b415441\n");
    expect(dump).toMatch(/^a\.img1 : start=\s*2048, size=\s*129024, type=83$/m);
    expect(dump.split("\n").filter((line) => line.startsWith("a.img"))).toHaveLength(1);
    expect(sh("sfdisk --verify a.img 2>&1", dir).trim()).toBe("a.img:\nNo errors detected.");
    const listing = sh("fdisk -l a.img 2>&1", dir);
    expect(listing).toContain("Disk identifier: 0x4b415441");
    expect(listing).toMatch(/^a\.img1\s+2048\s+131071\s+129024\s+63M\s+83 Linux$/m);
    expect(listing).not.toMatch(/warn|differ|does not|doesn't/i);
  });

  it("is byte-identical to what sfdisk writes for the same layout", () => {
    const dir = tempDir();
    writeImage(join(dir, "ours.img"), size, [{ offset: 0, data: encodeMbr([partition], { diskSignature: 0x4b415441 }) }]);
    writeImage(join(dir, "theirs.img"), size, []);
    sh(`printf 'label: dos\\nlabel-id: 0x4b415441\\nunit: sectors\\n\\nstart=2048, size=${sectors - 2048}, type=83\\n' | sfdisk -q theirs.img`, dir);
    expect(report("sfdisk --dump", dir, "ours.img")).toBe(report("sfdisk --dump", dir, "theirs.img"));
    expect(readFileSync(join(dir, "ours.img")).subarray(0, 512)).toEqual(readFileSync(join(dir, "theirs.img")).subarray(0, 512));
  });

  it("clamps CHS beyond cylinder 1023 to FE FF FF and still verifies clean", () => {
    const dir = tempDir();
    const bigSectors = (16 * 1024 * MiB) / 512;
    const partitions = [
      { startLba: 2048, sizeLba: 2048, type: MBR_TYPE_LINUX, bootable: true },
      { startLba: 20_000_000, sizeLba: bigSectors - 20_000_000, type: MBR_TYPE_LINUX },
    ];
    const sector = encodeMbr(partitions, { diskSignature: 1 });
    expect([...sector.subarray(446 + 16 + 1, 446 + 16 + 4)]).toEqual([0xfe, 0xff, 0xff]);
    expect([...sector.subarray(446 + 16 + 5, 446 + 16 + 8)]).toEqual([0xfe, 0xff, 0xff]);
    writeImage(join(dir, "big.img"), bigSectors * 512, [{ offset: 0, data: sector }]);
    expect(sh("sfdisk --verify big.img 2>&1", dir)).toContain("No errors detected.");
    expect(sh("sfdisk --dump big.img", dir)).toMatch(/^big\.img1 : start=\s*2048, size=\s*2048, type=83, bootable$/m);
  });

  it("round-trips through parseMbr", () => {
    const partitions = [
      { startLba: 63, sizeLba: 1000, type: 0x0c, bootable: true },
      { startLba: 2048, sizeLba: 4096, type: MBR_TYPE_LINUX },
      { startLba: 8192, sizeLba: 1, type: 0x82 },
    ];
    expect(parseMbr(encodeMbr(partitions, { diskSignature: 0xdeadbeef }))).toEqual({ diskSignature: 0xdeadbeef, partitions });
  });

  it("rejects what an MBR cannot hold", () => {
    const one = { startLba: 2048, sizeLba: 2048, type: MBR_TYPE_LINUX };
    expect(() => encodeMbr([one, one], { diskSignature: 0 })).toThrow(/overlaps/);
    expect(() => encodeMbr([1, 2, 3, 4, 5].map((n) => ({ ...one, startLba: n * 4096 })), { diskSignature: 0 })).toThrow(/at most 4/);
    expect(() => encodeMbr([{ ...one, startLba: 0 }], { diskSignature: 0 })).toThrow(/sector 0/);
    expect(() => encodeMbr([{ ...one, sizeLba: 2 ** 32 }], { diskSignature: 0 })).toThrow(/32 bits/);
    expect(() => encodeMbr([{ ...one, type: 0 }], { diskSignature: 0 })).toThrow(/type/);
    expect(() => parseMbr(Buffer.alloc(512))).toThrow(/55 AA/);
  });
});

describe("GPT", () => {
  const size = 64 * MiB;
  const lastUsable = size / 512 - 34; // 131038
  const diskGuid = guidFromHash(sha256("disk"));
  const rootfs: GptPartition = { firstLba: 2048, lastLba: lastUsable, typeGuid: LINUX_FILESYSTEM_GUID, uniqueGuid: guidFromHash(sha256("rootfs")), name: "rootfs" };

  function writeGpt(path: string, partitions: GptPartition[]): void {
    const gpt = encodeGpt(size, partitions, { diskGuid });
    writeImage(path, size, [
      { offset: 0, data: gpt.primary },
      { offset: gpt.backupOffset, data: gpt.backup },
    ]);
  }

  it("writes a table sgdisk verifies and sgdisk and sfdisk read exactly", () => {
    const dir = tempDir();
    writeGpt(join(dir, "g.img"), [rootfs]);
    expect(sh("sgdisk -v g.img", dir)).toContain("No problems found.");
    expect(sh("sfdisk --verify g.img 2>&1", dir)).toContain("No errors detected.");
    const printed = sh("sgdisk -p g.img", dir);
    expect(printed).toContain(`Disk identifier (GUID): ${diskGuid}`);
    expect(printed).toContain(`First usable sector is 34, last usable sector is ${lastUsable}`);
    expect(printed).toMatch(new RegExp(`^\\s+1\\s+2048\\s+${lastUsable}\\s+63\\.0 MiB\\s+8300\\s+rootfs$`, "m"));
    const info = sh("sgdisk -i 1 g.img", dir);
    expect(info).toContain(`Partition GUID code: ${LINUX_FILESYSTEM_GUID} (Linux filesystem)`);
    expect(info).toContain(`Partition unique GUID: ${rootfs.uniqueGuid}`);
    expect(info).toContain("Attribute flags: 0000000000000000");
    expect(info).toContain("Partition name: 'rootfs'");
    const dump = sh("sfdisk --dump g.img", dir);
    expect(dump).toContain(`label: gpt\nlabel-id: ${diskGuid}\n`);
    expect(dump).toContain(`first-lba: 34\nlast-lba: ${lastUsable}\n`);
    expect(dump).toContain(`g.img1 : start=        2048, size=      ${lastUsable - 2048 + 1}, type=${LINUX_FILESYSTEM_GUID}, uuid=${rootfs.uniqueGuid}, name="rootfs"`);
  });

  it("matches what sgdisk writes byte for byte, and sfdisk except its constant protective-MBR end CHS", () => {
    const dir = tempDir();
    writeGpt(join(dir, "ours.img"), [rootfs]);
    writeImage(join(dir, "sgdisk.img"), size, []);
    sh(`sgdisk -o -U ${diskGuid} -n 1:2048:${lastUsable} -t 1:8300 -c 1:rootfs -u 1:${rootfs.uniqueGuid} sgdisk.img`, dir);
    writeImage(join(dir, "sfdisk.img"), size, []);
    const script = `label: gpt\\nlabel-id: ${diskGuid}\\nfirst-lba: 34\\nunit: sectors\\n\\nstart=2048, size=${lastUsable - 2047}, type=${LINUX_FILESYSTEM_GUID}, uuid=${rootfs.uniqueGuid}, name="rootfs"\\n`;
    sh(`printf '${script}' | sfdisk -q sfdisk.img`, dir);

    for (const tool of ["sfdisk --dump", "sgdisk -p", "sgdisk -i 1", "sgdisk -v"]) {
      const ours = report(tool, dir, "ours.img");
      expect(report(tool, dir, "sgdisk.img")).toBe(ours);
      expect(report(tool, dir, "sfdisk.img")).toBe(ours);
    }
    const ours = readFileSync(join(dir, "ours.img"));
    expect(readFileSync(join(dir, "sgdisk.img")).equals(ours)).toBe(true);
    // sfdisk always writes FF FF FF as the 0xEE partition's end CHS; sgdisk and we compute it.
    const theirs = readFileSync(join(dir, "sfdisk.img"));
    const endChs = { start: 446 + 5, end: 446 + 8 };
    expect([...theirs.subarray(endChs.start, endChs.end)]).toEqual([0xff, 0xff, 0xff]);
    expect([...ours.subarray(endChs.start, endChs.end)]).toEqual([0x28, 0x20, 0x08]); // LBA 131071 = C 8, H 40, S 32
    ours.copy(theirs, endChs.start, endChs.start, endChs.end);
    expect(theirs.equals(ours)).toBe(true);
  });

  it("round-trips through parseGpt from a buffer and from a file reader", () => {
    const partitions: GptPartition[] = [
      { firstLba: 34, lastLba: 2047, typeGuid: "21686148-6449-6E6F-744E-656564454649", uniqueGuid: guidFromHash(sha256("bios")), name: "BIOS boot", attributes: 1n << 2n },
      { ...rootfs, lastLba: 100_000, attributes: (1n << 60n) | 1n },
      { firstLba: 100_001, lastLba: lastUsable, typeGuid: LINUX_FILESYSTEM_GUID, uniqueGuid: guidFromHash(sha256("x")), name: "é".repeat(36), attributes: 0n },
    ];
    const dir = tempDir();
    writeGpt(join(dir, "g.img"), partitions);
    expect(sh("sgdisk -v g.img", dir)).toContain("No problems found.");
    const expected = { diskGuid, firstUsableLba: 34, lastUsableLba: lastUsable, backupLba: size / 512 - 1, entriesLba: 2, partitions, backupValid: true };
    expect(parseGpt((offset, length) => readAt(join(dir, "g.img"), offset, length))).toEqual(expected);
    expect(parseGpt(readFileSync(join(dir, "g.img")))).toEqual(expected);
    // Reading a table sgdisk wrote works too.
    expect(sh("sgdisk -A 1:set:0 -c 3:renamed g.img", dir)).toBeTruthy();
    const changed = parseGpt(readFileSync(join(dir, "g.img")));
    expect(changed.partitions[2]?.name).toBe("renamed");
    expect(changed.partitions[0]?.attributes).toBe((1n << 2n) | 1n);
    expect(changed.backupValid).toBe(true);
  });

  it("is deterministic and depends on every input", () => {
    const first = encodeGpt(size, [rootfs], { diskGuid });
    const again = encodeGpt(size, [{ ...rootfs }], { diskGuid: diskGuid.toLowerCase() });
    expect(again.primary.equals(first.primary)).toBe(true);
    expect(again.backup.equals(first.backup)).toBe(true);
    expect(first.primary).toHaveLength(34 * 512);
    expect(first.backup).toHaveLength(33 * 512);
    expect(first.backupOffset).toBe(size - 33 * 512);
    expect(encodeGpt(size, [{ ...rootfs, name: "rootfs2" }], { diskGuid }).primary.equals(first.primary)).toBe(false);
    expect(encodeGpt(size, [rootfs], { diskGuid: guidFromHash(sha256("other")) }).primary.equals(first.primary)).toBe(false);
  });

  it("detects corruption and reports a missing backup", () => {
    const gpt = encodeGpt(size, [rootfs], { diskGuid });
    const image = Buffer.alloc(size);
    gpt.primary.copy(image, 0);
    expect(parseGpt(image).backupValid).toBe(false);
    gpt.backup.copy(image, gpt.backupOffset);
    expect(parseGpt(image).backupValid).toBe(true);
    const flip = (offset: number): void => void image.writeUInt8(image.readUInt8(offset) ^ 1, offset);
    flip(2 * 512 + 60); // a name byte of entry 1
    expect(() => parseGpt(image)).toThrow(/entry array CRC/);
    flip(2 * 512 + 60);
    flip(512 + 48); // last usable LBA
    expect(() => parseGpt(image)).toThrow(/header CRC/);
    flip(512 + 48);
    flip(gpt.backupOffset + 33 * 512 - 512 + 56); // backup header's disk GUID
    expect(parseGpt(image).backupValid).toBe(false);
  });

  it("protects a disk larger than 2 TiB with a 0xEE partition of 2^32-1 sectors", () => {
    const gpt = encodeGpt(4 * 1024 * 1024 * MiB, [], { diskGuid });
    expect(parseMbr(gpt.primary.subarray(0, 512))).toEqual({ diskSignature: 0, partitions: [{ startLba: 1, sizeLba: 0xffffffff, type: 0xee }] });
    const small = encodeGpt(size, [], { diskGuid });
    expect(parseMbr(small.primary.subarray(0, 512)).partitions).toEqual([{ startLba: 1, sizeLba: size / 512 - 1, type: 0xee }]);
  });

  it("rejects partitions outside the usable area, overlaps and bad GUIDs", () => {
    expect(() => encodeGpt(size, [{ ...rootfs, firstLba: 33 }], { diskGuid })).toThrow(/usable/);
    expect(() => encodeGpt(size, [{ ...rootfs, lastLba: lastUsable + 1 }], { diskGuid })).toThrow(/usable/);
    expect(() => encodeGpt(size, [rootfs, { ...rootfs, firstLba: lastUsable }], { diskGuid })).toThrow(/overlaps/);
    expect(() => encodeGpt(size, [{ ...rootfs, uniqueGuid: "nope" }], { diskGuid })).toThrow(/unique GUID/);
    expect(() => encodeGpt(size, [{ ...rootfs, name: "x".repeat(37) }], { diskGuid })).toThrow(/36/);
    expect(() => encodeGpt(size + 1, [], { diskGuid })).toThrow(/sectors/);
  });
});

describe("GUIDs and CRC-32", () => {
  it("stores GUIDs mixed-endian", () => {
    expect(encodeGuid(LINUX_FILESYSTEM_GUID).toString("hex")).toBe("af3dc60f838472478e793d69d8477de4");
    expect(decodeGuid(encodeGuid(LINUX_FILESYSTEM_GUID))).toBe(LINUX_FILESYSTEM_GUID);
  });

  it("derives version-4 GUIDs from a hash", () => {
    const guid = guidFromHash("00112233445566778899aabbccddeeff0123");
    expect(guid).toBe("00112233-4455-4677-8899-AABBCCDDEEFF");
    expect(guidFromHash("ffffffffffffffffffffffffffffffff")).toBe("FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF");
    expect(guidFromHash(sha256("a"))).toBe(guidFromHash(sha256("a")));
    expect(guidFromHash(sha256("a"))).not.toBe(guidFromHash(sha256("b")));
    expect(() => guidFromHash("abc")).toThrow(/32 hex/);
  });

  it("computes the IEEE CRC-32", () => {
    expect(crc32(Buffer.from("123456789"))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
    expect(sh("printf 'The quick brown fox jumps over the lazy dog' | gzip -c | tail -c 8 | od -An -tx4 -N4").trim()).toBe(crc32(Buffer.from("The quick brown fox jumps over the lazy dog")).toString(16).padStart(8, "0"));
  });
});
