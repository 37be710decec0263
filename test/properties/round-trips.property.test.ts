// Property tests: random trees go into layers and back, into an initrd read back by GNU cpio,
// and into ext4 checked by e2fsck and read back by debugfs, and what comes back equals what
// went in. The trees have what a hostile base can have: names with newlines, tabs, quotes,
// backslashes, spaces, a leading '-', '=' and bytes that are not UTF-8; files empty, small
// and larger; directories; symlinks relative, absolute and dangling; hardlinks; fifos and
// device nodes; setuid, setgid and sticky modes; any owner; old and future mtimes; user,
// trusted and security xattrs. The trees are made and listed by tree_tool.py (Python's os
// calls, names as bytes), not by osbuild.
//
// As root the tree is made on disk and committed through the engine's diff path
// (layerFromDirectory); the variant without root imports a GNU tar of it (owners, devices
// and xattrs in the layer only) and materializes it with placeholders, as an unprivileged
// build does; ext4 is made from both trees (mke2fs in the layer-metadata session takes the
// truth from the entries either way). Each run builds real filesystems, and one tree holds
// up to 60 entries, so there are fewer runs than in the reader properties.

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { resetRegistry, registeredNodes } from "../../engine/define.js";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";
import { RootfsInputImpl } from "../../engine/inputs.js";
import { diskMode } from "../../engine/layers/extract.js";
import { Layers, rootfsOf, type RootfsValue } from "../../engine/rootfs.js";
import { Store } from "../../engine/store.js";
import { encodeName } from "../../formats/names.js";
import { makeExt4, planExt4 } from "../../stdlib/disk-image/ext4.js";
import { fetchBase } from "../../stdlib/fetch-base.js";
import { mkCpio } from "../../stdlib/mk-cpio.js";
import { isRoot, REPO, sh, tempDir } from "../helpers.js";

const SEED = Number(process.env.OSBUILD_PROPERTY_SEED ?? 9090);
const RUNS = Number(process.env.OSBUILD_PROPERTY_TREES ?? 12);
const EPOCH = 1_700_000_000;
const TOOL = join(REPO, "test/properties/tree_tool.py");

// ---------------------------------------------------------------------------
// Random trees

/** Pieces of names: the nastiest bytes a Linux name may hold, and some plain ones. */
const PIECES = ["a", "b", "z9", "-", "=", "\n", "\t", '"', "'", "\\", " ", "é", "x2d", "\x01", ".", "*", "$(id)"].map((text) => Buffer.from(text)).concat([Buffer.of(0xff), Buffer.of(0xc3, 0x28), Buffer.of(0xed, 0xa0, 0x80), Buffer.of(0x80)]);

const nameArb = fc.array(fc.integer({ min: 0, max: PIECES.length - 1 }), { minLength: 1, maxLength: 4 }).map((indexes) => Buffer.concat(indexes.map((index) => PIECES[index]!)));

type Kind = "file" | "dir" | "symlink" | "hardlink" | "fifo" | "char" | "block";

const entryArb = fc.record({
  parent: fc.nat(),
  name: nameArb,
  kind: fc.constantFrom<Kind>("file", "file", "dir", "dir", "symlink", "hardlink", "fifo", "char", "block"),
  mode: fc.oneof(fc.integer({ min: 0, max: 0o7777 }), fc.constantFrom(0o4755, 0o2755, 0o1777, 0o644, 0o755)),
  uid: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 70_000 })),
  gid: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 70_000 })),
  mtime: fc.oneof(fc.integer({ min: 0, max: EPOCH }), fc.integer({ min: EPOCH, max: 2 ** 32 - 1 })),
  content: fc.oneof(fc.constant(new Uint8Array()), fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 60_000, max: 90_000 }).map((size) => Buffer.alloc(size, size & 0xff))),
  target: fc.oneof(nameArb.map((name) => name), nameArb.map((name) => Buffer.concat([Buffer.from("/"), name])), nameArb.map((name) => Buffer.concat([Buffer.from("../"), name]))),
  link: fc.nat(),
  major: fc.integer({ min: 0, max: 4095 }),
  minor: fc.integer({ min: 0, max: 1_048_575 }),
  xattrs: fc.array(fc.record({ namespace: fc.constantFrom("user", "trusted", "security"), name: fc.stringMatching(/^[a-z]{1,8}$/), value: fc.uint8Array({ maxLength: 24 }) }), { maxLength: 2 }),
});

