// fromInitrd against real archives: a tree with every kind of entry goes through mkCpio
// (gzip, zstd, none) or GNU cpio (with an early archive in front, zstd with padding, xz),
// comes back through fromInitrd as an OCI layout, is unpacked with GNU tar, and must equal
// the original file by file. Hostile names are refused.

import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { encodeNewcHeader, newcTrailer } from "../../formats/cpio.js";
import { failure, isRoot, osbuild, REPO, type RunResult, sh, statuses, tempDir, unpackOciLayout, writeFiles } from "../helpers.js";

const FROM_INITRD = join(REPO, "dist/stdlib/from-initrd.js");
const EPOCH = 1735689600;

/** A step of the test config that hands a host file on as a blob. */
const HOST_FILE_STEP = `const hostFile = defineStep({
  kind: "host-file",
  version: 1,
  inputs: [],
  output: "blob",
  hostPaths: ["path"],
  async run(options: { path: string }, ctx) {
    copyFileSync(options.path, ctx.outputPath());
  },
});`;

/** Every kind of entry an initrd can hold; owners and devices need root. */
function makeFixture(dir: string): void {
  const longName = "n".repeat(150);
  sh(
    [
      "mkdir -p bin etc dev tmp srv/shared opt/deep/a/b/c opt/ro var/empty",
      "chmod 1777 tmp && chmod 2775 srv/shared && chown 1000:1000 srv/shared && chmod 0700 var/empty",
      "echo hello > etc/hello && : > etc/empty",
      "head -c 3000000 /dev/urandom > opt/big.bin",
      "printf secret > etc/shadow && chown 0:42 etc/shadow && chmod 0640 etc/shadow",
      "printf 'setuid' > bin/su-like && chmod 4755 bin/su-like",
      "printf 'setgid' > bin/sg-like && chown 0:50 bin/sg-like && chmod 2755 bin/sg-like",
      "printf data > srv/owned && chown 100000:100001 srv/owned && chmod 0600 srv/owned",
      "printf linked > bin/a && ln bin/a etc/a2 && ln bin/a opt/deep/a3",
      "printf pair > srv/p1 && ln srv/p1 srv/p2",
      "ln -s hello etc/rel-link && ln -s /etc/hello etc/abs-link && ln -s ../nowhere etc/dangling && ln -s deep opt/dir-link",
      `ln -s ${"x".repeat(300)} etc/long-link`,
      "mknod dev/console c 5 1 && chmod 600 dev/console && chown 0:5 dev/console",
      "mknod dev/sda b 8 0 && chmod 660 dev/sda && chown 0:6 dev/sda",
      "mknod dev/big c 300 70000",
      "mkfifo dev/fifo && chmod 0644 dev/fifo",
      "printf spaces > 'opt/name with spaces é'",
      `printf deep > opt/deep/a/b/c/${longName}`,
      "echo read-only > opt/ro/file && chmod 0555 opt/ro",
    ].join(" && "),
    dir,
  );
}

/** path → type, mode, owner, size, content hash, link target, device numbers, other names of the file. */
function describeTree(root: string): Record<string, string> {
  const result: Record<string, string> = {};
  const inodes = new Map<number, string[]>();
  const walk = (relative: string): void => {
    for (const name of readdirSync(join(root, relative)).sort()) {
      const path = relative ? `${relative}/${name}` : name;
      const stats = lstatSync(join(root, path));
      const owner = `${(stats.mode & 0o7777).toString(8)} ${stats.uid}:${stats.gid}`;
      if (stats.isDirectory()) {
        result[path] = `dir ${owner}`;
        walk(path);
      } else if (stats.isSymbolicLink()) result[path] = `symlink → ${readlinkSync(join(root, path))} ${stats.uid}:${stats.gid}`;
      else if (stats.isFile()) {
        const hash = createHash("sha256").update(readFileSync(join(root, path))).digest("hex").slice(0, 16);
        result[path] = `file ${owner} ${stats.size} ${hash}`;
        if (stats.nlink > 1) inodes.set(stats.ino, [...(inodes.get(stats.ino) ?? []), path]);
      } else {
        const type = stats.isCharacterDevice() ? "char" : stats.isBlockDevice() ? "block" : stats.isFIFO() ? "fifo" : "other";
        const major = ((stats.rdev >>> 8) & 0xfff) | (Math.floor(stats.rdev / 2 ** 32) & ~0xfff);
        const minor = (stats.rdev & 0xff) | ((stats.rdev >>> 12) & ~0xff);
        result[path] = `${type} ${owner}${type === "fifo" ? "" : ` ${major},${minor}`}`;
      }
    }
  };
  walk("");
  for (const names of inodes.values()) for (const name of names) result[name] += ` links=${names.join(",")}`;
  return result;
}

