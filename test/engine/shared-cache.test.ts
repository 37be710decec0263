// The shared cache on a small config (no distribution base), against Debian's docker-registry:
// where the registries come from (flags, environment, config), a registry that is down, TLS
// with a private CA, and entries that do not hold up, which are refused and built here.

import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { entryTag } from "../../engine/remote/format.js";
import type { CacheKey } from "../../engine/key.js";
import { startRegistry, type TestRegistry } from "../oci-registry-harness.js";
import { osbuild, statuses, tempDir, writeFiles, type RunResult } from "../helpers.js";

const CONFIG = `import { defineConfig, fetchBase, mkCpio, overlay } from "osbuild";

export default defineConfig({
  sourceDateEpoch: 1700000000,
  CACHE
  targets: () => {
    const base = fetchBase({ directory: "./base", id: "base" });
    const rootfs = overlay(base, { from: "./extra", id: "extra" });
    return { initrd: mkCpio(rootfs, { compression: "none", checks: false, id: "initrd" }), rootfs };
  },
});
`;

function project(cache = ""): string {
  const dir = tempDir("small");
  writeFiles(dir, {
    "osbuild.config.ts": CONFIG.replace("CACHE", cache),
    "base/etc/os-release": "ID=small\n",
    "base/bin/hello": "#!/bin/sh\necho hello\n",
    "extra/etc/motd": `${"welcome ".repeat(100)}\n`,
  });
  return dir;
}

/**
 * A build on a machine of its own: the project's cache is emptied first, all but the memo of
 * the config's type check (which only saves seconds). OSBUILD_CACHE_FROM and OSBUILD_CACHE_TO
 * are unset unless given.
 */
function build(dir: string, args: string[] = [], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  const cache = join(dir, "cache");
  if (existsSync(cache)) for (const name of readdirSync(cache)) if (name !== "memo") rmSync(join(cache, name), { recursive: true, force: true });
  rmSync(join(cache, "memo", "fingerprints.json"), { force: true });
  return osbuild(["run", "--json", "--cache-dir", cache, ...args], { cwd: dir, env: { OSBUILD_CACHE_FROM: undefined, OSBUILD_CACHE_TO: undefined, ...env } });
}

const remoteOf = (result: RunResult): Record<string, unknown> => Object.fromEntries(result.events.filter((event) => event.type === "step").map((event) => [event.id, event.remote]));
const warnings = (result: RunResult): string[] => result.events.filter((event) => event.type === "warning").map((event) => String(event.message));

