// `osbuild osbuilder` on small trees (no distro bootstrap): how it reads osbuilder's
// variables (make's precedence, refusals, warnings), the image-builder and initrd-builder
// front doors with Kata's variables (checked with sfdisk, veritysetup and cpio), caching,
// --print-config, and the extension image step; plus osbuilder's own arithmetic (awk's
// hash partition start, the erofs image size) checked against the shell running it.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMbr } from "../../formats/mbr.js";
import { hashPartitionStartMiB, planLayout } from "../../stdlib/disk-image/layout.js";
import { getopts } from "../../stdlib/osbuilder/getopts.js";
import { parseMakeArguments, Variables } from "../../stdlib/osbuilder/variables.js";
import { AGENT, REPO, osbuild, readAt, type RunResult, sh, statuses, tempDir, writeFiles } from "../helpers.js";

const MiB = 1024 * 1024;

/** What make (or a script) sees, and what was said about it. */
function variables(args: Record<string, string>, env: Record<string, string>, viaMake = true): { vars: Variables; said: string[] } {
  const said: string[] = [];
  const vars = new Variables(new Map(Object.entries(args)), env, (line) => said.push(line), viaMake);
  return { vars, said };
}

describe("osbuilder's variables", () => {
  it("takes an argument over the environment, and the environment over the default", () => {
    const { vars } = variables({ FS_TYPE: "erofs" }, { FS_TYPE: "xfs", MEASURED_ROOTFS: "yes" });
    expect(vars.get("FS_TYPE")).toBe("erofs");
    expect(vars.origin("FS_TYPE")).toBe("argument");
    expect(vars.yesNo("MEASURED_ROOTFS", false)).toBe(true);
    expect(vars.origin("MEASURED_ROOTFS")).toBe("environment");
    expect(vars.yesNo("SKIP_DAX_HEADER", false)).toBe(false);
  });

  it("ignores the environment for what the Makefile sets with ':=', as make does, and says so", () => {
    const { vars, said } = variables({}, { ROOTFS_BUILD_DEST: "/elsewhere", BUILD_METHOD: "dracut" });
    expect(vars.raw("ROOTFS_BUILD_DEST")).toBeUndefined();
    expect(vars.raw("BUILD_METHOD")).toBeUndefined();
    expect(said.filter((line) => line.includes("ROOTFS_BUILD_DEST from the environment is ignored"))).toHaveLength(1);
    // an argument does set it; a script (no make in between) reads its environment
    expect(variables({ ROOTFS_BUILD_DEST: "/here" }, { ROOTFS_BUILD_DEST: "/elsewhere" }).vars.raw("ROOTFS_BUILD_DEST")).toBe("/here");
    expect(variables({}, { IMAGE: "x.img" }, false).vars.get("IMAGE")).toBe("x.img");
  });

  it("warns about a variable osbuilder does not read, and says once that Docker is not needed", () => {
    const { said } = variables({ FROBNICATE: "1", USE_DOCKER: "true" }, { USE_PODMAN: "1" });
    expect(said).toContain("warning: FROBNICATE is not a variable osbuilder 4.1 reads: ignored");
    expect(said.filter((line) => line.includes("not needed"))).toEqual(["USE_DOCKER and USE_PODMAN: not needed, osbuild builds without Docker or Podman (and without root)"]);
  });

  it("refuses what osbuild does not support, by name", () => {
    expect(() => variables({}, { SELINUX: "yes" })).toThrow("SELINUX=yes: a guest labelled for SELinux is not supported by osbuild");
    expect(() => variables({ BUILD_VARIANT: "nvidia-gpu" }, {})).toThrow("BUILD_VARIANT=nvidia-gpu: the NVIDIA GPU stack (rootfs-builder/nvidia) is not supported by osbuild");
    expect(() => variables({ NVIDIA_GPU_STACK: "latest" }, {})).toThrow("NVIDIA_GPU_STACK=latest");
    expect(() => variables({ SECCOMP: "no" }, {})).toThrow(/^SECCOMP=no/);
    expect(() => variables({ AGENT_BIN: "my-agent" }, {})).toThrow(/^AGENT_BIN=my-agent/);
    expect(() => variables({ SELINUX: "no", SECCOMP: "yes" }, {})).not.toThrow();
  });

  it("names the variable whose value is bad", () => {
    const { vars } = variables({ AGENT_INIT: "true", IMAGE_SIZE_ALIGNMENT_MB: "0", FS_TYPE: "btrfs" }, {});
    expect(() => vars.yesNo("AGENT_INIT", false)).toThrow("AGENT_INIT=true: expected yes or no");
    expect(() => vars.integer("IMAGE_SIZE_ALIGNMENT_MB", 1)).toThrow("IMAGE_SIZE_ALIGNMENT_MB=0: expected a whole number of at least 1");
    expect(() => vars.choice("FS_TYPE", ["ext4", "xfs", "erofs"], "ext4")).toThrow("FS_TYPE=btrfs: expected one of ext4, xfs, erofs");
  });

  it("splits make's command line into targets and assignments", () => {
    expect(parseMakeArguments(["image", "AGENT_INIT=yes", "EXTRA_PKGS=a b", "initrd", "X:=1", "EMPTY="])).toEqual({
      targets: ["image", "initrd"],
      assignments: new Map([["AGENT_INIT", "yes"], ["EXTRA_PKGS", "a b"], ["X", "1"], ["EMPTY", ""]]),
    });
    expect(() => parseMakeArguments(["-j4", "image"])).toThrow("make option -j4 is not supported");
  });

  it("parses options as the scripts' getopts do", () => {
    expect(getopts(["-dr", "/tmp/root", "-o4.1.0", "debian", "-x"], "a:dhlo:r:t:", "rootfs-builder")).toEqual({ options: new Map([["d", ""], ["r", "/tmp/root"], ["o", "4.1.0"]]), operands: ["debian", "-x"] });
    expect(getopts(["--", "-o"], "ho:", "initrd-builder").operands).toEqual(["-o"]);
    expect(() => getopts(["-z", "dir"], "ho:r:f:", "image-builder")).toThrow("image-builder: unknown option -z");
    expect(() => getopts(["-o"], "ho:", "initrd-builder")).toThrow("initrd-builder: option -o needs a value");
  });
});

