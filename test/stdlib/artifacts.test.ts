// Artifacts that boot: the default config's initrd and disk image, checked with the real
// tools (cpio, sfdisk, e2fsck), parsed back (DAX header), and booted in QEMU with the
// machine's Debian kernel until the agent speaks.

import { copyFileSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMbr } from "../../formats/mbr.js";
import { parsePfnInfoBlock } from "../../formats/pfn.js";
import { AGENT, isRoot, osbuild, readAt, REPO, type RunResult, sh, tempDir, unpackOciLayout, writeFiles } from "../helpers.js";

const MARKER = "OSBUILD-TEST-AGENT";

const config = (extra = ""): string => `import { defineConfig, fetchBase, installAgent, mkCpio, mkExt4, param, provision } from "osbuild";

export default defineConfig({
  params: { init: param.choice(["agent", "systemd"], "agent") },
  sourceDateEpoch: 1735689600,
  targets: ({ init }) => {
    const rootfs = installAgent(provision(fetchBase({ distro: "debian", release: "bookworm", init }), { init }), { binary: ${JSON.stringify(AGENT)}, init });
    return { initrd: mkCpio(rootfs), image: mkExt4(rootfs), rootfs${extra} };
  },
});
`;

/** type, mode, owner, size, link target and content hash of every path, one line each. */
function describe_(root: string): string {
  return sh(`find . -mindepth 1 \\( -type f -printf '%P f %m %U:%G %s ' -exec sh -c 'sha256sum < "$1" | cut -c1-16' _ {} \\; \\) -o \\( ! -type f -printf '%P %y %m %U:%G %l\\n' \\) | LC_ALL=C sort`, root);
}

