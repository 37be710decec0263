// osbuild doctor: every tool and machine requirement the config's steps declare, checked in
// one go, each once however many steps need it, with the missing packages on one apt-get
// line; and the standard library's requirements (user namespaces and subordinate ids
// without root, binfmt for another architecture) looked up on this very machine.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { NOBODY, isRoot, osbuild, sh, tempDir, writeFiles } from "../helpers.js";

const NEEDY = `import { defineConfig, defineStep, fetchBase } from "osbuild";

const needy = defineStep({
  kind: "needy",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  tools: [{ command: "sh", package: "dash" }, { command: "osbuild-no-such-tool", package: "osbuild-no-such-package" }],
  requirements: (_options: {}, machine) => [
    { name: "a met requirement", check: () => undefined },
    { name: "an unmet requirement", check: () => ({ problem: \`not met for \${machine.arch}\`, fix: "do the thing", packages: ["osbuild-fix-package"] }) },
  ],
  async run() {},
});

const other = defineStep({
  kind: "other",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  tools: [{ command: "osbuild-no-such-tool", package: "osbuild-no-such-package" }],
  // The same name: checked once, for both steps (this check would throw).
  requirements: () => [{ name: "an unmet requirement", check: () => { throw new Error("checked twice"); } }],
  async run() {},
});

export default defineConfig(() => {
  const base = fetchBase({ directory: "./tree" });
  return { a: needy(base), b: other(base) };
});
`;

async function doctor(config: string, options: { asUser?: number; env?: Record<string, string> } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = tempDir("doctor");
  writeFiles(dir, { "osbuild.config.ts": config, "tree/etc/hostname": "x\n" });
  if (options.asUser !== undefined) sh(`chown -R ${options.asUser} ${dir}`);
  return osbuild(["doctor", "--cache-dir", join(dir, "cache")], { cwd: dir, ...options });
}

/** The line of `stdout` about `label`, with its status and the steps that need it. */
function line(stdout: string, label: string): string {
  const found = stdout.split("\n").find((text) => new RegExp(`^  (ok|missing) +${label.replace(/[()]/g, "\\$&")}  `).test(text));
  expect(found, `${label} in:\n${stdout}`).toBeDefined();
  return found!.replace(/ {2,}/g, "  ").trim();
}

describe("osbuild doctor", () => {
  it("checks every declared tool and requirement once, and prints one apt-get line", async () => {
    const result = await doctor(NEEDY);
    expect(result.code, result.stderr).toBe(1);
    expect(line(result.stdout, "cp (coreutils)")).toBe("ok  cp (coreutils)  fetch-base");
    expect(line(result.stdout, "sh (dash)")).toBe("ok  sh (dash)  needy");
    expect(line(result.stdout, "osbuild-no-such-tool (osbuild-no-such-package)")).toBe("missing  osbuild-no-such-tool (osbuild-no-such-package)  needy, other");
    expect(line(result.stdout, "a met requirement")).toBe("ok  a met requirement  needy");
    expect(line(result.stdout, "an unmet requirement")).toBe("missing  an unmet requirement  needy, other");
    expect(result.stdout).toContain(`not met for ${process.arch === "x64" ? "x86_64" : "aarch64"}\n           fix: do the thing\n`);
    expect(result.stdout).not.toContain("checked twice");
    expect(result.stdout).toMatch(/\nbuilds as .+ will fail until these 2 are fixed\n/);
    expect(result.stdout).toContain(`\n  ${isRoot ? "" : "sudo "}apt-get install osbuild-fix-package osbuild-no-such-package\n`);
  });

  it("says everything is here when it is, and looks for programs where the steps will", async () => {
    const config = `import { defineConfig, fetchBase, mkCpio, mkExt4 } from "osbuild";
export default defineConfig(() => { const base = fetchBase({ directory: "./tree" }); return { initrd: mkCpio(base, { checks: false }), image: mkExt4(base, { checks: false }) }; });
`;
    const result = await doctor(config);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain("everything the config's steps need is here: builds as ");
    expect(result.stdout).not.toContain("apt-get");

    // OSBUILD_PATH replaces the places steps take their programs from: mke2fs is in /usr/sbin.
    const narrow = await doctor(config, { env: { OSBUILD_PATH: "/usr/bin:/bin" } });
    expect(narrow.code).toBe(1);
    expect(line(narrow.stdout, "mke2fs (e2fsprogs)")).toBe("missing  mke2fs (e2fsprogs)  mk-ext4");
    expect(narrow.stdout).toContain("not installed (looked in /usr/bin:/bin)");
    expect(narrow.stdout).toMatch(/\n {2}(sudo )?apt-get install e2fsprogs\n/);
  });

  it("asks for binfmt emulation when the config is for another architecture", async () => {
    const result = await doctor(`import { defineConfig, fetchBase, run } from "osbuild";
export default defineConfig({ arch: "aarch64", targets: () => ({ rootfs: run(fetchBase({ distro: "debian", init: "agent" }), { script: "true" }) }) });
`);
    let registered = "";
    try {
      registered = readFileSync("/proc/sys/fs/binfmt_misc/qemu-aarch64", "utf8");
    } catch {
      /* not registered, or binfmt_misc not mounted */
    }
    const works = /^enabled$/m.test(registered) && /^flags:.*F/m.test(registered);
    expect(line(result.stdout, "aarch64 programs on x86_64 (binfmt)")).toBe(`${works ? "ok" : "missing"}  aarch64 programs on x86_64 (binfmt)  fetch-base, run`);
    // run's sandbox is a user namespace even for root; mmdebstrap as root needs neither that nor subordinate ids.
    if (isRoot) {
      expect(line(result.stdout, "user namespaces")).toMatch(/  run$/);
      expect(result.stdout).not.toMatch(/^  (ok|missing) +subordinate ids/m);
    }
  });

  it.runIf(isRoot)("checks user namespaces and subordinate ids for a user who builds without root", async () => {
    const result = await doctor(`import { defineConfig, fetchBase, mkCpio } from "osbuild";
export default defineConfig(() => ({ initrd: mkCpio(fetchBase({ distro: "debian", init: "agent" }), { checks: false }) }));
`, { asUser: NOBODY });
    expect(result.stdout, result.stderr).toContain("building as nobody (unprivileged)");
    // What the machine really allows, found here the way mmdebstrap --mode=unshare needs it.
    const unshare = spawnSync("setpriv", [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "unshare", "--user", "--map-root-user", "true"]);
    const range = (file: string): number => Math.max(0, ...readFileSync(file, "utf8").split("\n").filter((entry) => /^(nobody|65534):/.test(entry)).map((entry) => Number(entry.split(":")[2])));
    const hasIds = range("/etc/subuid") >= 65536 && range("/etc/subgid") >= 65536;
    expect(line(result.stdout, "user namespaces")).toBe(`${unshare.status === 0 ? "ok" : "missing"}  user namespaces  fetch-base`);
    expect(line(result.stdout, "subordinate ids")).toBe(`${hasIds ? "ok" : "missing"}  subordinate ids  fetch-base`);
    if (!hasIds) expect(result.stdout).toContain("fix: as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody");
    expect(result.code).toBe(unshare.status === 0 && hasIds ? 0 : 1);
  });
});
