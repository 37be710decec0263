// Loading configs: TypeScript with imports, type errors with positions, graph errors that
// name the steps, parameters.

import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { osbuild, tempDir, writeFiles } from "../helpers.js";

const base = { "base/etc/hostname": "test\n" };

function project(config: string, extra: Record<string, string> = {}): string {
  const dir = tempDir("config");
  writeFiles(dir, { ...base, "osbuild.config.ts": config, ...extra });
  return dir;
}

const cache = (dir: string): string[] => ["--cache-dir", join(dir, "cache")];

describe("config loading", () => {
  it("loads a TypeScript config that imports relative .ts files and osbuild itself", async () => {
    const dir = project(
      `import { defineConfig, mkCpio } from "osbuild";
import { baseWithFiles } from "./lib/steps.ts";
import { FILES } from "./lib/constants";

export default defineConfig(() => ({ initrd: mkCpio(baseWithFiles(FILES)) }));
`,
      {
        "lib/steps.ts": `import { fetchBase, overlay, type Rootfs } from "osbuild";
export function baseWithFiles(dir: string): Rootfs {
  return overlay(fetchBase({ directory: "./base" }), { from: dir });
}
`,
        "lib/constants.ts": `export const FILES: string = "./files";\n`,
        "files/etc/motd": "hi\n",
      },
    );
    const result = await osbuild(["check", ...cache(dir)], { cwd: dir });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("ok (3 steps, targets: initrd)");
  });

  it("reports type errors as file:line:col, exit 2, and never builds", async () => {
    const dir = project(`import { defineConfig, fetchBase, mkCpio } from "osbuild";

export default defineConfig(() => {
  const base = fetchBase({ directory: "./base" });
  const initrd = mkCpio(base);
  return { again: mkCpio(initrd), typo: mkCpio(base, { compression: "lz5" }) };
});
`);
    for (const command of ["check", "run"]) {
      const result = await osbuild([command, ...cache(dir), "--out", join(dir, "out")], { cwd: dir });
      expect(result.code).toBe(2);
      expect(result.stderr).toContain("osbuild.config.ts:6:26 - error TS2345: Argument of type 'Blob' is not assignable to parameter of type 'Rootfs'.");
      expect(result.stderr).toMatch(/osbuild\.config\.ts:6:56 - error TS2322: Type '"lz5"' is not assignable/);
      expect(result.stderr).toContain("2 type errors");
    }
    const json = await osbuild(["run", "--json", ...cache(dir)], { cwd: dir });
    expect(json.events).toEqual([{ type: "done", ok: false, outputs: {}, error: "the config has 2 type errors; nothing was built" }]);
  });

  it("reports errors thrown while the config runs at their line", async () => {
    const dir = project(`import { defineConfig, fetchBase, mkCpio } from "osbuild";

const levels: number[] = [];
export default defineConfig(() => {
  const base = fetchBase({ directory: "./base" });
  if (levels.length === 0) throw new Error("no levels configured");
  return { initrd: mkCpio(base) };
});
`);
    const result = await osbuild(["run", ...cache(dir)], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("osbuild.config.ts:6:34: error: evaluating the config failed: no levels configured");
  });

  it("rejects bad step options at the call site", async () => {
    const dir = project(`import { defineConfig, fetchBase, mkCpio } from "osbuild";

export default defineConfig(() => {
  const base = fetchBase({ directory: "./base", tarball: "./base.tar" } as never);
  return { initrd: mkCpio(base) };
});
`);
    const result = await osbuild(["graph", ...cache(dir)], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("osbuild.config.ts:4:16: error: fetch-base: give exactly one of 'distro', 'image', 'directory' or 'tarball' (got directory and tarball)");
  });

  it("names both steps of a duplicate id, with their positions", async () => {
    const dir = project(`import { defineConfig, fetchBase, overlay, mkCpio } from "osbuild";

export default defineConfig(() => {
  const base = fetchBase({ directory: "./base", id: "root" });
  const more = overlay(base, { from: "./base", id: "root" });
  return { initrd: mkCpio(more) };
});
`);
    const result = await osbuild(["graph", ...cache(dir)], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("two steps have the id 'root': fetch-base at osbuild.config.ts:4:16 and overlay at osbuild.config.ts:5:16");
  });

  it("names the steps of a cycle, with their positions", async () => {
    const dir = project(`import { defineConfig, overlay, mkCpio, ref } from "osbuild";

export default defineConfig(() => {
  const first = overlay(ref.rootfs("third"), { from: "./base", id: "first" });
  const second = overlay(first, { from: "./base", id: "second" });
  const third = overlay(second, { from: "./base", id: "third" });
  return { initrd: mkCpio(third) };
});
`);
    const result = await osbuild(["graph", ...cache(dir)], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/the steps form a cycle: (first|second|third) → (first|second|third) → (first|second|third) → \1/);
    for (const [id, line] of [["first", 4], ["second", 5], ["third", 6]] as const) expect(result.stderr).toContain(`${id} at osbuild.config.ts:${line}:`);
  });

  it("reports a reference to an unknown step", async () => {
    const dir = project(`import { defineConfig, mkCpio, ref } from "osbuild";

export default defineConfig(() => ({ initrd: mkCpio(ref.rootfs("nowhere")) }));
`);
    const result = await osbuild(["graph", ...cache(dir)], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("osbuild.config.ts:3:57: error: step 'mk-cpio': no step has the id 'nowhere'");
  });

  it("prints the graph as DOT and Mermaid", async () => {
    const dir = project(`import { defineConfig, fetchBase, overlay, mkCpio } from "osbuild";

export default defineConfig(() => {
  const rootfs = overlay(fetchBase({ directory: "./base" }), { from: "./base" });
  return { initrd: mkCpio(rootfs), rootfs };
});
`);
    const dot = await osbuild(["graph", ...cache(dir)], { cwd: dir });
    expect(dot.code).toBe(0);
    expect(dot.stdout).toContain('"fetch-base" -> "overlay" [label="rootfs"];');
    expect(dot.stdout).toContain('"overlay" -> "mk-cpio" [label="rootfs"];');
    expect(dot.stdout).toContain('"mk-cpio" -> "target:initrd" [label="blob"];');
    const mermaid = await osbuild(["graph", "--format", "mermaid", ...cache(dir)], { cwd: dir });
    expect(mermaid.stdout).toMatch(/^flowchart LR\n/);
    expect(mermaid.stdout).toContain("n0 -- rootfs --> n1");
  });

  describe("parameters", () => {
    const config = `import { defineConfig, fetchBase, overlay, mkCpio, param } from "osbuild";

export default defineConfig({
  params: {
    files: param.path("./files-a", "directory to add"),
    compression: param.choice(["gzip", "zstd", "none"], "gzip"),
  },
  targets: ({ files, compression }) => ({ initrd: mkCpio(overlay(fetchBase({ directory: "./base" }), { from: files }), { compression }) }),
});
`;

    it("uses defaults and takes --set overrides, typed", async () => {
      const dir = project(config, { "files-a/a": "a", "files-b/b": "b" });
      const first = await osbuild(["run", "--json", ...cache(dir)], { cwd: dir });
      expect(first.code).toBe(0);
      const second = await osbuild(["run", "--json", "--set", "files=./files-b", "--set", "compression=none", ...cache(dir)], { cwd: dir });
      expect(second.code).toBe(0);
      const built = second.events.filter((event) => event.type === "step" && event.status === "built").map((event) => event.id);
      expect(built).toEqual(["overlay", "mk-cpio"]);
    });

    it("rejects unknown names and bad values", async () => {
      const dir = project(config, { "files-a/a": "a" });
      const unknown = await osbuild(["run", "--set", "colour=blue", ...cache(dir)], { cwd: dir });
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain("--set colour=blue: the config has no parameter 'colour' (parameters: compression, files)");
      const bad = await osbuild(["run", "--set", "compression=lz4", ...cache(dir)], { cwd: dir });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("--set compression=lz4: expected one of gzip, zstd, none");
    });
  });

  it("says what to do when there is no config", async () => {
    const dir = tempDir("noconfig");
    const result = await osbuild(["run"], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/config file .*osbuild\.config\.ts does not exist/);
    expect(result.stderr).toContain("hint: run osbuild in a directory with an osbuild.config.ts, or pass --config FILE");
  });

  it("rejects unknown options and commands with exit 2", async () => {
    const dir = tempDir("usage");
    expect((await osbuild(["run", "--frobnicate"], { cwd: dir })).code).toBe(2);
    expect((await osbuild(["transmogrify"], { cwd: dir })).code).toBe(2);
  });
});
