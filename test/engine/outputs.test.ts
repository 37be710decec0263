// How outputs land in --out: a blob target's copy begins while the store hashes the step's
// file (StagedOutputs), outside the page cache, sparse; it must hold the stored bytes, share
// no inode with the store, and leave nothing behind: not the copy of an output that was up to
// date, not the output it replaced.

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { osbuild, sh, tempDir, writeFiles } from "../helpers.js";

const CONFIG = `import { defineConfig, fetchBase, mkCpio, mkExt4, param, type MkCpioOptions, type MkExt4Options } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1700000000,
  // 'round' changes the packers' cache keys and nothing of what they make.
  params: { round: param.string("0") },
  targets: ({ round }) => {
    const rootfs = fetchBase({ directory: "./base" });
    return {
      image: mkExt4(rootfs, { checks: false, daxHeader: false, alignMiB: 8, round } as MkExt4Options),
      initrd: mkCpio(rootfs, { checks: false, initLink: false, round } as MkCpioOptions),
    };
  },
});
`;

function project(): string {
  const dir = tempDir("outputs");
  writeFiles(dir, {
    "osbuild.config.ts": CONFIG,
    "base/etc/hostname": "outputs\n",
    "base/usr/lib/blob": Buffer.alloc(3 << 20, 0x5a),
  });
  return dir;
}

type OutputEvent = { type: string; target?: string; digest?: string; written?: boolean };

async function build(dir: string, round: string): Promise<OutputEvent[]> {
  const result = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache"), "--out", join(dir, "out"), "--set", `round=${round}`], { cwd: dir });
  expect(result.code, result.stderr).toBe(0);
  return (result.events as OutputEvent[]).filter((event) => event.type === "output");
}

const storePath = (dir: string, digest: string): string => {
  const hex = digest.slice("sha256:".length);
  return join(dir, "cache", "content-v2", "sha256", hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
};
const outNames = (dir: string): string[] => readdirSync(join(dir, "out")).sort();
const EXPECTED = ["image", "image.intoto.json", "image.spdx.json", "initrd", "initrd.intoto.json", "initrd.spdx.json"];

describe("outputs", () => {
  it("copies each blob target while the store hashes it: the stored bytes, sparse, in an inode of its own, nothing left behind", async () => {
    const dir = project();
    const outputs = await build(dir, "1");
    expect(outputs.map((event) => [event.target, event.written])).toEqual(expect.arrayContaining([["image", true], ["initrd", true]]));
    for (const event of outputs) {
      const path = join(dir, "out", event.target!);
      const stored = storePath(dir, event.digest!);
      sh(`cmp ${path} ${stored}`);
      expect(statSync(path).ino).not.toBe(statSync(stored).ino);
      expect(statSync(path).nlink).toBe(1);
      expect(statSync(path).mode & 0o777).toBe(0o644);
    }
    const image = statSync(join(dir, "out", "image"));
    expect(image.size % (8 << 20)).toBe(0);
    expect(image.blocks * 512).toBeLessThan(image.size); // the filesystem's free blocks stayed holes
    expect(outNames(dir)).toEqual(EXPECTED);
  });

  it("drops the copy of an output already up to date, and removes the output a new one replaces", async () => {
    const dir = project();
    const first = await build(dir, "1");
    const initrdInode = statSync(join(dir, "out", "initrd")).ino;
    const imageInode = statSync(join(dir, "out", "image")).ino;

    // Both steps run again; the initrd has the same bytes (its output stays), the image not
    // (its filesystem's ids come from the step's key).
    const second = await build(dir, "2");
    const byTarget = new Map(second.map((event) => [event.target, event]));
    expect(byTarget.get("initrd")).toMatchObject({ written: false, digest: first.find((event) => event.target === "initrd")!.digest });
    expect(byTarget.get("image")?.written).toBe(true);
    expect(statSync(join(dir, "out", "initrd")).ino).toBe(initrdInode);
    expect(statSync(join(dir, "out", "image")).ino).not.toBe(imageInode);
    sh(`cmp ${join(dir, "out", "image")} ${storePath(dir, byTarget.get("image")!.digest!)}`);
    // Neither the dropped copy nor the replaced image is left, under any name.
    expect(outNames(dir)).toEqual(EXPECTED);
  });
});