interface SpecEntry {
  path: string;
  type: Kind;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  content?: string;
  target?: string;
  linkTo?: string;
  major?: number;
  minor?: number;
  xattrs?: Record<string, string>;
}

/** The tree a list of random entries describes: parents first, unique names, hardlinks to earlier files. */
function treeOf(raw: ReadonlyArray<typeof entryArb extends fc.Arbitrary<infer T> ? T : never>): SpecEntry[] {
  const dirs: Buffer[] = [Buffer.alloc(0)];
  const files: Buffer[] = [];
  const taken = new Set<string>();
  const spec: SpecEntry[] = [];
  for (const item of raw) {
    const name = item.name.equals(Buffer.from(".")) || item.name.equals(Buffer.from("..")) ? Buffer.concat([item.name, Buffer.from("x")]) : item.name;
    const parent = dirs[item.parent % dirs.length]!;
    const path = parent.length > 0 ? Buffer.concat([parent, Buffer.from("/"), name]) : name;
    if (taken.has(path.toString("hex"))) continue;
    taken.add(path.toString("hex"));
    const kind: Kind = item.kind === "hardlink" && files.length === 0 ? "file" : item.kind;
    const entry: SpecEntry = { path: path.toString("hex"), type: kind, mode: item.mode, uid: item.uid, gid: item.gid, mtime: item.mtime };
    if (kind === "file") entry.content = Buffer.from(item.content).toString("hex");
    if (kind === "symlink") entry.target = item.target.toString("hex");
    if (kind === "hardlink") entry.linkTo = files[item.link % files.length]!.toString("hex");
    if (kind === "char" || kind === "block") Object.assign(entry, { major: item.major, minor: item.minor });
    // xattrs on files and directories (Linux allows no user xattrs on symlinks or nodes)
    if ((kind === "file" || kind === "dir") && item.xattrs.length > 0) entry.xattrs = Object.fromEntries(item.xattrs.map((xattr) => [`${xattr.namespace}.${xattr.name}`, Buffer.from(xattr.value).toString("hex")]));
    if (kind === "dir") dirs.push(path);
    if (kind === "file") files.push(path);
    spec.push(entry);
  }
  return spec;
}

// ---------------------------------------------------------------------------
// Listings and their comparison

type Listing = Record<string, Record<string, unknown>>;

