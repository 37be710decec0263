// Safety: hostile archives are refused, a corrupted cache is never used, concurrent builds
// share a cache, outputs appear atomically. (Killed and interrupted builds: faults.test.ts.)

import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { osbuild, sh, startOsbuild, statuses, tempDir, writeFiles } from "../helpers.js";

/** Builds a tar with Python's tarfile, so hostile entries come from an independent writer. */
function pythonTar(dir: string, name: string, entries: string): void {
  writeFileSync(
    join(dir, "make_tar.py"),
    `import io, tarfile, sys
t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def add(name, kind="file", data=b"x", link=""):
    info = tarfile.TarInfo(name)
    if kind == "file":
        info.size = len(data); t.addfile(info, io.BytesIO(data)); return
    info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
    info.linkname = link
    if kind == "dir": info.mode = 0o755
    t.addfile(info)
${entries}
t.close()
`,
  );
  sh(`python3 make_tar.py ${name}`, dir);
}

const TARBALL_CONFIG = `import { defineConfig, fetchBase, mkCpio } from "osbuild";
export default defineConfig(() => ({ initrd: mkCpio(fetchBase({ tarball: "./base.tar" })) }));
`;

describe("hostile archives", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["a '..' path", `add("etc", "dir")\nadd("../escaped")`, /archive entry '\.\.\/escaped' has the path '\.\.\/escaped', which leaves the tree through '\.\.'/],
    ["an absolute path", `add("/tmp/osbuild-absolute-escape")`, /archive entry '\/tmp\/osbuild-absolute-escape' has the absolute path/],
    ["a write through an absolute symlink", `add("etc", "dir")\nadd("etc/link", "sym", link="/tmp")\nadd("etc/link/osbuild-through-symlink")`, /archive entry 'etc\/link\/osbuild-through-symlink' would be written through the symlink 'etc\/link' \(→ \/tmp\)/],
    ["a write through a relative symlink", `add("up", "sym", link="../../..")\nadd("up/escaped")`, /archive entry 'up\/escaped' would be written through the symlink 'up'/],
    ["a hardlink out of the tree", `add("etc", "dir")\nadd("etc/passwd-link", "hard", link="../../etc/passwd")`, /archive entry 'etc\/passwd-link' points to '\.\.\/\.\.\/etc\/passwd', which leaves the tree/],
    ["an absolute hardlink", `add("shadow", "hard", link="/etc/shadow")`, /archive entry 'shadow' points to the absolute path '\/etc\/shadow'/],
    ["a hardlink to nothing", `add("orphan", "hard", link="missing")`, /archive entry 'orphan' is a hardlink to 'missing', which is not a regular file earlier in the archive/],
  ];

  for (const [name, entries, message] of cases) {
    it(`rejects ${name}, naming the entry, and writes nothing`, async () => {
      const dir = tempDir("hostile");
      writeFiles(dir, { "osbuild.config.ts": TARBALL_CONFIG });
      pythonTar(dir, "base.tar", entries);
      const result = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
      expect(result.code).toBe(1);
      const failed = result.events.find((event) => event.type === "step" && event.status === "failed");
      expect(failed?.id).toBe("fetch-base");
      expect(String(failed?.error)).toMatch(message);
      expect(existsSync("/tmp/osbuild-absolute-escape")).toBe(false);
      expect(existsSync("/tmp/osbuild-through-symlink")).toBe(false);
      expect(existsSync(join(dir, "escaped"))).toBe(false);
      // nothing was recorded for the failed step
      const again = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
      expect(statuses(again)["fetch-base"]).toBe("failed");
    });
  }

  it("keeps symlinks themselves, absolute ones included", async () => {
    const dir = tempDir("symlinks");
    writeFiles(dir, { "osbuild.config.ts": TARBALL_CONFIG });
    pythonTar(dir, "base.tar", `add("etc", "dir")\nadd("etc/mtab", "sym", link="/proc/self/mounts")\nadd("lib", "sym", link="usr/lib")\nadd("usr", "dir")\nadd("usr/lib", "dir")\nadd("usr/lib/x")`);
    const result = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(result.code).toBe(0);
    const listing = sh(`zcat out/initrd | cpio -itv --quiet`, dir);
    expect(listing).toMatch(/etc\/mtab -> \/proc\/self\/mounts/);
    expect(listing).toMatch(/ lib -> usr\/lib/);
  });
});

