// Disk image variants on a small rootfs: dm-verity (checked by veritysetup), xfs and erofs
// (checked by their tools and booted), GPT and MBR, and clear errors for bad options.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parseGpt } from "../../formats/gpt.js";
import { parseMbr } from "../../formats/mbr.js";
import { AGENT, failure, osbuild, readAt, type RunResult, sh, tempDir, writeFiles } from "../helpers.js";


const CONFIG = `import { defineConfig, fetchBase, installAgent, mkExt4, mkVerityImage } from "osbuild";

export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => {
    const rootfs = installAgent(fetchBase({ directory: "./tree" }), { binary: ${JSON.stringify(AGENT)}, init: "agent" });
    const verity = mkVerityImage(rootfs, { daxHeader: false, partitionTable: "gpt", id: "verity" });
    const verityDax = mkVerityImage(rootfs, { id: "verity-dax" });
    return {
      verityImage: verity.image,
      rootHash: verity.rootHash,
      kernelParams: verity.kernelParams,
      verityDaxImage: verityDax.image,
      verityDaxParams: verityDax.kernelParams,
      xfs: mkExt4(rootfs, { fsType: "xfs", daxHeader: false, id: "xfs" }),
      erofs: mkExt4(rootfs, { fsType: "erofs", id: "erofs" }),
    };
  },
});
`;

describe("disk image variants", () => {
  let project: string;
  let cache: string;
  let build: RunResult;

  beforeAll(async () => {
    project = tempDir("images");
    cache = join(project, "cache");
    writeFiles(project, { "osbuild.config.ts": CONFIG, "tree/etc/hostname": "guest\n", "tree/usr/share/data/big": Buffer.alloc(3 << 20, 7) });
    sh("mkdir -p tree/sbin tree/dev tree/proc tree/sys && ln -s ../usr/share/data/big tree/etc/link && ln tree/etc/hostname tree/etc/hostname2", project);
    build = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: project });
    if (build.code !== 0) throw new Error(`build failed:\n${build.stdout}\n${build.stderr}`);
  }, 600_000);

  it("adds a dm-verity hash partition that veritysetup verifies with the written root hash", () => {
    const image = join(project, "out/verityImage");
    const gpt = parseGpt((offset, length) => readAt(image, offset, length));
    expect(gpt.partitions).toHaveLength(2);
    const [data, hash] = gpt.partitions.map((partition) => ({ offset: partition.firstLba * 512, bytes: (partition.lastLba - partition.firstLba + 1) * 512 }));
    const rootHashLine = readFileSync(join(project, "out/rootHash"), "utf8");
    const fields = Object.fromEntries(rootHashLine.trim().split(",").map((pair) => pair.split("=") as [string, string]));
    expect(Object.keys(fields)).toEqual(["root_hash", "salt", "data_blocks", "data_block_size", "hash_block_size"]);
    expect(Number(fields.data_blocks) * 4096).toBe(data!.bytes);
    sh(`dd if=${image} of=data.img bs=1M iflag=skip_bytes,count_bytes skip=${data!.offset} count=${data!.bytes} status=none`, project);
    sh(`dd if=${image} of=hash.img bs=1M iflag=skip_bytes,count_bytes skip=${hash!.offset} count=${hash!.bytes} status=none`, project);
    const verify = `veritysetup verify --no-superblock --salt=${fields.salt} --data-blocks=${fields.data_blocks} data.img hash.img ${fields.root_hash}`;
    sh(verify, project);
    sh("printf x | dd of=data.img bs=1 seek=1234567 conv=notrunc status=none", project);
    expect(() => sh(verify, project)).toThrow(/Verification failed|corruption/i);
    const params = readFileSync(join(project, "out/kernelParams"), "utf8").trim();
    const sectors = Number(fields.data_blocks) * 8;
    expect(params).toBe(`dm-mod.create="dm-verity,,,ro,0 ${sectors} verity 1 /dev/vda1 /dev/vda2 4096 4096 ${fields.data_blocks} 0 sha256 ${fields.root_hash} ${fields.salt}" root=/dev/dm-0 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4`);
    expect(sh(`e2fsck -fn data.img 2>&1 || true`, project)).toMatch(/rootfs: \d+\/\d+ files/);
  });

  it("puts the verity partitions behind the DAX header, and names the pmem devices", () => {
    const image = join(project, "out/verityDaxImage");
    const outer = parseMbr(readAt(image, 0, 512));
    expect(outer.partitions.map((partition) => [partition.startLba, partition.bootable ?? false])).toEqual([
      [6144, true],
      [outer.partitions[1]!.startLba, false],
    ]);
    expect(readFileSync(join(project, "out/verityDaxParams"), "utf8")).toContain("verity 1 /dev/pmem0p1 /dev/pmem0p2 4096 4096");
  });

  it("makes xfs that xfs_repair accepts, and boots it", async () => {
    const image = join(project, "out/xfs");
    const start = parseMbr(readAt(image, 0, 512)).partitions[0]!.startLba * 512;
    sh(`dd if=${image} of=xfs-part.img bs=1M iflag=skip_bytes skip=${start} status=none && xfs_repair -n -f xfs-part.img`, project);
    const boot = await osbuild(["boot", "xfs", "--cache-dir", cache, "--expect", "OSBUILD-TEST-AGENT: started as /sbin/init", "--timeout", "240"], { cwd: project });
    expect(boot.code, boot.stderr).toBe(0);
    expect(boot.stdout).toContain("osbuild-boot: mounted /dev/vda1 (xfs, ro)");
  }, 300_000);

  it("makes erofs that fsck.erofs accepts, and boots it as an NVDIMM", async () => {
    const image = join(project, "out/erofs");
    const start = parseMbr(readAt(image, 0, 512)).partitions[0]!.startLba * 512;
    expect(start).toBe(3 * 1024 * 1024);
    sh(`dd if=${image} of=erofs-part.img bs=1M iflag=skip_bytes skip=${start} status=none && fsck.erofs erofs-part.img`, project);
    const boot = await osbuild(["boot", "erofs", "--nvdimm", "--cache-dir", cache, "--expect", "OSBUILD-TEST-AGENT: started as /sbin/init", "--timeout", "240"], { cwd: project });
    expect(boot.code, boot.stderr).toBe(0);
    expect(boot.stdout).toContain("osbuild-boot: mounted /dev/pmem0p1 (erofs, ro,dax)");
  }, 300_000);

  it("refuses a DAX header on GPT and a size that is too small", async () => {
    const dir = tempDir("images-bad");
    writeFiles(dir, {
      "tree/etc/hostname": "x\n",
      "osbuild.config.ts": `import { defineConfig, fetchBase, mkExt4 } from "osbuild";
export default defineConfig(() => ({ image: mkExt4(fetchBase({ directory: "./tree" }), { partitionTable: "gpt" }) }));
`,
    });
    const gpt = await osbuild(["run", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(gpt.code).toBe(2);
    expect(gpt.stderr).toContain('mk-ext4: the DAX header needs partitionTable: "mbr" (as osbuilder); set daxHeader: false for GPT');
    writeFiles(dir, {
      "osbuild.config.ts": `import { defineConfig, fetchBase, mkExt4 } from "osbuild";
export default defineConfig(() => ({ image: mkExt4(fetchBase({ directory: "./tree" }), { sizeMiB: 1 }) }));
`,
    });
    const small = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(small.code).toBe(1);
    expect(failure(small)).toMatch(/^sizeMiB 1 is too small: the rootfs needs at least \d+ MiB$/);
  });
});
