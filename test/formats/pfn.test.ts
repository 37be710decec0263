import { createHash } from "node:crypto";
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { encodeMbr, MBR_TYPE_LINUX, parseMbr } from "../../formats/mbr.js";
import { encodePfnInfoBlock, fletcher64, KATA_DAX_ALIGNMENT, KATA_DAX_HEADER_SIZE, parsePfnInfoBlock, PFN_INFO_OFFSET, PfnMode } from "../../formats/pfn.js";
import { sh, tempDir } from "../helpers.js";

const MiB = 1024 * 1024;

/**
 * nd_fletcher64 written the way the kernel states it, with its integer widths spelled out:
 * u32 lo32 (wraps at 2^32), u64 hi32 (wraps at 2^64), result (hi32 << 32 | lo32) as a u64.
 */
function referenceFletcher64(data: Buffer): bigint {
  const U32 = (1n << 32n) - 1n;
  const U64 = (1n << 64n) - 1n;
  let lo32 = 0n;
  let hi32 = 0n;
  for (let i = 0; i + 4 <= data.length; i += 4) {
    const word = BigInt(data[i]!) | (BigInt(data[i + 1]!) << 8n) | (BigInt(data[i + 2]!) << 16n) | (BigInt(data[i + 3]!) << 24n);
    lo32 = (lo32 + word) & U32;
    hi32 = (hi32 + lo32) & U64;
  }
  return ((hi32 << 32n) | lo32) & U64;
}

function words(...values: number[]): Buffer {
  const buffer = Buffer.alloc(values.length * 4);
  values.forEach((value, index) => buffer.writeUInt32LE(value, index * 4));
  return buffer;
}

/** Deterministic pseudo-random bytes. */
function noise(length: number, seed: string): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length * 32 < length; i++) parts.push(createHash("sha256").update(`${seed}:${i}`).digest());
  return Buffer.concat(parts).subarray(0, length);
}

describe("fletcher64", () => {
  it("matches hand-computed values, including the wrap of lo32 and the truncation of hi32", () => {
    expect(fletcher64(Buffer.alloc(0))).toBe(0n);
    // lo: 1, 3, 6; hi: 1, 4, 10
    expect(fletcher64(words(1, 2, 3))).toBe(0x0000000a_00000006n);
    // lo: 0xFFFFFFFF then (0xFFFFFFFF + 2) mod 2^32 = 1; hi: 0xFFFFFFFF + 1 = 2^32, shifted out
    expect(fletcher64(words(0xffffffff, 2))).toBe(1n);
    // little-endian words; a trailing partial word is ignored (len / sizeof(u32))
    expect(fletcher64(Buffer.from([1, 0, 0, 0, 0xff, 0xff]))).toBe(0x00000001_00000001n);
  });

  it("agrees with a literal transcription of the kernel's definition", () => {
    for (const data of [Buffer.alloc(4096, 0xff), noise(4096, "a"), noise(4096, "b"), noise(1000, "c"), words(0x80000000, 0x80000000, 0x80000000)]) {
      expect(fletcher64(data)).toBe(referenceFletcher64(data));
    }
  });
});