function python(args: string[], cwd?: string): string {
  const result = spawnSync("python3", [TOOL, ...args], { cwd, encoding: "utf8", maxBuffer: 1 << 28 });
  if (result.status !== 0) throw new Error(`tree_tool.py ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

function list(root: string): Listing {
  return JSON.parse(python(["list", root])) as Listing;
}

/**
 * A listing in a form two trees can be compared in: hardlinked names each as the file with
 * the set of all its names (which one a tool calls the file and which the link is its own
 * business), mtimes clamped to the source date, and only what `keep` says is compared.
 */
function normalized(listing: Listing, keep: { owners: boolean; xattrs: boolean; mtimes: boolean; dirMtimes?: boolean; symlinkMtimes?: boolean; nodes: "exact" | Set<string>; modes?: (type: string, mode: number) => number }): Listing {
  const groups = new Map<string, string[]>();
  for (const [path, item] of Object.entries(listing)) {
    if (item.type !== "hardlink") continue;
    const file = item.linkTo as string;
    groups.set(file, [...(groups.get(file) ?? [file]), path]);
  }
  const out: Listing = {};
  for (const [path, original] of Object.entries(listing)) {
    let item = { ...original };
    if (item.type === "hardlink") item = { ...listing[item.linkTo as string]!, links: undefined };
    const file = original.type === "hardlink" ? (original.linkTo as string) : path;
    if (groups.has(file)) item.links = groups.get(file)!.sort();
    if (!keep.owners) delete item.uid, delete item.gid;
    if (!keep.xattrs) delete item.xattrs;
    if (keep.mtimes && !(item.type === "dir" && keep.dirMtimes === false) && !(item.type === "symlink" && keep.symlinkMtimes === false)) item.mtime = Math.min(item.mtime as number, EPOCH);
    else delete item.mtime;
    if (keep.nodes !== "exact" && keep.nodes.has(path)) item = { type: "file", size: 0 }; // a device node's placeholder
    if (keep.modes && item.mode !== undefined) item.mode = keep.modes(item.type as string, item.mode as number);
    if (item.links === undefined) delete item.links;
    out[path] = item;
  }
  return out;
}

/** The entries a rootfs input lists, as a listing (names back to bytes with encodeName). */
function listingOfEntries(entries: readonly FileEntry[]): Listing {
  const out: Listing = {};
  for (const entry of entries) {
    const item: Record<string, unknown> = { type: entry.type, mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime };
    if (entry.type === "symlink") {
      item.target = encodeName(entry.linkTarget!).toString("hex");
      delete item.mode;
    }
    if (entry.type === "hardlink") item.linkTo = encodeName(entry.linkTarget!).toString("hex");
    if (entry.type === "file") Object.assign(item, { size: entry.size, sha256: entry.sha256 });
    if (entry.type === "char" || entry.type === "block") Object.assign(item, { major: entry.devMajor, minor: entry.devMinor });
    if (entry.xattrs && Object.keys(entry.xattrs).length > 0) item.xattrs = Object.fromEntries(Object.entries(entry.xattrs).map(([name, value]) => [name, value.toString("hex")]));
    out[encodeName(entry.path).toString("hex")] = item;
  }
  return out;
}

// ---------------------------------------------------------------------------
// The packers, called as the steps call them

function exec(command: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  const input = typeof options.input === "string" || Buffer.isBuffer(options.input) ? options.input : undefined;
  const result = spawnSync(command, [...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, input, maxBuffer: 1 << 28 });
  if (result.status !== 0) return Promise.reject(new Error(`${command} ${args.join(" ")} exited with ${result.status}:\n${result.stderr}`));
  return Promise.resolve({ stdout: result.stdout, stderr: result.stderr.toString() });
}

/** mkCpio's own run (uncompressed, without /init and checks) on `rootfs`, into `out`. */
async function makeInitrd(layers: Layers, rootfs: RootfsValue, out: string, work: string): Promise<void> {
  resetRegistry();
  mkCpio(fetchBase({ tarball: "./unused.tar" }), { compression: "none", initLink: false, checks: false });
  const node = registeredNodes().find((candidate) => candidate.spec.kind === "mk-cpio")!;
  let parts = 0;
  const ctx = {
    id: "mk-cpio",
    key: "0".repeat(64),
    arch: "x86_64",
    hostArch: "x86_64",
    sourceDateEpoch: EPOCH,
    cores: 2,
    inputs: [new RootfsInputImpl(rootfs, layers)],
    log: () => undefined,
    exec,
    tempDir: async () => mkdtempSync(join(work, "tmp-")),
    fail: (message: string): never => {
      throw new Error(message);
    },
    reuse: async (_key: unknown, make: (path: string) => Promise<void>) => {
      const path = join(work, `part-${parts++}`);
      await make(path);
      return path;
    },
    outputPath: () => out,
  };
  await node.spec.run(node.options, ctx as never);
}

/** Walks an ext4 image with `debugfs -R "ls -p <ino>"` (inode numbers, never names, in the commands). */
function debugfsListing(image: string): Listing {
  const out: Listing = {};
  const byInode = new Map<string, string>();
  const pending: Array<{ ino: string; prefix: Buffer }> = [{ ino: "2", prefix: Buffer.alloc(0) }];
  while (pending.length > 0) {
    const { ino, prefix } = pending.pop()!;
    const result = spawnSync("debugfs", ["-R", `ls -p <${ino}>`, image], { maxBuffer: 1 << 26 });
    if (result.status !== 0) throw new Error(`debugfs ls -p <${ino}> failed: ${result.stderr}`);
    // "/ino/mode/uid/gid/name/size/\n" records, read field by field: a name cannot hold '/'
    // (but may hold a newline, so records are not lines).
    const text = result.stdout;
    let position = text.indexOf(0x2f);
    while (position >= 0 && text[position] === 0x2f) {
      const fields: Buffer[] = [];
      let start = position + 1;
      for (let field = 0; field < 6; field++) {
        const slash = text.indexOf(0x2f, start);
        if (slash < 0) throw new Error(`debugfs ls -p <${ino}>: a record is cut short`);
        fields.push(text.subarray(start, slash));
        start = slash + 1;
      }
      position = start + 1; // past the record's newline
      const [childIno, mode, uid, gid, name, size] = fields.map((field, index) => (index === 4 ? field : field.toString())) as [string, string, string, string, Buffer, string];
      if (name.equals(Buffer.from(".")) || name.equals(Buffer.from("..")) || (prefix.length === 0 && name.equals(Buffer.from("lost+found")))) continue;
      const path = prefix.length > 0 ? Buffer.concat([prefix, Buffer.from("/"), name]) : name;
      const bits = parseInt(mode, 8);
      const types: Record<number, string> = { 0o040000: "dir", 0o100000: "file", 0o120000: "symlink", 0o010000: "fifo", 0o020000: "char", 0o060000: "block" };
      const item: Record<string, unknown> = { type: types[bits & 0o170000], mode: bits & 0o7777, uid: Number(uid), gid: Number(gid) };
      if (item.type === "file") {
        item.size = Number(size);
        const first = byInode.get(childIno);
        if (first !== undefined) Object.assign(item, { type: "hardlink", linkTo: first });
        else byInode.set(childIno, path.toString("hex"));
      }
      if (item.type === "symlink") delete item.mode;
      if (item.type === "dir") pending.push({ ino: childIno, prefix: path });
      out[path.toString("hex")] = item;
    }
  }
  return out;
}

/** What debugfs can show of a listing: types, modes, owners, sizes, hardlinks (contents come from rdump). */
function debugfsView(listing: Listing): Listing {
  const out: Listing = {};
  for (const [path, item] of Object.entries(listing)) {
    const view: Record<string, unknown> = { type: item.type, uid: item.uid, gid: item.gid };
    if (item.mode !== undefined) view.mode = item.mode;
    if (item.type === "file") view.size = item.size;
    if (item.links !== undefined) view.links = item.links; // hardlinks: one inode, every name
    out[path] = view;
  }
  return out;
}

/** The image's files, directories and symlinks, dumped by debugfs rdump and listed. */
function rdumpListing(image: string, work: string): Listing {
  const dir = mkdtempSync(join(work, "rdump-"));
  sh(`debugfs -R "rdump / ${dir}" ${image} 2>/dev/null`);
  rmSync(join(dir, "lost+found"), { recursive: true, force: true });
  return list(dir);
}

/** Contents and symlink targets: what rdump restores (each hardlinked name as a copy of its own). */
function contentView(listing: Listing): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [path, item] of Object.entries(listing)) {
    const source = item.type === "hardlink" ? listing[item.linkTo as string]! : item;
    if (source.type === "file") out[path] = source.sha256;
    if (source.type === "symlink") out[path] = source.target;
    if (source.type === "dir") out[path] = "dir";
  }
  return out;
}

async function ext4RoundTrip(tree: string, entries: readonly FileEntry[], asRoot: boolean, work: string, expected: Listing): Promise<void> {
  const plan = planExt4(entries, { extraFreeMiB: 0, reservedPercent: 0, journal: false });
  const image = join(work, `ext4-${asRoot ? "root" : "user"}.img`);
  const workDir = mkdtempSync(join(work, "ext4-"));
  await makeExt4(exec, image, { offset: 0, bytes: plan.bytes }, tree, entries, {
    plan,
    identity: { uuid: "6a1f2d3c-4b5a-4c6d-8e7f-901a2b3c4d5e", hashSeed: "6a1f2d3c-4b5a-4c6d-8e7f-901a2b3c4d5e", time: EPOCH },
    reservedPercent: 0,
    workDir,
    journal: false, // what is checked here is the tree, not the journal (faster under e2fsck)
  });
  const fsck = spawnSync("e2fsck", ["-fn", image], { encoding: "utf8" });
  expect(fsck.status, `e2fsck -fn:\n${fsck.stdout}${fsck.stderr}`).toBe(0);
  expect(debugfsView(normalized(debugfsListing(image), { owners: true, xattrs: false, mtimes: false, nodes: "exact" }))).toEqual(debugfsView(normalized(expected, { owners: true, xattrs: false, mtimes: false, nodes: "exact" })));
  expect(contentView(rdumpListing(image, work))).toEqual(contentView(expected));
}

// ---------------------------------------------------------------------------

describe.skipIf(!isRoot)("random trees round-trip (trees with owners, devices and security xattrs need root to be made)", () => {
  let work: string;
  beforeAll(() => {
    work = tempDir("round-trips");
  });

  it(`through layers, GNU cpio and ext4, as root and without (${RUNS} trees, seed ${SEED})`, async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(entryArb, { minLength: 1, maxLength: 60 }), async (raw) => {
        const dir = join(work, `run-${run++}`);
        mkdirSync(dir);
        try {
          const spec = treeOf(raw);
          const source = join(dir, "source");
          mkdirSync(source);
          writeFileSync(join(dir, "spec.json"), JSON.stringify(spec));
          python(["make", join(dir, "spec.json"), source]);
          const original = list(source);
          const exact = { owners: true, xattrs: true, mtimes: true, nodes: "exact" as const };

          // As root: the engine's diff of a directory into a layer, and the layer back to a tree.
          const store = Store.open(join(dir, "cache"));
          const layers = new Layers(store, true, true);
          const rootfs = rootfsOf([await layers.layerFromDirectory(source, EPOCH)]);
          const input = new RootfsInputImpl(rootfs, layers);
          const entries = await input.entries();
          expect(normalized(listingOfEntries(entries), exact), "the layer's table of contents").toEqual(normalized(original, exact));
          const tree = await layers.materialize(rootfs);
          expect(normalized(list(tree), exact), "the tree extracted from the layer").toEqual(normalized(original, exact));

          // The initrd: mkCpio's archive, unpacked by GNU cpio (owners, modes, devices, mtimes).
          const initrd = join(dir, "initrd");
          await makeInitrd(layers, rootfs, initrd, dir);
          const unpacked = join(dir, "cpio");
          mkdirSync(unpacked);
          sh(`cpio -idm --quiet --no-absolute-filenames < ${initrd}`, unpacked);
          // (GNU cpio -m sets no time on directories it made before their entries, nor on symlinks)
          const unpackedView = { ...exact, xattrs: false, dirMtimes: false, symlinkMtimes: false };
          expect(normalized(list(unpacked), unpackedView), "the initrd unpacked by GNU cpio").toEqual(normalized(original, unpackedView));

          // ext4 from the tree as root.
          await ext4RoundTrip(tree, entries, true, dir, original);

          // Without root: a GNU tar of the tree imported (owners, devices, xattrs in the layer
          // only), materialized with placeholders for devices, and ext4 through fakeroot.
          sh(`tar --xattrs --xattrs-include='*' --numeric-owner --sort=name -cf ${join(dir, "base.tar")} -C ${source} .`);
          const unprivileged = new Layers(Store.open(join(dir, "cache-user")), false, false);
          const imported = rootfsOf([await unprivileged.importArchive(join(dir, "base.tar"), { sourceDateEpoch: EPOCH, keepWhiteouts: false })]);
          const importedEntries = await new RootfsInputImpl(imported, unprivileged).entries();
          expect(normalized(listingOfEntries(importedEntries), exact), "the imported layer's table of contents").toEqual(normalized(original, exact));
          const placeholders = await unprivileged.materialize(imported);
          const devices = new Set(Object.keys(original).filter((path) => original[path]!.type === "char" || original[path]!.type === "block"));
          const onDisk = { owners: false, xattrs: false, mtimes: true, nodes: devices, modes: (type: string, mode: number) => (type === "file" || type === "dir" ? diskMode(type, mode, false) : mode) };
          expect(normalized(list(placeholders), onDisk), "the tree materialized without root").toEqual(normalized(original, onDisk));
          await ext4RoundTrip(placeholders, importedEntries, false, dir, original);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      // Each run builds filesystems: shrinking a failure is cut short after 4 minutes (the counterexample so far is reported).
      { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: 240_000 },
    );
  }, 900_000);
});
