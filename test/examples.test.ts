// Every example type-checks; those that need nothing but the mirror are built (sharing one
// cache, so their common Debian base is made once), and the zstd initrd boots.

import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO, osbuild, statuses, tempDir } from "./helpers.js";

const EXAMPLES = join(REPO, "examples");
const kernelVersion = readdirSync("/lib/modules").find((name) => existsSync(join("/lib/modules", name, "modules.dep")))!;

describe("examples", () => {
  const cache = tempDir("examples-cache");
  const configOf = (name: string): string => join(EXAMPLES, name, "osbuild.config.ts");

  it("all type-check", async () => {
    const names = readdirSync(EXAMPLES);
    expect(names.length).toBeGreaterThanOrEqual(6);
    for (const name of names) {
      const result = await osbuild(["check", "--config", configOf(name), "--cache-dir", cache], { cwd: REPO });
      expect(result.code, `${name}: ${result.stderr}`).toBe(0);
    }
  });

  it("agent-init-initrd builds a zstd initrd that boots", async () => {
    const out = tempDir("example-out");
    const run = await osbuild(["run", "--json", "--config", configOf("agent-init-initrd"), "--cache-dir", cache, "--out", out], { cwd: REPO });
    expect(run.code, run.stderr).toBe(0);
    const boot = await osbuild(["boot", join(out, "initrd"), "--cache-dir", cache, "--expect", "OSBUILD-TEST-AGENT: started as /init (pid 1)", "--timeout", "240"], { cwd: REPO });
    expect(boot.code, boot.stderr).toBe(0);
  }, 600_000);

  it("custom-step and kernel-modules build on the same cached base", async () => {
    for (const [name, sets] of [["custom-step", []], ["kernel-modules", ["--set", `kernel=${kernelVersion}`]]] as const) {
      const run = await osbuild(["run", "--json", "--config", configOf(name), "--cache-dir", cache, "--out", tempDir("example-out"), ...sets], { cwd: REPO });
      expect(run.code, `${name}: ${run.stderr}`).toBe(0);
      expect(statuses(run)["fetch-base"]).toBe("cached");
    }
  }, 600_000);

  it("dracut builds the dracut method's initrd and an image from it", async () => {
    const run = await osbuild(["run", "--json", "--config", configOf("dracut"), "--cache-dir", cache, "--out", tempDir("example-out"), "--set", `kernel=${kernelVersion}`], { cwd: REPO });
    expect(run.code, run.stderr).toBe(0);
    expect(Object.values(statuses(run)).every((status) => status === "built")).toBe(true);
  }, 600_000);
});