describe("osbuilder's arithmetic", () => {
  it("starts the hash partition where awk's 99% puts it", () => {
    const sizes = [3, 81, 100, 128, 256, 1000, 1024, 9999, 10000, 10101, 10102, 10199, 10200, 20000, 54321, 99999, 100000];
    const awk = sh(`for s in ${sizes.join(" ")}; do echo "$s" | awk '{print $1 * 0.99}' | cut -d . -f 1; done`).trim().split("\n").map(Number);
    expect(sizes.map(hashPartitionStartMiB)).toEqual(awk);
  });

  it("sizes an erofs image as image_builder.sh's shell arithmetic does", () => {
    for (const bytes of [4096, 5 * MiB, 5 * MiB - 1, 76.4 * MiB, 300 * MiB + 12345]) {
      for (const measured of [false, true]) {
        const script = `img_size=${Math.floor(bytes)}; mb=$((((img_size + 1048576) / 1048576) + 1 + 1)); ${measured ? "mb=$(( (mb * 100 / 99) + 1 ));" : ""} echo $mb`;
        const expected = Number(sh(script).trim());
        const layout = planLayout({ filesystemBytes: Math.floor(bytes), hashBytesFor: measured ? (data) => Math.ceil(data / 128) : undefined, partitionTable: "mbr", daxHeader: false, alignMiB: 1, osbuilderErofsSizing: true })!;
        expect(layout.fileBytes / MiB, `${bytes} bytes${measured ? ", measured" : ""}`).toBe(expected);
      }
    }
  });
});

/** A tiny guest tree: the agent as /sbin/init. */
function guestTree(dir: string): string {
  const tree = join(dir, "guest");
  writeFiles(dir, { "guest/etc/hostname": "guest\n", "guest/usr/share/data": Buffer.alloc(2 * MiB, 1) });
  sh("mkdir -p guest/sbin guest/dev guest/proc", dir);
  copyFileSync(AGENT, join(tree, "sbin/init"));
  sh("chmod 755 guest/sbin/init", dir);
  return tree;
}

/** An extension's content, as Kata's are: no /etc, no init. */
function extensionTree(dir: string): string {
  writeFiles(dir, { "ext/usr/bin/tool": "#!/bin/sh\necho extension tool\n", "ext/usr/share/ext/data": Buffer.alloc(300 * 1024, 9) });
  sh("chmod 755 ext/usr/bin/tool", dir);
  return join(dir, "ext");
}

/** The partitions of an image's (first) MBR: [start sector, sectors, bootable]. */
function partitions(image: string, at = 0): Array<[number, number, boolean]> {
  return parseMbr(readAt(image, at, 512)).partitions.map((part) => [part.startLba, part.sizeLba, part.bootable ?? false]);
}

