// `osbuild osbuilder` side by side with Kata's real osbuilder 4.1 (shared/osbuilder/run.sh,
// as root), on the same variables: the default Debian agent-as-init build, the systemd
// build (make passes rootfs.sh -d) and a MEASURED_ROOTFS=yes erofs image. Compares the
// rootfs trees (paths, types, modes, owners, link targets, device numbers, and the files
// osbuilder writes itself), the disks (partition tables, PFN block, size, verity layout),
// osbuilder.yaml's keys and the initrd's entries. Every difference allowed here has a row in
// the README's table. Each real osbuilder build runs once; the disk is compared on the default
// build (the systemd build's image goes through the same image_builder.sh and mkExt4), and the
// erofs image is made by both tools from the same tree (osbuilder's systemd rootfs).
//
// Then the composable extension images: a systemd base built with an agent tarball holding
// Kata's own extension-mount units and generator (read from the osbuilder checkout), and an
// extension holding a marker program, booted in QEMU; and the same with a tampered extension.

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMbr } from "../../formats/mbr.js";
import { AGENT, isRoot, NOBODY, OSBUILDER_RUN_SH, osbuild, osbuilderCommand, readAt, type RunResult, SHARED, sh, tempDir, writeFiles } from "../helpers.js";

const OSBUILDER = join(SHARED, "osbuilder");
const KATA_AGENT_SRC = join(OSBUILDER, "kata/src/agent");
const EPOCH = "1735689600";
const MiB = 1024 * 1024;
/** One cache for the file: the extension boot's systemd base is the parity build's. */
const CACHE = tempDir("osbuilder-cache");

/** The mirror run.sh gives osbuilder (the host's first): osbuild gets the same, so both install the same packages. */
function hostMirror(): string {
  const dir = "/etc/apt/sources.list.d";
  const sources = existsSync(dir) ? readdirSync(dir).filter((name) => name.endsWith(".sources")).sort().map((name) => readFileSync(join(dir, name), "utf8")) : [];
  const deb822 = sources.join("\n").match(/^URIs:\s*(\S+)/m)?.[1];
  const oneLine = existsSync("/etc/apt/sources.list") ? readFileSync("/etc/apt/sources.list", "utf8").match(/^deb\s+(\S+)/m)?.[1] : undefined;
  return deb822 ?? oneLine ?? "http://deb.debian.org/debian";
}

/** Runs a command to completion, its output kept for the error. */
function runCommand(command: string, args: string[], env: Record<string, string>, cwd: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr, events: [] }));
  });
}

async function succeeded(what: string, pending: Promise<RunResult>): Promise<RunResult> {
  const started = Date.now();
  const result = await pending;
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-4000)}`);
  console.log(`${what}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return result;
}

/** Every path of a tree: type, mode, owner, and link target or device number. */
function treeListing(root: string): Map<string, string> {
  const listing = new Map<string, string>();
  const visit = (relative: string): void => {
    for (const name of readdirSync(relative === "" ? root : join(root, relative))) {
      const path = relative === "" ? name : `${relative}/${name}`;
      const stats = lstatSync(join(root, path));
      const type = stats.isDirectory() ? "dir" : stats.isFile() ? "file" : stats.isSymbolicLink() ? "link" : stats.isCharacterDevice() ? "char" : stats.isBlockDevice() ? "block" : stats.isFIFO() ? "fifo" : "other";
      const detail = type === "link" ? readlinkSync(join(root, path)) : type === "char" || type === "block" ? `${Math.floor(stats.rdev / 256)}:${stats.rdev % 256}` : "";
      listing.set(path, `${type} ${(stats.mode & 0o7777).toString(8)} ${stats.uid}:${stats.gid} ${detail}`.trim());
      if (type === "dir") visit(path);
    }
  };
  visit("");
  return listing;
}

interface TreeDifference {
  onlyOsbuilder: string[];
  onlyOsbuild: string[];
  differing: string[];
  shared: number;
}

