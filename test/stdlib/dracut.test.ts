// osbuilder's dracut build method with the machine's real dracut: the initrd is read back
// with GNU cpio and dracut's lsinitrd, unpacked by fromInitrd (osbuilder's dracut rootfs),
// built with the machine's kernel modules, and booted in QEMU with the agent as init and
// with systemd starting it.

import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { KATA_AGENT_SERVICE, KATA_CONTAINERS_TARGET } from "../../stdlib/units.js";
import { AGENT, failure, isRoot, osbuild, REPO, type RunResult, sh, statuses, tempDir, writeFiles } from "../helpers.js";

const DRACUT = join(REPO, "dist/stdlib/dracut.js");
const FROM_INITRD = join(REPO, "dist/stdlib/from-initrd.js");
const EPOCH = 1735689600;
const KERNEL_VERSION = readdirSync("/lib/modules").find((name) => existsSync(join("/lib/modules", name, "modules.dep")));
const KERNEL_IMAGE = KERNEL_VERSION && `/boot/vmlinuz-${KERNEL_VERSION}`;

const CONFIG = `import { defineConfig } from "osbuild";
import { dracut } from ${JSON.stringify(DRACUT)};
import { fromInitrd } from ${JSON.stringify(FROM_INITRD)};

const agent = ${JSON.stringify(AGENT)};

export default defineConfig({
  sourceDateEpoch: ${EPOCH},
  targets: () => {
    const initrd = dracut({ agent, init: "agent", id: "agent-init" });
    return {
      initrd,
      systemd: dracut({ agent, init: "systemd", id: "systemd-init" }),
      rootfs: fromInitrd(initrd),
    };
  },
});
`;

/** Builds a config whose one target is `call` (a dracut(...) expression). */
async function attempt(call: string, extra: Record<string, string | Buffer> = {}): Promise<RunResult> {
  const dir = tempDir("dracut-one");
  writeFiles(dir, {
    "osbuild.config.ts": `import { defineConfig } from "osbuild";
import { dracut } from ${JSON.stringify(DRACUT)};
export default defineConfig(() => ({ initrd: ${call} }));
`,
    ...extra,
  });
  return osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
}

/** Unpacks an uncompressed initrd with GNU cpio, as osbuilder's Makefile makes its dracut rootfs. */
function unpack(initrd: string): string {
  const dir = tempDir("dracut-initrd");
  sh(`cpio --extract --preserve-modification-time --make-directories --quiet < ${initrd}`, dir);
  return dir;
}

/** Symlinks resolved inside `root`, as in a chroot. */
function resolveIn(root: string, path: string): string {
  const resolved: string[] = [];
  let pending = path.split("/").filter(Boolean);
  while (pending.length > 0) {
    const part = pending.shift()!;
    const candidate = join(root, ...resolved, part);
    if (existsSync(candidate) || lstatSync(candidate, { throwIfNoEntry: false })) {
      if (lstatSync(candidate).isSymbolicLink()) {
        const target = readlinkSync(candidate);
        if (target.startsWith("/")) resolved.length = 0;
        pending = [...target.split("/").filter(Boolean), ...pending];
        continue;
      }
    }
    if (part === "..") resolved.pop();
    else resolved.push(part);
  }
  return resolved.join("/");
}

/** Every path with its type, mode and owner, and for all but directories its size and link target. */
function listing(root: string): string {
  return sh("find . -mindepth 1 \\( -type d -printf '%P d %m %U:%G\\n' \\) -o -printf '%P %y %m %U:%G %s %l\\n' | LC_ALL=C sort", root);
}