describe("artifacts of the default config", () => {
  let project: string;
  let cache: string;
  let build: RunResult;

  beforeAll(async () => {
    project = tempDir("artifacts");
    cache = join(project, "cache");
    writeFiles(project, { "osbuild.config.ts": config() });
    build = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: project });
    if (build.code !== 0) throw new Error(`build failed:\n${build.stdout}\n${build.stderr}`);
  }, 600_000);

  it.runIf(isRoot)("has an initrd that cpio reads entry by entry, equal to the layers", () => {
    const fromInitrd = tempDir("from-initrd");
    sh(`zcat ${join(project, "out/initrd")} | cpio -idm --quiet --no-absolute-filenames`, fromInitrd);
    const listing = sh(`zcat ${join(project, "out/initrd")} | cpio -t --quiet`).trim().split("\n");
    expect(new Set(listing).size).toBe(listing.length); // every entry once
    const fromLayers = unpackOciLayout(join(project, "out/rootfs"));
    // directory mtimes are not compared (tar and cpio restore them differently); everything else is
    expect(describe_(fromInitrd)).toBe(describe_(fromLayers));
  });

  it("writes gzip members without a name or time, each ending where a cpio entry ends, of at most 16 MiB of cpio each", () => {
    const head = readAt(join(project, "out/initrd"), 0, 10);
    expect(head.subarray(0, 3).toString("hex")).toBe("1f8b08");
    // One line a member: compressed bytes, cpio bytes, name flag, time (the script exits non-zero on a member that ends inside an entry).
    const members = sh(`python3 ${join(REPO, "test/hostile/gzip_members.py")} ${join(project, "out/initrd")}`).trim().split("\n").map((line) => line.split(" "));
    expect(members.length).toBeGreaterThan(4); // the Debian layer alone is several runs
    for (const [, cpioBytes, name, time] of members) {
      expect(name).toBe("-");
      expect(time).toBe("0");
      expect(Number(cpioBytes)).toBeLessThan(16 * 1024 * 1024 + 2 * 1024 * 1024); // a run ends at the first entry boundary past 16 MiB
    }
  });

  it("has a disk image that sfdisk and e2fsck find clean, sized in 128 MiB steps", () => {
    const image = join(project, "out/image");
    expect(statSync(image).size % (128 * 1024 * 1024)).toBe(0);
    expect(sh(`sfdisk --verify ${image}`)).toContain("No errors detected");
    const dump = sh(`sfdisk --dump ${image}`);
    expect(dump).toMatch(/label: dos/);
    expect(dump).toMatch(/start= +6144, size= +\d+, type=83/);
    sh(`e2fsck -fn '${image}?offset=${3 * 1024 * 1024}'`);
    const superblock = sh(`dumpe2fs -h '${image}?offset=${3 * 1024 * 1024}' 2>/dev/null`);
    expect(superblock).toMatch(/Filesystem created: +Wed Jan  1 00:00:00 2025/);
    expect(superblock).toMatch(/Block size: +4096/);
  });

  it("carries osbuilder's DAX header: a valid PFN block at 4 KiB and a second MBR at 2 MiB", () => {
    const image = join(project, "out/image");
    const pfn = parsePfnInfoBlock(readAt(image, 4096, 4096));
    expect(pfn.signature).toBe("NVDIMM_PFN_INFO");
    expect(pfn.checksumValid).toBe(true);
    expect(pfn.dataOffset).toBe(2 * 1024 * 1024);
    expect(pfn.align).toBe(2 * 1024 * 1024);
    expect(pfn.mode).toBe(1); // PFN_MODE_RAM
    const outer = parseMbr(readAt(image, 0, 512));
    const inner = parseMbr(readAt(image, 2 * 1024 * 1024, 512));
    // both tables point at the same bytes: the filesystem at 3 MiB
    expect(outer.partitions[0]!.startLba * 512).toBe(3 * 1024 * 1024);
    expect(2 * 1024 * 1024 + inner.partitions[0]!.startLba * 512).toBe(3 * 1024 * 1024);
    expect(readAt(image, 3 * 1024 * 1024 + 1024 + 56, 2).readUInt16LE(0)).toBe(0xef53);
  });

  it("boots the agent-as-init initrd in QEMU", async () => {
    const result = await osbuild(["boot", "initrd", "--cache-dir", cache, "--expect", `${MARKER}: started as /init (pid 1)`, "--timeout", "240"], { cwd: project });
    expect(result.code, result.stderr).toBe(0);
  }, 300_000);

  it("boots the disk image through virtio-blk and as an NVDIMM with DAX, from paths with commas in them", async () => {
    // QEMU reads "," in an option as the next option: the paths must come through as paths.
    const odd = join(project, "disks,format=qcow2,readonly=off");
    mkdirSync(odd);
    copyFileSync(join(project, "out/image"), join(odd, "image"));
    const virtio = await osbuild(["boot", join(odd, "image"), "--cache-dir", cache, "--expect", `${MARKER}: started as /sbin/init (pid 1)`, "--timeout", "240"], { cwd: project });
    expect(virtio.code, virtio.stderr).toBe(0);
    expect(virtio.stdout).toContain("osbuild-boot: mounted /dev/vda1 (ext4, ro)");
    const nvdimm = await osbuild(["boot", join(odd, "image"), "--nvdimm", "--cache-dir", cache, "--expect", `${MARKER}: started as /sbin/init (pid 1)`, "--timeout", "240"], { cwd: project });
    expect(nvdimm.code, nvdimm.stderr).toBe(0);
    expect(nvdimm.stdout).toMatch(/nd_pmem pfn\d+\.\d+: region\d+ read-only/); // the PFN block was honoured
    expect(nvdimm.stdout).toContain("osbuild-boot: mounted /dev/pmem0p1 (ext4, ro,dax)");
  }, 600_000);

  it("boots the systemd-init image far enough for systemd to start the agent service", async () => {
    const result = await osbuild(["boot", "image", "--set", "init=systemd", "--out", join(project, "out-systemd"), "--cache-dir", cache, "--expect", `${MARKER}: init=systemd`, "--timeout", "400"], { cwd: project });
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    expect(result.stdout).toMatch(/systemd\[1\]|Welcome to/);
  }, 600_000);

  it("is reproducible: another cache and output directory, later, give the same bytes", async () => {
    const again = await osbuild(["run", "--json", "--cache-dir", join(project, "cache-2"), "--out", join(project, "out-2")], { cwd: project });
    expect(again.code).toBe(0);
    for (const file of ["initrd", "image", "rootfs/index.json"]) {
      expect(sh(`sha256sum < ${join(project, "out-2", file)}`), file).toBe(sh(`sha256sum < ${join(project, "out", file)}`));
    }
  }, 600_000);

  it("sizes the image from the tree, never too small, with extra free space on request", async () => {
    writeFiles(project, { "osbuild.config.ts": config(", roomy: mkExt4(rootfs, { extraFreeMiB: 300, daxHeader: false, partitionTable: \"gpt\" })") });
    const result = await osbuild(["run", "roomy", "--json", "--cache-dir", cache], { cwd: project });
    expect(result.code).toBe(0);
    const image = join(project, "out/roomy");
    expect(sh(`sgdisk -v ${image}`)).toContain("No problems found");
    const info = sh(`dumpe2fs -h '${image}?offset=${1024 * 1024}' 2>/dev/null`);
    const free = Number(/Free blocks: +(\d+)/.exec(info)![1]) * 4096;
    expect(free).toBeGreaterThan(300 * 1024 * 1024);
    sh(`e2fsck -fn '${image}?offset=${1024 * 1024}'`);
  }, 300_000);
});
