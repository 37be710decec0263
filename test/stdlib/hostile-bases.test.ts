// Hostile bases: a rootfs that comes from someone else (a tarball, a pulled OCI image) holds
// names, numbers, links and bytes chosen to break the packers. Each case of the corpus in
// test/hostile/ goes through fetchBase({ tarball }) and fetchBase({ image }) (a real local
// registry, and a lying one) into every packer, as root and as nobody. What is legal comes
// out exactly (checked with GNU cpio, debugfs, fsck.erofs, veritysetup and sfdisk, by a
// checker in Python that shares nothing with osbuild); what is not is refused, naming the
// entry. A marker file planted on the host never reaches an output, and nothing is written
// outside the build.

import { createHash, randomBytes } from "node:crypto";
import { chmodSync, closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MEDIA_TYPES } from "../../formats/oci.js";
import { NOBODY, REPO, isRoot, osbuild, sh, tempDir, writeFiles, type RunResult } from "../helpers.js";
import { pushRawImage, startRegistry, type TestRegistry } from "../oci-registry-harness.js";

const CORPUS = join(REPO, "test/hostile/corpus.py");
const CHECK = join(REPO, "test/hostile/check_tree.py");
const SDE = 1700000000;
const MiB = 1024 * 1024;

/** Every packer, in every layout; checks off (a hostile base is no bootable guest). */
const CONFIG = `import { defineConfig, fetchBase, mkCpio, mkExt4, mkVerityImage, param } from "osbuild";
export default defineConfig({
  sourceDateEpoch: ${SDE},
  params: { base: param.string("tarball:./base.tar", "tarball:PATH or image:REFERENCE") },
  targets: ({ base }) => {
    const [kind, where] = [base.slice(0, base.indexOf(":")), base.slice(base.indexOf(":") + 1)];
    const rootfs = kind === "tarball" ? fetchBase({ tarball: where }) : fetchBase({ image: where });
    const plain = { checks: false, daxHeader: false, alignMiB: 1 } as const;
    const verity = mkVerityImage(rootfs, { ...plain, id: "verity" });
    return {
      initrd: mkCpio(rootfs, { checks: false, initLink: false, id: "initrd" }),
      mbr: mkExt4(rootfs, { ...plain, id: "mbr" }),
      gpt: mkExt4(rootfs, { ...plain, partitionTable: "gpt", id: "gpt" }),
      dax: mkExt4(rootfs, { checks: false, id: "dax" }),
      xfs: mkExt4(rootfs, { ...plain, fsType: "xfs", id: "xfs" }),
      erofs: mkExt4(rootfs, { ...plain, fsType: "erofs", id: "erofs" }),
      verity: verity.image,
      "verity-root-hash": verity.rootHash,
    };
  },
});
`;
const PACKERS = ["initrd", "mbr", "gpt", "dax", "xfs", "erofs", "verity"] as const;

let work: string;
let registry: TestRegistry;
let hostFile: string;
let sentinel: string;
const token = `OSBUILD-HOST-MARKER-${randomBytes(12).toString("hex")}`;

beforeAll(async () => {
  work = tempDir("hostile");
  chmodSync(work, 0o755);
  // The host's secret, and a directory anyone may write to: nothing may read the one into an
  // output or write into the other.
  hostFile = join(work, "host-secret");
  writeFileSync(hostFile, `${token}\n`, { mode: 0o644 });
  sentinel = join(work, "sentinel");
  mkdirSync(sentinel);
  chmodSync(sentinel, 0o777);
  registry = await startRegistry();
}, 120_000);

afterAll(async () => {
  await registry?.stop();
});

/** A project directory owned by `owner`, holding the config and the base. */
function project(name: string, owner: number, base: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFiles(dir, { "osbuild.config.ts": CONFIG });
  cpSync(base, join(dir, "base.tar"));
  sh(`chown -R ${owner}:${owner} ${dir}`);
  return dir;
}

function build(dir: string, base: string, asUser?: number): Promise<RunResult> {
  return osbuild(["run", "--json", "--keep-going", "--set", `base=${base}`, "--cache-dir", join(dir, "cache")], { cwd: dir, asUser });
}

