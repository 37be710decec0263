// Undoing layers in a kept tree (layers/revert.ts through Layers.materialize): a step takes
// its input's tree, and when that input is wanted again it comes back from the step's kept
// output, equal in every byte, mode, owner, device, xattr and time to a fresh extraction.
// Hardlinks, too much to undo, and a damaged kept tree fall back to extracting.

import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { emptyOverrides } from "../../engine/layers/diff.js";
import { StepTree } from "../../engine/layers/tree.js";
import { Layers, rootfsOf, type RootfsValue } from "../../engine/rootfs.js";
import { hexOf, Store } from "../../engine/store.js";
import { isRoot, sh, tempDir } from "../helpers.js";
import { treeListing } from "../tree-listing.js";

const EPOCH = 1700000000;

/** Everything of a tree a packer reads, times included. */
const listing = (root: string): string[] => treeListing(root, { times: true });

function makeBase(root: string): void {
  for (const dir of ["etc/ssl", "usr/bin", "usr/lib/deep/er", "var/lib/dpkg", "dev", "opt/tool"]) mkdirSync(join(root, dir), { recursive: true });
  writeFileSync(join(root, "etc/hostname"), "base\n");
  writeFileSync(join(root, "etc/ssl/cert.pem"), Buffer.alloc(200_000, 3));
  writeFileSync(join(root, "usr/bin/tool"), Buffer.alloc(3_000_000, 9));
  chmodSync(join(root, "usr/bin/tool"), 0o755);
  writeFileSync(join(root, "usr/lib/deep/er/lib.so"), "lib");
  writeFileSync(join(root, "var/lib/dpkg/status"), "Package: base\n");
  writeFileSync(join(root, "opt/tool/a"), "a");
  writeFileSync(join(root, "opt/tool/b"), "b");
  writeFileSync(join(root, "init-file"), "was a file");
  mkdirSync(join(root, "was-dir/inner"), { recursive: true });
  writeFileSync(join(root, "was-dir/inner/x"), "x");
  symlinkSync("usr/bin", join(root, "bin"));
  writeFileSync(join(root, "usr/bin/perl"), "perl");
  sh("ln usr/bin/perl usr/bin/perl5.36 && mkfifo dev/initctl", root);
  if (isRoot) {
    sh("mknod -m 600 dev/console c 5 1 && chown 0:42 etc/hostname && chown 100:101 opt/tool", root);
    sh("setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 usr/bin/tool", root);
  }
  sh("setfattr -n user.origin -v base etc/hostname", root);
}

/** What a step (a new agent, say) does to its tree. */
function change(root: string, tree: StepTree): void {
  writeFileSync(join(root, "etc/hostname"), "changed\n"); // in place: a new content, same inode
  rmSync(join(root, "opt/tool"), { recursive: true }); // a directory with contents
  rmSync(join(root, "init-file"));
  mkdirSync(join(root, "init-file")); // a file becomes a directory
  writeFileSync(join(root, "init-file/agent"), "agent");
  rmSync(join(root, "was-dir"), { recursive: true });
  writeFileSync(join(root, "was-dir"), "now a file"); // a directory becomes a file
  rmSync(join(root, "bin"));
  symlinkSync("/elsewhere", join(root, "bin")); // a symlink retargeted
  chmodSync(join(root, "usr/bin/tool"), 0o700); // mode only
  mkdirSync(join(root, "usr/lib/deep/er/new/deeper"), { recursive: true });
  writeFileSync(join(root, "usr/lib/deep/er/new/deeper/kata-agent"), Buffer.alloc(500_000, 1));
  chmodSync(join(root, "var/lib/dpkg"), 0o700); // a directory's mode
  rmSync(join(root, "dev/initctl"));
  tree.setXattr("usr/lib/deep/er/lib.so", "user.tag", Buffer.from("v1"));
  if (isRoot) rmSync(join(root, "dev/console"));
}