const HEAVY_CONFIG = `import { defineConfig, fetchBase, overlay, mkCpio } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1700000000,
  targets: () => {
    const base = fetchBase({ tarball: "./base.tar.gz", id: "base" });
    const a = overlay(base, { from: "./a", id: "a" });
    const b = overlay(base, { from: "./b", id: "b" });
    return { left: mkCpio(a, { id: "left" }), right: mkCpio(b, { id: "right", compression: "zstd", level: 3 }), rootfs: a };
  },
});
`;

function heavyProject(): string {
  const dir = tempDir("heavy");
  writeFiles(dir, { "osbuild.config.ts": HEAVY_CONFIG, "a/etc/a": "a\n", "b/etc/b": "b\n" });
  // ~40 MB of varied files, so that every step takes a little while
  sh(
    `mkdir -p tree/usr/lib tree/etc && for i in $(seq 1 400); do head -c 100000 /dev/urandom > tree/usr/lib/f$i; done && ln tree/usr/lib/f1 tree/usr/lib/f1-link && ln -s usr/lib tree/lib && tar --numeric-owner -czf base.tar.gz -C tree . && rm -rf tree`,
    dir,
  );
  return dir;
}

function outputsOf(dir: string): Record<string, string> {
  return Object.fromEntries(["left", "right"].map((name) => [name, sh(`sha256sum out/${name}`, dir).split(" ")[0]!]));
}

describe("concurrency", () => {
  it("two builds sharing a cache both succeed with the same outputs", async () => {
    const dir = heavyProject();
    const cache = join(dir, "cache");
    const runs = await Promise.all(
      ["out1", "out2"].map(
        (out) =>
          new Promise<{ code: number | null; stderr: string }>((resolve) => {
            const child = startOsbuild(["run", "--cache-dir", cache, "--out", join(dir, out)], { cwd: dir });
            let stderr = "";
            child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
            child.on("close", (code) => resolve({ code, stderr }));
          }),
      ),
    );
    for (const run of runs) expect(run).toMatchObject({ code: 0 });
    for (const name of ["left", "right"]) expect(readFileSync(join(dir, "out1", name)).equals(readFileSync(join(dir, "out2", name)))).toBe(true);
    const after = await osbuild(["run", "--json", "--cache-dir", cache, "--out", join(dir, "out1")], { cwd: dir });
    expect(Object.values(statuses(after)).every((status) => status === "cached")).toBe(true);
  });
});