function corpus(...args: string[]): void {
  sh(`python3 ${CORPUS} ${args.map((arg) => `'${arg}'`).join(" ")}`);
}

/** Pushes a tar (or several, one layer each) as an image; returns its reference. */
async function pushImage(repository: string, tars: string[]): Promise<string> {
  const layers = tars.map((tar) => ({ mediaType: MEDIA_TYPES.layerTar, content: readFileSync(tar) }));
  const diffIds = layers.map((layer) => `sha256:${createHash("sha256").update(layer.content).digest("hex")}`);
  await pushRawImage(registry.address, repository, "latest", { config: { architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: diffIds } }, layers });
  return `${registry.address}/${repository}:latest`;
}

function stepOutcomes(result: RunResult): Record<string, { status: string; error?: string }> {
  const outcomes: Record<string, { status: string; error?: string }> = {};
  for (const event of result.events) if (event.type === "step") outcomes[event.id as string] = { status: event.status as string, error: event.error as string | undefined };
  return outcomes;
}

function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** The partitions of a disk image, as sfdisk reads them (offset and size in bytes). */
function partitions(image: string): Array<{ offset: number; bytes: number }> {
  const table = JSON.parse(sh(`sfdisk -J ${image}`)) as { partitiontable: { sectorsize?: number; partitions: Array<{ start: number; size: number }> } };
  const sector = table.partitiontable.sectorsize ?? 512;
  return table.partitiontable.partitions.map((part) => ({ offset: part.start * sector, bytes: part.size * sector }));
}

/** `bytes` of `file` from `offset` into a file of their own. */
function cut(file: string, offset: number, bytes: number, dest: string): string {
  sh(`dd if=${file} of=${dest} bs=1M iflag=skip_bytes,count_bytes skip=${offset} count=${bytes} conv=sparse status=none`);
  return dest;
}

function check(mode: "dir" | "ext4" | "erofs", source: string, manifest: string, ...options: string[]): string {
  const run = sh(`python3 ${CHECK} ${mode} '${source}' ${manifest} ${options.join(" ")}; echo "exit=$?"`);
  return run.trim();
}

/** Whether `needle` occurs in `file` (read in chunks, so 128 MiB images are fine). */
function contains(file: string, needle: string): boolean {
  const wanted = Buffer.from(needle);
  const fd = openSync(file, "r");
  const chunk = Buffer.alloc(8 * MiB);
  let carry = Buffer.alloc(0);
  try {
    for (;;) {
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) return false;
      const window = Buffer.concat([carry, chunk.subarray(0, read)]);
      if (window.includes(wanted)) return true;
      carry = window.subarray(Math.max(0, window.length - wanted.length));
    }
  } finally {
    closeSync(fd);
  }
}

/** Nothing of the host in any output, nothing written into the sentinel, the secret untouched. */
function expectNothingOfTheHost(out: string): void {
  for (const name of readdirSync(out)) {
    const file = join(out, name);
    if (!statSync(file).isFile()) continue;
    expect(contains(file, token), `${name} holds the host's marker`).toBe(false);
    if (name === "initrd") {
      const unpacked = join(work, `initrd-${randomBytes(4).toString("hex")}.cpio`);
      sh(`zcat ${file} > ${unpacked}`);
      expect(contains(unpacked, token), "the initrd holds the host's marker").toBe(false);
    }
  }
  expect(readdirSync(sentinel)).toEqual([]);
  expect(readFileSync(hostFile, "utf8")).toBe(`${token}\n`);
}

