// Caching: what rebuilds and what doesn't, keys that depend on content not paths, explain,
// and the --json event contract.

import { spawnSync } from "node:child_process";
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { canonicalJson, cacheKeyOf, diffJson, type Preimage } from "../../engine/key.js";
import { osbuild, statuses, tempDir, writeFiles } from "../helpers.js";

const CHAIN = `import { defineConfig, fetchBase, overlay, mkCpio } from "osbuild";

export default defineConfig({
  sourceDateEpoch: 1700000000,
  targets: () => {
    const base = fetchBase({ tarball: "./base.tar", id: "base" });
    const a = overlay(base, { from: "./a", id: "overlay-a" });
    const b = overlay(a, { from: "./b", id: "overlay-b" });
    return { initrd: mkCpio(b, { id: "initrd" }), rootfs: b };
  },
});
`;

function chainProject(): string {
  const dir = tempDir("chain");
  writeFiles(dir, {
    "osbuild.config.ts": CHAIN,
    "base-tree/etc/os-release": "ID=test\n",
    "base-tree/bin/tool": "#!/bin/sh\n",
    "a/etc/a.conf": "a\n",
    "b/etc/b.conf": "b\n",
  });
  writeBaseTar(dir, "ID=test\n");
  return dir;
}

function writeBaseTar(dir: string, osRelease: string): void {
  writeFileSync(join(dir, "base-tree/etc/os-release"), osRelease);
  spawnSync("tar", ["--numeric-owner", "-cf", "base.tar", "-C", "base-tree", "."], { cwd: dir });
}

const args = (dir: string, cache = join(dir, "cache")): string[] => ["run", "--json", "--cache-dir", cache, "--out", join(dir, "out")];

