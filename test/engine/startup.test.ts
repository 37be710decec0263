// What makes a rebuild start fast without trusting anything it should not: the compiled config
// kept in the cache (used only for the same bytes), the type-check memo (check always checks),
// and outputs that never share an inode with the store.

import { appendFileSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { osbuild, sh, statuses, tempDir, writeFiles } from "../helpers.js";

const CONFIG = `import { defineConfig, fetchBase, mkCpio, overlay } from "osbuild";
import { FILES } from "./lib/files";

export default defineConfig(() => ({ initrd: mkCpio(overlay(fetchBase({ directory: "./base" }), { from: FILES })) }));
`;

function project(): string {
  const dir = tempDir("startup");
  writeFiles(dir, {
    "osbuild.config.ts": CONFIG,
    "lib/files.ts": `import { fileURLToPath } from "node:url";\nexport const FILES: string = fileURLToPath(new URL("../files", import.meta.url));\n`,
    "base/etc/hostname": "test\n",
    "files/etc/motd": "hi\n",
  });
  return dir;
}

const run = (dir: string, extra: string[] = []) => osbuild(["run", "--json", "--cache-dir", join(dir, "cache"), "--out", join(dir, "out"), ...extra], { cwd: dir });
const compiled = (dir: string): string[] => readdirSync(join(dir, "cache", "compiled")).filter((name) => !name.includes(".tmp-"));

describe("start-up", () => {
  it("imports an unchanged config from its compiled form, and compiles it again when any of its files changes", async () => {
    const dir = project();
    const first = await run(dir);
    expect(first.code, first.stderr).toBe(0);
    expect(compiled(dir)).toHaveLength(1);
    // import.meta.url in a local module still names the .ts file (the overlay found ./files).
    expect(sh(`gzip -dc ${join(dir, "out/initrd")} | cpio -it 2>/dev/null`)).toContain("etc/motd");
    const again = await run(dir);
    expect(Object.values(statuses(again)).every((status) => status === "cached")).toBe(true);
    expect(compiled(dir)).toHaveLength(1);
    // A change in an imported module (not the config file itself) gives a new compiled form.
    appendFileSync(join(dir, "lib/files.ts"), "export const UNUSED = 1;\n");
    expect((await run(dir)).code).toBe(0);
    const newest = (names: string[]): string[] => names.sort((a, b) => statSync(join(dir, "cache", "compiled", b)).mtimeMs - statSync(join(dir, "cache", "compiled", a)).mtimeMs);
    const [newer] = newest(compiled(dir));
    expect(compiled(dir)).toHaveLength(2);
    // cache prune removes the outdated form and keeps the one the config's files now give.
    const prune = await osbuild(["cache", "prune", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(prune.stdout).toMatch(/removed 1 outdated compiled config\(s\)/);
    expect(compiled(dir)).toEqual([newer]);
    const after = await run(dir);
    expect(Object.values(statuses(after)).every((status) => status === "cached")).toBe(true);
    expect(compiled(dir)).toEqual([newer]);
  });

  it("reports a step's location in the .ts file when loaded from the compiled form", async () => {
    const dir = project();
    writeFileSync(join(dir, "osbuild.config.ts"), CONFIG.replace('{ from: FILES }', '{ from: "./missing" }'));
    for (let attempt = 0; attempt < 2; attempt++) {
      const result = await osbuild(["run", "--cache-dir", join(dir, "cache"), "--out", join(dir, "out")], { cwd: dir });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/osbuild\.config\.ts:4:\d+/);
      expect(result.stderr).not.toContain(".mjs");
    }
  });

  it("run trusts the type-check memo only for the same bytes and osbuild; check always type-checks", async () => {
    const dir = project();
    expect((await run(dir)).code).toBe(0);
    // Break the config, then make the memo claim that these very bytes were checked clean.
    const broken = CONFIG.replace("mkCpio(overlay(", "mkCpio(mkCpio(overlay(").replace("FILES }))", "FILES })))");
    writeFileSync(join(dir, "osbuild.config.ts"), broken);
    expect((await run(dir)).code).toBe(2); // the bytes changed: checked, and refused
    const memoFile = join(dir, "cache", "memo", "typecheck.json");
    const memo = JSON.parse(readFileSync(memoFile, "utf8")) as Record<string, { osbuild: string; files: Record<string, string> }>;
    const config = join(dir, "osbuild.config.ts");
    const identity = (JSON.parse(readFileSync(join(dir, "cache", "memo", "osbuild-types.json"), "utf8")) as { identity: string }).identity;
    const sha = sh(`sha256sum ${config}`).split(" ")[0]!;
    writeFileSync(memoFile, JSON.stringify({ ...memo, [config]: { osbuild: identity, files: { [config]: sha } } }));
    const check = await osbuild(["check", "--cache-dir", join(dir, "cache")], { cwd: dir });
    expect(check.code).toBe(2);
    expect(check.stderr).toContain("error TS2345");
  });

  it("writes outputs that share no inode with the store, so writing to one cannot change the cache", async () => {
    const dir = project();
    expect((await run(dir)).code).toBe(0);
    const initrd = join(dir, "out/initrd");
    expect(statSync(initrd).nlink).toBe(1);
    const stored = sh(`find ${join(dir, "cache", "content-v2")} -type f -size ${statSync(initrd).size}c`).trim().split("\n").filter(Boolean);
    expect(stored.length).toBeGreaterThan(0);
    const before = sh(`sha256sum ${stored.join(" ")}`);
    writeFileSync(initrd, "overwritten by the user\n"); // as root, modes would not have stopped this
    expect(sh(`sha256sum ${stored.join(" ")}`)).toBe(before);
    const again = await run(dir);
    expect(again.code).toBe(0);
    expect(again.events.find((event) => event.type === "output")).toMatchObject({ target: "initrd", written: true });
    expect(sh(`gzip -dc ${initrd} | cpio -it 2>/dev/null`)).toContain("etc/motd");
  });
});
