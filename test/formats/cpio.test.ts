import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { CpioEntry } from "../../formats/cpio.js";
import { archive, parseNewc } from "./newc-reference.js";
import { isRoot, sh, tempDir } from "../helpers.js";

const entries: Array<CpioEntry & { data?: Buffer }> = [
  { name: ".", type: "dir", mode: 0o755, uid: 0, gid: 0, nlink: 2, mtime: 1700000000, size: 0, ino: 1 },
  { name: "bin", type: "dir", mode: 0o755, uid: 0, gid: 0, nlink: 2, mtime: 1700000000, size: 0, ino: 2 },
  { name: "bin/tool", type: "file", mode: 0o4755, uid: 0, gid: 0, nlink: 2, mtime: 1700000000, size: 5, ino: 3, data: Buffer.from("hello") },
  { name: "bin/alias", type: "file", mode: 0o4755, uid: 0, gid: 0, nlink: 2, mtime: 1700000000, size: 0, ino: 3 },
  { name: "bin/sh", type: "symlink", mode: 0o777, uid: 0, gid: 0, nlink: 1, mtime: 1700000000, size: 4, ino: 4, data: Buffer.from("tool") },
  { name: "dev", type: "dir", mode: 0o755, uid: 0, gid: 0, nlink: 2, mtime: 1700000000, size: 0, ino: 5 },
  { name: "dev/console", type: "char", mode: 0o600, uid: 0, gid: 5, nlink: 1, mtime: 1700000000, size: 0, ino: 6, rdevMajor: 5, rdevMinor: 1 },
  { name: "etc", type: "dir", mode: 0o755, uid: 0, gid: 0, nlink: 2, mtime: 1700000000, size: 0, ino: 7 },
  { name: "etc/shadow", type: "file", mode: 0o640, uid: 0, gid: 42, nlink: 1, mtime: 1700000000, size: 3, ino: 8, data: Buffer.from("x:\n") },
];

describe("cpio newc writer", () => {
  it("writes archives GNU cpio lists and extracts (hardlink data with the first name)", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "a.cpio"), archive(entries));
    const listing = sh("cpio -itv --numeric-uid-gid < a.cpio 2>/dev/null", dir).trim().split("\n");
    expect(listing.map((line) => line.split(/\s+/).pop())).toEqual([".", "bin", "bin/tool", "bin/alias", "tool", "dev", "dev/console", "etc", "etc/shadow"]);
    expect(listing[2]).toMatch(/^-rwsr-xr-x\s+2\s+0\s+0\s+5 /);
    expect(listing[6]).toMatch(/^crw-------\s+1\s+0\s+5\s+5,\s+1 /);
    sh("mkdir x && cd x && cpio -idm --quiet < ../a.cpio", dir);
    expect(readFileSync(join(dir, "x/bin/alias"), "utf8")).toBe("hello");
    expect(sh("stat -c '%h %i' x/bin/tool x/bin/alias", dir).trim().split("\n").map((line) => line.split(" ")[0])).toEqual(["2", "2"]);
    if (isRoot) expect(sh("stat -c '%F %t,%T %U:%g' x/dev/console", dir).trim()).toBe("character special file 5,1 root:5");
  });

  it("reads archives GNU cpio wrote", () => {
    const dir = tempDir();
    sh("mkdir -p src/d && echo content > src/d/file && ln -s file src/d/link && cd src && find . | LC_ALL=C sort | cpio --quiet -o -H newc > ../gnu.cpio", dir);
    const parsed = parseNewc(readFileSync(join(dir, "gnu.cpio")));
    expect(parsed.map((entry) => [entry.name, entry.type])).toEqual([
      [".", "dir"],
      ["d", "dir"],
      ["d/file", "file"],
      ["d/link", "symlink"],
    ]);
    const file = parsed[2]!;
    expect(readFileSync(join(dir, "gnu.cpio")).subarray(file.dataOffset, file.dataOffset + file.size).toString()).toBe("content\n");
  });

  it("aligns every entry to 4 bytes", () => {
    const bytes = archive(entries);
    expect(bytes.length % 4).toBe(0);
    for (const entry of parseNewc(bytes)) expect((entry.dataOffset - 0) % 4).toBe(0);
  });
});
