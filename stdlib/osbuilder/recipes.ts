// What osbuilder's three scripts do, read from their variables and written as plan calls:
// rootfs.sh (the rootfs), image_builder.sh (the disk image) and initrd_builder.sh (the initrd).

import { basename } from "node:path";
import { ConfigError, type Arch } from "../../engine/index.js";
import { DISTROS, findDistro, type DistroName } from "../distros/index.js";
import type { InitSystem } from "../fetch-base.js";
import { type Plan } from "./plan.js";
import { ARCHES, type Variables } from "./variables.js";

/** osbuilder's distros that osbuild has no recipe for, and why. */
const UNSUPPORTED_DISTROS: Readonly<Record<string, string>> = {
  "cbl-mariner": "osbuild has no cbl-mariner recipe (tdnf)",
  devkit: "the devkit debug extension (rootfs-builder/devkit) is not supported by osbuild",
  nvidia: "the NVIDIA GPU stack is not supported by osbuild",
};

export interface GuestSettings {
  distro: DistroName;
  release: string;
  init: InitSystem;
  /** ROOTFS_ONLY=yes: the distro's rootfs alone, no agent or Kata settings. */
  rootfsOnly: boolean;
  agent?: { binary: string } | { tarball: string };
  agentVersion?: string;
  /** rootfs.sh -o: the osbuilder version osbuilder.yaml names. */
  builderVersion?: string;
  /** rootfs.sh -d (osbuilder's make targets pass it). */
  pruneSystemdUnits: boolean;
  packages: string[];
  mirror?: string;
  kernelModules?: string;
  confidential: boolean;
  agentPolicy?: string;
  allowAllAgentPolicy: boolean;
  guestHooks?: string;
  extraTarballs: string[];
}

export function sourceDateEpochOf(vars: Variables): number {
  return vars.integer("SOURCE_DATE_EPOCH", 0) ?? 0;
}

/** ARCH, or undefined for this machine's. */
export function archOf(vars: Variables): Arch | undefined {
  if (vars.get("ARCH") === undefined) return undefined;
  return vars.choice("ARCH", ARCHES, "x86_64");
}

/** The machine's architecture as ubuntu/config.sh's `uname -m` sees it, when ARCH is not set. */
function hostArch(): Arch {
  return process.arch === "arm64" ? "aarch64" : process.arch === "ppc64" ? "ppc64le" : process.arch === "s390x" ? "s390x" : "x86_64";
}

/** What rootfs.sh would build for `distro`, from the variables. */
export function guestSettings(vars: Variables, distroName: string, options: { pruneSystemdUnits: boolean; builderVersion?: string; agentVersion?: string }): GuestSettings {
  if (Object.hasOwn(UNSUPPORTED_DISTROS, distroName)) throw new ConfigError(`DISTRO=${distroName}: ${UNSUPPORTED_DISTROS[distroName]}`);
  const distro = findDistro(distroName);
  if (!distro) throw new ConfigError(`DISTRO=${distroName}: not a distro osbuild knows`, undefined, `distros: ${Object.keys(DISTROS).sort().join(", ")}`);
  const given = vars.get("OS_VERSION");
  if (given !== undefined && !Object.hasOwn(distro.releases, given)) {
    throw new ConfigError(`OS_VERSION=${given}: not a ${distro.name} release osbuild knows`, undefined, `releases: ${Object.keys(distro.releases).join(", ")}`);
  }
  if (given === undefined) vars.once(`OS_VERSION is not set: building ${distro.name} ${distro.defaultRelease} (osbuilder needs it for ubuntu, and its debian default, 10.11, is no Debian suite)`);
  const release = given ?? distro.defaultRelease;
  const agentInit = vars.yesNo("AGENT_INIT", false);
  const init: InitSystem = agentInit ? "agent" : "systemd";
  if (!agentInit && distro.initProcess !== "systemd") throw new ConfigError(`AGENT_INIT=no: ${distro.name} has no systemd; set AGENT_INIT=yes`);
  const rootfsOnly = vars.yesNo("ROOTFS_ONLY", false);

  const binary = vars.path("AGENT_SOURCE_BIN", "file");
  const tarball = vars.path("AGENT_TARBALL", "file");
  if (binary && tarball) throw new ConfigError("AGENT_SOURCE_BIN and AGENT_TARBALL are both set: give one (osbuilder: they should never be used together)");
  if (!binary && !tarball && !rootfsOnly) {
    throw new ConfigError("neither AGENT_SOURCE_BIN nor AGENT_TARBALL is set: osbuild does not build the kata-agent from source", undefined, "set AGENT_SOURCE_BIN=PATH to a kata-agent binary, or AGENT_TARBALL=PATH to Kata's kata-agent tarball");
  }

  const policy = vars.yesNo("AGENT_POLICY", false);
  const policyFile = vars.path("AGENT_POLICY_FILE", "file");
  if (policyFile && !policy) vars.once("AGENT_POLICY_FILE is ignored without AGENT_POLICY=yes, as osbuilder ignores it");
  const coco = vars.path("COCO_GUEST_COMPONENTS_TARBALL", "file");
  const confidential = vars.yesNo("CONFIDENTIAL_GUEST", false) || coco !== undefined;
  if (coco && !vars.yesNo("CONFIDENTIAL_GUEST", false)) vars.once("COCO_GUEST_COMPONENTS_TARBALL is set: a confidential guest (CONFIDENTIAL_GUEST=yes), as osbuilder's default (Docker) build does");

  return {
    distro: distro.name as DistroName,
    release,
    init,
    rootfsOnly,
    agent: binary ? { binary } : tarball ? { tarball } : undefined,
    agentVersion: options.agentVersion ?? vars.get("AGENT_VERSION"),
    builderVersion: options.builderVersion,
    pruneSystemdUnits: options.pruneSystemdUnits,
    packages: (vars.get("EXTRA_PKGS") ?? "").split(/[\s,]+/).filter(Boolean),
    mirror: mirrorOf(vars, distro.name, release, archOf(vars)),
    kernelModules: vars.path("KERNEL_MODULES_DIR", "directory"),
    confidential,
    agentPolicy: policy ? policyFile : undefined,
    allowAllAgentPolicy: policy && !policyFile,
    guestHooks: vars.path("GUEST_HOOKS_TARBALL", "file"),
    extraTarballs: [vars.path("PAUSE_IMAGE_TARBALL", "file"), coco].filter((path): path is string => path !== undefined),
  };
}

