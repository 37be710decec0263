// The Kata rootfs steps on a real Debian base (mmdebstrap from the Debian mirror), the
// agent both ways, kernel modules from the machine's linux-image-amd64, a base pulled from
// a local registry, and osbuilder's own commands as the reference.

import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { KATA_AGENT_SERVICE, KATA_CONTAINERS_TARGET } from "../../stdlib/units.js";
import { pushOciLayout, startRegistry, type TestRegistry } from "../oci-registry-harness.js";
import { AGENT, failure, isRoot, NOBODY, OSBUILDER_RUN_SH, osbuild, osbuilderCommand, REPO, type RunResult, sh, statuses, tempDir, writeFiles } from "../helpers.js";

const EPOCH = 1735689600;
/** Kata's real osbuilder (kata-containers tools/osbuilder, unmodified), run as root without Docker. */

const CONFIG = `import { defineConfig, fetchBase, installAgent, mkCpio, param, provision } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path(${JSON.stringify(AGENT)}),
    init: param.choice(["agent", "systemd"], "agent"),
  },
  sourceDateEpoch: ${EPOCH},
  targets: ({ agent, init }) => {
    const base = fetchBase({ distro: "debian", release: "bookworm", init, id: "base" });
    const rootfs = installAgent(provision(base, { init, pruneSystemdUnits: true }), { binary: agent, init });
    return { initrd: mkCpio(rootfs), rootfs, base };
  },
});
`;

/**
 * Gives `user` a range of subordinate ids (what mmdebstrap's unshare mode maps into its user
 * namespace) unless it has one, above every range already given; returns what puts
 * /etc/subuid and /etc/subgid back (also called on a failure half-way, and safe to call twice).
 */
function grantSubordinateIds(user: string): () => void {
  const files = ["/etc/subuid", "/etc/subgid"];
  const saved = files.map((file) => (existsSync(file) ? readFileSync(file, "utf8") : undefined));
  let restored = false;
  const restore = (): void => {
    if (restored) return;
    restored = true;
    files.forEach((file, index) => {
      const text = saved[index];
      if (text === undefined) rmSync(file, { force: true });
      else writeFileSync(file, text);
    });
  };
  try {
    files.forEach((file, index) => {
      const lines = (saved[index] ?? "").split("\n").filter((line) => line.trim() !== "");
      if (lines.some((line) => line.startsWith(`${user}:`))) return;
      const ends = lines.map((line) => line.split(":").map(Number)).map(([, start, count]) => (start ?? 0) + (count ?? 0));
      const end = Math.max(100_000, ...ends.filter(Number.isFinite));
      writeFileSync(file, [...lines, `${user}:${end}:65536`, ""].join("\n"));
    });
  } catch (error) {
    restore();
    throw error;
  }
  return restore;
}

/** Unpacks an initrd with GNU cpio (as root: owners and devices too) and returns the directory. */
function unpackInitrd(initrd: string): string {
  const dir = tempDir("initrd");
  sh(`zcat ${initrd} | cpio -idm --quiet --no-absolute-filenames`, dir);
  return dir;
}

function mode(path: string): string {
  return (lstatSync(path).mode & 0o7777).toString(8);
}