function compareTrees(osbuilder: string, ours: string): TreeDifference {
  const theirs = treeListing(osbuilder);
  const mine = treeListing(ours);
  const difference: TreeDifference = { onlyOsbuilder: [], onlyOsbuild: [], differing: [], shared: 0 };
  for (const [path, value] of theirs) {
    const other = mine.get(path);
    if (other === undefined) difference.onlyOsbuilder.push(path);
    else if (other !== value) difference.differing.push(`${path}: osbuilder ${value}, osbuild ${other}`);
    else difference.shared++;
  }
  for (const path of mine.keys()) if (!theirs.has(path)) difference.onlyOsbuild.push(path);
  return difference;
}

/** osbuilder.yaml's keys as dotted paths (from its two-space indentation). */
function yamlKeys(text: string): string[] {
  const keys: string[] = [];
  const stack: string[] = [];
  for (const line of text.split("\n")) {
    const match = /^( *)([A-Za-z][A-Za-z0-9-]*):/.exec(line);
    if (!match) continue;
    const depth = match[1]!.length / 2;
    stack.length = depth;
    stack.push(match[2]!);
    keys.push(stack.join("."));
  }
  return keys;
}

function yamlValue(text: string, key: string): string | undefined {
  return new RegExp(`^ *${key}: "([^"]*)"$`, "m").exec(text)?.[1];
}

/** A partition table as sfdisk reads it, without the disk's id and name. */
function partitionTable(image: string, at = 0): string {
  const dir = tempDir("table");
  sh(`dd if=${image} of=${dir}/mbr bs=512 skip=${at / 512} count=1 status=none && truncate -s ${statSync(image).size - at} ${dir}/mbr`);
  return sh(`sfdisk --dump ${dir}/mbr`).split("\n").filter((line) => /start=/.test(line)).map((line) => line.replace(/^\S+ : /, "")).join("\n");
}

function verityFields(file: string): Record<string, string> {
  return Object.fromEntries(readFileSync(file, "utf8").trim().split(",").map((pair) => pair.split("=") as [string, string]));
}

/** veritysetup verify of an image's data partition against its hash partition (the first MBR's p1, p2). */
function verifies(image: string, rootHash: string): boolean {
  const dir = tempDir("verity");
  const fields = verityFields(rootHash);
  const [data, hash] = parseMbr(readAt(image, 0, 512)).partitions;
  sh(`dd if=${image} of=${dir}/p1 bs=512 skip=${data!.startLba} count=${data!.sizeLba} status=none && dd if=${image} of=${dir}/p2 bs=512 skip=${hash!.startLba} count=${hash!.sizeLba} status=none`);
  sh(`veritysetup verify --no-superblock --salt=${fields.salt} --data-blocks=${fields.data_blocks} ${dir}/p1 ${dir}/p2 ${fields.root_hash}`);
  return true;
}