/** veritysetup verify of an image's p1 against p2 with the params of a root hash file. */
function verityVerify(image: string, rootHashFile: string, dir: string): number {
  const fields = Object.fromEntries(readFileSync(rootHashFile, "utf8").trim().split(",").map((pair) => pair.split("=") as [string, string]));
  const [data, hash] = parseMbr(readAt(image, 0, 512)).partitions;
  sh(`dd if=${image} of=p1.img bs=512 skip=${data!.startLba} count=${data!.sizeLba} status=none && dd if=${image} of=p2.img bs=512 skip=${hash!.startLba} count=${hash!.sizeLba} status=none`, dir);
  const args = ["verify", "--no-superblock", `--salt=${fields.salt}`, `--data-blocks=${fields.data_blocks}`, `--data-block-size=${fields.data_block_size}`, `--hash-block-size=${fields.hash_block_size}`, "p1.img", "p2.img", fields.root_hash!];
  return spawnSync("veritysetup", args, { cwd: dir }).status ?? -1;
}

const KATA_EXTENSION_ENV = { FS_TYPE: "erofs", MEASURED_ROOTFS: "yes", SKIP_DAX_HEADER: "yes", SKIP_ROOTFS_CHECK: "yes", BUILD_VARIANT: "tools" };

describe("osbuild osbuilder image-builder and initrd-builder", () => {
  let dir: string;
  let cache: string;
  let guest: string;
  let ext: string;
  const front = (args: string[], env: Record<string, string> = {}): Promise<RunResult> => osbuild(["--cache-dir", cache, "osbuilder", ...args], { cwd: dir, env: { SOURCE_DATE_EPOCH: "1735689600", ...env } });

  beforeAll(() => {
    dir = tempDir("front-door");
    cache = join(dir, "cache");
    guest = guestTree(dir);
    ext = extensionTree(dir);
  });

  it("makes osbuilder's disk image of a directory, checked as AGENT_INIT says", async () => {
    const made = await front(["image-builder", "-o", join(dir, "out/kata-containers.img"), guest], { AGENT_INIT: "yes" });
    expect(made.code, made.stderr).toBe(0);
    const image = join(dir, "out/kata-containers.img");
    expect(statSync(image).size % (128 * MiB)).toBe(0);
    expect(partitions(image)).toEqual([[6144, statSync(image).size / 512 - 6144, false]]); // MBR #1: from 3 MiB
    expect(readAt(image, 4096, 16).toString("latin1")).toBe("NVDIMM_PFN_INFO\0");
    expect(sh(`debugfs -R 'stat /etc/machine-id' '${image}?offset=${3 * MiB}' 2>/dev/null`)).toMatch(/Size: 0\b/); // image_builder's empty machine-id
    // its SBOM and provenance beside it, as `osbuild run` writes them, saying how it was asked for
    const statement = JSON.parse(readFileSync(`${image}.intoto.json`, "utf8")) as { subject: unknown; predicate: { buildDefinition: { externalParameters: { parameters: unknown } } } };
    expect(statement.subject).toEqual([{ name: "kata-containers.img", digest: { sha256: createHash("sha256").update(readFileSync(image)).digest("hex") } }]);
    expect(statement.predicate.buildDefinition.externalParameters.parameters).toEqual({
      command: "osbuild osbuilder image-builder",
      arguments: ["-o", image, guest],
      variables: { AGENT_INIT: "yes", SOURCE_DATE_EPOCH: "1735689600" },
    });
    const sbom = JSON.parse(readFileSync(`${image}.spdx.json`, "utf8")) as { spdxVersion: string };
    expect(sbom.spdxVersion).toBe("SPDX-2.3");
    // without AGENT_INIT=yes, image_builder.sh checks for systemd: so does osbuild
    const unchecked = await front(["image-builder", "-o", join(dir, "out/systemd.img"), guest]);
    expect(unchecked.code).toBe(1);
    expect(unchecked.stderr).toContain("is installed, but systemd is to start the agent");
    const skipped = await front(["image-builder", "-o", join(dir, "out/systemd.img"), "-f", "xfs", guest], { SKIP_ROOTFS_CHECK: "yes", SKIP_DAX_HEADER: "yes", IMAGE_SIZE_ALIGNMENT_MB: "16" });
    expect(skipped.code, skipped.stderr).toBe(0);
    expect(statSync(join(dir, "out/systemd.img")).size % (16 * MiB)).toBe(0);
    expect(partitions(join(dir, "out/systemd.img"))[0]![0]).toBe(2048);
  });

  it("makes Kata's extension image with Kata's variables: erofs, dm-verity, no DAX header, root_hash_<variant>.txt", async () => {
    const made = await front(["image-builder", "-o", join(dir, "ext/../out/tools.img"), ext], KATA_EXTENSION_ENV);
    expect(made.code, made.stderr).toBe(0);
    const image = join(dir, "out/tools.img");
    const rootHash = join(dir, "out/root_hash_tools.txt");
    expect(readFileSync(rootHash, "utf8")).toMatch(/^root_hash=[0-9a-f]{64},salt=[0-9a-f]{64},data_blocks=\d+,data_block_size=4096,hash_block_size=4096\n$/);
    const [data, hash] = partitions(image);
    expect(data![0]).toBe(2048); // no DAX header: p1 at 1 MiB, marked bootable as parted's `set 1 boot on`
    expect(data![2]).toBe(true);
    expect(hash![0]).toBe(data![0] + data![1]);
    expect(hash![0] + hash![1]).toBe(statSync(image).size / 512);
    expect(readAt(image, MiB + 1024, 4).readUInt32LE(0)).toBe(0xe0f5e1e2); // erofs
    expect(verityVerify(image, rootHash, dir)).toBe(0);
    sh(`dd if=${image} of=ext.erofs bs=512 skip=${data![0]} count=${data![1]} status=none && fsck.erofs ext.erofs`, dir);
    const top = sh("dump.erofs --ls --path=/ ext.erofs", dir);
    expect(top).toMatch(/\busr\b/);
    expect(top).not.toMatch(/\betc\b/); // no /etc, so no machine-id
    // a second identical call builds nothing
    const again = await front(["image-builder", "-o", join(dir, "out/tools.img"), ext], KATA_EXTENSION_ENV);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/nothing to build \(\d+ steps cached\)/);
  });

  it("gives the same root hash on two clean builds", async () => {
    const hashes = await Promise.all(
      ["clean-1", "clean-2"].map(async (name) => {
        const made = await osbuild(["--cache-dir", join(dir, name, "cache"), "osbuilder", "image-builder", "-o", join(dir, name, "tools.img"), ext], { cwd: dir, env: { SOURCE_DATE_EPOCH: "1735689600", ...KATA_EXTENSION_ENV } });
        expect(made.code, made.stderr).toBe(0);
        return readFileSync(join(dir, name, "root_hash_tools.txt"), "utf8");
      }),
    );
    expect(hashes[0]).toBe(hashes[1]);
    expect(readFileSync(join(dir, "clean-1/tools.img")).equals(readFileSync(join(dir, "clean-2/tools.img")))).toBe(true);
  });

  it("makes osbuilder's initrd of a directory", async () => {
    const made = await front(["initrd-builder", "-o", join(dir, "out/initrd.img"), guest], { AGENT_INIT: "yes" });
    expect(made.code, made.stderr).toBe(0);
    const listing = sh(`zcat ${join(dir, "out/initrd.img")} | cpio -tv --quiet`);
    expect(listing).toMatch(/^lrwxrwxrwx .* init -> \/sbin\/init$/m);
    expect(listing).toMatch(/ sbin\/init$/m);
  });

  it("prints the equivalent config, which type-checks and builds the same image from the cache", async () => {
    const made = await front(["image-builder", "-o", join(dir, "out/tools.img"), ext], KATA_EXTENSION_ENV);
    expect(made.code, made.stderr).toBe(0);
    const printed = await front(["--print-config", "image-builder", "-o", join(dir, "out/tools.img"), ext], KATA_EXTENSION_ENV);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout).toContain("mkVerityImage(");
    writeFiles(dir, { "printed/osbuild.config.ts": printed.stdout });
    const check = await osbuild(["check", "--cache-dir", cache], { cwd: join(dir, "printed") });
    expect(check.code, check.stderr).toBe(0);
    const built = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: join(dir, "printed") });
    expect(built.code, built.stderr).toBe(0);
    expect(new Set(Object.values(statuses(built)))).toEqual(new Set(["cached"]));
    expect(readFileSync(join(dir, "printed/out/tools.img")).equals(readFileSync(join(dir, "out/tools.img")))).toBe(true);
    expect(readFileSync(join(dir, "printed/out/root_hash_tools.txt"), "utf8")).toBe(readFileSync(join(dir, "out/root_hash_tools.txt"), "utf8"));
  });

  it("exits 2 naming the variable or option that is wrong", async () => {
    const cases: Array<[string[], Record<string, string>, string]> = [
      [["image-builder", "-f", "btrfs", guest], {}, "-f btrfs: only ext4, xfs and erofs are supported"],
      [["image-builder", guest], { MEASURED_ROOTFS: "true" }, "MEASURED_ROOTFS=true: expected yes or no"],
      [["image-builder", guest], { SELINUX: "yes" }, "SELINUX=yes"],
      [["image-builder", join(dir, "missing")], {}, "is not a directory"],
      [["image", "DISTRO=debian", "OS_VERSION=bookworm", "AGENT_INIT=yes"], {}, "neither AGENT_SOURCE_BIN nor AGENT_TARBALL is set"],
      [["image", "DISTRO=cbl-mariner", `AGENT_SOURCE_BIN=${AGENT}`], {}, "DISTRO=cbl-mariner: osbuild has no cbl-mariner recipe"],
      [["image", "DISTRO=debian", "OS_VERSION=potato", `AGENT_SOURCE_BIN=${AGENT}`], {}, "OS_VERSION=potato: not a debian release osbuild knows"],
      [["install-scripts"], {}, "osbuilder: no target 'install-scripts'"],
    ];
    for (const [args, env, message] of cases) {
      const result = await front(args, env);
      expect(result.code, `${args.join(" ")}: ${result.stderr}`).toBe(2);
      expect(result.stderr, args.join(" ")).toContain(message);
    }
  });
});

