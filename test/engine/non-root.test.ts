// No root needed: the same config built by an unprivileged user gives the same layers and
// initrd as a root build, and a disk image with the owners, modes and device nodes the
// layers say (on disk, without root, the tree can hold none of them).

import { chmodSync, cpSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AGENT, NOBODY, isRoot, osbuild, sh, tempDir, writeFiles } from "../helpers.js";

const CONFIG = `import { chmodSync, writeFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase, installAgent, mkCpio, mkExt4 } from "osbuild";

/** Things only root can do on disk: a device node, a file owned by someone else, a setuid bit. */
const privileged = defineStep({
  kind: "privileged",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  async run(_options: {}, ctx) {
    const tree = await ctx.tree();
    tree.mknod("/dev/console", { type: "char", major: 5, minor: 1, mode: 0o600 });
    writeFileSync(tree.path("/etc/shadow"), "root:*:1::::::\\n", { mode: 0o640 });
    tree.chown("/etc/shadow", 0, 42);
    writeFileSync(tree.path("/usr/bin/tool"), "#!/bin/sh\\n");
    chmodSync(tree.path("/usr/bin/tool"), 0o4755); // open() drops setuid for non-root: chmod keeps it
    tree.setXattr("/usr/bin/tool", "user.note", Buffer.from("kept"));
  },
});

export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => {
    const rootfs = installAgent(privileged(fetchBase({ directory: "./tree" })), { binary: ${JSON.stringify(AGENT)}, init: "agent", strip: false });
    return { rootfs, initrd: mkCpio(rootfs), image: mkExt4(rootfs, { daxHeader: false }) };
  },
});
`;

function project(owner: number): string {
  const dir = tempDir("nonroot");
  writeFiles(dir, { "osbuild.config.ts": CONFIG, "tree/etc/hostname": "guest\n", "tree/etc/passwd": "root:x:0:0::/root:/bin/sh\n" });
  sh("mkdir -p tree/dev tree/sbin tree/usr/bin", dir);
  sh(`chown -R ${owner}:${owner} ${dir}`);
  chmodSync(dir, 0o755);
  return dir;
}

describe.runIf(isRoot)("without root", () => {
  it("builds the same layers and initrd as root, and an image with the layers' owners and devices", async () => {
    // The same tree: owned by root for the root build, by nobody for nobody's.
    const asRoot = project(0);
    const unprivileged = project(NOBODY);
    const rootBuild = await osbuild(["run", "--cache-dir", join(asRoot, "cache")], { cwd: asRoot });
    expect(rootBuild.code, rootBuild.stderr).toBe(0);
    const build = await osbuild(["run", "--cache-dir", join(unprivileged, "cache")], { cwd: unprivileged, asUser: NOBODY });
    expect(build.code, build.stderr + build.stdout).toBe(0);

    expect(sh("cat out/rootfs/index.json", unprivileged)).toBe(sh("cat out/rootfs/index.json", asRoot));
    expect(sh("sha256sum < out/initrd", unprivileged)).toBe(sh("sha256sum < out/initrd", asRoot));

    const image = join(unprivileged, "out/image");
    const device = `${image}?offset=${1024 * 1024}`;
    sh(`e2fsck -fn '${device}'`);
    const stat = (path: string): string => sh(`debugfs -R 'stat ${path}' '${device}' 2>/dev/null`);
    expect(stat("/dev/console")).toMatch(/Type: character special .*Mode:\s+0600/s);
    expect(stat("/dev/console")).toMatch(/Device major\/minor number: 05:01/);
    expect(stat("/etc/shadow")).toMatch(/User:\s+0\s+Group:\s+42/);
    expect(stat("/usr/bin/tool")).toMatch(/Mode:\s+04755/);
    expect(stat("/etc/hostname")).toMatch(/User:\s+0\s+Group:\s+0/); // nobody's files are root's in the guest
    expect(sh(`debugfs -R 'ea_get /usr/bin/tool user.note' '${device}' 2>/dev/null`)).toContain("kept");
  }, 300_000);

  it("runs the run step in a user namespace, as root there", async () => {
    const dir = project(NOBODY);
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "bin"), { recursive: true });
    cpSync("/bin/busybox", join(tree, "bin/busybox"));
    sh("ln -s busybox bin/sh && ln -s busybox bin/id", tree);
    writeFiles(dir, {
      "osbuild.config.ts": `import { defineConfig, fetchBase, run } from "osbuild";
export default defineConfig(() => ({ rootfs: run(fetchBase({ directory: "./tree" }), { script: "id -u > /etc/uid" }) }));
`,
    });
    sh(`chown -R ${NOBODY}:${NOBODY} ${dir}`);
    const build = await osbuild(["run", "--cache-dir", join(dir, "cache")], { cwd: dir, asUser: NOBODY });
    expect(build.code, build.stderr + build.stdout).toBe(0);
    const index = JSON.parse(sh("cat out/rootfs/index.json", dir)) as { manifests: Array<{ digest: string }> };
    const manifest = JSON.parse(sh(`cat out/rootfs/blobs/sha256/${index.manifests[0]!.digest.slice(7)}`, dir)) as { layers: Array<{ digest: string }> };
    const top = manifest.layers[manifest.layers.length - 1]!.digest.slice(7);
    expect(sh(`tar --numeric-owner -tvf out/rootfs/blobs/sha256/${top} etc/uid`, dir)).toMatch(/^-rw-r--r-- 0\/0 /); // owned by root in the layer
    expect(sh(`tar -xOf out/rootfs/blobs/sha256/${top} etc/uid`, dir)).toBe("0\n");
  }, 120_000);
});