describe("the shared cache on a small config", () => {
  let registry: TestRegistry;
  let tls: TestRegistry;
  beforeAll(async () => {
    [registry, tls] = await Promise.all([startRegistry(), startRegistry({ tls: true })]);
  }, 60_000);
  afterAll(() => Promise.all([registry?.stop(), tls?.stop()]));

  it("takes its registries from the flags, else the environment, else the config", async () => {
    const fromConfig = `oci://${registry.address}/from-config`;
    const dir = project(`cache: { from: ${JSON.stringify(fromConfig)}, to: ${JSON.stringify(fromConfig)} },`);
    const pushed = await build(dir);
    expect(pushed.code, pushed.stderr).toBe(0);
    const pulled = await build(dir);
    expect(remoteOf(pulled)).toEqual({ base: fromConfig, extra: fromConfig, initrd: fromConfig });

    // The environment overrides the config; an empty value turns the config's off.
    const fromEnv = `oci://${registry.address}/from-env`;
    const viaEnv = await build(dir, [], { OSBUILD_CACHE_TO: fromEnv, OSBUILD_CACHE_FROM: "" });
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
    expect(Object.values(remoteOf(viaEnv))).toEqual([undefined, undefined, undefined]);
    expect(remoteOf(await build(dir, [], { OSBUILD_CACHE_FROM: `oci://${registry.address}/nothing-here, ${fromEnv}` }))).toEqual({ base: fromEnv, extra: fromEnv, initrd: fromEnv });
    // The flags override both.
    expect(Object.values(remoteOf(await build(dir, ["--cache-from", ""], { OSBUILD_CACHE_FROM: fromEnv })))).toEqual([undefined, undefined, undefined]);
  });

  it("refuses references that are not oci://HOST/REPOSITORY, before anything runs", async () => {
    const dir = project();
    for (const [args, message] of [
      [["--cache-from", `${registry.address}/x`], /must start with oci:\/\//],
      [["--cache-to", `oci://${registry.address}/x:latest`], /names its tags itself/],
    ] as const) {
      const result = await build(dir, [...args]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(message);
    }
    const inConfig = await build(project('cache: { to: "ghcr.io/team/x" },'));
    expect(inConfig.code).toBe(2);
    expect(inConfig.stderr).toMatch(/osbuild\.config\.ts:\d+:\d+: error: the config's cache: cache-to ghcr\.io\/team\/x: it must start with oci:\/\//);
  });

  it("warns once when the registry is down, and builds here", async () => {
    const down = `oci://127.0.0.1:9/nothing`; // the discard port: nothing listens
    const result = await build(project(), ["--cache-from", down, "--cache-to", down]);
    expect(result.code, result.stderr).toBe(0);
    expect(statuses(result)).toEqual({ base: "built", extra: "built", initrd: "built" });
    expect(warnings(result)).toHaveLength(1);
    expect(warnings(result)[0]).toMatch(/^shared cache oci:\/\/127\.0\.0\.1:9\/nothing: cannot reach registry 127\.0\.0\.1:9: .*ECONNREFUSED.*the build goes on without it$/);
  });

  it("speaks TLS to a registry with a private CA given with --registry-ca, and goes on without it when the CA is missing", async () => {
    const remote = `oci://${tls.address}/small`;
    const dir = project();
    const pushed = await build(dir, ["--cache-to", remote, "--registry-ca", tls.caPath!]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(warnings(pushed)).toEqual([]);
    const pulled = await build(dir, ["--cache-from", remote, "--registry-ca", tls.caPath!]);
    expect(remoteOf(pulled)).toEqual({ base: remote, extra: remote, initrd: remote });
    const untrusted = await build(dir, ["--cache-from", remote]);
    expect(untrusted.code, untrusted.stderr).toBe(0);
    expect(statuses(untrusted)).toEqual({ base: "built", extra: "built", initrd: "built" });
    expect(warnings(untrusted).join("\n")).toMatch(/TLS connection to registry .* failed.*--registry-ca FILE/);
  });

  it("refuses an entry whose record is not the step's, and builds that step here", async () => {
    const remote = `oci://${registry.address}/forged`;
    const dir = project();
    const pushed = await build(dir, ["--cache-to", remote]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const keys = Object.fromEntries(pushed.events.filter((event) => event.type === "step").map((event) => [event.id, event.key as CacheKey]));
    // A registry that answers for the initrd's key with the overlay's entry (a valid one, for another key).
    const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
    const other = await fetch(`http://${registry.address}/v2/forged/manifests/${entryTag(keys.extra!)}`, { headers: accept });
    const forged = await fetch(`http://${registry.address}/v2/forged/manifests/${entryTag(keys.initrd!)}`, { method: "PUT", body: Buffer.from(await other.arrayBuffer()), headers: { "content-type": accept.accept } });
    expect(forged.status).toBe(201);
    const pulled = await build(dir, ["--cache-from", remote]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(statuses(pulled)).toEqual({ base: "cached", extra: "cached", initrd: "built" });
    expect(warnings(pulled)).toEqual([expect.stringMatching(/refused its cache entry in oci:.*its manifest is for the key .*; building it here/)]);
    const initrd = readFileSync(join(dir, "out/initrd"));
    expect(createHash("sha256").update(initrd).digest("hex")).toBe(String(pushed.events.find((event) => event.type === "output" && event.target === "initrd")?.digest).slice("sha256:".length));
  });
});