describe("incremental builds", () => {
  it("rebuilds exactly what changed: nothing, then overlay B and the initrd, then everything", async () => {
    const dir = chainProject();
    const first = await osbuild(args(dir), { cwd: dir });
    expect(first.code).toBe(0);
    expect(statuses(first)).toEqual({ base: "built", "overlay-a": "built", "overlay-b": "built", initrd: "built" });

    const second = await osbuild(args(dir), { cwd: dir });
    expect(statuses(second)).toEqual({ base: "cached", "overlay-a": "cached", "overlay-b": "cached", initrd: "cached" });
    expect(second.events.some((event) => event.type === "step-start")).toBe(false);
    expect(second.events.filter((event) => event.type === "output").map((event) => event.written)).toEqual([false, false]);

    writeFileSync(join(dir, "b/etc/b.conf"), "b changed\n");
    const third = await osbuild(args(dir), { cwd: dir });
    expect(statuses(third)).toEqual({ base: "cached", "overlay-a": "cached", "overlay-b": "built", initrd: "built" });

    writeBaseTar(dir, "ID=changed\n");
    const fourth = await osbuild(args(dir), { cwd: dir });
    expect(statuses(fourth)).toEqual({ base: "built", "overlay-a": "built", "overlay-b": "built", initrd: "built" });
    expect(readFileSync(join(dir, "out/rootfs/index.json"), "utf8")).toContain("application/vnd.oci.image.manifest.v1+json");
  });

  it("gives the same keys and the same bytes in another directory with another cache", async () => {
    const dir = chainProject();
    const first = await osbuild(args(dir), { cwd: dir });
    const copy = join(tempDir("chain-copy"), "project");
    cpSync(dir, copy, { recursive: true, filter: (path) => !path.includes("/cache") && !path.includes("/out") });
    const second = await osbuild(args(copy), { cwd: copy });
    const keys = (result: typeof first): Record<string, unknown> => Object.fromEntries(result.events.filter((event) => event.type === "step").map((event) => [event.id, event.key]));
    expect(keys(second)).toEqual(keys(first));
    expect(statuses(second)).toEqual({ base: "built", "overlay-a": "built", "overlay-b": "built", initrd: "built" });
    expect(readFileSync(join(copy, "out/initrd")).equals(readFileSync(join(dir, "out/initrd")))).toBe(true);
    // and a copy sharing the first cache reuses everything
    const shared = await osbuild(args(copy, join(dir, "cache")), { cwd: copy });
    expect(Object.values(statuses(shared))).toEqual(["cached", "cached", "cached", "cached"]);
  });

  it("rebuilds when a step's version changes, and explain says why", async () => {
    const dir = tempDir("version");
    const config = (version: number, greeting: string): string => `import { defineConfig, defineStep, fetchBase } from "osbuild";
import { writeFileSync } from "node:fs";

const greet = defineStep({
  kind: "greet",
  version: ${version},
  inputs: ["rootfs"],
  output: "rootfs",
  async run(options: { greeting: string }, ctx) {
    const tree = await ctx.tree();
    writeFileSync(tree.path("/etc/greeting"), options.greeting);
  },
});

export default defineConfig(() => ({ rootfs: greet(fetchBase({ directory: "./base" }), { greeting: "${greeting}" }) }));
`;
    writeFiles(dir, { "base/etc/hostname": "x\n", "osbuild.config.ts": config(1, "hello") });
    expect((await osbuild(args(dir), { cwd: dir })).code).toBe(0);
    writeFiles(dir, { "osbuild.config.ts": config(2, "hello") });
    const explainVersion = await osbuild(["explain", "greet", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(explainVersion.stdout).toContain("will build");
    expect(explainVersion.stdout).toContain("step version: 1 → 2");
    expect(statuses(await osbuild(args(dir), { cwd: dir }))).toEqual({ "fetch-base": "cached", greet: "built" });

    writeFiles(dir, { "osbuild.config.ts": config(2, "bonjour") });
    const explainOption = await osbuild(["explain", "greet", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(explainOption.stdout).toContain('option greeting: "hello" → "bonjour"');
    expect(statuses(await osbuild(args(dir), { cwd: dir }))).toEqual({ "fetch-base": "cached", greet: "built" });
    const cached = await osbuild(["explain", "greet", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(cached.stdout).toMatch(/cached: key [0-9a-f]{16}… built/);
  });

  it("explain names the host file and the input that changed", async () => {
    const dir = chainProject();
    await osbuild(args(dir), { cwd: dir });
    writeFileSync(join(dir, "a/etc/a.conf"), "changed\n");
    const overlayA = await osbuild(["explain", "overlay-a", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(overlayA.stdout).toContain("option from (./a): content changed: changed etc/a.conf\n");
    writeFileSync(join(dir, "a/etc/new.conf"), "new\n");
    rmSync(join(dir, "a/etc/a.conf"));
    const again = await osbuild(["explain", "overlay-a", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(again.stdout).toContain("option from (./a): content changed: added etc/new.conf; removed etc/a.conf\n");
    const overlayB = await osbuild(["explain", "overlay-b", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(overlayB.stdout).toContain("its input from 'overlay-a' will be built first");
  });
});

describe("cache keys", () => {
  const preimage: Preimage = { schema: 1, kind: "overlay", version: 1, arch: "x86_64", sourceDateEpoch: 0, options: { from: { type: "dir", sha256: "aa" } }, inputs: [{ kind: "rootfs", digest: "sha256:11" }], tools: { cp: "cp 9.1" } };

  it("does not depend on the order of object keys", () => {
    expect(canonicalJson({ b: 1, a: { d: 2, c: 3 } })).toBe('{"a":{"c":3,"d":2},"b":1}');
    expect(cacheKeyOf({ ...preimage })).toBe(cacheKeyOf(JSON.parse(JSON.stringify(preimage)) as Preimage));
  });

  it("changes with every field", () => {
    const base = cacheKeyOf(preimage);
    const variants: Array<Partial<Preimage>> = [
      { kind: "other" },
      { version: 2 },
      { arch: "aarch64" },
      { sourceDateEpoch: 1 },
      { options: { from: { type: "dir", sha256: "ab" } } },
      { inputs: [{ kind: "rootfs", digest: "sha256:12" }] },
      { tools: { cp: "cp 9.2" } },
    ];
    const keys = variants.map((variant) => cacheKeyOf({ ...preimage, ...variant }));
    expect(new Set([base, ...keys]).size).toBe(variants.length + 1);
  });

  it("reports which fields differ", () => {
    expect(diffJson(preimage, { ...preimage, version: 2, tools: { cp: "cp 9.2" } }).map((change) => change.path)).toEqual(["tools.cp", "version"]);
  });
});

describe("--json events", () => {
  it("prints only NDJSON: a step event per finished step, and done last", async () => {
    const dir = chainProject();
    const result = await osbuild(args(dir), { cwd: dir });
    const lines = result.stdout.trim().split("\n");
    expect(lines.length).toBe(result.events.length); // every line is JSON
    const steps = result.events.filter((event) => event.type === "step");
    expect(steps).toHaveLength(4);
    for (const event of steps) {
      expect(Object.keys(event).sort()).toEqual(expect.arrayContaining(["id", "key", "kind", "ms", "status", "type"]));
      expect(typeof event.id).toBe("string");
      expect(typeof event.kind).toBe("string");
      expect(["built", "cached", "failed"]).toContain(event.status);
      expect(event.key).toMatch(/^[0-9a-f]{64}$/);
      expect(typeof event.ms).toBe("number");
    }
    const done = result.events[result.events.length - 1]!;
    expect(done).toEqual({ type: "done", ok: true, outputs: { initrd: join(dir, "out/initrd"), rootfs: join(dir, "out/rootfs") } });
    expect(existsSync(join(dir, "out/initrd"))).toBe(true);
  });

  it("reports a failing step with status failed, exit 1, and skips what depends on it", async () => {
    const dir = tempDir("failing");
    writeFiles(dir, {
      "base/etc/hostname": "x\n",
      "osbuild.config.ts": `import { defineConfig, defineStep, fetchBase, mkCpio } from "osbuild";

const broken = defineStep({
  kind: "broken",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  async run(_options: {}, ctx) {
    await ctx.exec("sh", ["-c", "echo 'disk full, try again' >&2; exit 3"]);
  },
});

export default defineConfig(() => {
  const base = fetchBase({ directory: "./base" });
  return { good: mkCpio(base, { id: "good" }), bad: mkCpio(broken(base), { id: "bad" }) };
});
`,
    });
    const result = await osbuild([...args(dir), "--keep-going"], { cwd: dir });
    expect(result.code).toBe(1);
    const failed = result.events.find((event) => event.type === "step" && event.status === "failed")!;
    expect(failed).toMatchObject({ id: "broken", kind: "broken" });
    expect(failed.error).toContain("sh exited with status 3:\ndisk full, try again");
    expect(readFileSync(failed.log as string, "utf8")).toContain("disk full, try again");
    expect(result.events.find((event) => event.type === "step-skipped")).toMatchObject({ id: "bad" });
    expect(statuses(result).good).toBe("built");
    expect(result.events[result.events.length - 1]).toMatchObject({ type: "done", ok: false });
  });
});