describe("osbuild osbuilder's make targets, without building", () => {
  const front = (dir: string, args: string[]): Promise<RunResult> => osbuild(["--cache-dir", join(dir, "cache"), "osbuilder", ...args], { cwd: dir });

  it("prints configs that type-check, for the distro and dracut build methods", async () => {
    const dir = tempDir("print-config");
    writeFiles(dir, { "policy.rego": "package agent_policy\n", "hooks.tar": "" });
    const cases: Array<[string, string[], RegExp[]]> = [
      ["matrix", ["image", "initrd-debian", "DISTRO=debian", "OS_VERSION=bookworm", "AGENT_INIT=no", `AGENT_SOURCE_BIN=${AGENT}`, "MEASURED_ROOTFS=yes", "CONFIDENTIAL_GUEST=yes", "AGENT_POLICY=yes", `AGENT_POLICY_FILE=${join(dir, "policy.rego")}`, "EXTRA_PKGS=curl jq", "REPO_URL=http://deb.debian.org/debian", "ARCH=x86_64", "SOURCE_DATE_EPOCH=1735689600"], [/mkVerityImage\(/, /"root_hash_\.txt": measuredImage\.rootHash/, /"kata-containers-initrd-debian\.img": initrd/, /confidential: true/, /packages: \["curl", "jq"\]/, /mirror: "deb http:\/\/deb\.debian\.org\/debian bookworm main"/, /sourceDateEpoch: 1735689600/, /arch: "x86_64"/]],
      // ARCH= builds for another architecture, as `osbuild run --arch` does (the foreign boots are in foreign-arch.test.ts).
      ["arm64", ["image", "initrd", "DISTRO=debian", "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${join(REPO, "build/agent/aarch64/kata-agent")}`, "ARCH=aarch64"], [/arch: "aarch64"/, /"kata-containers\.img": image/]],
      ["dracut", ["image", "initrd", "BUILD_METHOD=dracut", "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${AGENT}`], [/dracut\(\{ agent: .*, init: "agent" \}\)/, /fromInitrd\(dracutInitrd\)/, /"kata-containers-initrd\.img": dracutInitrd/]],
    ];
    for (const [name, args, expected] of cases) {
      const printed = await front(dir, ["--print-config", ...args]);
      expect(printed.code, printed.stderr).toBe(0);
      for (const pattern of expected) expect(printed.stdout, name).toMatch(pattern);
      writeFiles(dir, { [`${name}/osbuild.config.ts`]: printed.stdout });
      const check = await osbuild(["check", "--cache-dir", join(dir, "cache")], { cwd: join(dir, name) });
      expect(check.code, `${name}: ${check.stderr}`).toBe(0);
    }
  });

  it("cleans what osbuilder's clean removes, and keeps the cache", async () => {
    const dir = tempDir("clean");
    writeFiles(dir, { "out/debian_rootfs/etc/hostname": "x\n", "out/.debian_rootfs.done": "", "out/kata-containers.img": "x", "out/kata-containers-initrd.img": "x", "out/keep.txt": "x", "cache/keep": "x" });
    const cleaned = await front(dir, ["clean", "DISTRO=debian", `ROOTFS_BUILD_DEST=${join(dir, "out")}`, `IMAGES_BUILD_DEST=${join(dir, "out")}`]);
    expect(cleaned.code, cleaned.stderr).toBe(0);
    expect(sh("ls -A out", dir).trim()).toBe("keep.txt");
    expect(existsSync(join(dir, "cache/keep"))).toBe(true);
  });
});

describe("mkTar and emptyMachineId", () => {
  it("archives the merged tree once per path, with owners, devices and hardlinks, and adds an empty machine-id", async () => {
    const dir = tempDir("mk-tar");
    // the base as a tar python writes: a device node, a hardlink, a file owned by someone else
    sh(
      `python3 - <<'PY'
import io, tarfile
with tarfile.open("base.tar", "w", format=tarfile.PAX_FORMAT) as tar:
    def add(name, kind, data=b"", **meta):
        info = tarfile.TarInfo(name); info.type = kind; info.mode = meta.get("mode", 0o644); info.uid = meta.get("uid", 0); info.gid = meta.get("gid", 0); info.mtime = 1700000000
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        for key in ("linkname", "devmajor", "devminor"):
            if key in meta: setattr(info, key, meta[key])
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    add("etc", tarfile.DIRTYPE, mode=0o755)
    add("etc/hostname", tarfile.REGTYPE, b"guest\\n")
    add("etc/hostname.link", tarfile.LNKTYPE, linkname="etc/hostname")
    add("dev", tarfile.DIRTYPE, mode=0o755)
    add("dev/console", tarfile.CHRTYPE, mode=0o600, gid=5, devmajor=5, devminor=1)
    add("home", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000)
PY`,
      dir,
    );
    writeFiles(dir, {
      "osbuild.config.ts": `import { defineConfig, emptyMachineId, fetchBase, mkTar } from "osbuild";
export default defineConfig({ sourceDateEpoch: 1735689600, targets: () => ({ tree: mkTar(emptyMachineId(fetchBase({ tarball: "./base.tar" }))) }) });
`,
    });
    const built = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(built.code, built.stderr).toBe(0);
    const listing = sh(`tar -tvf ${join(dir, "out/tree")} --numeric-owner`).trim().split("\n").map((line) => line.replace(/ +\d{4}-\d\d-\d\d \d\d:\d\d/, "").replace(/ +/g, " "));
    expect(listing).toEqual([
      "drwxr-xr-x 0/0 0 dev/",
      "crw------- 0/5 5,1 dev/console",
      "drwxr-xr-x 0/0 0 etc/",
      "-rw-r--r-- 0/0 6 etc/hostname",
      "hrw-r--r-- 0/0 0 etc/hostname.link link to etc/hostname",
      "drwxr-x--- 1000/1000 0 home/",
      "-rw-r--r-- 0/0 0 etc/machine-id", // the upper layer's part, after the base's
    ]);
  });
});

describe("mkExtensionImage", () => {
  it("outputs the image, osbuilder's root hash file and the verity_params value", async () => {
    const dir = tempDir("extension-step");
    extensionTree(dir);
    writeFiles(dir, {
      "osbuild.config.ts": `import { defineConfig, fetchBase, mkExtensionImage } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => {
    const tools = mkExtensionImage(fetchBase({ directory: "./ext" }));
    return { image: tools.image, rootHash: tools.rootHash, verityParams: tools.verityParams, plain: mkExtensionImage(fetchBase({ directory: "./ext" }), { verity: false, id: "plain" }).image };
  },
});
`,
    });
    const built = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(built.code, built.stderr).toBe(0);
    const params = readFileSync(join(dir, "out/verityParams"), "utf8");
    expect(params).toMatch(/^root_hash=[0-9a-f]{64},salt=[0-9a-f]{64},data_blocks=\d+,data_block_size=4096,hash_block_size=4096$/);
    expect(readFileSync(join(dir, "out/rootHash"), "utf8")).toBe(`${params}\n`);
    expect(partitions(join(dir, "out/image"))[0]![0]).toBe(2048);
    expect(verityVerify(join(dir, "out/image"), join(dir, "out/rootHash"), dir)).toBe(0);
    expect(partitions(join(dir, "out/plain"))).toHaveLength(1); // unmeasured: no hash partition, as Kata's mount script expects
    expect(existsSync(join(dir, "out/plain"))).toBe(true);
  });
});
