// osbuild verify-reproducible: two builds from empty caches, compared byte for byte, and the
// first difference named in the artifact's own terms when a step is not deterministic.

import { describe, expect, it } from "vitest";
import { osbuild, sh, tempDir, writeFiles } from "../helpers.js";

const config = (stamp: string, sourceDate = "  sourceDateEpoch: 1735689600,\n"): string => `import { writeFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase, mkCpio, mkExt4 } from "osbuild";

const stampStep = defineStep({
  kind: "stamp",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  async run(_options: {}, ctx) {
    const tree = await ctx.tree();
    writeFileSync(tree.path("/etc/build-stamp"), ${stamp});
  },
});

export default defineConfig({
${sourceDate}  targets: () => {
    const rootfs = stampStep(fetchBase({ directory: "./tree" }));
    return { rootfs, initrd: mkCpio(rootfs), image: mkExt4(rootfs, { daxHeader: false }), dax: mkExt4(rootfs), erofs: mkExt4(rootfs, { fsType: "erofs", daxHeader: false }) };
  },
});
`;

function project(stamp: string, sourceDate?: string): string {
  const dir = tempDir("reproducible");
  writeFiles(dir, { "osbuild.config.ts": config(stamp, sourceDate), "tree/etc/hostname": "guest\n", "tree/usr/bin/tool": "#!/bin/sh\n" });
  return dir;
}

describe("osbuild verify-reproducible", () => {
  it("reports identical outputs for a deterministic config", async () => {
    const dir = project(`"fixed\\n"`);
    const result = await osbuild(["verify-reproducible", "--cache-dir", `${dir}/cache`], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe("rootfs: identical\ninitrd: identical\nimage: identical\ndax: identical\nerofs: identical\nreproducible: 5 target(s) byte-identical across two builds\n");
  });

  it("is reproducible by default: a config with no source date, and no SOURCE_DATE_EPOCH, gives the same bytes twice", async () => {
    const dir = project(`"fixed\\n"`, "");
    const result = await osbuild(["verify-reproducible", "--cache-dir", `${dir}/cache`], { cwd: dir, env: { SOURCE_DATE_EPOCH: "" } });
    expect(result.code, result.stderr + result.stdout).toBe(0);
    expect(result.stdout).toContain("reproducible: 5 target(s) byte-identical across two builds");
  });

  it("names the first differing tar entry, cpio entry and ext4 file when a step is not", async () => {
    const dir = project("`${process.hrtime.bigint()}\\n`");
    const result = await osbuild(["verify-reproducible", "--cache-dir", `${dir}/cache`], { cwd: dir });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("rootfs: DIFFERS: layer 1, tar entry 'etc/build-stamp': ");
    expect(result.stdout).toMatch(/initrd: DIFFERS: cpio entry \d+ 'etc\/build-stamp': (content differs|header .*"size")/);
    // The image's ids derive from the rootfs, so the report points back at it.
    expect(result.stdout).toMatch(/image: DIFFERS: partition table: disk signature [0-9a-f]{8} vs [0-9a-f]{8}; the ids osbuild derives from the rootfs differ, so the rootfs itself differs/);
    expect(result.stdout).toContain("not reproducible: 5 of 5 target(s) differ");
  });

  it("gives one image for one cache key: options written in another order make the same ids", async () => {
    const images = await Promise.all(
      [`{ daxHeader: false, alignMiB: 1, partitionTable: "gpt" }`, `{ partitionTable: "gpt", alignMiB: 1, daxHeader: false }`].map(async (options) => {
        const dir = tempDir("same-key");
        writeFiles(dir, {
          "osbuild.config.ts": `import { defineConfig, fetchBase, mkExt4 } from "osbuild";\nexport default defineConfig({ sourceDateEpoch: 1735689600, targets: () => ({ image: mkExt4(fetchBase({ directory: "./tree" }), ${options}) }) });\n`,
          "tree/etc/hostname": "guest\n",
        });
        const result = await osbuild(["run", "--json", "--cache-dir", `${dir}/cache`], { cwd: dir });
        expect(result.code, result.stderr).toBe(0);
        const step = result.events.find((event) => event.type === "step" && event.id === "mk-ext4");
        return { key: step?.key, sha256: sh("sha256sum < out/image", dir) };
      }),
    );
    expect(images[1]!.key).toBe(images[0]!.key);
    expect(images[1]!.sha256).toBe(images[0]!.sha256);
  });
});
