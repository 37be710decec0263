import { closeSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { clearLifetimeWrites } from "../../formats/ext4.js";
import { sh, tempDir } from "../helpers.js";

/** Every superblock's "Lifetime writes" line, as dumpe2fs reads it (the primary, then each backup). */
function lifetimeWrites(image: string, backups: readonly number[], blockSize: number): string[] {
  return [undefined, ...backups].map((block) => {
    const args = block === undefined ? "" : `-o superblock=${block} -o blocksize=${blockSize}`;
    return sh(`dumpe2fs -h ${args} ${image} 2>/dev/null`).split("\n").find((line) => line.startsWith("Lifetime writes")) ?? "none";
  });
}

describe("ext4 lifetime write counter", () => {
  for (const { blockSize, mib, features, backups } of [
    // 1 KiB blocks, 8192 per group: sparse_super backups in groups 1, 3, 5, 7 and 9
    { blockSize: 1024, mib: 96, features: "", backups: [8193, 24577, 40961, 57345, 73729] },
    // sparse_super2: backups only in group 1 and the last group
    { blockSize: 4096, mib: 512, features: "-O sparse_super2", backups: [32768, 98304] },
  ]) {
    it(`is cleared in the superblock and every backup, and e2fsck finds the filesystem clean (${blockSize}-byte blocks ${features || "sparse_super"})`, () => {
      const dir = tempDir("ext4-writes");
      mkdirSync(join(dir, "tree"));
      writeFileSync(join(dir, "tree/file"), Buffer.alloc(300_000, 7));
      const image = join(dir, "fs.img");
      sh(`E2FSPROGS_FAKE_TIME=1000 mke2fs -q -F -t ext4 -b ${blockSize} ${features} -d tree ${image} ${mib}M`, dir);
      expect(lifetimeWrites(image, backups, blockSize).every((line) => /^Lifetime writes:\s+\d+ kB$/.test(line))).toBe(true);
      const fd = openSync(image, "r+");
      try {
        expect(clearLifetimeWrites(fd, 0)).toBe(backups.length + 1);
      } finally {
        closeSync(fd);
      }
      // A counter of zero is "unknown": dumpe2fs prints no line for it.
      expect(lifetimeWrites(image, backups, blockSize)).toEqual(Array(backups.length + 1).fill("none"));
      sh(`e2fsck -fn ${image}`, dir);
    });
  }
});