/** ubuntu/config.sh (which debian's reuses): REPO_URL_X86_64 first on x86_64, then REPO_URL; REPO_COMPONENTS. */
function mirrorOf(vars: Variables, distro: string, release: string, arch: Arch | undefined): string | undefined {
  const url = ((arch ?? hostArch()) === "x86_64" ? vars.get("REPO_URL_X86_64") : undefined) ?? vars.get("REPO_URL");
  const components = (vars.get("REPO_COMPONENTS") ?? "main").split(/[\s,]+/).filter(Boolean);
  const debianFamily = findDistro(distro)?.bootstrap.kind === "mmdebstrap";
  if (!debianFamily) {
    for (const name of ["REPO_URL", "REPO_URL_X86_64", "REPO_COMPONENTS"]) if (vars.get(name)) vars.once(`${name} has no effect for DISTRO=${distro}: osbuild makes it from its OCI image`);
    return undefined;
  }
  if (url === undefined) {
    if (vars.get("REPO_COMPONENTS")) {
      const archive = findDistro(distro)!.bootstrap;
      return archive.kind === "mmdebstrap" ? `deb ${archive.defaultMirror(arch ?? hostArch())} ${release} ${components.join(" ")}` : undefined;
    }
    return undefined; // osbuild's default: the host's apt sources for the distro, else its archive
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\/\S+$/i.test(url)) throw new ConfigError(`REPO_URL=${url}: expected an archive URL such as http://deb.debian.org/debian`);
  return `deb ${url} ${release} ${components.join(" ")}`;
}

/** rootfs.sh: the bootstrap, setup_rootfs, the agent; returns the plan variable of the rootfs. */
export function addRootfs(plan: Plan, guest: GuestSettings): string {
  const prefix = guest.distro;
  const base = plan.call(
    "fetchBase",
    `${prefix}Base`,
    undefined,
    { distro: guest.distro, release: guest.release, init: guest.init, packages: guest.packages.length > 0 ? guest.packages : undefined, mirror: guest.mirror },
    `rootfs.sh's build_rootfs: ${guest.distro} ${guest.release}${guest.init === "systemd" ? " with systemd" : ""}`,
  );
  if (guest.rootfsOnly) return base;
  let rootfs = plan.call(
    "provision",
    `${prefix}Provisioned`,
    base,
    {
      init: guest.init,
      pruneSystemdUnits: guest.pruneSystemdUnits || undefined,
      confidential: guest.confidential || undefined,
      agentPolicy: guest.agentPolicy,
      allowAllAgentPolicy: guest.allowAllAgentPolicy || undefined,
      guestHooks: guest.guestHooks,
      extraTarballs: guest.extraTarballs.length > 0 ? guest.extraTarballs : undefined,
    },
    "setup_rootfs",
  );
  if (guest.kernelModules) {
    rootfs = plan.call("addKernelModules", `${prefix}WithModules`, rootfs, { from: guest.kernelModules, kernelVersion: basename(guest.kernelModules) }, "KERNEL_MODULES_DIR");
  }
  const agent = guest.agent!;
  return plan.call(
    "installAgent",
    `${prefix}Rootfs`,
    rootfs,
    { ...agent, init: guest.init, version: guest.agentVersion, confidential: guest.confidential || undefined, builderVersion: guest.builderVersion },
    guest.init === "agent" ? "the agent as /sbin/init (AGENT_INIT=yes)" : "the agent started by systemd",
  );
}

