// Guests of other architectures built on this x86 machine and booted under emulation: the
// default config for arm64 (a real foreign mmdebstrap, built once for the whole file and
// reused), an s390x initrd, step results never shared between architectures, and a
// multi-arch image base giving each architecture its own manifest.
// Needs what scripts/setup.sh makes: the binfmt handlers, Debian's guest kernels in
// build/guest-kernels/ARCH and the test agent cross-built in build/agent/ARCH.

import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { AGENT, REPO, failure, osbuild, type RunResult, sh, statuses, tempDir, writeFiles } from "../helpers.js";
import { makeOciLayout, pushOciLayout, startRegistry } from "../oci-registry-harness.js";

/** What scripts/setup.sh made for `arch`; a clear failure (never a skip) when it is missing. */
function guestKit(arch: "aarch64" | "s390x"): { kernel: string; agent: string } {
  const kernel = join(REPO, "build/guest-kernels", arch);
  const agent = join(REPO, "build/agent", arch, "kata-agent");
  for (const path of [join(kernel, ".complete"), agent]) {
    if (!existsSync(path)) throw new Error(`${path} is missing: run scripts/setup.sh (it fetches Debian's ${arch} kernel and cross-builds the test agent)`);
  }
  return { kernel, agent };
}

const sha256 = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex");
const stepKeys = (result: RunResult): string[] => result.events.filter((event) => event.type === "step").map((event) => String(event.key));
const MARKER = "OSBUILD-TEST-AGENT: started as";

describe("an arm64 guest from the default config", () => {
  const arm64 = guestKit("aarch64");
  let project: string;
  let cache: string;
  let build: RunResult;
  const armArgs = (): string[] => ["--arch", "aarch64", "--set", `agent=${arm64.agent}`, "--cache-dir", cache];

  beforeAll(async () => {
    project = tempDir("arm64");
    cache = join(project, "cache");
    copyFileSync(join(REPO, "osbuild.config.ts"), join(project, "osbuild.config.ts"));
    build = await osbuild(["run", "--json", ...armArgs()], { cwd: project });
    if (build.code !== 0) throw new Error(`the arm64 build failed:\n${build.stdout}\n${build.stderr}`);
  }, 900_000);

  it("boots its agent-as-init initrd under qemu-system-aarch64, the agent printing its marker as pid 1", async () => {
    const boot = await osbuild(["boot", "initrd", ...armArgs(), "--kernel", arm64.kernel, "--expect", `${MARKER} /init (pid 1)`, "--timeout", "240"], { cwd: project });
    expect(boot.code, boot.stdout + boot.stderr).toBe(0);
    expect(boot.stderr + boot.stdout).toMatch(/\(initrd, aarch64\) with \S+vmlinuz-\S+-arm64 in qemu-system-aarch64 on tcg/);
  }, 300_000);

  it("boots its disk image through virtio-blk", async () => {
    const boot = await osbuild(["boot", "image", ...armArgs(), "--kernel", arm64.kernel, "--expect", `${MARKER} /sbin/init (pid 1)`, "--timeout", "240"], { cwd: project });
    expect(boot.code, boot.stdout + boot.stderr).toBe(0);
    expect(boot.stdout).toContain("osbuild-boot: mounted /dev/vda1 (ext4, ro)");
    expect(boot.stderr + boot.stdout).toMatch(/\(disk, aarch64\) .* in qemu-system-aarch64/);
  }, 300_000);

  it("rebuilds as a no-op, with the same outputs", async () => {
    const before = sha256(join(project, "out/initrd"));
    const again = await osbuild(["run", "--json", ...armArgs()], { cwd: project });
    expect(again.code, again.stderr).toBe(0);
    const all = statuses(again);
    expect(Object.keys(all).length).toBeGreaterThan(0);
    expect(Object.entries(all).filter(([, status]) => status !== "cached")).toEqual([]);
    expect(stepKeys(again).sort()).toEqual(stepKeys(build).sort());
    expect(sha256(join(project, "out/initrd"))).toBe(before);
  }, 300_000);

  it("refuses an x86 agent at install-agent, naming both architectures", async () => {
    const result = await osbuild(["run", "--json", "--arch", "aarch64", "--set", `agent=${AGENT}`, "--cache-dir", cache, "--out", join(project, "out-x86-agent")], { cwd: project });
    expect(result.code).toBe(1);
    expect(statuses(result)["fetch-base"]).toBe("cached");
    expect(failure(result, "install-agent")).toMatch(/is built for x86_64, but the rootfs is for aarch64/);
  }, 300_000);
});

