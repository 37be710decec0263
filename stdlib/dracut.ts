// dracut: osbuilder's "dracut" build method (make BUILD_METHOD=dracut initrd). Instead of
// bootstrapping a distribution, dracut assembles the guest from THIS MACHINE's own files:
// its systemd, udev, dbus and their libraries (dracut modules "kernel-modules udev-rules
// syslog systemd dbus", hostonly=no), optionally a kernel's modules, plus an overlay holding
// the agent. The result is osbuilder's kata-containers-initrd.img: an uncompressed newc
// cpio (`dracut --no-compress`, which osbuilder ships as it is and also unpacks with plain
// cpio for its dracut rootfs, see fromInitrd).
//
// The output therefore depends on the host system, which is the nature of this method: the
// cache key holds the agent, the options and the versions of dracut, cpio, glibc and
// systemd, but not every host file dracut copies, so another change on the host (a udev or
// dbus update) reuses the cached initrd until the step is rebuilt (e.g. another --cache-dir).
// For the same host it is byte-for-byte reproducible: dracut's --reproducible sorts the
// archive, numbers inodes in order and clamps newer mtimes, and the command line dracut
// records in the image (lib/dracut/build-parameter.txt) names only paths relative to the
// step's private directory. It also only builds for the machine's own architecture.
//
// The overlay is what osbuilder's rootfs.sh makes with no distro (prepare_overlay and
// setup_rootfs): the agent, systemd's Kata units or the agent as /sbin/init, an empty
// resolv.conf, osbuilder.yaml, and /etc/modules-load.d/kata-modules.conf listing the drivers.
// Where it differs, it is on purpose:
// - with the agent as init, the agent stays at /usr/bin/kata-agent and /sbin/init (and
//   /init) link to it. dracut's systemd module makes /init and /sbin/init symlinks to
//   systemd, and its `cp -f` writes through them: osbuilder's binary /sbin/init ends up, on
//   a merged-/usr host, written over systemd's binary through /usr/sbin/init.
// - no /var/tmp → ../tmp link: dracut's image has a /var/tmp directory, and cp cannot
//   replace a directory with a link (osbuilder's build prints that error and goes on).
// - no chrony settings (the image has no chrony), and the Kata units and their links only
//   with systemd as init.
// Because dracut ignores such copy errors and drivers it cannot find, the image is checked
// afterwards: /init must lead to the agent (or systemd), and every driver must be inside.