describe("PFN info block", () => {
  const block = encodePfnInfoBlock({ dataOffset: 2 * MiB, alignment: 2 * MiB });

  it("parses back with the fields nsdax sets", () => {
    expect(block).toHaveLength(4096);
    const parsed = parsePfnInfoBlock(block);
    expect(parsed).toMatchObject({
      signature: "NVDIMM_PFN_INFO",
      flags: 0,
      versionMajor: 0,
      versionMinor: 2,
      dataOffset: 2 * MiB,
      npfns: 0,
      mode: PfnMode.ram,
      startPad: 0,
      endTrunc: 0,
      align: 2 * MiB,
      pageSize: 0,
      pageStructSize: 0,
      checksumValid: true,
    });
    expect(parsed.uuid).toEqual(Buffer.alloc(16));
    expect(parsed.parentUuid).toEqual(Buffer.alloc(16));
    expect(parsed.checksum).toBe(block.readBigUInt64LE(4088));
  });

  it("puts every field at its offset in the kernel's struct nd_pfn_sb and leaves the rest zero", () => {
    // From drivers/nvdimm/pfn.h: u8 signature[16]; u8 uuid[16]; u8 parent_uuid[16]; __le32 flags;
    // __le16 version_major; __le16 version_minor; __le64 dataoff; __le64 npfns; __le32 mode;
    // __le32 start_pad; __le32 end_trunc; __le32 align; __le32 page_size; __le16 page_struct_size;
    // u8 padding[3994]; __le64 checksum  →  4096 bytes, no implicit padding.
    const layout: Array<[string, number]> = [
      ["signature", 16], ["uuid", 16], ["parent_uuid", 16], ["flags", 4], ["version_major", 2], ["version_minor", 2],
      ["dataoff", 8], ["npfns", 8], ["mode", 4], ["start_pad", 4], ["end_trunc", 4], ["align", 4],
      ["page_size", 4], ["page_struct_size", 2], ["padding", 3994], ["checksum", 8],
    ];
    const at: Record<string, number> = {};
    let end = 0;
    for (const [name, size] of layout) {
      at[name] = end;
      end += size;
    }
    expect(end).toBe(4096);
    const offset = (name: string): number => at[name] ?? Number.NaN;
    expect(block.subarray(offset("signature"), offset("signature") + 16)).toEqual(Buffer.from("NVDIMM_PFN_INFO\0", "latin1"));
    expect(block.readUInt16LE(offset("version_minor"))).toBe(2);
    expect(block.readBigUInt64LE(offset("dataoff"))).toBe(BigInt(2 * MiB));
    expect(block.readUInt32LE(offset("mode"))).toBe(1); // PFN_MODE_RAM in enum nd_pfn_mode { NONE, RAM, PMEM }
    expect(block.readUInt32LE(offset("align"))).toBe(2 * MiB);

    // nd_sb_checksum: fletcher64 of the 4 KiB with the checksum field zeroed, stored as __le64.
    const zeroed = Buffer.from(block);
    zeroed.fill(0, offset("checksum"), offset("checksum") + 8);
    expect(block.readBigUInt64LE(offset("checksum"))).toBe(referenceFletcher64(zeroed));

    const written = new Set<number>();
    for (const [name, length] of [["signature", 15], ["version_minor", 2], ["dataoff", 8], ["mode", 4], ["align", 4], ["checksum", 8]] as const) {
      for (let i = 0; i < length; i++) written.add(offset(name) + i);
    }
    const strayNonZero = [...block.keys()].filter((offset) => !written.has(offset) && block[offset] !== 0);
    expect(strayNonZero).toEqual([]);
  });

  it("detects a change of any single byte", () => {
    const copy = Buffer.from(block);
    const undetected: number[] = [];
    for (let offset = 0; offset < copy.length; offset++) {
      copy[offset] = copy[offset]! ^ 0x5a;
      if (parsePfnInfoBlock(copy).checksumValid) undetected.push(offset);
      copy[offset] = copy[offset]! ^ 0x5a;
    }
    expect(undetected).toEqual([]);
    expect(parsePfnInfoBlock(copy).checksumValid).toBe(true);
  });

  it("writes the optional fields when asked", () => {
    const uuid = Buffer.from("00112233445566778899aabbccddeeff", "hex");
    const parsed = parsePfnInfoBlock(encodePfnInfoBlock({ dataOffset: 4 * MiB, alignment: 2 * MiB, npfns: 1234, uuid, mode: PfnMode.pmem, versionMajor: 1, versionMinor: 2 }));
    expect(parsed).toMatchObject({ dataOffset: 4 * MiB, align: 2 * MiB, npfns: 1234, mode: PfnMode.pmem, versionMajor: 1, versionMinor: 2, checksumValid: true });
    expect(parsed.uuid).toEqual(uuid);
  });

  it("is deterministic and rejects offsets the kernel would refuse", () => {
    expect(encodePfnInfoBlock({ dataOffset: 2 * MiB, alignment: 2 * MiB }).equals(block)).toBe(true);
    expect(() => encodePfnInfoBlock({ dataOffset: 4096, alignment: 4096 })).toThrow(/at least 8192/);
    expect(() => encodePfnInfoBlock({ dataOffset: 3 * MiB, alignment: 2 * MiB })).toThrow(/multiple/);
    expect(() => encodePfnInfoBlock({ dataOffset: 2 * MiB, alignment: 3 * MiB })).toThrow(/power of two/);
    expect(() => encodePfnInfoBlock({ dataOffset: 2 * MiB, alignment: 2 * MiB, uuid: Buffer.alloc(4) })).toThrow(/16 bytes/);
  });
});