describe.runIf(isRoot)("fromInitrd", () => {
  let project: string;
  let expected: Record<string, string>;
  let result: RunResult;

  beforeAll(async () => {
    project = tempDir("from-initrd");
    const fixture = join(project, "fixture");
    mkdirSync(fixture);
    makeFixture(fixture);
    expected = describeTree(fixture);

    // Initrds as other tools make them: GNU cpio, an early (microcode-style) archive in front
    // of a compressed one, zstd with zero padding and a second plain archive after it, xz.
    const gnu = join(project, "gnu.cpio");
    sh(`cd fixture && find . | LC_ALL=C sort | cpio --quiet -o -H newc > ${gnu}`, project);
    sh("mkdir -p early/kernel/x86/microcode && printf ucode > early/kernel/x86/microcode/GenuineIntel.bin", project);
    sh("cd early && find . | LC_ALL=C sort | cpio --quiet -o -H newc > ../early.cpio", project);
    sh(`cat early.cpio > early-gzip.img && gzip -9 -n -c ${gnu} >> early-gzip.img`, project);
    sh("mkdir -p extra/etc && printf after > extra/etc/after-zstd && cd extra && find etc | LC_ALL=C sort | cpio --quiet -o -H newc > ../extra.cpio", project);
    // Zero padding up to a 4-byte multiple (and then some): the kernel reads plain archives only there.
    sh(`zstd -q -c ${gnu} > zstd-padded.img && truncate -s %512 zstd-padded.img && truncate -s +1024 zstd-padded.img && cat extra.cpio >> zstd-padded.img`, project);
    sh(`xz --check=crc32 -c ${gnu} > gnu.img.xz`, project);

    writeFiles(project, {
      "osbuild.config.ts": `import { copyFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase, mkCpio } from "osbuild";
import { fromInitrd } from ${JSON.stringify(FROM_INITRD)};

${HOST_FILE_STEP}

export default defineConfig({
  sourceDateEpoch: ${EPOCH},
  targets: () => {
    const base = fetchBase({ directory: "./fixture", id: "base" });
    const viaMkCpio = (compression: "gzip" | "zstd" | "none") =>
      fromInitrd(mkCpio(base, { compression, initLink: false, id: \`cpio-\${compression}\` }), { id: \`unpack-\${compression}\` });
    const viaFile = (name: string) => fromInitrd(hostFile({ path: \`./\${name}\`, id: \`file-\${name}\` }), { id: \`unpack-\${name}\` });
    return {
      gzip: viaMkCpio("gzip"),
      zstd: viaMkCpio("zstd"),
      none: viaMkCpio("none"),
      "early-gzip": viaFile("early-gzip.img"),
      "zstd-padded": viaFile("zstd-padded.img"),
      xz: viaFile("gnu.img.xz"),
    };
  },
});
`,
    });
    result = await osbuild(["run", "--json", "--cache-dir", join(project, "cache")], { cwd: project });
    if (result.code !== 0) throw new Error(`build failed:\n${result.stdout}\n${result.stderr}`);
  }, 600_000);

  it("the fixture has every kind of entry", () => {
    expect(expected["dev/console"]).toBe("char 600 0:5 5,1");
    expect(expected["dev/sda"]).toBe("block 660 0:6 8,0");
    expect(expected["dev/big"]).toMatch(/^char 644 0:0 300,70000$/);
    expect(expected["dev/fifo"]).toBe("fifo 644 0:0");
    expect(expected["bin/su-like"]).toMatch(/^file 4755 0:0 /);
    expect(expected["srv/shared"]).toBe("dir 2775 1000:1000");
    expect(expected["bin/a"]).toMatch(/links=bin\/a,etc\/a2,opt\/deep\/a3$/);
  });

  for (const compression of ["gzip", "zstd", "none"]) {
    it(`gives back the tree mkCpio packed (${compression})`, () => {
      expect(statuses(result)[`unpack-${compression}`]).toBe("built");
      expect(describeTree(unpackOciLayout(join(project, "out", compression)))).toEqual(expected);
    });
  }

  it("reads GNU cpio's archives (hardlink data with the last name) behind an early archive", () => {
    const tree = describeTree(unpackOciLayout(join(project, "out/early-gzip")));
    expect(tree["kernel/x86/microcode/GenuineIntel.bin"]).toMatch(/^file 644 0:0 5 /);
    for (const path of ["kernel", "kernel/x86", "kernel/x86/microcode", "kernel/x86/microcode/GenuineIntel.bin"]) delete tree[path];
    expect(tree).toEqual(expected);
  });

  it("reads zstd frames up to their end, then the zero padding and plain archive after them", () => {
    const tree = describeTree(unpackOciLayout(join(project, "out/zstd-padded")));
    expect(tree["etc/after-zstd"]).toMatch(/^file 644 0:0 5 /);
    delete tree["etc/after-zstd"];
    expect(tree).toEqual(expected);
  });

  it("reads xz", () => {
    expect(describeTree(unpackOciLayout(join(project, "out/xz")))).toEqual(expected);
  });

  it("refuses entries whose names leave the tree, naming them", async () => {
    const dir = tempDir("hostile");
    sh("mkdir -p inner && printf evil > x && cd inner && echo ../x | cpio --quiet -o -H newc > ../dotdot.cpio", dir);
    const name = Buffer.from("/etc/evil");
    writeFileSync(
      join(dir, "absolute.cpio"),
      Buffer.concat([encodeNewcHeader({ name: name.toString(), type: "file", mode: 0o644, uid: 0, gid: 0, nlink: 1, mtime: 0, size: 4, ino: 1 }), Buffer.from("evil"), newcTrailer()]),
    );
    sh("printf 'not an initrd at all' > garbage.img && printf 'BZh91AY' > bzip2.img", dir);
    writeFiles(dir, {
      "osbuild.config.ts": `import { copyFileSync } from "node:fs";
import { defineConfig, defineStep } from "osbuild";
import { fromInitrd } from ${JSON.stringify(FROM_INITRD)};

${HOST_FILE_STEP}

export default defineConfig(() => ({
  dotdot: fromInitrd(hostFile({ path: "./dotdot.cpio", id: "f1" }), { id: "dotdot" }),
  absolute: fromInitrd(hostFile({ path: "./absolute.cpio", id: "f2" }), { id: "absolute" }),
  garbage: fromInitrd(hostFile({ path: "./garbage.img", id: "f3" }), { id: "garbage" }),
  bzip2: fromInitrd(hostFile({ path: "./bzip2.img", id: "f4" }), { id: "bzip2" }),
}));
`,
    });
    const hostile = await osbuild(["run", "--json", "--keep-going", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(hostile.code).toBe(1);
    expect(failure(hostile, "dotdot")).toMatch(/^the initrd has an entry '\.\.\/x' whose name leaves the tree through '\.\.': refusing to unpack it/);
    expect(failure(hostile, "absolute")).toMatch(/^the initrd has an entry with the absolute name '\/etc\/evil': refusing to unpack it/);
    expect(failure(hostile, "garbage")).toMatch(/^the initrd is not a cpio archive \(it starts with 6e6f7420616e\): give an initrd/);
    expect(failure(hostile, "bzip2")).toMatch(/compressed with bzip2, which osbuild does not unpack: recompress the initrd with gzip, zstd or xz/);
  });
});