import { chmodSync, copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { defineStep, resolveSymlinks, type BlobStepContext } from "../engine/index.js";
import { initrdMediaType } from "./media-types.js";
import { CpioParser, type CpioHeaderType } from "../formats/cpio.js";
import { checkAgentBinary } from "./agent-binary.js";
import type { InitSystem } from "./fetch-base.js";
import { OSBUILDER_YAML_PATH } from "./facts.js";
import { builtinModules, kernelVersionProblem, moduleName, modulesArchitectureProblem } from "./kernel-modules.js";
import { osReleaseValue } from "./os-release.js";
import { osbuilderYaml } from "./osbuilder-yaml.js";
import { AGENT_PATH, AGENT_UNIT_LINKS, KATA_AGENT_SERVICE, KATA_CONTAINERS_TARGET, SYSTEMD_PATHS, TMP_MOUNT, UNIT_DIR } from "./units.js";

export interface DracutOptions {
  /** The kata-agent binary on the host (for this machine's architecture). */
  agent: string;
  /** Who is PID 1: the agent itself, or systemd starting kata-agent.service. */
  init: InitSystem;
  /** The guest kernel's release (`uname -r`), osbuilder's DRACUT_KVERSION. Without it dracut runs with --no-kernel. */
  kernelVersion?: string;
  /** Kernel modules to put in the initrd and load at boot (osbuilder's 10-drivers.conf). Needs kernelVersion. */
  drivers?: readonly string[];
  /** Where that kernel's modules are: a directory holding <kernelVersion>/, or that directory itself. Default /lib/modules. */
  modulesDir?: string;
}

/** Names as osbuilder's Makefile has them; relative, so the image's recorded command line is the same everywhere. */
const OVERLAY_DIR = "dracut_overlay";
const CONF_DIR = "dracut.conf.d";
const DEFAULT_MODULES_DIR = "/lib/modules";

/** osbuilder's dracut.conf.d/05-base.conf, setting for setting. */
const BASE_CONF = `# osbuild: dracut settings of osbuilder's dracut build method
# no early microcode archive in front of the image
early_microcode="no"
# a generic image, not one for this machine's hardware and root device
hostonly="no"
hostonly_cmdline="no"
reproducible="yes"
# dracut modules (not kernel modules) that make the guest
dracutmodules="kernel-modules udev-rules syslog systemd dbus"
`;

export const dracut = defineStep({
  kind: "dracut",
  version: 2,
  inputs: [],
  output: "blob",
  mediaTypes: { out: initrdMediaType("none") },
  hostPaths: ["agent", "modulesDir"],
  tools: [
    { command: "dracut", versionArgs: ["--version"], package: "dracut" },
    // dracut packs with cpio and copies the host's glibc and systemd: their versions shape the image too.
    { command: "cpio", versionArgs: ["--version"], package: "cpio" },
    { command: "ldd", versionArgs: ["--version"], package: "libc-bin" },
    { command: "systemctl", versionArgs: ["--version"], package: "systemd" },
  ],
  validate(options: DracutOptions) {
    if (typeof options.agent !== "string" || options.agent === "") return "agent must be the path of a kata-agent binary";
    if (options.init !== "agent" && options.init !== "systemd") return `init must be "agent" or "systemd", got ${JSON.stringify(options.init)}`;
    const versionProblem = options.kernelVersion === undefined ? undefined : kernelVersionProblem(options.kernelVersion);
    if (versionProblem) return versionProblem;
    const bad = (options.drivers ?? []).find((name) => !/^[A-Za-z0-9_-]+$/.test(name));
    if (bad !== undefined) return `drivers are kernel module names as modprobe takes them (e.g. virtio_blk), got ${JSON.stringify(bad)}`;
    if (options.kernelVersion === undefined && (options.drivers?.length ?? 0) > 0) {
      return "drivers need kernelVersion: without a kernel version dracut runs with --no-kernel and copies no modules (set kernelVersion to the guest kernel's `uname -r`)";
    }
    if (options.kernelVersion === undefined && options.modulesDir !== undefined) return "modulesDir needs kernelVersion: say which kernel's modules to take";
    return undefined;
  },
  async run(options: DracutOptions, ctx) {
    const host = ctx.hostArch;
    if (ctx.arch !== host) {
      ctx.fail(
        `dracut copies this machine's own programs (systemd, udev, libraries) into the initrd, so it builds only for ${host}, not ${ctx.arch}: build on a ${ctx.arch} machine, or use fetchBase, installAgent and mkCpio`,
      );
    }
    const { dynamic } = checkAgentBinary(options.agent, ctx.arch, ctx.fail, "initrd");
    const kernel = options.kernelVersion === undefined ? undefined : findModules(options.kernelVersion, options.modulesDir, ctx.fail);
    const wrongArch = kernel && (await modulesArchitectureProblem(kernel.dir, ctx.arch, "initrd", ctx.exec));
    if (wrongArch) ctx.fail(wrongArch);
    const drivers = options.drivers ?? [];

    const work = await ctx.tempDir();
    writeOverlay(join(work, OVERLAY_DIR), options, ctx);
    const libraries = dynamic ? await sharedLibraries(options.agent, ctx) : [];
    writeConf(join(work, CONF_DIR), drivers, libraries);

    const output = ctx.outputPath();
    rmSync(output, { force: true }); // dracut will not replace a file without --force
    const args = [
      "--no-compress",
      "--conf",
      "/dev/null",
      "--confdir",
      CONF_DIR,
      ...(kernel === undefined ? ["--no-kernel"] : options.modulesDir !== undefined ? ["--kmoddir", kernel.dir] : []),
      "--reproducible",
      "--include",
      OVERLAY_DIR,
      "/",
      output,
      ...(kernel === undefined ? [] : [kernel.version]),
    ];
    // TMPDIR rather than --tmpdir: dracut records its options in the image, not its environment.
    await ctx.exec("dracut", args, { cwd: work, env: { SOURCE_DATE_EPOCH: String(ctx.sourceDateEpoch), TMPDIR: work }, stdout: "log" });
    await checkImage(output, options.init, kernel, drivers, ctx);
  },
});

type Ctx = BlobStepContext<readonly []>;

/** The host libraries a dynamically linked agent loads (ldd), for dracut's install_items. */
async function sharedLibraries(agent: string, ctx: Ctx): Promise<string[]> {
  const { stdout } = await ctx.exec("ldd", [agent]);
  const libraries = new Set<string>();
  for (const line of stdout.toString("utf8").split("\n")) {
    const missing = /^\s*(\S+) => not found/.exec(line);
    if (missing) ctx.fail(`the agent needs ${missing[1]}, which this machine does not have: dracut copies the host's libraries, so install the package that provides it (or link the agent statically)`);
    const path = /=> (\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+) \(/.exec(line)?.[1];
    if (path !== undefined) libraries.add(path);
  }
  return [...libraries].sort();
}

/** The modules directory of `version`: <dir>/<version>, or <dir> itself when it is one. */
function findModules(version: string, modulesDir: string | undefined, fail: (message: string) => never): { version: string; dir: string } {
  const base = modulesDir ?? DEFAULT_MODULES_DIR;
  const isModulesTree = (dir: string): boolean => existsSync(join(dir, "modules.dep")) || existsSync(join(dir, "modules.order"));
  const found = (dir: string): { version: string; dir: string } => {
    // dracut --kmoddir places the modules in the image by their path, so it insists on it.
    if (modulesDir !== undefined && !dir.endsWith(`/lib/modules/${version}`)) {
      fail(
        `dracut takes kernel ${version}'s modules only from a directory named .../lib/modules/${version}, and ${dir} is not one: install them there (make modules_install INSTALL_MOD_PATH=DIR puts them in DIR/lib/modules/${version}) and set modulesDir to DIR/lib/modules`,
      );
    }
    return { version, dir };
  };
  if (isModulesTree(join(base, version))) return found(join(base, version));
  if (modulesDir !== undefined && isModulesTree(base)) return found(base);
  if (!existsSync(base)) fail(`the modules directory ${base} does not exist`);
  const versions = readdirSync(base).filter((name) => isModulesTree(join(base, name)));
  fail(`no modules for kernel ${version} in ${base} (${versions.length > 0 ? `it has: ${versions.join(", ")}` : "it holds no modules tree"}): set kernelVersion to one of them, or modulesDir to where that kernel's modules are`);
}

/** The overlay dracut copies over its image (--include OVERLAY /). */
function writeOverlay(root: string, options: DracutOptions, ctx: Ctx): void {
  const file = (path: string, content: string | Buffer, mode = 0o644): void => {
    mkdirSync(dirname(join(root, path)), { recursive: true, mode: 0o755 });
    writeFileSync(join(root, path), content);
    chmodSync(join(root, path), mode);
  };
  const link = (path: string, target: string): void => {
    mkdirSync(dirname(join(root, path)), { recursive: true, mode: 0o755 });
    symlinkSync(target, join(root, path));
  };
  mkdirSync(root, { mode: 0o755 });
  chmodSync(root, 0o755);

  mkdirSync(join(root, dirname(AGENT_PATH)), { recursive: true, mode: 0o755 });
  copyFileSync(options.agent, join(root, AGENT_PATH));
  chmodSync(join(root, AGENT_PATH), 0o755);
  if (options.init === "agent") {
    // Links, not the binary, so that dracut replaces its /sbin/init and /init symlinks
    // instead of writing the agent through them over systemd (see the header).
    link("sbin/init", `/${AGENT_PATH}`);
    link("init", "/sbin/init");
  } else {
    file(`${UNIT_DIR}/kata-agent.service`, KATA_AGENT_SERVICE);
    file(`${UNIT_DIR}/kata-containers.target`, KATA_CONTAINERS_TARGET);
    // rootfs.sh installs its own tmp.mount when the overlay has none (it never has one here).
    file("etc/systemd/system/tmp.mount", TMP_MOUNT);
    for (const [path, target] of AGENT_UNIT_LINKS) link(path, target);
  }
  // `echo $(DRACUT_KMODULES) | tr " " "\n"`: one module a line, a lone newline for none.
  file("etc/modules-load.d/kata-modules.conf", `${(options.drivers ?? []).join("\n")}\n`);
  // An empty resolv.conf, for the agent to bind-mount the container's over it.
  file("etc/resolv.conf", "");
  const distro = hostOsRelease();
  file(
    OSBUILDER_YAML_PATH,
    osbuilderYaml({
      sourceDateEpoch: ctx.sourceDateEpoch,
      architecture: ctx.arch,
      // What dracut copies is the host's: the base distro is this machine's.
      distro: { name: distro.name, version: distro.version, packages: { default: [], extra: [] } },
      agent: { version: "unknown", isInit: options.init === "agent" },
    }),
  );
}

/** The configuration directory dracut reads instead of /etc/dracut.conf.d (--conf /dev/null --confdir). */
function writeConf(dir: string, drivers: readonly string[], libraries: readonly string[]): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "05-base.conf"), BASE_CONF);
  writeFileSync(join(dir, "10-drivers.conf"), `# kernel modules to copy into the image\ndrivers="${drivers.join(" ")}"\n`);
  // osbuilder's add_libs.sh output: nothing for a static agent. dracut copies the overlay's
  // files without resolving their libraries, so a dynamic agent's are named here.
  writeFileSync(
    join(dir, "15-extra-libs.conf"),
    libraries.length === 0 ? "" : `# libraries the agent is linked against (ldd)\ninstall_items+=" ${libraries.join(" ")} "\n`,
  );
}