describe("osbuilder's DAX image layout", () => {
  it("puts the same filesystem behind MBR #1 and behind the pmem data offset's MBR #2", () => {
    const dir = tempDir();
    const imageSize = 64 * MiB;
    const innerSize = imageSize - KATA_DAX_HEADER_SIZE;
    const sectors = (bytes: number): number => bytes / 512;

    // Inner image: MBR #2 with the partition from 1 MiB to the end, and a filesystem in it.
    const inner = join(dir, "inner.img");
    writeFileSync(inner, encodeMbr([{ startLba: sectors(MiB), sizeLba: sectors(innerSize - MiB), type: MBR_TYPE_LINUX }], { diskSignature: 2 }));
    truncateSync(inner, innerSize);
    sh(`mkfs.ext4 -q -F -L kata-root -E offset=${MiB} inner.img ${(innerSize - MiB) / 1024}k`, dir);

    // Header: MBR #1 with the partition from 3 MiB to the end of the final image, PFN block at 4 KiB.
    const header = Buffer.alloc(KATA_DAX_HEADER_SIZE);
    encodeMbr([{ startLba: sectors(3 * MiB), sizeLba: sectors(imageSize - 3 * MiB), type: MBR_TYPE_LINUX }], { diskSignature: 1 }).copy(header, 0);
    encodePfnInfoBlock({ dataOffset: KATA_DAX_HEADER_SIZE, alignment: KATA_DAX_ALIGNMENT }).copy(header, PFN_INFO_OFFSET);
    writeFileSync(join(dir, "kata.img"), Buffer.concat([header, readFileSync(inner)]));

    expect(sh("sfdisk --verify kata.img 2>&1", dir)).toContain("No errors detected.");
    expect(sh("sfdisk --dump kata.img", dir)).toMatch(/^kata\.img1 : start=\s*6144, size=\s*124928, type=83$/m);

    const image = readFileSync(join(dir, "kata.img"));
    const pfn = parsePfnInfoBlock(image.subarray(PFN_INFO_OFFSET, PFN_INFO_OFFSET + 4096));
    expect(pfn.checksumValid).toBe(true);
    // What the guest sees as /dev/pmem0 starts at dataoff; its MBR #2 partition lands on the same bytes.
    const outer = parseMbr(image.subarray(0, 512)).partitions[0]!;
    const pmem = parseMbr(image.subarray(pfn.dataOffset, pfn.dataOffset + 512)).partitions[0]!;
    expect(pfn.dataOffset + pmem.startLba * 512).toBe(outer.startLba * 512);
    expect(pfn.dataOffset + (pmem.startLba + pmem.sizeLba) * 512).toBe((outer.startLba + outer.sizeLba) * 512);
    expect(sh(`dumpe2fs -h 'kata.img?offset=${outer.startLba * 512}' 2>/dev/null`, dir)).toMatch(/^Filesystem volume name:\s+kata-root$/m);
  });
});