describe("undoing a step's layer in its kept tree", () => {
  let dir: string;
  let store: Store;
  let base: RootfsValue;
  let fresh: string[];

  beforeEach(async () => {
    dir = tempDir("revert");
    store = Store.open(join(dir, "cache"));
    const source = join(dir, "source");
    mkdirSync(source);
    makeBase(source);
    const layers = new Layers(store, isRoot, true);
    base = rootfsOf([await layers.layerFromDirectory(source, EPOCH)]);
    fresh = listing(await layers.materialize(base)); // a plain extraction, the reference
  });

  /** A step takes the base's tree, changes it, and its output tree is kept. */
  async function stepOnTop(edit: (root: string, tree: StepTree) => void): Promise<RootfsValue> {
    const layers = new Layers(store, isRoot, true);
    const scratch = join(dir, `scratch-${Math.random().toString(36).slice(2)}`);
    const baseline = await layers.scratchCopy(base, scratch, { take: true });
    const overrides = emptyOverrides();
    const tree = new StepTree(scratch, overrides, isRoot, store.tmp, baseline);
    edit(scratch, tree);
    const { rootfs } = await layers.commitScratch(scratch, base, baseline, overrides, EPOCH);
    layers.releaseLeases();
    expect(rootfs.layers).toHaveLength(2);
    expect(existsSync(join(layers.treesDir, hexOf(base.digest)))).toBe(false); // taken, not copied
    expect(existsSync(join(layers.treesDir, hexOf(rootfs.digest)))).toBe(true);
    return rootfs;
  }

  it("gives back the input's tree, exact, from the step's kept output", async () => {
    const output = await stepOnTop(change);
    const warnings: string[] = [];
    const layers = new Layers(store, isRoot, true, (message) => warnings.push(message));
    const tree = await layers.materialize(base);
    expect(warnings).toEqual([]);
    expect(existsSync(join(layers.treesDir, hexOf(output.digest)))).toBe(false); // undone in place
    expect(listing(tree)).toEqual(fresh);

    // And the next change goes the same way: the same input, a different step.
    layers.releaseLeases();
    const again = await stepOnTop((root) => writeFileSync(join(root, "etc/hostname"), "other\n"));
    const third = new Layers(store, isRoot, true, (message) => warnings.push(message));
    expect(listing(await third.materialize(base))).toEqual(fresh);
    expect(existsSync(join(third.treesDir, hexOf(again.digest)))).toBe(false);
    expect(warnings).toEqual([]);
  });

  it("extracts instead when the layer to undo touches a hardlinked file", async () => {
    const output = await stepOnTop((root) => writeFileSync(join(root, "usr/bin/perl"), "replaced"));
    const layers = new Layers(store, isRoot, true);
    expect(listing(await layers.materialize(base))).toEqual(fresh);
    expect(existsSync(join(layers.treesDir, hexOf(output.digest)))).toBe(true); // left alone
  });

  it("extracts instead when the kept tree was changed behind the cache's back", async () => {
    const output = await stepOnTop(change);
    const layers = new Layers(store, isRoot, true);
    writeFileSync(join(layers.treesDir, hexOf(output.digest), "etc/stray"), "not from any layer");
    const warnings: string[] = [];
    const checking = new Layers(store, isRoot, true, (message) => warnings.push(message));
    expect(listing(await checking.materialize(base))).toEqual(fresh);
    expect(warnings.join("\n")).toMatch(/undoing the layers above .* failed \(\d+ entries on disk, \d+ in the layers\): extracting the tree instead/);
  });

  for (const [what, replaced, problem] of [
    ["a directory the undo writes below", "opt", /'opt' in the kept tree is not a directory/],
    ["a directory the undo gives its mode back", "var/lib/dpkg", /'var\/lib\/dpkg' in the kept tree is not a directory/],
  ] as const) {
    it(`never writes outside the kept tree when ${what} was replaced by a symlink to the host`, async () => {
      const output = await stepOnTop(change);
      const outside = join(dir, `host-${replaced.replace(/\//g, "-")}`);
      mkdirSync(outside);
      chmodSync(outside, 0o751);
      const kept = join(new Layers(store, isRoot, true).treesDir, hexOf(output.digest));
      rmSync(join(kept, replaced), { recursive: true });
      symlinkSync(outside, join(kept, replaced));
      const warnings: string[] = [];
      const layers = new Layers(store, isRoot, true, (message) => warnings.push(message));
      expect(listing(await layers.materialize(base))).toEqual(fresh);
      expect(warnings.join("\n")).toMatch(problem);
      expect(readdirSync(outside)).toEqual([]);
      expect(statSync(outside).mode & 0o7777).toBe(0o751);
    });
  }

  it("leaves alone a kept tree a step of this build is reading", async () => {
    const output = await stepOnTop(change);
    const layers = new Layers(store, isRoot, true);
    const reading = await layers.materialize(output);
    expect(listing(await layers.materialize(base))).toEqual(fresh);
    expect(existsSync(reading)).toBe(true);
  });
});