describe("an s390x initrd", () => {
  it("boots under qemu-system-s390x, and its agent prints its marker", async () => {
    const s390x = guestKit("s390x");
    const project = tempDir("s390x");
    writeFiles(project, {
      "tree/etc/hostname": "guest\n",
      "osbuild.config.ts": `import { defineConfig, fetchBase, installAgent, mkCpio } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1735689600,
  arch: "s390x",
  targets: () => ({ initrd: mkCpio(installAgent(fetchBase({ directory: "./tree" }), { binary: ${JSON.stringify(s390x.agent)}, init: "agent" }), { compression: "gzip" }) }),
});
`,
    });
    const boot = await osbuild(["boot", "initrd", "--cache-dir", join(project, "cache"), "--kernel", s390x.kernel, "--expect", `${MARKER} /init (pid 1)`, "--timeout", "240"], { cwd: project });
    expect(boot.code, boot.stdout + boot.stderr).toBe(0);
    expect(boot.stderr + boot.stdout).toMatch(/\(initrd, s390x\) with \S+vmlinuz-\S+-s390x in qemu-system-s390x/);
  }, 300_000);
});

describe("one config for several architectures", () => {
  it("shares no step result between them, even from the same input tree", async () => {
    const project = tempDir("arches");
    const cache = join(project, "cache");
    writeFiles(project, {
      "tree/etc/hostname": "guest\n",
      "tree/usr/share/data": "the same bytes for every architecture\n",
      "osbuild.config.ts": `import { defineConfig, fetchBase, mkCpio, mkExt4 } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => {
    const rootfs = fetchBase({ directory: "./tree" });
    return { initrd: mkCpio(rootfs, { compression: "gzip" }), image: mkExt4(rootfs) };
  },
});
`,
    });
    const runFor = (arch: string): Promise<RunResult> => osbuild(["run", "--json", "--arch", arch, "--cache-dir", cache, "--out", join(project, `out-${arch}`)], { cwd: project });
    const x86 = await runFor("x86_64");
    expect(x86.code, x86.stderr).toBe(0);
    const arm = await runFor("aarch64");
    expect(arm.code, arm.stderr).toBe(0);
    expect(Object.values(statuses(arm))).toEqual(["built", "built", "built"]);
    expect(stepKeys(arm).filter((key) => stepKeys(x86).includes(key))).toEqual([]);
    const armAgain = await runFor("aarch64");
    expect(Object.values(statuses(armAgain))).toEqual(["cached", "cached", "cached"]);
  }, 300_000);
});

describe("a multi-arch image as the base", () => {
  it("gives each architecture its own manifest from the index", async () => {
    const registry = await startRegistry();
    try {
      const layout = tempDir("multi-arch");
      makeOciLayout(layout, [
        { architecture: "amd64", files: { "etc/arch": "amd64\n" } },
        { architecture: "arm64", variant: "v8", files: { "etc/arch": "arm64\n" } },
        { architecture: "s390x", files: { "etc/arch": "s390x\n" } },
      ]);
      await pushOciLayout(layout, `${registry.address}/test/multi:1.0`, { all: true });
      const project = tempDir("image-arches");
      writeFiles(project, {
        "osbuild.config.ts": `import { defineConfig, fetchBase, mkCpio } from "osbuild";
export default defineConfig(() => ({ initrd: mkCpio(fetchBase({ image: "${registry.address}/test/multi:1.0" }), { compression: "gzip", checks: false }) }));
`,
      });
      for (const [arch, expected] of [["aarch64", "arm64"], ["s390x", "s390x"], ["x86_64", "amd64"]] as const) {
        const out = join(project, `out-${arch}`);
        const result = await osbuild(["run", "--arch", arch, "--cache-dir", join(project, "cache"), "--out", out], { cwd: project });
        expect(result.code, result.stderr).toBe(0);
        expect(sh(`zcat ${out}/initrd | cpio -i --quiet --to-stdout etc/arch`)).toBe(`${expected}\n`);
      }
    } finally {
      await registry.stop();
    }
  }, 300_000);
});
