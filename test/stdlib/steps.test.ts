// The smaller steps and options on a small busybox rootfs: run, the agent from a release
// tarball, provision's policy, hooks, tarballs and confidential fstab, osbuilder's checks
// before packing, and cache ls / prune.

import { chmodSync, copyFileSync, existsSync, readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { AGENT, failure, isRoot, osbuild, REPO, type RunResult, sh, statuses, tempDir, unpackOciLayout, writeFiles } from "../helpers.js";


/** A tree with busybox as /bin/sh and the few files provision edits. */
function busyboxProject(config: string): string {
  const dir = tempDir("steps");
  writeFiles(dir, {
    "osbuild.config.ts": config,
    "tree/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "tree/etc/group": "root:x:0:\n",
    "tree/etc/chrony/chrony.conf": "pool 2.debian.pool.ntp.org iburst\nmakestep 1 3\n",
    "tree/etc/fstab": "proc /proc proc defaults 0 0\ntmpfs /run tmpfs size=10% 0 0\n",
    "files/policy.rego": "package agent_policy\ndefault allow := true\n",
  });
  sh("mkdir -p tree/bin tree/sbin tree/var/lib/dpkg tree/var/log tree/var/cache/apt tree/tmp && chmod 1777 tree/tmp", dir);
  copyFileSync("/bin/busybox", join(dir, "tree/bin/busybox"));
  sh("chmod 755 tree/bin/busybox && for applet in sh ls cat echo id chown touch mkdir; do ln -s busybox tree/bin/$applet; done", dir);
  // Kata's release tarball layout: the agent and its units, zstd-compressed
  sh(`mkdir -p release/usr/bin release/usr/lib/systemd/system && cp ${AGENT} release/usr/bin/kata-agent && echo '[Unit]' > release/usr/lib/systemd/system/kata-agent.service && tar --numeric-owner -C release -cf - . | zstd -q -o kata-static-agent.tar.zst`, dir);
  // A guest hooks tarball, and an extra one
  sh("mkdir -p hooks/usr/share/oci/hooks/prestart extra/etc && echo '#!/bin/sh' > hooks/usr/share/oci/hooks/prestart/hook.sh && chmod 755 hooks/usr/share/oci/hooks/prestart/hook.sh && echo extra > extra/etc/extra && tar -C hooks -czf hooks.tar.gz . && tar -C extra -cf extra.tar .", dir);
  return dir;
}

const run = (dir: string, args: string[] = []): Promise<RunResult> => osbuild(["run", "--json", "--cache-dir", join(dir, "cache"), ...args], { cwd: dir });

describe("steps on a small rootfs", () => {
  describe("run, the agent tarball and provision's options", () => {
    let dir: string;
    let result: RunResult;
    let tree: string;
    beforeAll(async () => {
      dir = busyboxProject(`import { defineConfig, fetchBase, installAgent, provision, run } from "osbuild";

export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => {
    const base = fetchBase({ directory: "./tree" });
    const ran = run(base, { script: "echo guest > /etc/hostname; id -u > /etc/built-by; mkdir -p /srv/data; chown 1234:5678 /srv/data; touch /dev/null-written-by-run || true; cat /proc/self/uid_map > /etc/uid-map; env > /etc/run-env; ls /proc > /etc/processes" });
    const provisioned = provision(ran, { init: "systemd", agentPolicy: "./files/policy.rego", guestHooks: "./hooks.tar.gz", extraTarballs: ["./extra.tar"], confidential: true });
    return { rootfs: installAgent(provisioned, { tarball: "./kata-static-agent.tar.zst", init: "agent", version: "3.99.0" }) };
  },
});
`);
      // Something of osbuild's own environment that no step may pass on.
      result = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir, env: { OSBUILD_TEST_SECRET: "host-only" } });
      if (result.code !== 0) throw new Error(`build failed:\n${result.stdout}\n${result.stderr}`);
      tree = unpackOciLayout(join(dir, "out/rootfs"));
    }, 300_000);

    it("runs them in a user namespace of their own, where the host's root is no one, with only the sandbox's environment and processes", () => {
      const [inside, outside, count] = readFileSync(join(tree, "etc/uid-map"), "utf8").trim().split(/\s+/).map(Number);
      expect(inside).toBe(0);
      // As root the rootfs's ids live in an unused host range; without root, root is the builder.
      if (isRoot) expect([outside! >= 2 ** 30, count]).toEqual([true, 65536]);
      else expect([outside, count]).toEqual([process.getuid!(), 1]);
      const names = readFileSync(join(tree, "etc/run-env"), "utf8").trim().split("\n").map((line) => line.slice(0, line.indexOf("=")));
      expect(names.sort()).toEqual(["DEBIAN_FRONTEND", "HOME", "LANG", "OLDPWD", "PATH", "PWD", "SHLVL", "SOURCE_DATE_EPOCH"]);
      // PID 1 is the command's shell: no host process is in sight.
      const pids = readFileSync(join(tree, "etc/processes"), "utf8").split("\n").filter((name) => /^\d+$/.test(name));
      expect(pids.length).toBeLessThan(5);
    });

    it("runs commands inside the rootfs, as root there", () => {
      expect(readFileSync(join(tree, "etc/hostname"), "utf8")).toBe("guest\n");
      expect(readFileSync(join(tree, "etc/built-by"), "utf8")).toBe("0\n");
      if (isRoot) expect(sh("stat -c '%u:%g' srv/data", tree).trim()).toBe("1234:5678");
      // the namespace's /dev, /proc and mounts stayed out of the layer
      expect(sh("ls -A proc 2>/dev/null || true", tree).trim()).toBe("");
    });

    it("installs the agent from Kata's release tarball (zstd)", () => {
      const init = join(tree, "sbin/init");
      expect(readFileSync(init).includes("OSBUILD-TEST-AGENT")).toBe(true);
      expect((statSync(init).mode & 0o777).toString(8)).toBe("755");
      expect(readFileSync(join(tree, "var/lib/osbuilder/osbuilder.yaml"), "utf8")).toContain('  version: "3.99.0"\n  agent-is-init-daemon: "yes"');
    });

    it("installs the agent policy, guest hooks and extra tarballs", () => {
      expect(readFileSync(join(tree, "etc/kata-opa/policy.rego"), "utf8")).toContain("default allow := true");
      expect(readlinkSync(join(tree, "etc/kata-opa/default-policy.rego"))).toBe("policy.rego");
      expect((statSync(join(tree, "usr/share/oci/hooks/prestart/hook.sh")).mode & 0o777).toString(8)).toBe("755");
      expect(readFileSync(join(tree, "etc/extra"), "utf8")).toBe("extra\n");
    });

    it("writes the confidential guest's /run line, and the rest of setup_rootfs", () => {
      expect(readFileSync(join(tree, "etc/fstab"), "utf8")).toBe("proc /proc proc defaults 0 0\ntmpfs /run tmpfs nodev,nosuid,size=50% 0 0\n");
      expect(readFileSync(join(tree, "etc/chrony/chrony.conf"), "utf8")).toBe("# pool 2.debian.pool.ntp.org iburst\nmakestep 1 3\nrefclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0\n# Step the system clock instead of slewing it if the adjustment is larger than\n# one second, at any time\nmakestep 1 -1\n");
      expect(readlinkSync(join(tree, "var/tmp"))).toBe("../tmp");
      expect(sh("ls -A var/lib var/log var/cache 2>&1 || true", tree)).not.toMatch(/dpkg|apt/);
      expect(statSync(join(tree, "etc/resolv.conf")).size).toBe(0);
    });

    it("rebuilds only the run step and what follows when its script changes", async () => {
      const config = readFileSync(join(dir, "osbuild.config.ts"), "utf8").replace("echo guest >", "echo other >");
      writeFiles(dir, { "osbuild.config.ts": config });
      const again = await run(dir);
      expect(statuses(again)).toEqual({ "fetch-base": "cached", run: "built", provision: "built", "install-agent": "built" });
    });
  });

  it("unpacks extra tarballs with their times, and never sets a time outside the tree", async () => {
    const outside = tempDir("outside");
    const before = statSync(outside).mtimeMs;
    const dir = busyboxProject(`import { defineConfig, fetchBase, provision } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1735689600,
  targets: () => ({ rootfs: provision(fetchBase({ directory: "./tree" }), { init: "agent", chrony: false, extraTarballs: ["./times.tar"] }) }),
});
`);
    // opt/old keeps its 2001 times; x is a directory, then a symlink out of the tree, whose
    // directory time must not land on what the symlink points to
    sh(
      `mkdir -p t/opt/old && echo old > t/opt/old/file && touch -d @1000000000 t/opt/old/file t/opt/old && mkdir t/x && touch -d @1000000000 t/x && ` +
        `tar --numeric-owner -C t -cf times.tar ./opt ./x && rm -r t/x && ln -s ${outside} t/x && tar --numeric-owner -C t -rf times.tar ./x`,
      dir,
    );
    const result = await run(dir);
    expect(result.code, failure(result)).toBe(0);
    expect(statSync(outside).mtimeMs).toBe(before);
    const tree = unpackOciLayout(join(dir, "out/rootfs"));
    expect(statSync(join(tree, "opt/old/file")).mtimeMs).toBe(1000000000 * 1000);
    expect(statSync(join(tree, "opt/old")).mtimeMs).toBe(1000000000 * 1000);
    expect(readlinkSync(join(tree, "x"))).toBe(outside);
  });

  it("refuses to pack a Kata rootfs whose /sbin/init is missing, naming what should make it", async () => {
    const dir = busyboxProject(`import { defineConfig, fetchBase, installAgent, mkCpio, run } from "osbuild";

export default defineConfig(() => {
  const agent = installAgent(fetchBase({ directory: "./tree" }), { binary: ${JSON.stringify(AGENT)}, init: "agent" });
  return { initrd: mkCpio(run(agent, { script: "rm /sbin/init" })) };
});
`);
    const result = await run(dir);
    expect(result.code).toBe(1);
    expect(failure(result)).toBe('/sbin/init is not installed in the rootfs: installAgent (init: "agent") or the distro\'s init package (fetchBase with init: "systemd") should have made it');
  });

  it("packs a layer holding a file too large for a whole-buffer run through pigz, streaming; the initrd reads back whole", async () => {
    const dir = busyboxProject(`import { defineConfig, fetchBase, mkCpio, run } from "osbuild";
export default defineConfig(() => ({ initrd: mkCpio(run(fetchBase({ directory: "./tree" }), { script: "echo top > /etc/top" })) }));
`);
    sh("head -c 40M /dev/urandom > tree/var/big && sha256sum tree/var/big | cut -c1-64 > big.sha256", dir);
    const result = await run(dir);
    expect(result.code, failure(result)).toBe(0);
    const log = sh("cat cache/logs/*/*.log", dir).split(/^(?=\[.*\] # )/m).find((text) => text.includes("(mk-cpio v"))!;
    expect(log.match(/^\[.*\] \$ pigz /gm)).toHaveLength(1); // the base layer, all of it
    expect(log).toMatch(/^\[.*\] \$ libdeflate-gzip -c -6$/m); // the small layer above, and the tail
    const members = sh(`python3 ${join(REPO, "test/hostile/gzip_members.py")} ${join(dir, "out/initrd")}`).trim().split("\n");
    expect(members.length).toBe(3);
    const unpacked = tempDir("big-initrd");
    sh(`zcat ${join(dir, "out/initrd")} | cpio -idm --quiet --no-absolute-filenames`, unpacked);
    expect(sh("sha256sum var/big | cut -c1-64", unpacked)).toBe(readFileSync(join(dir, "big.sha256"), "utf8"));
    expect(readFileSync(join(unpacked, "etc/top"), "utf8")).toBe("top\n");
  });

  it("cache ls lists step results; prune --older-than 0 empties it; the next build rebuilds", async () => {
    const dir = busyboxProject(`import { defineConfig, fetchBase, mkCpio } from "osbuild";
export default defineConfig(() => ({ initrd: mkCpio(fetchBase({ directory: "./tree" })) }));
`);
    expect((await run(dir)).code).toBe(0);
    const cache = join(dir, "cache");
    const ls = await osbuild(["cache", "ls", "--cache-dir", cache], { cwd: dir });
    expect(ls.stdout).toMatch(/2 step results, 1 layers \([\d.]+ (KiB|MiB)\), 1 blobs/);
    expect(ls.stdout).toMatch(/fetch-base \(fetch-base\)/);
    const prune = await osbuild(["cache", "prune", "--older-than", "0", "--cache-dir", cache], { cwd: dir });
    expect(prune.code).toBe(0);
    expect(prune.stdout).toMatch(/removed 2 step result\(s\) unused for 0 days/);
    expect((await osbuild(["cache", "ls", "--cache-dir", cache], { cwd: dir })).stdout).toMatch(/0 step results, 0 layers/);
    expect(Object.values(statuses(await run(dir)))).toEqual(["built", "built"]);
    const all = await osbuild(["cache", "prune", "--all", "--cache-dir", cache], { cwd: dir });
    expect(all.stdout).toContain(`emptied ${cache}`);
  });

  it.runIf(existsSync("/lib/modules"))("addKernelModules never writes through what the base has at lib/modules/<version> (a symlink to anywhere on the host)", async () => {
    const kernelVersion = readdirSync("/lib/modules").find((name) => existsSync(join("/lib/modules", name, "modules.dep")))!;
    const sentinel = tempDir("modules-sentinel");
    chmodSync(sentinel, 0o777);
    const dir = busyboxProject(`import { addKernelModules, defineConfig, fetchBase } from "osbuild";
export default defineConfig(() => ({
  subset: addKernelModules(fetchBase({ directory: "./tree" }), { from: "/lib/modules", kernelVersion: "${kernelVersion}", modules: ["virtio_blk"] }),
  all: addKernelModules(fetchBase({ directory: "./tree" }), { from: "/lib/modules", kernelVersion: "${kernelVersion}" }),
}));
`);
    sh(`mkdir -p tree/lib/modules && ln -s ${sentinel} tree/lib/modules/${kernelVersion}`, dir);
    const result = await run(dir);
    expect(result.code, result.stdout).toBe(0);
    expect(readdirSync(sentinel)).toEqual([]);
    for (const target of ["subset", "all"]) {
      const tree = unpackOciLayout(join(dir, "out", target));
      expect(statSync(join(tree, "lib/modules", kernelVersion)).isDirectory()).toBe(true);
      expect(existsSync(join(tree, "lib/modules", kernelVersion, "kernel/drivers/block/virtio_blk.ko"))).toBe(true);
    }
  }, 300_000);
});