describe("Kata rootfs on Debian bookworm", () => {
  let project: string;
  let cache: string;
  let agentRun: RunResult;
  let agentTree: string;

  const run = (args: string[], cwd = project): Promise<RunResult> => osbuild(["run", "--json", "--cache-dir", cache, ...args], { cwd });

  beforeAll(async () => {
    project = tempDir("kata");
    cache = join(project, "cache");
    writeFiles(project, { "osbuild.config.ts": CONFIG });
    agentRun = await run([]);
    if (agentRun.code !== 0) throw new Error(`build failed:\n${agentRun.stdout}\n${agentRun.stderr}`);
    agentTree = unpackInitrd(join(project, "out/initrd"));
  }, 600_000);

  it("installs the agent as init, as osbuilder does", () => {
    const init = join(agentTree, "sbin/init");
    expect(lstatSync(init).isFile()).toBe(true);
    expect(mode(init)).toBe("755");
    expect(readFileSync(init).includes("OSBUILD-TEST-AGENT")).toBe(true);
    expect(sh(`file -b ${init}`)).toMatch(/ELF 64-bit LSB executable, x86-64.*stripped/);
    expect(sh(`file -b ${init}`)).not.toMatch(/not stripped/);
    expect(readlinkSync(join(agentTree, "init"))).toBe("/sbin/init");
    expect(existsSync(join(agentTree, "usr/bin/kata-agent"))).toBe(false); // moved, not copied
    expect(existsSync(join(agentTree, "usr/lib/systemd/systemd"))).toBe(false); // no init package
  });

  it("provisions the rootfs as setup_rootfs does", () => {
    expect(readlinkSync(join(agentTree, "var/run"))).toBe("/run");
    expect(readlinkSync(join(agentTree, "var/tmp"))).toBe("../tmp");
    for (const gone of ["var/cache", "var/log", "var/lib/dpkg", "var/lib/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"]) expect(existsSync(join(agentTree, gone))).toBe(false);
    expect(readdirSync(join(agentTree, "var/lib"))).toEqual(["osbuilder"]);
    const resolv = join(agentTree, "etc/resolv.conf");
    expect(lstatSync(resolv).isFile()).toBe(true);
    expect(statSync(resolv).size).toBe(0);
    const chrony = readFileSync(join(agentTree, "etc/chrony/chrony.conf"), "utf8");
    expect(chrony).toContain("refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0\n");
    expect(chrony).toContain("makestep 1 -1\n");
    expect(chrony).not.toMatch(/^(pool|server|peer) /m);
    expect(chrony).toMatch(/^# pool 2\.debian\.pool\.ntp\.org iburst$/m);
    const service = readFileSync(join(agentTree, "usr/lib/systemd/system/chrony.service"), "utf8");
    expect(service).toMatch(/^\[Unit\]\nConditionPathExists=\/dev\/ptp0$/m);
    expect(service).not.toMatch(/^ExecStart=.*-u _chrony/m);
  });

  it("makes the device nodes the agent needs as PID 1", () => {
    const devices = sh("stat -c '%n %F %t,%T %a %u:%g' dev/console dev/null dev/zero dev/tty dev/ttyS0", agentTree).trim().split("\n");
    expect(devices).toEqual([
      "dev/console character special file 5,1 600 0:5",
      "dev/null character special file 1,3 666 0:0",
      "dev/zero character special file 1,5 666 0:0",
      "dev/tty character special file 5,0 666 0:5",
      "dev/ttyS0 character special file 4,40 660 0:20",
    ]);
    expect(readlinkSync(join(agentTree, "dev/fd"))).toBe("/proc/self/fd");
  });

  it("writes osbuilder.yaml as osbuilder's create_summary_file, and the installed packages into the SBOM, not the image", () => {
    const yaml = readFileSync(join(agentTree, "var/lib/osbuilder/osbuilder.yaml"), "utf8");
    const version = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;
    expect(yaml).toBe(
      [
        "---",
        "osbuilder:",
        '  url: "osbuild"',
        `  version: "${version}"`,
        'rootfs-creation-time: "2025-01-01T00:00:00.000000000+0000Z"',
        'description: "osbuilder rootfs"',
        'file-format-version: "0.0.2"',
        'architecture: "x86_64"',
        "base-distro:",
        '  name: "debian"',
        '  version: "bookworm"',
        "  packages:",
        "    default:",
        '      - "chrony"',
        '      - "cryptsetup-bin"',
        '      - "dbus"',
        '      - "e2fsprogs"',
        '      - "iptables"',
        '      - "libseccomp2"',
        // (osbuilder writes an empty line for an empty list; YAML reads both as null)
        "    extra:",
        "agent:",
        '  url: "https://github.com/kata-containers/kata-containers"',
        '  name: "kata-agent"',
        '  version: "unknown"',
        '  agent-is-init-daemon: "yes"',
        "",
      ].join("\n"),
    );
    expect(readdirSync(join(agentTree, "var/lib/osbuilder")).sort()).toEqual(["base.json", "osbuilder.yaml"]);
    const sbom = JSON.parse(readFileSync(join(project, "out/initrd.spdx.json"), "utf8")) as { packages: Array<{ name: string; versionInfo?: string; externalRefs?: Array<{ referenceLocator: string }> }> };
    const chrony = sbom.packages.find((entry) => entry.name === "chrony");
    expect(chrony?.versionInfo).toMatch(/^4\./);
    expect(chrony?.externalRefs?.[0]?.referenceLocator).toMatch(/^pkg:deb\/debian\/chrony@4\.\S+\?arch=amd64&distro=debian-12$/);
    for (const name of ["iptables", "dbus", "libseccomp2", "base-files"]) expect(sbom.packages.some((entry) => entry.name === name)).toBe(true);
  });

  it("rebuilds only installAgent and what follows when the agent changes", async () => {
    const other = join(project, "other-agent");
    sh(`gcc -static -O1 -o ${other} ${join(REPO, "agent/test-agent.c")}`);
    const result = await run(["--set", `agent=${other}`]);
    expect(result.code).toBe(0);
    expect(statuses(result)).toEqual({ base: "cached", provision: "cached", "install-agent": "built", "mk-cpio": "built" });
  });

  it.runIf(isRoot)("gives the same layers and initrd without root (mmdebstrap --mode=unshare)", async () => {
    const unprivileged = tempDir("kata-nobody");
    writeFiles(unprivileged, { "osbuild.config.ts": CONFIG });
    sh(`chown -R ${NOBODY}:${NOBODY} ${unprivileged} && chmod 755 ${unprivileged}`);
    onTestFinished(grantSubordinateIds("nobody")); // put back also when the test fails or times out
    const result = await osbuild(["run", "--json", "--cache-dir", join(unprivileged, "cache")], { cwd: unprivileged, asUser: NOBODY });
    expect(result.code, result.stderr).toBe(0);
    const digests = (run: RunResult): Record<string, unknown> => Object.fromEntries(run.events.filter((event) => event.type === "output").map((event) => [event.target, event.digest]));
    // the base, the rootfs and the initrd: the same bytes as the root build's
    expect(Object.keys(digests(result)).sort()).toEqual(["base", "initrd", "rootfs"]);
    expect(digests(result)).toEqual(digests(agentRun));
  }, 600_000);

  it("reuses the same Debian base from another config", async () => {
    const second = tempDir("kata-second");
    writeFiles(second, {
      "osbuild.config.ts": `import { defineConfig, fetchBase, mkCpio, provision } from "osbuild";
export default defineConfig({
  sourceDateEpoch: ${EPOCH},
  targets: () => ({ initrd: mkCpio(provision(fetchBase({ distro: "debian", release: "bookworm", init: "agent" }), { init: "agent", chrony: false })) }),
});
`,
    });
    const result = await run([], second);
    expect(result.code).toBe(0);
    expect(statuses(result)).toEqual({ "fetch-base": "cached", provision: "built", "mk-cpio": "built" });
  });

  // osbuilder runs as root only (chroot, mounts).
  it.runIf(isRoot)("has every path Kata's real osbuilder makes, with the same type, mode and owner", async () => {
    if (!existsSync(OSBUILDER_RUN_SH)) throw new Error(`Kata's osbuilder is not at ${OSBUILDER_RUN_SH}: set OSBUILD_SHARED to the workplace's shared/ folder`);
    const work = tempDir("osbuilder");
    const { command, args } = osbuilderCommand([work, "rootfs", "AGENT_INIT=yes", `AGENT_SOURCE_BIN=${AGENT}`]);
    const made = spawnSync(command, args, { env: { ...process.env, SOURCE_DATE_EPOCH: String(EPOCH) }, encoding: "utf8" });
    if (made.status !== 0) throw new Error(`${made.stdout.slice(-4000)}\n${made.stderr.slice(-4000)}`);
    const reference = join(work, "debian_rootfs");
    const listing = (root: string): Map<string, string> =>
      new Map(
        sh("find . -mindepth 1 -printf '%P\\t%y %m %U:%G\\n'", root)
          .trim()
          .split("\n")
          .map((line) => line.split("\t") as [string, string]),
      );
    // Known differences, closed by issue 10's parity work (osbuilder's MAKEDEV set of device
    // nodes, the guest's CA bundle, resolv.conf's mode): its parity test replaces this list.
    const knownGaps = (path: string): boolean => path.startsWith("dev/") || path === "var/lib/osbuilder" || path === "etc/resolv.conf" || /^(etc\/ssl|usr\/lib\/ssl)(\/|$)/.test(path);
    const theirs = listing(reference);
    const ours = listing(agentTree);
    const missing = [...theirs.keys()].filter((path) => !ours.has(path) && !knownGaps(path));
    expect(missing).toEqual([]);
    const different = [...theirs]
      .filter(([path, meta]) => ours.has(path) && ours.get(path) !== meta && !knownGaps(path))
      .map(([path, meta]) => `${path}: theirs ${meta}, ours ${ours.get(path)}`);
    expect(different).toEqual([]);
    const extra = [...ours.keys()].filter((path) => !theirs.has(path)).sort();
    expect(extra).toEqual(expect.arrayContaining(["init", "var/lib/osbuilder/base.json"]));
  }, 900_000);

  describe("with systemd as init", () => {
    let tree: string;
    beforeAll(async () => {
      const result = await run(["--set", "init=systemd", "--out", join(project, "out-systemd")]);
      if (result.code !== 0) throw new Error(`build failed:\n${result.stdout}\n${result.stderr}`);
      tree = unpackInitrd(join(project, "out-systemd/initrd"));
    }, 600_000);

    it("installs the agent with osbuilder's units, links and tmp.mount", () => {
      expect(mode(join(tree, "usr/bin/kata-agent"))).toBe("755");
      expect(readFileSync(join(tree, "usr/lib/systemd/system/kata-agent.service"), "utf8")).toBe(KATA_AGENT_SERVICE);
      expect(readFileSync(join(tree, "usr/lib/systemd/system/kata-containers.target"), "utf8")).toBe(KATA_CONTAINERS_TARGET);
      expect(KATA_AGENT_SERVICE).toContain("ExecStart=/usr/bin/kata-agent\n");
      expect(readlinkSync(join(tree, "etc/systemd/system/basic.target.wants/kata-containers.target"))).toBe("/usr/lib/systemd/system/kata-containers.target");
      expect(readlinkSync(join(tree, "etc/systemd/system/kata-containers.target.wants/dbus.socket"))).toBe("/usr/lib/systemd/system/dbus.socket");
      expect(readFileSync(join(tree, "etc/systemd/system/tmp.mount"), "utf8")).toMatch(/^Options=mode=1777,strictatime,nosuid,nodev/m);
      expect(readlinkSync(join(tree, "init"))).toBe("/lib/systemd/systemd");
      expect(existsSync(join(tree, "usr/lib/systemd/systemd"))).toBe(true);
      expect(readlinkSync(join(tree, "sbin/init"))).toMatch(/systemd$/);
      expect(readFileSync(join(tree, "var/lib/osbuilder/osbuilder.yaml"), "utf8")).toContain('agent-is-init-daemon: "no"');
      expect(readFileSync(join(tree, "var/lib/osbuilder/osbuilder.yaml"), "utf8")).toContain('      - "init"\n');
    });

    it("prunes the systemd units Kata does not need (rootfs.sh -d)", () => {
      const found = sh("find . -name 'systemd-journald.service' -o -name 'systemd-udevd.service' -o -name 'systemd-timesyncd.service' -o -name 'systemd-getty-generator' -o -name 'systemd-random-seed.service'", tree).trim();
      expect(found).toBe("");
      expect(existsSync(join(tree, "usr/lib/systemd/system/systemd-logind.service"))).toBe(true); // not on the list
    });
  });

  describe("kernel modules from linux-image-amd64", () => {
    const kernelVersion = readdirSync("/lib/modules").find((name) => existsSync(join("/lib/modules", name, "modules.dep")))!;

    it("copies a subset with its dependencies and runs depmod", async () => {
      const dir = tempDir("modules");
      writeFiles(dir, {
        "osbuild.config.ts": `import { addKernelModules, defineConfig, fetchBase, installAgent, provision } from "osbuild";
export default defineConfig({
  sourceDateEpoch: ${EPOCH},
  targets: () => {
    const rootfs = installAgent(provision(fetchBase({ distro: "debian", release: "bookworm", init: "agent", id: "base" }), { init: "agent" }), { binary: ${JSON.stringify(AGENT)}, init: "agent" });
    return { rootfs: addKernelModules(rootfs, { from: "/lib/modules", kernelVersion: "${kernelVersion}", modules: ["virtio_blk", "ext4"] }) };
  },
});
`,
      });
      const result = await run([], dir);
      expect(result.code).toBe(0);
      expect(statuses(result).base).toBe("cached");
      const tree = join(dir, "tree");
      mkdirSync(tree);
      // Unpack the OCI layout's layers in order, as a container runtime would (no whiteouts in play here).
      const index = JSON.parse(readFileSync(join(dir, "out/rootfs/index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
      const manifest = JSON.parse(readFileSync(join(dir, "out/rootfs/blobs/sha256", index.manifests[0]!.digest.slice(7)), "utf8")) as { layers: Array<{ digest: string }> };
      for (const layer of manifest.layers) sh(`tar -xf ${join(dir, "out/rootfs/blobs/sha256", layer.digest.slice(7))} -C ${tree}`);
      const modules = join(tree, "usr/lib/modules", kernelVersion);
      const files = sh("find . -name '*.ko*' | sort", modules).trim().split("\n");
      expect(files).toEqual(expect.arrayContaining(["./kernel/drivers/block/virtio_blk.ko", "./kernel/fs/ext4/ext4.ko", "./kernel/fs/jbd2/jbd2.ko", "./kernel/fs/mbcache.ko", "./kernel/lib/crc16.ko"]));
      expect(files.length).toBeLessThan(15);
      expect(sh(`modprobe -d ${tree} -S ${kernelVersion} --show-depends ext4`)).toMatch(/insmod .*jbd2\.ko[\s\S]*insmod .*ext4\.ko/);
    });

    it("says which kernels a directory has when the version is wrong", async () => {
      const dir = tempDir("modules-bad");
      writeFiles(dir, {
        "osbuild.config.ts": `import { addKernelModules, defineConfig, fetchBase } from "osbuild";
export default defineConfig(() => ({ rootfs: addKernelModules(fetchBase({ directory: "./base" }), { from: "/lib/modules", kernelVersion: "9.9.9-nope" }) }));
`,
        "base/etc/hostname": "x\n",
      });
      const result = await run([], dir);
      expect(result.code).toBe(1);
      const failed = result.events.find((event) => event.type === "step" && event.status === "failed");
      expect(failed?.error).toBe(`no modules for kernel 9.9.9-nope in /lib/modules (it has: ${kernelVersion})`);
    });
  });

  describe("a base pulled from an OCI registry", () => {
    let registry: TestRegistry;
    beforeAll(async () => {
      registry = await startRegistry();
      await pushOciLayout(join(project, "out/rootfs"), `${registry.address}/kata/rootfs:bookworm`);
      await pushOciLayout(join(project, "out/base"), `${registry.address}/debian:bookworm`);
    }, 300_000);
    afterAll(async () => registry?.stop());

    it("gives the same tree as the rootfs that was pushed", async () => {
      const dir = tempDir("pulled");
      writeFiles(dir, {
        "osbuild.config.ts": `import { defineConfig, fetchBase, mkCpio } from "osbuild";
export default defineConfig({ sourceDateEpoch: ${EPOCH}, targets: () => ({ initrd: mkCpio(fetchBase({ image: "${registry.address}/kata/rootfs:bookworm" })) }) });
`,
      });
      const result = await run([], dir);
      expect(result.code).toBe(0);
      const listing = (tree: string): string => sh("find . -printf '%P %y %m %U:%G %s\\n' | LC_ALL=C sort", tree);
      expect(listing(unpackInitrd(join(dir, "out/initrd")))).toBe(listing(unpackInitrd(join(project, "out/initrd"))));
    });

    it("installs packages into a distro's image with its package manager", async () => {
      const dir = tempDir("pulled-install");
      writeFiles(dir, {
        "osbuild.config.ts": `import { defineConfig, fetchBase } from "osbuild";
export default defineConfig({ sourceDateEpoch: ${EPOCH}, targets: () => ({ rootfs: fetchBase({ distro: "debian", image: "${registry.address}/debian:bookworm", packages: ["less"], init: "agent" }) }) });
`,
      });
      const result = await run([], dir);
      expect(result.code).toBe(0);
      const manifestDir = join(dir, "out/rootfs/blobs/sha256");
      const layers = readdirSync(manifestDir).map((name) => join(manifestDir, name)).filter((file) => statSync(file).size > 1024);
      const all = layers.map((layer) => spawnSync("tar", ["-tf", layer], { encoding: "utf8" }).stdout).join("\n");
      expect(all).toMatch(/^usr\/bin\/less$/m);
    });
  });

  describe("bad input gets a clear error", () => {
    const attempt = async (options: string, extra: Record<string, string> = {}): Promise<RunResult> => {
      const dir = tempDir("bad");
      writeFiles(dir, {
        "osbuild.config.ts": `import { defineConfig, fetchBase, installAgent } from "osbuild";
export default defineConfig({ sourceDateEpoch: ${EPOCH}, targets: () => ({ rootfs: ${options} }) });
`,
        ...extra,
      });
      return run([], dir);
    };

    it("unknown distro or release: a config error at the call", async () => {
      const distro = await attempt(`fetchBase({ distro: "gentoo" as "debian" })`);
      expect(distro.code).toBe(2);
      expect(distro.stderr).toContain("osbuild.config.ts:2:86: error: fetch-base: unknown distro 'gentoo' (known: alpine, centos, debian, ubuntu)");
      const release = await attempt(`fetchBase({ distro: "debian", release: "potato" })`);
      expect(release.code).toBe(2);
      expect(release.stderr).toContain("unknown debian release 'potato' (known: buster, bullseye, bookworm, trixie, forky, sid)");
    });

    it("an unreachable mirror", async () => {
      const result = await attempt(`fetchBase({ distro: "debian", mirror: "http://127.0.0.1:9/debian" })`);
      expect(result.code).toBe(1);
      expect(failure(result)).toMatch(/^could not reach the mirror \(http:\/\/127\.0\.0\.1:9\/debian\): check the network or the 'mirror' option/);
    });

    it("a package that does not exist", async () => {
      const result = await attempt(`fetchBase({ distro: "debian", packages: ["no-such-package-for-osbuild"] })`);
      expect(result.code).toBe(1);
      expect(failure(result)).toMatch(/^package 'no-such-package-for-osbuild' does not exist in bookworm/);
    });

    it("an agent that is not an ELF executable, or not for this architecture", async () => {
      const script = await attempt(`installAgent(fetchBase({ directory: "./base" }), { binary: "./agent.sh", init: "agent" })`, { "base/etc/hostname": "x\n", "agent.sh": "#!/bin/sh\necho hi\n" });
      expect(script.code).toBe(1);
      expect(failure(script)).toMatch(/the agent .*agent\.sh is not an ELF executable \(it is a script\): give the kata-agent binary itself/);
      const dir = tempDir("arm-agent");
      const arm = Buffer.from(readFileSync(AGENT));
      arm.writeUInt16LE(183, 18); // e_machine: AArch64
      writeFileSync(join(dir, "agent-arm64"), arm);
      const wrongArch = await attempt(`installAgent(fetchBase({ directory: "./base" }), { binary: ${JSON.stringify(join(dir, "agent-arm64"))}, init: "agent" })`, { "base/etc/hostname": "x\n" });
      expect(wrongArch.code).toBe(1);
      expect(failure(wrongArch)).toMatch(/is built for aarch64, but the rootfs is for x86_64 \(ELF machine 62\): build or download the agent for x86_64/);
    });
  });
});