function hostOsRelease(): { name: string; version: string } {
  let text = "";
  for (const path of ["/etc/os-release", "/usr/lib/os-release"]) {
    try {
      text = readFileSync(path, "utf8");
      break;
    } catch {
      /* try the next */
    }
  }
  const value = (key: string): string => osReleaseValue(text, key);
  return { name: value("ID") || "unknown", version: value("VERSION_ID") || value("VERSION_CODENAME") || "unknown" };
}

interface ImageEntry {
  type: CpioHeaderType;
  linkTarget?: string;
}

/**
 * Reads the image back (names only) and checks what dracut does not: that /init leads to the
 * agent or systemd, that the agent is inside, and that every driver was found.
 */
async function checkImage(output: string, init: InitSystem, kernel: { version: string; dir: string } | undefined, drivers: readonly string[], ctx: Ctx): Promise<void> {
  const entries = new Map<string, ImageEntry>();
  const parser = new CpioParser({
    onEntry: (header) => {
      const name = header.name.split("/").filter((part) => part !== "" && part !== ".").join("/");
      entries.set(name, header.linkTarget === undefined ? { type: header.type } : { type: header.type, linkTarget: header.linkTarget });
    },
  });
  for await (const chunk of createReadStream(output, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    parser.write(chunk);
    if (parser.stopped) ctx.fail(`dracut's image has data that is not cpio after byte ${parser.position}: it is not the uncompressed initrd expected`);
  }
  parser.end();

  const isFile = (path: string | undefined): boolean => path !== undefined && entries.get(path)?.type === "file";
  if (!isFile(AGENT_PATH)) ctx.fail(`dracut's image has no /${AGENT_PATH}: the overlay was not copied in (see the step log for cp errors)`);
  const initTarget = resolveInImage(entries, "init");
  if (init === "agent") {
    for (const path of ["init", "sbin/init"]) {
      const target = resolveInImage(entries, path);
      if (target !== AGENT_PATH) ctx.fail(`in dracut's image /${path} leads to ${target === undefined ? "nothing" : `/${target}`}, not the agent /${AGENT_PATH}: the overlay's links were not copied in (see the step log)`);
    }
  } else {
    if (!isFile(initTarget) || !SYSTEMD_PATHS.some((path) => resolveInImage(entries, path) === initTarget)) {
      ctx.fail(`in dracut's image /init leads to ${initTarget === undefined ? "nothing" : `/${initTarget}`}, not systemd: is dracut's systemd module available on this machine?`);
    }
    if (!isFile(resolveInImage(entries, `${UNIT_DIR}/kata-agent.service`))) ctx.fail(`dracut's image has no /${UNIT_DIR}/kata-agent.service: the overlay was not copied in`);
  }
  if (kernel === undefined || drivers.length === 0) return;

  // Module files in the image, by name with "-" read as "_" (as modprobe does).
  const present = new Set<string>();
  for (const [path, entry] of entries) {
    if (entry.type === "file" && path.includes(`/modules/${kernel.version}/`) && /\.ko(\.(xz|zst|gz))?$/.test(path)) present.add(moduleName(path));
  }
  const builtin = builtinModules(kernel.dir); // none listed: every driver must be a module
  for (const driver of drivers) {
    const name = driver.replace(/-/g, "_");
    if (!present.has(name) && !builtin.has(name)) {
      ctx.fail(`the driver '${driver}' is not in the initrd: kernel ${kernel.version} has no module of that name in ${kernel.dir}, nor is it built in (check the name with modinfo -k ${kernel.version} ${driver})`);
    }
  }
}

/** Resolves symlinks inside the image's name list, as the kernel would in the unpacked tree. */
function resolveInImage(entries: ReadonlyMap<string, ImageEntry>, path: string): string | undefined {
  try {
    const lookup = (candidate: string): { symlinkTarget?: string } | undefined => {
      const entry = entries.get(candidate);
      return entry && { symlinkTarget: entry.type === "symlink" ? (entry.linkTarget ?? "") : undefined };
    };
    return resolveSymlinks(path, lookup, { followFinal: true, missing: "stop" })?.join("/");
  } catch {
    return undefined; // a symlink loop
  }
}

