// Layers: a tree with every kind of entry goes into a layer and comes back out identical;
// a step's changes become exactly one diff layer with OCI whiteouts; foreign archives merge
// with OCI semantics.

import { readFileSync, rmSync, writeFileSync, mkdirSync, linkSync, symlinkSync, chmodSync, renameSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { MergedView } from "../../engine/layers/merge.js";
import type { TocEntry } from "../../engine/layers/toc.js";
import { Layers, rootfsOf, type RootfsValue } from "../../engine/rootfs.js";
import { emptyOverrides } from "../../engine/layers/diff.js";
import { StepTree } from "../../engine/layers/tree.js";
import { Store } from "../../engine/store.js";
import { isRoot, sh, tempDir } from "../helpers.js";
import { treeListing } from "../tree-listing.js";

const EPOCH = 1700000000;

/** A tree with every kind of entry a rootfs has. */
function makeRichTree(root: string): void {
  mkdirSync(join(root, "etc"), { recursive: true });
  mkdirSync(join(root, "usr/bin"), { recursive: true });
  mkdirSync(join(root, "tmp"), { mode: 0o1777 });
  chmodSync(join(root, "tmp"), 0o1777);
  mkdirSync(join(root, "dev"));
  writeFileSync(join(root, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
  writeFileSync(join(root, "etc/shadow"), "root:*:1::::::\n", { mode: 0o640 });
  chmodSync(join(root, "etc/shadow"), 0o640);
  writeFileSync(join(root, "usr/bin/perl5.36"), Buffer.alloc(100_000, 7));
  linkSync(join(root, "usr/bin/perl5.36"), join(root, "usr/bin/perl"));
  writeFileSync(join(root, "usr/bin/ping"), "ping");
  chmodSync(join(root, "usr/bin/ping"), 0o4755);
  symlinkSync("usr/bin", join(root, "bin"));
  symlinkSync("/proc/self/mounts", join(root, "etc/mtab"));
  writeFileSync(join(root, "empty"), "");
  sh("mkfifo dev/initctl", root);
  if (isRoot) {
    sh("chown 0:42 etc/shadow && chown 100:101 tmp", root);
    sh("mknod -m 600 dev/console c 5 1 && mknod -m 666 dev/null c 1 3 && mknod -m 660 dev/vda b 254 0", root);
    sh("setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 usr/bin/ping && setfattr -n user.origin -v test etc/passwd", root);
  }
}

describe("layers", () => {
  let dir: string;
  let layers: Layers;
  let source: string;
  let base: RootfsValue;

  beforeAll(async () => {
    dir = tempDir("layers");
    layers = new Layers(Store.open(join(dir, "cache")), isRoot, true);
    source = join(dir, "source");
    mkdirSync(source);
    makeRichTree(source);
    base = rootfsOf([await layers.layerFromDirectory(source, EPOCH)]);
  });

  it("keeps owners, modes, links, devices, fifos and xattrs from a directory to a layer and back", async () => {
    const tree = await layers.materialize(base);
    expect(treeListing(tree)).toEqual(treeListing(source));
    if (isRoot) expect(sh("getcap usr/bin/ping", tree)).toMatch(/cap_net_raw[=+]ep/);
  });

  it("writes a layer GNU tar reads with the same metadata", async () => {
    const layerPath = layers.store.contentPath(base.layers[0]!.digest);
    const listing = sh(`tar --numeric-owner -tvf ${layerPath}`);
    expect(listing).toMatch(/^-rwsr-xr-x 0\/0 +4 .* usr\/bin\/ping$/m);
    expect(listing).toMatch(/^hrw-r--r-- 0\/0 +0 .* usr\/bin\/perl5\.36 link to usr\/bin\/perl$/m);
    expect(listing).toMatch(/^drwxrwxrwt .* tmp\/$/m);
    if (isRoot) {
      expect(listing).toMatch(/^crw------- 0\/0 +5,1 .* dev\/console$/m);
      expect(listing).toMatch(/^-rw-r----- 0\/42 .* etc\/shadow$/m);
    }
    // mtimes are clamped to the source date
    for (const line of sh(`tar --numeric-owner --full-time -tvf ${layerPath}`).trim().split("\n")) expect(line).toContain("2023-11-14 22:13:20");
  });

  it("turns a step's changes into one diff layer with whiteouts, and merges it back", async () => {
    const scratch = join(dir, "scratch-1");
    const baseline = await layers.scratchCopy(base, scratch);
    const overrides = emptyOverrides();
    const tree = new StepTree(scratch, overrides, isRoot, layers.store.tmp, baseline);
    rmSync(join(scratch, "etc/passwd")); // deleted file
    rmSync(join(scratch, "dev"), { recursive: true }); // deleted directory with contents
    writeFileSync(join(scratch, "usr/bin/new"), "new"); // added
    chmodSync(join(scratch, "usr/bin/ping"), 0o755); // mode change only
    rmSync(join(scratch, "empty"));
    mkdirSync(join(scratch, "empty")); // file replaced by a directory
    writeFileSync(join(scratch, "empty/inside"), "x");
    rmSync(join(scratch, "bin"));
    writeFileSync(join(scratch, "bin"), "now a file"); // symlink replaced by a file
    linkSync(join(scratch, "usr/bin/new"), join(scratch, "usr/bin/new-alias")); // new hardlink
    renameSync(join(scratch, "usr/bin/perl"), join(scratch, "usr/bin/perl-moved")); // a hardlink twin moves
    tree.chown("usr/bin/new", 1000, 1000);
    tree.mknod("dev-null", { type: "char", major: 1, minor: 3, mode: 0o666 });
    tree.setXattr("usr/bin/new", "user.tag", Buffer.from("v1"));
    const expected = treeListing(scratch);

    const { rootfs } = await layers.commitScratch(scratch, base, baseline, overrides, EPOCH);
    expect(rootfs.layers).toHaveLength(2);
    const toc = await layers.toc(rootfs.layers[1]!);
    const byPath = new Map(toc.entries.map((entry: TocEntry) => [`${entry.type === "whiteout" ? "wh:" : ""}${entry.path}`, entry]));
    expect([...byPath.keys()].filter((key) => key.startsWith("wh:")).sort()).toEqual(["wh:dev", "wh:etc/passwd", "wh:usr/bin/perl"]);
    expect(byPath.has("wh:dev/console")).toBe(false); // covered by the directory's whiteout
    expect(byPath.has("etc/shadow")).toBe(false); // unchanged files are not in the diff
    expect(byPath.get("usr/bin/ping")).toMatchObject({ type: "file", mode: 0o755 });
    expect(byPath.get("usr/bin/new")).toMatchObject({ type: "file", uid: 1000, gid: 1000, xattrs: { "user.tag": Buffer.from("v1").toString("base64") } });
    expect(byPath.get("usr/bin/new-alias")).toMatchObject({ type: "hardlink", linkTarget: "usr/bin/new" });
    expect(byPath.get("dev-null")).toMatchObject({ type: "char", devMajor: 1, devMinor: 3, mode: 0o666 });
    expect(byPath.get("empty")).toMatchObject({ type: "dir" });
    expect(byPath.get("bin")).toMatchObject({ type: "file", size: 10 });

    // A fresh extraction of both layers equals the tree the step left behind.
    rmSync(layers.treesDir, { recursive: true, force: true });
    mkdirSync(layers.treesDir);
    const fresh = new Layers(layers.store, isRoot, true);
    const materialized = await fresh.materialize(rootfs);
    const actual = treeListing(materialized);
    if (isRoot) expect(actual).toEqual(expected);
    else expect(actual.filter((line) => !line.startsWith("dev-null"))).toEqual(expected.filter((line) => !line.startsWith("dev-null")));
  });

  it("records nothing when a step changes nothing", async () => {
    const scratch = join(dir, "scratch-2");
    const baseline = await layers.scratchCopy(base, scratch);
    const { rootfs } = await layers.commitScratch(scratch, base, baseline, emptyOverrides(), EPOCH);
    expect(rootfs.digest).toBe(base.digest);
  });

  it("gives the same layer bytes for the same tree in another directory", async () => {
    const copy = join(dir, "elsewhere", "source");
    mkdirSync(join(dir, "elsewhere"));
    sh(`cp -a ${source} ${copy}`);
    sh(`touch -d '2030-01-01' ${copy}/etc/passwd`); // mtimes beyond the source date are clamped
    const again = await layers.layerFromDirectory(copy, EPOCH);
    expect(again.digest).toBe(base.layers[0]!.digest);
  });

  it("merges imported OCI layers: whiteouts, opaque directories, replaced subtrees", async () => {
    const work = join(dir, "oci");
    mkdirSync(work);
    sh(
      [
        "mkdir -p l1/a/keep l1/a/drop l1/b l1/c && echo 1 > l1/a/keep/f && echo 2 > l1/a/drop/f && echo 3 > l1/b/f && echo 4 > l1/c/f",
        "tar --sort=name --numeric-owner -cf l1.tar -C l1 .",
        // layer 2: delete a/drop, make c opaque with a new file, replace b (a dir) with a file
        "mkdir -p l2/a l2/c && touch l2/a/.wh.drop l2/c/.wh..wh..opq && echo 5 > l2/c/g && echo file > l2/b",
        "tar --sort=name --numeric-owner -cf l2.tar -C l2 .",
      ].join(" && "),
      work,
    );
    const first = await layers.importArchive(join(work, "l1.tar"), { sourceDateEpoch: EPOCH, keepWhiteouts: false });
    const lower = rootfsOf([first]);
    const second = await layers.importArchive(join(work, "l2.tar"), { sourceDateEpoch: EPOCH, lower, keepWhiteouts: true });
    const stack = rootfsOf([first, second]);
    const view = MergedView.of(await Promise.all(stack.layers.map((layer) => layers.toc(layer))));
    expect(view.entries().map((entry) => `${entry.path}:${entry.type}`)).toEqual(["a:dir", "a/keep:dir", "a/keep/f:file", "b:file", "c:dir", "c/g:file"]);
    const tree = await layers.materialize(stack);
    expect(sh("find . -mindepth 1 | LC_ALL=C sort", tree).trim().split("\n")).toEqual(["./a", "./a/keep", "./a/keep/f", "./b", "./c", "./c/g"]);
    expect(readFileSync(join(tree, "b"), "utf8")).toBe("file\n");
  });

  it("notices a cached tree that no longer matches its layers and extracts it again", async () => {
    const tree = await layers.materialize(base);
    writeFileSync(join(tree, "etc/passwd"), "tampered\n");
    const fresh = new Layers(layers.store, isRoot, true);
    const again = await fresh.materialize(base);
    expect(readFileSync(join(again, "etc/passwd"), "utf8")).toBe("root:x:0:0::/root:/bin/sh\n");
  });
});