describe("dracut (osbuilder's dracut build method)", () => {
  let project: string;
  let cache: string;
  let result: RunResult;
  let agentTree: string;

  beforeAll(async () => {
    project = tempDir("dracut");
    cache = join(project, "cache");
    writeFiles(project, { "osbuild.config.ts": CONFIG });
    result = await osbuild(["run", "--json", "--cache-dir", cache], { cwd: project });
    if (result.code !== 0) throw new Error(`build failed:\n${result.stdout}\n${result.stderr}`);
    agentTree = unpack(join(project, "out/initrd"));
  }, 300_000);

  it("makes osbuilder's uncompressed initrd, which cpio and lsinitrd read", () => {
    const initrd = join(project, "out/initrd");
    expect(readFileSync(initrd).subarray(0, 6).toString("latin1")).toBe("070701");
    const names = sh(`cpio -it --quiet < ${initrd}`).trim().split("\n");
    expect(names).toEqual(expect.arrayContaining(["init", "usr/bin/kata-agent", "etc/modules-load.d/kata-modules.conf", "etc/resolv.conf", "var/lib/osbuilder/osbuilder.yaml", "usr/lib/systemd/systemd"]));
    const summary = sh(`lsinitrd ${initrd}`);
    // osbuilder's command line, plus --reproducible; the paths are relative so every build records the same.
    expect(summary).toContain("Arguments:  --no-compress --conf '/dev/null' --confdir 'dracut.conf.d' --no-kernel --reproducible --include 'dracut_overlay' '/'\n");
    // The dracut modules osbuilder's 05-base.conf asks for (syslog only when the host has a syslog daemon).
    const modules = /dracut modules:\n([\s\S]*?)\n=+/.exec(summary)?.[1]?.split("\n") ?? [];
    expect(modules).toEqual(expect.arrayContaining(["systemd", "dbus", "kernel-modules", "udev-rules"]));
    expect(sh(`lsinitrd -f etc/modules-load.d/kata-modules.conf ${initrd}`)).toBe("\n"); // no drivers: a lone newline, as osbuilder
    expect(names.some((name) => name.includes("lib/modules/"))).toBe(false); // --no-kernel
  });

  it("starts the agent as /init and /sbin/init, leaving the host's systemd intact", () => {
    expect(readlinkSync(join(agentTree, "init"))).toBe("/sbin/init");
    expect(resolveIn(agentTree, "init")).toBe("usr/bin/kata-agent");
    expect(resolveIn(agentTree, "sbin/init")).toBe("usr/bin/kata-agent");
    const agent = join(agentTree, "usr/bin/kata-agent");
    expect(lstatSync(agent).mode & 0o7777).toBe(0o755);
    expect(readFileSync(agent).includes("OSBUILD-TEST-AGENT")).toBe(true);
    expect(sh(`file -b ${agent}`)).toMatch(/ELF 64-bit LSB executable, x86-64/);
    // dracut's cp would have written a binary /sbin/init through its symlink over systemd.
    const systemd = readFileSync(join(agentTree, resolveIn(agentTree, "usr/lib/systemd/systemd")));
    expect(systemd.includes("OSBUILD-TEST-AGENT")).toBe(false);
    expect(readFileSync(join(agentTree, "etc/resolv.conf"), "utf8")).toBe("");
    const yaml = readFileSync(join(agentTree, "var/lib/osbuilder/osbuilder.yaml"), "utf8");
    expect(yaml).toContain('  agent-is-init-daemon: "yes"\n');
    expect(yaml).toContain('rootfs-creation-time: "2025-01-01T00:00:00.000000000+0000Z"\n');
    expect(yaml).toMatch(/^ {2}name: "debian"$/m); // the host's distribution: dracut copied its files
  });

  it("installs the agent with osbuilder's systemd units for systemd as init", () => {
    const tree = unpack(join(project, "out/systemd"));
    expect(resolveIn(tree, "init")).toBe("usr/lib/systemd/systemd");
    expect(lstatSync(join(tree, "usr/bin/kata-agent")).mode & 0o7777).toBe(0o755);
    expect(readFileSync(join(tree, "usr/lib/systemd/system/kata-agent.service"), "utf8")).toBe(KATA_AGENT_SERVICE);
    expect(readFileSync(join(tree, "usr/lib/systemd/system/kata-containers.target"), "utf8")).toBe(KATA_CONTAINERS_TARGET);
    expect(readlinkSync(join(tree, "etc/systemd/system/basic.target.wants/kata-containers.target"))).toBe("/usr/lib/systemd/system/kata-containers.target");
    expect(readlinkSync(join(tree, "etc/systemd/system/kata-containers.target.wants/dbus.socket"))).toBe("/usr/lib/systemd/system/dbus.socket");
    expect(readFileSync(join(tree, "etc/systemd/system/tmp.mount"), "utf8")).toMatch(/^Options=mode=1777,strictatime,nosuid,nodev$/m);
    expect(readFileSync(join(tree, "var/lib/osbuilder/osbuilder.yaml"), "utf8")).toContain('agent-is-init-daemon: "no"');
  });

  it("is reproducible on the same machine", async () => {
    const digest = (run: RunResult, target: string): unknown => run.events.find((event) => event.type === "output" && event.target === target)?.digest;
    const again = await osbuild(["run", "--json", "--cache-dir", join(project, "cache-again"), "--out", join(project, "out-again")], { cwd: project });
    expect(again.code).toBe(0);
    expect(statuses(again)["agent-init"]).toBe("built");
    expect(digest(again, "initrd")).toBe(digest(result, "initrd"));
    expect(digest(again, "systemd")).toBe(digest(result, "systemd"));
  });

  it.runIf(isRoot)("turns back into a rootfs with fromInitrd, as GNU cpio unpacks it", () => {
    const tree = tempDir("dracut-rootfs");
    const layout = join(project, "out/rootfs");
    const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
    const manifest = JSON.parse(readFileSync(join(layout, "blobs/sha256", index.manifests[0]!.digest.slice(7)), "utf8")) as { layers: Array<{ digest: string }> };
    for (const layer of manifest.layers) sh(`tar --numeric-owner -xpf ${join(layout, "blobs/sha256", layer.digest.slice(7))} -C ${tree}`);
    expect(listing(tree)).toBe(listing(agentTree));
    expect(sh(`cmp ${join(tree, "usr/bin/kata-agent")} ${join(agentTree, "usr/bin/kata-agent")} && echo same`).trim()).toBe("same");
  });

  it("brings a dynamically linked agent's libraries (15-extra-libs.conf from ldd)", async () => {
    // The test agent linked dynamically, and against libanl, which nothing else in the image needs.
    const dir = tempDir("dynamic-agent");
    sh(`gcc -O1 -o ${join(dir, "kata-agent")} ${join(REPO, "agent/test-agent.c")} -Wl,--no-as-needed -lanl`);
    expect(sh(`ldd ${join(dir, "kata-agent")}`)).toMatch(/libanl\.so\.1 => /);
    const built = await attempt(`dracut({ agent: ${JSON.stringify(join(dir, "kata-agent"))}, init: "agent" })`);
    expect(built.code, built.stderr).toBe(0);
    const initrd = String(built.events.find((event) => event.type === "output")?.path);
    const libanl = /^(usr\/)?lib\/x86_64-linux-gnu\/libanl\.so\.1$/m;
    expect(sh(`cpio -it --quiet < ${initrd}`)).toMatch(libanl);
    expect(sh(`cpio -it --quiet < ${initrd}`)).toMatch(/^(usr\/)?lib64\/ld-linux-x86-64\.so\.2$/m);
  });

  it("brings no extra libraries for a static agent (osbuilder's add_libs.sh names none)", () => {
    expect(sh(`cpio -it --quiet < ${join(project, "out/initrd")}`)).not.toMatch(/libanl/);
  });

  describe.runIf(KERNEL_VERSION !== undefined)("with the machine's kernel modules", () => {
    it("copies the drivers and lists them in modules-load.d", async () => {
      const dir = tempDir("dracut-kernel");
      writeFiles(dir, {
        "osbuild.config.ts": `import { defineConfig } from "osbuild";
import { dracut } from ${JSON.stringify(DRACUT)};
export default defineConfig({
  sourceDateEpoch: ${EPOCH},
  targets: () => ({
    initrd: dracut({ agent: ${JSON.stringify(AGENT)}, init: "agent", kernelVersion: "${KERNEL_VERSION}", drivers: ["virtio_blk"] }),
  }),
});
`,
      });
      const built = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
      if (built.code !== 0) throw new Error(`build failed:\n${built.stdout}\n${built.stderr}`);
      const initrd = join(dir, "out/initrd");
      const names = sh(`cpio -it --quiet < ${initrd}`).trim().split("\n");
      const modules = names.filter((name) => /\.ko(\.(xz|zst|gz))?$/.test(name));
      expect(modules).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`lib/modules/${KERNEL_VERSION}/kernel/drivers/block/virtio_blk\\.ko`))]));
      // and what it depends on, resolved by dracut
      expect(modules.some((name) => /drivers\/virtio\/virtio_ring\.ko/.test(name))).toBe(true);
      expect(names).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`lib/modules/${KERNEL_VERSION}/modules\\.dep$`))]));
      expect(sh(`lsinitrd -f etc/modules-load.d/kata-modules.conf ${initrd}`)).toBe("virtio_blk\n");
      expect(sh(`lsinitrd ${initrd}`)).not.toContain("--no-kernel");
    });

    it("takes the modules from modulesDir (a kernel's own modules_install tree)", async () => {
      // virtio_blk and what it needs, in the layout `make modules_install INSTALL_MOD_PATH=staging` makes.
      const staging = tempDir("modules-staging");
      const modules = join(staging, "lib/modules", KERNEL_VERSION!);
      sh(
        [
          `for file in $(modprobe -S ${KERNEL_VERSION} --show-depends virtio_blk | awk '/^insmod/ {print $2}'); do`,
          `  relative=\${file#/lib/modules/${KERNEL_VERSION}/}; mkdir -p ${modules}/$(dirname $relative); cp $file ${modules}/$relative;`,
          "done",
          `cp /lib/modules/${KERNEL_VERSION}/modules.order /lib/modules/${KERNEL_VERSION}/modules.builtin ${modules}/`,
          `depmod -b ${staging} ${KERNEL_VERSION}`,
        ].join("\n"),
      );
      const built = await attempt(`dracut({ agent: ${JSON.stringify(AGENT)}, init: "agent", kernelVersion: "${KERNEL_VERSION}", drivers: ["virtio_blk"], modulesDir: ${JSON.stringify(join(staging, "lib/modules"))} })`);
      expect(built.code, built.stderr).toBe(0);
      const initrd = String(built.events.find((event) => event.type === "output")?.path);
      expect(sh(`lsinitrd ${initrd}`)).toContain(`--kmoddir '${modules}'`);
      const shipped = sh(`cpio -it --quiet < ${initrd}`).split("\n").filter((name) => name.endsWith(".ko"));
      expect(shipped.length).toBe(sh(`find ${modules} -name '*.ko'`).trim().split("\n").length);

      sh(`mkdir -p ${staging}/elsewhere && cp -a ${modules} ${staging}/elsewhere/`);
      const wrongLayout = await attempt(`dracut({ agent: ${JSON.stringify(AGENT)}, init: "agent", kernelVersion: "${KERNEL_VERSION}", modulesDir: ${JSON.stringify(join(staging, "elsewhere"))} })`);
      expect(wrongLayout.code).toBe(1);
      expect(failure(wrongLayout)).toMatch(new RegExp(`^dracut takes kernel ${KERNEL_VERSION!.replace(/\./g, "\\.")}'s modules only from a directory named \\.\\.\\./lib/modules/`));
    });

    it("fails when a driver is not there, which dracut itself lets pass", async () => {
      const dir = tempDir("dracut-bad-driver");
      writeFiles(dir, {
        "osbuild.config.ts": `import { defineConfig } from "osbuild";
import { dracut } from ${JSON.stringify(DRACUT)};
export default defineConfig(() => ({ initrd: dracut({ agent: ${JSON.stringify(AGENT)}, init: "agent", kernelVersion: "${KERNEL_VERSION}", drivers: ["no_such_driver"] }) }));
`,
      });
      const built = await osbuild(["run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
      expect(built.code).toBe(1);
      expect(failure(built)).toBe(
        `the driver 'no_such_driver' is not in the initrd: kernel ${KERNEL_VERSION} has no module of that name in /lib/modules/${KERNEL_VERSION}, nor is it built in (check the name with modinfo -k ${KERNEL_VERSION} no_such_driver)`,
      );
    });
  });

  describe("bad input gets a clear error", () => {

    it("drivers without a kernel version: a config error", async () => {
      const result = await attempt(`dracut({ agent: ${JSON.stringify(AGENT)}, init: "agent", drivers: ["virtio_blk"] })`);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain("drivers need kernelVersion: without a kernel version dracut runs with --no-kernel and copies no modules");
    });

    it("a kernel version with no modules", async () => {
      const result = await attempt(`dracut({ agent: ${JSON.stringify(AGENT)}, init: "agent", kernelVersion: "9.9.9-nope" })`);
      expect(result.code).toBe(1);
      expect(failure(result)).toMatch(/^no modules for kernel 9\.9\.9-nope in \/lib\/modules \(it has: .+\): set kernelVersion to one of them/);
    });

    it("an agent that is a script, or for another architecture", async () => {
      const script = await attempt(`dracut({ agent: "./agent.sh", init: "agent" })`, { "agent.sh": "#!/bin/sh\necho hi\n" });
      expect(script.code).toBe(1);
      expect(failure(script)).toMatch(/the agent .*agent\.sh is not an ELF executable \(it is a script\): give the kata-agent binary itself/);
      const arm = Buffer.from(readFileSync(AGENT));
      arm.writeUInt16LE(183, 18); // e_machine: AArch64
      const wrongArch = await attempt(`dracut({ agent: "./agent-arm64", init: "agent" })`, { "agent-arm64": arm });
      expect(wrongArch.code).toBe(1);
      expect(failure(wrongArch)).toMatch(/is built for aarch64, but the initrd is for x86_64 \(ELF machine 62\): build or download the agent for x86_64/);
    });

  });

  describe.runIf(KERNEL_IMAGE !== undefined && existsSync(KERNEL_IMAGE) && existsSync("/usr/bin/qemu-system-x86_64"))("booted in QEMU with the machine's kernel", () => {
    const boot = (target: string, expectText: string): Promise<RunResult> =>
      osbuild(["boot", target, "--cache-dir", cache, "--kernel", KERNEL_IMAGE!, "--accel", "tcg", "--timeout", "150", "--memory", "512", "--expect", expectText], { cwd: project });

    it("runs the agent as PID 1 straight from the kernel", async () => {
      const booted = await boot("initrd", "OSBUILD-TEST-AGENT: init=agent");
      expect(booted.code, booted.stdout + booted.stderr).toBe(0);
      expect(booted.stdout).toMatch(/OSBUILD-TEST-AGENT: started as \/init \(pid 1\)/);
    }, 200_000);

    it("has systemd start kata-agent.service", async () => {
      const booted = await boot("systemd", "OSBUILD-TEST-AGENT: init=systemd");
      expect(booted.code, booted.stdout + booted.stderr).toBe(0);
      expect(booted.stdout).toMatch(/Started .*kata-agent\.service/);
      expect(booted.stdout).toMatch(/OSBUILD-TEST-AGENT: started as \/usr\/bin\/kata-agent/);
    }, 200_000);
  });
});