describe("leftovers of killed builds", () => {
  it("removes half-written outputs of dead processes from the output directory, and nothing else", async () => {
    const dir = tempDir("leftovers");
    writeFiles(dir, { "osbuild.config.ts": TARBALL_CONFIG });
    sh("mkdir tree && echo x > tree/x && tar -cf base.tar -C tree . && rm -rf tree", dir);
    const dead = spawnSync("true").pid; // has exited
    const removed = [`.p${dead}.abc123.out`, `.p${dead}.abc124.old`];
    const kept = [`.p${process.pid}.def456.out`, ".keep.out", `p${dead}.notes.out`, `.p${dead}.notes`, `.p${dead}.x.y.z.txt`, ".p99999999999.abc.out"];
    writeFiles(dir, Object.fromEntries([...removed, ...kept].map((name) => [`out/${name}`, "partial"])));
    const result = await osbuild(["run", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(readdirSync(join(dir, "out")).sort()).toEqual([...kept, "initrd", "initrd.spdx.json", "initrd.intoto.json"].sort());
  });
});

describe("corrupted cache", () => {
  function corrupt(file: string): void {
    chmodSync(file, 0o644);
    const bytes = readFileSync(file);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = bytes[middle]! ^ 0xff;
    writeFileSync(file, bytes);
  }

  function contentFiles(cache: string, minSize: number): string[] {
    return sh(`find ${join(cache, "content-v2")} -type f -size +${minSize}c`).trim().split("\n").filter(Boolean);
  }

  it("detects a corrupted blob when writing outputs, rebuilds it, and never writes the bad bytes", async () => {
    const dir = heavyProject();
    const cache = join(dir, "cache");
    expect((await osbuild(["run", "--cache-dir", cache], { cwd: dir })).code).toBe(0);
    const expected = outputsOf(dir);
    const left = contentFiles(cache, 0).find((file) => sh(`sha256sum ${file}`).startsWith(expected.left!))!;
    corrupt(left);
    rmSync(join(dir, "out"), { recursive: true });
    const result = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: dir });
    expect(result.code).toBe(0);
    expect(result.events.some((event) => event.type === "warning" && String(event.message).includes("corrupted"))).toBe(true);
    expect(outputsOf(dir)).toEqual(expected);
  });

  it("detects a corrupted layer when extracting it, rebuilds the step that made it", async () => {
    const dir = heavyProject();
    const cache = join(dir, "cache");
    expect((await osbuild(["run", "--cache-dir", cache], { cwd: dir })).code).toBe(0);
    const expected = outputsOf(dir);
    // the biggest content file is the base layer
    const biggest = contentFiles(cache, 1_000_000).sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
    corrupt(biggest);
    rmSync(join(cache, "trees"), { recursive: true });
    writeFiles(dir, { "a/etc/a": "a changed\n" }); // overlay a must extract the base again
    const result = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: dir });
    expect(result.code).toBe(0);
    expect(statuses(result).base).toBe("built");
    writeFiles(dir, { "a/etc/a": "a\n" });
    expect((await osbuild(["run", "--cache-dir", cache], { cwd: dir })).code).toBe(0);
    expect(outputsOf(dir)).toEqual(expected);
  });

  it("detects a file read on its own (RootfsInput.readFile) that its layer's TOC does not vouch for, and rebuilds the layer", async () => {
    const dir = tempDir("read-file");
    const config = (label: string): string => `import { writeFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase } from "osbuild";
const readBack = defineStep({
  kind: "read-back", version: 1, inputs: ["rootfs"], output: "blob",
  async run(options: { label: string }, ctx) {
    writeFileSync(ctx.outputPath(), options.label + ":" + (await ctx.inputs[0].readFile("/etc/hostname")).toString());
  },
});
export default defineConfig(() => ({ copy: readBack(fetchBase({ tarball: "./base.tar", id: "base" }), { label: ${JSON.stringify(label)} }) }));
`;
    writeFiles(dir, { "osbuild.config.ts": config("first"), "tree/etc/hostname": "guest-hostname\n" });
    sh("tar --numeric-owner -cf base.tar -C tree .", dir);
    const cache = join(dir, "cache");
    expect((await osbuild(["run", "--cache-dir", cache], { cwd: dir })).code).toBe(0);
    expect(readFileSync(join(dir, "out/copy"), "utf8")).toBe("first:guest-hostname\n");
    // The same length, other bytes, in the stored layer: only the file's digest can tell.
    const layer = contentFiles(cache, 0).find((file) => readFileSync(file).includes("guest-hostname\n"))!;
    chmodSync(layer, 0o644);
    writeFileSync(layer, readFileSync(layer).toString("latin1").replace("guest-hostname", "GUEST-HOSTNAME"), "latin1");
    writeFiles(dir, { "osbuild.config.ts": config("second") });
    const result = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: dir });
    expect(result.code, result.stdout).toBe(0);
    expect(result.events.some((event) => event.type === "warning" && /etc\/hostname reads back as sha256 [0-9a-f]{64}, the layer's table of contents says/.test(String(event.message)))).toBe(true);
    expect(statuses(result).base).toBe("built");
    expect(readFileSync(join(dir, "out/copy"), "utf8")).toBe("second:guest-hostname\n");
  });

  it("cache verify finds corrupted content and the next build replaces it", async () => {
    const dir = heavyProject();
    const cache = join(dir, "cache");
    expect((await osbuild(["run", "--cache-dir", cache], { cwd: dir })).code).toBe(0);
    const expected = outputsOf(dir);
    const big = contentFiles(cache, 1_000_000); // the base layer, the initrds and their parts
    for (const file of big) corrupt(file);
    const verify = await osbuild(["cache", "verify", "--cache-dir", cache], { cwd: dir });
    expect(verify.code).toBe(1);
    expect(verify.stdout).toContain(`${big.length} corrupted (removed)`);
    rmSync(join(dir, "out"), { recursive: true });
    const rebuilt = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: dir });
    expect(rebuilt.code).toBe(0);
    expect(statuses(rebuilt)).toEqual({ base: "built", a: "built", b: "built", left: "built", right: "built" });
    expect(outputsOf(dir)).toEqual(expected);
  });
});