function initrdEntries(initrd: string): Set<string> {
  return new Set(sh(`zcat ${initrd} | cpio -t --quiet`).split("\n").filter(Boolean).map((name) => name.replace(/^\.\//, "")));
}

// As root, a missing osbuilder is an error, never a skip: the parity is what this file proves.
if (isRoot && !existsSync(OSBUILDER_RUN_SH)) throw new Error(`Kata's real osbuilder is not at ${OSBUILDER_RUN_SH}: set OSBUILD_SHARED to the workplace's shared/ folder (it holds osbuilder/run.sh and osbuilder/kata)`);
const canRun = isRoot;
const why = "needs root: the real osbuilder uses loop devices, mounts and chroot";

describe.runIf(canRun)("osbuild osbuilder beside Kata's real osbuilder 4.1", () => {
  let work: string;
  const common = () => ["DISTRO=debian", "OS_VERSION=bookworm", `REPO_URL_X86_64=${hostMirror()}`];
  const env = { SOURCE_DATE_EPOCH: EPOCH };
  const dir = (name: string): string => join(work, name);
  const ours = (args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> => osbuild(["--cache-dir", CACHE, "osbuilder", ...args], { cwd: work, env: { ...env, ...extraEnv } });
  const real = (args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> => {
    const { command, args: commandArgs } = osbuilderCommand(args);
    return runCommand(command, commandArgs, { ...env, ...extraEnv }, work);
  };
  const erofsEnv = { MEASURED_ROOTFS: "yes", FS_TYPE: "erofs", AGENT_INIT: "no", BUILD_VARIANT: "parity" };

  beforeAll(async () => {
    work = tempDir("parity");
    const dest = (name: string): string[] => [`ROOTFS_BUILD_DEST=${dir(name)}`, `IMAGES_BUILD_DEST=${dir(name)}`];
    // Two lanes: osbuilder's builds one after the other (its Ubuntu/Debian builder runs `apt update` on
    // the host, which two at once would fight over), and osbuild's beside them.
    let realSystemdDone: () => void = () => undefined;
    const realSystemd = new Promise<void>((resolve) => (realSystemdDone = resolve));
    const osbuilderLane = async (): Promise<void> => {
      await succeeded("osbuilder rootfs image initrd (agent as init)", real([dir("real-default"), "rootfs", "image", "initrd", ...common(), "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${AGENT}`]));
      await succeeded("osbuilder rootfs (systemd)", real([dir("real-systemd"), "rootfs", ...common(), "AGENT_INIT=no", `AGENT_SOURCE_BIN=${AGENT}`]));
      realSystemdDone();
      await succeeded("osbuilder image_builder.sh (erofs, measured)", real([dir("real-erofs"), "image-builder", "-o", join(dir("real-erofs"), "kata-containers.img"), join(dir("real-systemd"), "debian_rootfs")], erofsEnv));
    };
    const osbuildLane = async (): Promise<void> => {
      await succeeded("osbuild osbuilder rootfs image initrd (agent as init)", ours(["rootfs", "image", "initrd", ...common(), ...dest("osbuild-default"), "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${AGENT}`]));
      await succeeded("osbuild osbuilder rootfs (systemd)", ours(["rootfs", ...common(), ...dest("osbuild-systemd"), "AGENT_INIT=no", `AGENT_SOURCE_BIN=${AGENT}`]));
      await realSystemd; // the erofs image is made from osbuilder's systemd tree
      await succeeded("osbuild osbuilder image-builder (erofs, measured)", ours(["image-builder", "-o", join(dir("osbuild-erofs"), "kata-containers.img"), join(dir("real-systemd"), "debian_rootfs")], erofsEnv));
    };
    await Promise.all([osbuilderLane(), osbuildLane()]);
  }, 1_800_000); // each lane 2-3 min on a quiet machine; 12-15 min seen with other builds on the 2 cores

  /** Paths only osbuild has, whatever the build: the facts its steps pass on (README table; the package list is in the SBOM). */
  const OSBUILD_FACTS = ["var/lib/osbuilder/base.json"];

  describe.each([
    // agent as init: make rootfs image initrd, so osbuilder's initrd_builder.sh has added /init to its tree too
    { build: "default", onlyOsbuild: OSBUILD_FACTS },
    // systemd: osbuilder installs no units with AGENT_SOURCE_BIN (only its agent source build does), osbuild
    // installs Kata's; and osbuild's rootfs has /init, which osbuilder adds only when it makes an initrd
    { build: "systemd", onlyOsbuild: [...OSBUILD_FACTS, "init", "usr/lib/systemd/system/kata-agent.service", "usr/lib/systemd/system/kata-containers.target"] },
  ])("the $build build", ({ build, onlyOsbuild }) => {
    const theirs = (): string => join(dir(`real-${build}`), "debian_rootfs");
    const mine = (): string => join(dir(`osbuild-${build}`), "debian_rootfs");

    it("has the same paths, types, modes, owners, link targets and device numbers", () => {
      const difference = compareTrees(theirs(), mine());
      expect(difference.shared).toBeGreaterThan(5000);
      expect(difference.onlyOsbuilder).toEqual([]); // MAKEDEV's devices and the CA bundle included
      expect(difference.onlyOsbuild.sort()).toEqual([...onlyOsbuild].sort());
      // osbuilder copies the build machine's resolv.conf, with its mode; osbuild's is empty and 0644
      expect(difference.differing.filter((line) => !line.startsWith("etc/resolv.conf:"))).toEqual([]);
      console.log(`${build}: ${difference.shared} paths shared`);
    });

    it("has the same contents in the files osbuilder writes itself", () => {
      const same = ["etc/chrony/chrony.conf", "usr/lib/systemd/system/chrony.service", "etc/fstab", build === "default" ? "sbin/init" : "usr/bin/kata-agent", ...(build === "systemd" ? ["etc/systemd/system/tmp.mount"] : [])];
      for (const path of same) expect(readFileSync(join(mine(), path)).equals(readFileSync(join(theirs(), path))), path).toBe(true);
      for (const link of ["var/tmp", "var/run", "usr/lib/ssl/cert.pem", "dev/fd", "dev/core", "dev/ram", ...(build === "systemd" ? ["etc/systemd/system/basic.target.wants/kata-containers.target", "etc/systemd/system/kata-containers.target.wants/dbus.socket"] : [])]) {
        expect(readlinkSync(join(mine(), link)), link).toBe(readlinkSync(join(theirs(), link)));
      }
      expect(readFileSync(join(mine(), "etc/resolv.conf"), "utf8")).toBe("");
      // osbuilder's bundle is the build machine's; osbuild's the guest package's: the machine's may add local CAs after it
      const bundle = readFileSync(join(mine(), "etc/ssl/certs/ca-certificates.crt"));
      expect(bundle.toString("latin1").match(/BEGIN CERTIFICATE/g)!.length).toBeGreaterThan(100);
      expect(readFileSync(join(theirs(), "etc/ssl/certs/ca-certificates.crt")).subarray(0, bundle.length).equals(bundle)).toBe(true);
    });

    it("writes osbuilder.yaml with osbuilder's keys", () => {
      const yaml = (root: string): string => readFileSync(join(root, "var/lib/osbuilder/osbuilder.yaml"), "utf8");
      expect(yamlKeys(yaml(mine()))).toEqual(yamlKeys(yaml(theirs())));
      for (const key of ["rootfs-creation-time", "description", "file-format-version", "architecture", "agent-is-init-daemon"]) {
        expect(yamlValue(yaml(mine()), key), key).toBe(yamlValue(yaml(theirs()), key));
      }
      const packages = (text: string): string[] => [...text.matchAll(/^ {6}- "(.+)"$/gm)].map((match) => match[1]!);
      expect(packages(yaml(mine()))).toEqual(packages(yaml(theirs())));
      expect(yamlValue(yaml(theirs()), "name")).toBe("ubuntu"); // osbuilder's Debian builder reuses Ubuntu's config
      expect(readFileSync(join(mine(), "var/lib/osbuilder/osbuilder.yaml"), "utf8")).toContain('base-distro:\n  name: "debian"\n  version: "bookworm"');
    });

    it.runIf(build === "default")("makes a disk image of the same size, partitions and PFN block", () => {
      const [theirImage, myImage] = [join(dir(`real-${build}`), "kata-containers.img"), join(dir(`osbuild-${build}`), "kata-containers.img")];
      expect(statSync(myImage).size).toBe(statSync(theirImage).size);
      expect(partitionTable(myImage)).toBe(partitionTable(theirImage));
      expect(partitionTable(myImage, 2 * MiB)).toBe(partitionTable(theirImage, 2 * MiB));
      expect(readAt(myImage, 4096, 4096).equals(readAt(theirImage, 4096, 4096))).toBe(true);
      expect(sh(`debugfs -R 'stat /etc/machine-id' '${myImage}?offset=${3 * MiB}' 2>/dev/null`)).toMatch(/Size: 0\b/);
      expect(sh(`debugfs -R 'stat /etc/machine-id' '${theirImage}?offset=${3 * MiB}' 2>/dev/null`)).toMatch(/Size: 0\b/);
    });
  });

  it("makes an initrd with osbuilder's entries", () => {
    const theirs = initrdEntries(join(dir("real-default"), "kata-containers-initrd.img"));
    const mine = initrdEntries(join(dir("osbuild-default"), "kata-containers-initrd.img"));
    expect([...theirs].filter((name) => !mine.has(name))).toEqual([]);
    expect([...mine].filter((name) => !theirs.has(name)).sort()).toEqual(OSBUILD_FACTS);
  });

  it("makes a measured erofs image of the same size, partitions, PFN block and verity layout", () => {
    const [theirImage, myImage] = [join(dir("real-erofs"), "kata-containers.img"), join(dir("osbuild-erofs"), "kata-containers.img")];
    expect(statSync(myImage).size).toBe(statSync(theirImage).size);
    const outer = partitionTable(myImage);
    expect(outer).toBe(partitionTable(theirImage));
    expect(outer).toMatch(/^start= +6144, size= +\d+, type=83, bootable\nstart= +\d+, size= +\d+, type=83$/);
    expect(partitionTable(myImage, 2 * MiB)).toBe(partitionTable(theirImage, 2 * MiB));
    expect(readAt(myImage, 4096, 4096).equals(readAt(theirImage, 4096, 4096))).toBe(true);
    const [mine, theirs] = [verityFields(join(dir("osbuild-erofs"), "root_hash_parity.txt")), verityFields(join(dir("real-erofs"), "root_hash_parity.txt"))];
    expect(Object.keys(mine)).toEqual(Object.keys(theirs));
    for (const key of ["data_blocks", "data_block_size", "hash_block_size"]) expect(mine[key], key).toBe(theirs[key]);
    const data = parseMbr(readAt(myImage, 0, 512)).partitions[0]!;
    expect(Number(mine.data_blocks) * 4096).toBe(data.sizeLba * 512);
    expect(verifies(myImage, join(dir("osbuild-erofs"), "root_hash_parity.txt"))).toBe(true);
    expect(verifies(theirImage, join(dir("real-erofs"), "root_hash_parity.txt"))).toBe(true);
    expect(readAt(myImage, 3 * MiB + 1024, 4).readUInt32LE(0)).toBe(0xe0f5e1e2);
  });

  it("builds nothing on a second identical call", async () => {
    const again = await ours(["rootfs", "image", "initrd", ...common(), `ROOTFS_BUILD_DEST=${dir("osbuild-default")}`, `IMAGES_BUILD_DEST=${dir("osbuild-default")}`, "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${AGENT}`]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.match(/nothing to build/g)).toHaveLength(2); // the rootfs directory's build, then the images'
    expect(again.stderr).toContain(`${join(dir("osbuild-default"), "debian_rootfs")}/ (unchanged)`);
  }, 300_000);

  it("shares the base layers across Kata's matrix: the confidential image reuses the image's base", async () => {
    const confidential = await ours(["image", ...common(), `ROOTFS_BUILD_DEST=${dir("osbuild-confidential")}`, `IMAGES_BUILD_DEST=${dir("osbuild-confidential")}`, "AGENT_INIT=no", `AGENT_SOURCE_BIN=${AGENT}`, "CONFIDENTIAL_GUEST=yes", "AGENT_POLICY=yes"]);
    expect(confidential.code, confidential.stderr).toBe(0);
    expect(confidential.stderr).toMatch(/· fetch-base \(fetch-base\) cached/);
    const tree = join(dir("osbuild-confidential"), "debian_rootfs");
    expect(readFileSync(join(tree, "etc/fstab"), "utf8")).toBe("# UNCONFIGURED FSTAB FOR BASE SYSTEM\ntmpfs /run tmpfs nodev,nosuid,size=50% 0 0\n");
    expect(readFileSync(join(tree, "usr/lib/systemd/system/kata-containers.target"), "utf8")).toMatch(/^Requires=systemd-remount-fs\.service$/m);
    expect(readlinkSync(join(tree, "etc/kata-opa/default-policy.rego"))).toBe("allow-all.rego");
    expect(readFileSync(join(tree, "etc/kata-opa/allow-all.rego"), "utf8")).toMatch(/^default CreateContainerRequest := true$/m);
  }, 300_000);
});

if (!canRun) {
  describe(`osbuild osbuilder beside Kata's real osbuilder (skipped: ${why})`, () => {
    it.skip(`parity with the real osbuilder: ${why}`, () => undefined);
  });
}

const kernel = existsSync("/boot") ? readdirSync("/boot").filter((name) => name.startsWith("vmlinuz-")).length > 0 : false;
if (isRoot && !existsSync(join(KATA_AGENT_SRC, "kata-extension-mount@.service"))) throw new Error(`Kata's extension-mount units are not in ${KATA_AGENT_SRC}: set OSBUILD_SHARED to the workplace's shared/ folder`);
const canBoot = isRoot && kernel && existsSync("/usr/bin/qemu-system-x86_64");

describe.runIf(canBoot)("composable guest extension images, booted with Kata's own units", () => {
  let work: string;
  const MARKER = "OSBUILD-EXTENSION-MARKER";
  const front = (args: string[], env: Record<string, string> = {}): Promise<RunResult> => osbuild(["--cache-dir", CACHE, "osbuilder", ...args], { cwd: work, env: { SOURCE_DATE_EPOCH: EPOCH, ...env } });
  const boot = (extension: string): Promise<RunResult> => osbuild(["--cache-dir", CACHE, "boot", join(work, "kata-containers.img"), "--extension", `marker=${extension},${join(work, "root_hash_marker.txt")}`, "--expect", MARKER, "--timeout", "420"], { cwd: work });

  beforeAll(async () => {
    work = tempDir("extension-boot");
    // Kata's agent tarball layout, with Kata's extension-mount units and generator as the agent Makefile installs them
    writeFiles(work, {
      "hooks/usr/lib/systemd/system/osbuild-extension-marker.service": `[Unit]\nDescription=The test extension's marker program\nAfter=kata-extension-mount@marker.service\n\n[Service]\nType=oneshot\nExecStart=/run/kata-extensions/marker/usr/bin/marker\nStandardOutput=tty\n`,
      "marker.c": `#include <stdio.h>\nint main(void) { puts("${MARKER}: running from /run/kata-extensions/marker"); return 0; }\n`,
    });
    sh(
      [
        "mkdir -p agent/usr/bin agent/usr/lib/systemd/system agent/usr/libexec agent/usr/lib/systemd/system-generators extension/usr/bin hooks/etc/systemd/system/kata-containers.target.wants",
        `cp ${AGENT} agent/usr/bin/kata-agent`,
        `install -m 644 ${KATA_AGENT_SRC}/kata-extension-mount@.service agent/usr/lib/systemd/system/`,
        `install -m 755 ${KATA_AGENT_SRC}/kata-extension-mount.sh agent/usr/libexec/`,
        `install -m 755 ${KATA_AGENT_SRC}/kata-extension-mount-generator.sh agent/usr/lib/systemd/system-generators/kata-extension-mount-generator`,
        "tar --zstd --owner=0 --group=0 -C agent -cf kata-static-agent.tar.zst .",
        // the marker runs once its extension is mounted, when kata-containers.target starts
        "ln -s /usr/lib/systemd/system/osbuild-extension-marker.service hooks/etc/systemd/system/kata-containers.target.wants/",
        "tar --zstd --owner=0 --group=0 -C hooks -cf hooks.tar.zst .",
        "gcc -static -O2 -o extension/usr/bin/marker marker.c",
      ].join(" && "),
      work,
    );
    const base = await front(["image", "DISTRO=debian", "OS_VERSION=bookworm", `REPO_URL_X86_64=${hostMirror()}`, "AGENT_INIT=no", `AGENT_TARBALL=${join(work, "kata-static-agent.tar.zst")}`, `GUEST_HOOKS_TARBALL=${join(work, "hooks.tar.zst")}`]);
    if (base.code !== 0) throw new Error(`the base image failed:\n${base.stderr}`);
    const extension = await front(["image-builder", "-o", join(work, "marker.img"), join(work, "extension")], { FS_TYPE: "erofs", MEASURED_ROOTFS: "yes", SKIP_DAX_HEADER: "yes", SKIP_ROOTFS_CHECK: "yes", BUILD_VARIANT: "marker" });
    if (extension.code !== 0) throw new Error(`the extension image failed:\n${extension.stderr}`);
    copyFileSync(join(work, "marker.img"), join(work, "tampered.img"));
    const data = parseMbr(readAt(join(work, "marker.img"), 0, 512)).partitions[0]!;
    sh(`printf X | dd of=tampered.img bs=1 seek=${data.startLba * 512 + 1100} conv=notrunc status=none`, work); // inside the erofs superblock's block
  }, 900_000);

  it("mounts the extension with dm-verity through Kata's generator and unit, and runs its marker", async () => {
    const booted = await boot(join(work, "marker.img"));
    expect(booted.code, booted.stdout.slice(-3000)).toBe(0);
    expect(booted.stdout).toContain("kata.extension.marker.verity_params=root_hash=");
    expect(booted.stdout).toMatch(/vdb: vdb1 vdb2/); // the extension, beside the root disk vda
    expect(booted.stdout).toMatch(/Finished .*kata-extension-mount@marker\.service/);
    expect(booted.stdout).toMatch(/erofs: \(device dm-\d+\): mounted/); // through the verity device
    expect(booted.stdout).toContain(`${MARKER}: running from /run/kata-extensions/marker`);
  }, 600_000);

  it("stops the boot when the extension was tampered with", async () => {
    const booted = await boot(join(work, "tampered.img"));
    expect(booted.code).toBe(1);
    expect(booted.stdout).toMatch(/device-mapper: verity: .*data block \d+ is corrupted/);
    expect(booted.stdout).toMatch(/Failed to start .*kata-extension-mount@marker\.service/);
    expect(booted.stdout).toContain("reboot: Power down");
    expect(booted.stdout).not.toContain(`${MARKER}: running`);
    expect(booted.stdout).not.toContain("OSBUILD-TEST-AGENT");
  }, 600_000);
});

if (!canBoot) {
  describe("composable guest extension images (skipped: needs root, a kernel in /boot and qemu-system-x86)", () => {
    it.skip("boots an extension image with Kata's units", () => undefined);
  });
}

// Last in the file: it hands the shared cache to an unprivileged user.
describe.runIf(canRun)("osbuild osbuilder without root", () => {
  it("writes a plain rootfs directory, says what it cannot hold, and keeps the OCI layout beside it", async () => {
    const out = tempDir("osbuilder-nobody");
    sh(`chown -R ${NOBODY}:${NOBODY} ${CACHE} ${out} && chmod 755 ${out}`);
    const result = await osbuild(["--cache-dir", CACHE, "osbuilder", "rootfs", "DISTRO=debian", "OS_VERSION=bookworm", `REPO_URL_X86_64=${hostMirror()}`, `ROOTFS_BUILD_DEST=${out}`, `IMAGES_BUILD_DEST=${out}`, "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${AGENT}`], {
      cwd: out,
      asUser: NOBODY,
      env: { SOURCE_DATE_EPOCH: EPOCH },
    });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/nothing to build|fetch-base \(fetch-base\) cached/); // the base is the root build's
    const tree = join(out, "debian_rootfs");
    expect(result.stderr).toContain(`without root, ${tree} is a plain directory: 233 device node(s) are missing and every file is yours`);
    expect(result.stderr).toContain(`the exact rootfs, owners and devices included, is the OCI layout ${tree}.oci`);
    expect(readFileSync(join(tree, "etc/hostname"), "utf8").length).toBeGreaterThan(0);
    expect(existsSync(join(tree, "dev/console"))).toBe(false);
    expect(statSync(join(tree, "etc/passwd")).uid).toBe(NOBODY);
    expect(JSON.parse(readFileSync(join(`${tree}.oci`, "index.json"), "utf8")).manifests).toHaveLength(1);
    expect(existsSync(join(out, ".debian_rootfs.done"))).toBe(true);
  }, 300_000);
});