export interface DiskSettings {
  fsType: "ext4" | "xfs" | "erofs";
  measured: boolean;
  daxHeader: boolean;
  alignMiB: number;
  /** What image_builder.sh's check_rootfs checks: false with SKIP_ROOTFS_CHECK=yes, else the AGENT_INIT it reads. */
  checks: false | InitSystem;
  variant: string;
  blockSize?: 1024 | 2048 | 4096;
  extraFreeMiB?: number;
}

/** image_builder.sh's settings; `fsType` and `extraFreeMiB` from its -f and -r when given. */
export function diskSettings(vars: Variables, flags: { fsType?: string; extraFreeMiB?: string } = {}): DiskSettings {
  const fsTypeGiven = flags.fsType ?? vars.get("FS_TYPE") ?? "ext4";
  if (!["ext4", "xfs", "erofs"].includes(fsTypeGiven)) throw new ConfigError(`${flags.fsType !== undefined ? "-f " : "FS_TYPE="}${fsTypeGiven}: only ext4, xfs and erofs are supported (as osbuilder)`);
  const fsType = fsTypeGiven as DiskSettings["fsType"];
  const blockSize = vars.integer("BLOCK_SIZE", 1);
  if (blockSize !== undefined && ![1024, 2048, 4096].includes(blockSize)) throw new ConfigError(`BLOCK_SIZE=${blockSize}: expected 1024, 2048 or 4096`);
  if (fsType === "erofs" && blockSize !== undefined && blockSize !== 4096) throw new ConfigError(`BLOCK_SIZE=${blockSize}: erofs takes 4096 only (osbuilder: invalid block size for erofs)`);
  let alignMiB = vars.integer("IMAGE_SIZE_ALIGNMENT_MB", 1) ?? 128;
  if (fsType === "erofs") {
    if (vars.get("IMAGE_SIZE_ALIGNMENT_MB")) vars.once("IMAGE_SIZE_ALIGNMENT_MB has no effect with FS_TYPE=erofs: osbuilder sizes erofs images to their content, and so does osbuild");
    alignMiB = 1;
  }
  let extraFreeMiB: number | undefined;
  const free = flags.extraFreeMiB ?? vars.get("ROOT_FREE_SPACE");
  if (free !== undefined) {
    if (!/^\d+$/.test(free)) throw new ConfigError(`${flags.extraFreeMiB !== undefined ? "-r " : "ROOT_FREE_SPACE="}${free}: expected MiB of free space, a whole number`);
    if (fsType === "erofs") vars.once("free space (-r, ROOT_FREE_SPACE) has no effect on erofs, which is read-only");
    else extraFreeMiB = Number(free);
  }
  const skipCheck = vars.yesNo("SKIP_ROOTFS_CHECK", false);
  return {
    fsType,
    measured: vars.yesNo("MEASURED_ROOTFS", false),
    daxHeader: !vars.yesNo("SKIP_DAX_HEADER", false),
    alignMiB,
    checks: skipCheck ? false : vars.yesNo("AGENT_INIT", false) ? "agent" : "systemd",
    variant: vars.raw("BUILD_VARIANT") ?? "",
    blockSize: blockSize as DiskSettings["blockSize"],
    extraFreeMiB,
  };
}

/** The name of osbuilder's root hash file for a variant (root_hash_.txt without one, as osbuilder). */
export function rootHashName(variant: string): string {
  if (!/^[A-Za-z0-9._-]*$/.test(variant)) throw new ConfigError(`BUILD_VARIANT=${variant}: it names the file root_hash_<variant>.txt: use letters, digits, '.', '_' or '-'`);
  return `root_hash_${variant}.txt`;
}

/** image_builder.sh on a rootfs: the image target (and the root hash file when measured). */
export function addImage(plan: Plan, rootfs: string, disk: DiskSettings, imageName: string): void {
  const tree = plan.call("emptyMachineId", `${rootfs}ForImage`, rootfs, {}, "image_builder.sh's setup_systemd: an empty /etc/machine-id for systemd (none without /etc)");
  const options = {
    fsType: disk.fsType === "ext4" ? undefined : disk.fsType,
    daxHeader: disk.daxHeader ? undefined : false,
    alignMiB: disk.alignMiB === 128 ? undefined : disk.alignMiB,
    checks: disk.checks,
    blockSize: disk.blockSize,
    extraFreeMiB: disk.extraFreeMiB,
  };
  if (!disk.measured) {
    plan.target(imageName, plan.call("mkExt4", "image", tree, options, "image_builder.sh"));
    return;
  }
  const measured = plan.call("mkVerityImage", "measuredImage", tree, options, "image_builder.sh with MEASURED_ROOTFS=yes: dm-verity hash partition");
  plan.target(imageName, measured, "image");
  plan.target(rootHashName(disk.variant), measured, "rootHash");
}

/** initrd_builder.sh on a rootfs. */
export function addInitrd(plan: Plan, rootfs: string, init: InitSystem, initrdName: string, checks = true): void {
  const options = { initLink: init === "agent" ? undefined : "/lib/systemd/systemd", checks: checks ? init : false };
  plan.target(initrdName, plan.call("mkCpio", "initrd", rootfs, options, "initrd_builder.sh"));
}