/** The legal corpus, checked target by target against the manifest with independent tools. */
function expectExact(out: string, manifest: string, outcomes: Record<string, { status: string; error?: string }>): void {
  // initrd: GNU cpio unpacks it (as root: owners, devices and modes as stored).
  const initrdTree = join(work, `initrd-tree-${randomBytes(4).toString("hex")}`);
  mkdirSync(initrdTree);
  sh(`zcat ${join(out, "initrd")} | cpio -idmu --quiet --no-absolute-filenames`, initrdTree);
  expect(check("dir", initrdTree, manifest, "--owners", "--times")).toBe("exit=0");

  // ext4 in MBR, GPT and behind the DAX header: debugfs reads every inode.
  for (const target of ["mbr", "gpt", "dax"]) {
    const image = join(out, target);
    const [filesystem] = partitions(image);
    sh(`e2fsck -fn '${image}?offset=${filesystem!.offset}'`);
    expect(check("ext4", `${image}?offset=${filesystem!.offset}`, manifest, "--ignore", "lost+found"), target).toBe("exit=0");
  }
  // The DAX header: osbuilder's PFN signature in the second 4 KiB.
  expect(readFileSync(join(out, "dax")).subarray(4096, 4096 + 16).toString("latin1")).toMatch(/^NVDIMM_PFN_INFO/);

  // erofs: fsck.erofs unpacks it.
  const erofsPart = partitions(join(out, "erofs"))[0]!;
  const erofsImage = cut(join(out, "erofs"), erofsPart.offset, erofsPart.bytes, join(work, `erofs-${randomBytes(4).toString("hex")}.img`));
  sh(`fsck.erofs ${erofsImage}`);
  expect(check("erofs", erofsImage, manifest)).toBe("exit=0");

  // verity: veritysetup checks the hash partition against the root hash; the data is the ext4.
  const [data, hash] = partitions(join(out, "verity"));
  const fields = Object.fromEntries(readFileSync(join(out, "verity-root-hash"), "utf8").trim().split(",").map((field) => field.split("=") as [string, string]));
  const dataFile = cut(join(out, "verity"), data!.offset, data!.bytes, join(work, `verity-data-${randomBytes(4).toString("hex")}`));
  const hashFile = cut(join(out, "verity"), hash!.offset, hash!.bytes, join(work, `verity-hash-${randomBytes(4).toString("hex")}`));
  sh(`veritysetup verify --no-superblock --salt=${fields.salt} --data-blocks=${fields.data_blocks} ${dataFile} ${hashFile} ${fields.root_hash}`);
  expect(check("ext4", dataFile, manifest, "--ignore", "lost+found")).toBe("exit=0");

  // xfs's protofile cannot say a name with blanks: refused, naming one.
  expect(outcomes.xfs?.status).toBe("failed");
  expect(outcomes.xfs?.error).toMatch(/xfs: 'weird\/.*' can't be put in an xfs protofile .*use ext4 or erofs/s);
}

describe.runIf(isRoot)("a hostile base", () => {
  for (const source of ["tarball", "image"] as const) {
    it(`from ${source === "image" ? "an image" : "a tarball"}: every legal name, link, device, owner and xattr comes out exactly from every packer, the same as root and as nobody, and nothing of the host gets in`, async () => {
      const dir = join(work, `legal-${source}`);
      mkdirSync(dir);
      const manifest = join(dir, "manifest.json");
      corpus("legal", join(dir, "legal.tar"), manifest, hostFile, sentinel);
      const base = source === "tarball" ? "tarball:./base.tar" : `image:${await pushImage(`hostile/legal`, [join(dir, "legal.tar")])}`;
      const asRoot = project(`legal-${source}-root`, 0, join(dir, "legal.tar"));
      const asNobody = project(`legal-${source}-nobody`, NOBODY, join(dir, "legal.tar"));
      const [rootRun, nobodyRun] = [await build(asRoot, base), await build(asNobody, base, NOBODY)];
      const rootOutcomes = stepOutcomes(rootRun);
      for (const target of PACKERS.filter((name) => name !== "xfs")) expect(rootOutcomes[target], `${target}: ${rootOutcomes[target]?.error}`).toMatchObject({ status: "built" });
      expectExact(join(asRoot, "out"), manifest, rootOutcomes);
      expectNothingOfTheHost(join(asRoot, "out"));
      // Without root the same bytes: owners, devices and xattrs come from the layers.
      const nobodyOutcomes = stepOutcomes(nobodyRun);
      expect(nobodyOutcomes.xfs?.error).toBe(rootOutcomes.xfs?.error);
      for (const target of PACKERS.filter((name) => name !== "xfs")) {
        expect(nobodyOutcomes[target], `${target} without root: ${nobodyOutcomes[target]?.error}`).toMatchObject({ status: "built" });
        expect(sha256(join(asNobody, "out", target)), `${target} without root`).toBe(sha256(join(asRoot, "out", target)));
      }
      expectNothingOfTheHost(join(asNobody, "out"));
    }, 900_000);
  }

  it("with hardlinks chained across layers (a name linked, its target whited out above, a link to the link): one file with the data, in every packer", async () => {
    const dir = join(work, "layers");
    mkdirSync(dir);
    corpus("layers", join(dir, "layer"), join(dir, "manifest.json"));
    const reference = await pushImage("hostile/layers", [1, 2, 3].map((index) => join(dir, `layer-${index}.tar`)));
    const asRoot = project("layers-root", 0, join(dir, "layer-1.tar"));
    const asNobody = project("layers-nobody", NOBODY, join(dir, "layer-1.tar"));
    const outcomes = stepOutcomes(await build(asRoot, `image:${reference}`));
    for (const target of PACKERS) expect(outcomes[target], `${target}: ${outcomes[target]?.error}`).toMatchObject({ status: "built" });
    const tree = join(dir, "initrd-tree");
    mkdirSync(tree);
    sh(`zcat ${join(asRoot, "out/initrd")} | cpio -idmu --quiet --no-absolute-filenames`, tree);
    expect(check("dir", tree, join(dir, "manifest.json"), "--owners")).toBe("exit=0");
    const image = join(asRoot, "out/mbr");
    expect(check("ext4", `${image}?offset=${partitions(image)[0]!.offset}`, join(dir, "manifest.json"), "--ignore", "lost+found")).toBe("exit=0");
    const nobodyOutcomes = stepOutcomes(await build(asNobody, `image:${reference}`, NOBODY));
    for (const target of PACKERS) expect(sha256(join(asNobody, "out", target)), `${target} without root (${nobodyOutcomes[target]?.error})`).toBe(sha256(join(asRoot, "out", target)));
  }, 600_000);

  it("never reuses an initrd part whose file data comes from a lower layer that changed (a promoted hardlink)", async () => {
    const dir = join(work, "promoted");
    mkdirSync(dir);
    // Layer 1: a file; layer 2: a link to it; layer 3: the file whited out, so the link holds
    // the data. Two images differ only in the file's bytes (same size, same time).
    const layerTar = (name: string, script: string): string => {
      sh(`python3 -c 'import io, tarfile, sys\nt = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)\n${script}\nt.close()' ${name}`, dir);
      return join(dir, name);
    };
    const file = (content: string): string => `i = tarfile.TarInfo("data"); i.size = ${content.length}; i.mtime = 1000; t.addfile(i, io.BytesIO(b"${content}"))`;
    const link = layerTar("link.tar", `i = tarfile.TarInfo("alias"); i.type = tarfile.LNKTYPE; i.linkname = "data"; i.mtime = 1000; t.addfile(i)`);
    const whiteout = layerTar("whiteout.tar", `i = tarfile.TarInfo(".wh.data"); t.addfile(i, io.BytesIO(b""))`);
    const references = [];
    for (const content of ["first-bytes", "other-bytes"]) references.push(await pushImage(`promoted/${content}`, [layerTar(`${content}.tar`, file(content)), link, whiteout]));
    const home = project("promoted-root", 0, link);
    for (const [index, reference] of references.entries()) {
      const outcomes = stepOutcomes(await build(home, `image:${reference}`));
      expect(outcomes.initrd?.status).toBe("built");
      expect(sh(`zcat ${join(home, "out/initrd")} | cpio -i --quiet --to-stdout alias`)).toBe(["first-bytes", "other-bytes"][index]);
    }
  }, 300_000);

  const refused: Array<[string, RegExp]> = [
    ["dotdot", /archive entry '\.\.\/escaped' has the path '\.\.\/escaped', which leaves the tree/],
    ["absolute", /archive entry '\/.*\/sentinel\/absolute' has the absolute path/],
    ["through-symlink", /archive entry 'link\/through' would be written through the symlink 'link'/],
    ["hardlink-to-host", /archive entry 'stolen' points to the absolute path/],
    ["hardlink-out", /archive entry 'stolen' points to '(\.\.\/)+.*host-secret', which leaves the tree/],
    ["whiteout-dotdot", /archive entry 'd\/\.wh\.\.\.' is a whiteout of 'd\/\.\.'/],
    ["whiteout-dot", /archive entry '\.wh\.\.' is a whiteout of '\.'/],
    ["whiteout-root", /archive entry '\.wh\.' is a whiteout of '\/'/],
    ["device-numbers", /archive entry 'dev' is a device node 4096:1, which Linux can't have/],
    ["below-a-file", /archive entry 'f\/below' is below 'f', which is a file, not a directory/],
    ["size-past-end", /archive is truncated/],
    ["negative-uid", /entry 'neg' has a negative uid/],
    ["octal-junk", /entry 'junk' has a malformed mode field/],
    ["pax-mtime-nan", /entry 'nan' has the pax mtime "NaN", which is not a time/],
    ["pax-size-junk", /entry 'sizejunk' has the pax size "12abc", which is not a byte count/],
    ["pax-uid-huge", /entry 'huge' has the pax uid "99999999999999999999", which is not a valid id/],
    ["pax-length-lie", /malformed pax record/],
  ];
  describe("refused, naming the entry and writing nothing", () => {
    // One build per source and user holds every case (a fetchBase each, --keep-going): the
    // cases are read from the same corpus, and the builds start once instead of 68 times.
    const outcomes = new Map<string, Record<string, { status: string; error?: string }>>();
    beforeAll(async () => {
      const dir = join(work, "refused");
      mkdirSync(join(dir, "tars"), { recursive: true });
      const references: Record<string, string> = {};
      for (const [name] of refused) {
        corpus("refused", name, join(dir, "tars", `${name}.tar`), hostFile, sentinel);
        references[name] = await pushImage(`hostile/refused-${name}`, [join(dir, "tars", `${name}.tar`)]);
      }
      for (const source of ["tarball", "image"] as const) {
        const config = `import { defineConfig, fetchBase, mkCpio } from "osbuild";\nexport default defineConfig(() => ({\n${refused
          .map(([name]) => `  ${JSON.stringify(name)}: mkCpio(fetchBase(${source === "tarball" ? `{ tarball: "./tars/${name}.tar"` : `{ image: ${JSON.stringify(references[name])}`}, id: ${JSON.stringify(name)} }), { checks: false }),`)
          .join("\n")}\n}));\n`;
        await Promise.all(
          [0, NOBODY].map(async (owner) => {
            const home = join(work, `refused-${source}-${owner}`);
            mkdirSync(home);
            writeFiles(home, { "osbuild.config.ts": config });
            cpSync(join(dir, "tars"), join(home, "tars"), { recursive: true });
            sh(`chown -R ${owner}:${owner} ${home}`);
            const result = await osbuild(["run", "--json", "--keep-going", "--cache-dir", join(home, "cache")], { cwd: home, asUser: owner === 0 ? undefined : owner });
            expect(result.code).toBe(1);
            expect(existsSync(join(home, "out")) ? readdirSync(join(home, "out")) : []).toEqual([]);
            outcomes.set(`${source} as ${owner}`, stepOutcomes(result));
          }),
        );
      }
    }, 900_000);

    for (const [name, message] of refused) {
      it(`${name}, from a tarball and from an image, as root and as nobody`, () => {
        for (const [run, steps] of outcomes) {
          expect(steps[name]?.status, `${name} from ${run}`).toBe("failed");
          expect(steps[name]?.error, `${name} from ${run}`).toMatch(message);
        }
        expect(outcomes.size).toBe(4);
        expect(readdirSync(sentinel)).toEqual([]);
        expect(readFileSync(hostFile, "utf8")).toBe(`${token}\n`);
      });
    }
  });

  it("packs the longest names and symlink targets Linux allows, or says which packer can't", async () => {
    const dir = join(work, "longest");
    mkdirSync(dir);
    corpus("longest", join(dir, "longest.tar"), join(dir, "manifest.json"));
    const asRoot = project("longest-root", 0, join(dir, "longest.tar"));
    const outcomes = stepOutcomes(await build(asRoot, "tarball:./base.tar"));
    for (const target of ["initrd", "mbr", "gpt", "dax", "verity"]) expect(outcomes[target], `${target}: ${outcomes[target]?.error}`).toMatchObject({ status: "built" });
    const tree = join(dir, "initrd-tree");
    mkdirSync(tree);
    sh(`zcat ${join(asRoot, "out/initrd")} | cpio -idmu --quiet --no-absolute-filenames`, tree);
    expect(check("dir", tree, join(dir, "manifest.json"), "--owners", "--times")).toBe("exit=0");
    const image = join(asRoot, "out/mbr");
    expect(check("ext4", `${image}?offset=${partitions(image)[0]!.offset}`, join(dir, "manifest.json"), "--ignore", "lost+found")).toBe("exit=0");
    expect(outcomes.erofs?.error).toMatch(/erofs: mkfs.erofs 1.5 can't write the name of 'n{255}' \(255 bytes; it takes up to 254\): rename it, or use ext4/);
  }, 600_000);

  it("never lets a name split into protofile tokens (\\v, \\f and \\r are blanks to mkfs.xfs): xfs refuses it by name, the others pack it", async () => {
    const dir = join(work, "protofile");
    mkdirSync(dir);
    corpus("protofile", join(dir, "protofile.tar"), join(dir, "manifest.json"), hostFile);
    const asRoot = project("protofile-root", 0, join(dir, "protofile.tar"));
    const outcomes = stepOutcomes(await build(asRoot, "tarball:./base.tar"));
    expect(outcomes.xfs?.error).toMatch(/xfs: 'x\v----644\v0\v0\v' can't be put in an xfs protofile/);
    for (const target of ["initrd", "mbr", "erofs"]) expect(outcomes[target], `${target}: ${outcomes[target]?.error}`).toMatchObject({ status: "built" });
    const image = join(asRoot, "out/mbr");
    expect(check("ext4", `${image}?offset=${partitions(image)[0]!.offset}`, join(dir, "manifest.json"), "--ignore", "lost+found")).toBe("exit=0");
    expectNothingOfTheHost(join(asRoot, "out"));
  }, 600_000);

  it("packs a layer of 100,000 entries with every packer", async () => {
    const dir = join(work, "big");
    mkdirSync(dir);
    corpus("big", join(dir, "big.tar"), join(dir, "manifest.json"), "100000");
    const asRoot = project("big-root", 0, join(dir, "big.tar"));
    const outcomes = stepOutcomes(await build(asRoot, "tarball:./base.tar"));
    for (const target of PACKERS) expect(outcomes[target], `${target}: ${outcomes[target]?.error}`).toMatchObject({ status: "built" });
    const entries = Number(sh(`zcat ${join(asRoot, "out/initrd")} | cpio -it --quiet | wc -l`).trim());
    expect(entries).toBe(100_000 + 101 + 1); // the files, their directories, and the root
    const image = join(asRoot, "out/mbr");
    const summary = sh(`e2fsck -fn '${image}?offset=${partitions(image)[0]!.offset}' 2>&1 | tail -1`);
    expect(Number(/(\d+)\/\d+ files/.exec(summary)?.[1])).toBeGreaterThanOrEqual(100_000 + 101);
    sh(`xfs_repair -n -f ${cut(join(asRoot, "out/xfs"), partitions(join(asRoot, "out/xfs"))[0]!.offset, partitions(join(asRoot, "out/xfs"))[0]!.bytes, join(dir, "xfs.img"))}`);
  }, 900_000);
});

describe("a registry that lies", () => {
  let server: Server;
  let address: string;
  const layer = Buffer.concat([Buffer.from("x".repeat(1024)), Buffer.alloc(1024)]);
  const digest = (bytes: Buffer): string => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [digest(layer)] } }));
  const manifestOf = (layerDescriptor: Record<string, unknown>): Buffer =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config: { mediaType: MEDIA_TYPES.config, digest: digest(config), size: config.length }, layers: [layerDescriptor] }));
  const honest = manifestOf({ mediaType: MEDIA_TYPES.layerTar, digest: digest(layer), size: layer.length });
  /** repository → what its "latest" tag answers, and the blobs it serves. */
  const lies: Record<string, { manifest: Buffer; mediaType?: string; blobs?: Record<string, Buffer> }> = {
    "blob-bytes": { manifest: honest, blobs: { [digest(layer)]: Buffer.concat([Buffer.from("y"), layer.subarray(1)]) } },
    "blob-size": { manifest: manifestOf({ mediaType: MEDIA_TYPES.layerTar, digest: digest(layer), size: 100 }) },
    "index-digest": {
      manifest: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests: [{ mediaType: MEDIA_TYPES.manifest, digest: digest(Buffer.from("another")), size: honest.length, platform: { architecture: "amd64", os: "linux" } }] })),
      mediaType: MEDIA_TYPES.index,
    },
    "index-size": {
      manifest: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests: [{ mediaType: MEDIA_TYPES.manifest, digest: digest(honest), size: honest.length + 7, platform: { architecture: "amd64", os: "linux" } }] })),
      mediaType: MEDIA_TYPES.index,
    },
    "huge-manifest": { manifest: Buffer.concat([Buffer.from('{"schemaVersion":2,"pad":"'), Buffer.alloc(6 * MiB, 0x61), Buffer.from('"}')]) },
    "bad-descriptor": { manifest: manifestOf({ mediaType: MEDIA_TYPES.layerTar, digest: "sha256:../../../../etc/passwd", size: 1 }) },
  };
  const expected: Record<string, RegExp> = {
    "blob-bytes": /does not match its digest and size/,
    "blob-size": /does not match its digest and size/,
    "index-digest": /does not match its digest/,
    "index-size": /does not match its digest and size/,
    "huge-manifest": /sent more than 4194304 bytes for \/v2\/lies\/huge-manifest\/manifests\/latest/,
    "bad-descriptor": /malformed or non-sha256 descriptor/,
  };

  beforeAll(async () => {
    server = createServer((request, response) => {
      const match = /^\/v2\/lies\/([a-z-]+)\/(manifests|blobs)\/(.+)$/.exec(request.url ?? "");
      const lie = match && lies[match[1]!];
      if (request.url === "/v2/") return void response.writeHead(200).end("{}");
      if (!match || !lie) return void response.writeHead(404).end();
      if (match[2] === "manifests") {
        // By digest it serves the honest manifest, whatever digest was asked for.
        const body = match[3] === "latest" ? lie.manifest : honest;
        return void response.writeHead(200, { "content-type": body === honest ? MEDIA_TYPES.manifest : (lie.mediaType ?? MEDIA_TYPES.manifest) }).end(body);
      }
      const blob = lie.blobs?.[match[3]!] ?? (match[3] === digest(config) ? config : match[3] === digest(layer) ? layer : undefined);
      if (!blob) return void response.writeHead(404).end();
      response.writeHead(200, { "content-type": "application/octet-stream" }).end(blob);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  for (const name of Object.keys(lies)) {
    it(`is caught when it lies: ${name}`, async () => {
      const dir = tempDir(`lie-${name}`);
      writeFiles(dir, { "osbuild.config.ts": `import { defineConfig, fetchBase, mkCpio } from "osbuild";\nexport default defineConfig(() => ({ initrd: mkCpio(fetchBase({ image: "${address}/lies/${name}:latest" }), { checks: false }) }));\n` });
      const result = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
      expect(result.code).toBe(1);
      expect(stepOutcomes(result)["fetch-base"]?.error).toMatch(expected[name]!);
      expect(existsSync(join(dir, "out")) ? readdirSync(join(dir, "out")) : []).toEqual([]);
    }, 120_000);
  }
});
