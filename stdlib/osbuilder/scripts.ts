// osbuilder's scripts called on their own, as Kata's packaging calls image_builder.sh for
// the extension images: image_builder.sh, initrd_builder.sh and rootfs.sh, each with its
// options (getopts) and its environment variables.

import { existsSync, statSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { ConfigError } from "../../engine/index.js";
import { DISTROS, findDistro } from "../distros/index.js";
import { getopts } from "./getopts.js";
import type { RootfsOutput } from "./make.js";
import { Plan } from "./plan.js";
import { addImage, addInitrd, addRootfs, archOf, diskSettings, guestSettings, sourceDateEpochOf } from "./recipes.js";
import type { Variables } from "./variables.js";

export interface ScriptPlan {
  plan: Plan;
  /** Where the plan's targets go. */
  filesDir: string;
  rootfsDirs: RootfsOutput[];
  /** Text to print instead of building (-h, -l, -t, no arguments). */
  print?: string;
}

export const IMAGE_BUILDER_USAGE = `usage: osbuild osbuilder image-builder [-o IMAGE] [-r FREE_MB] [-f ext4|xfs|erofs] ROOTFS_DIR
  what image_builder.sh does: a Kata disk image of ROOTFS_DIR. Environment: IMAGE, ROOT_FREE_SPACE,
  FS_TYPE, BLOCK_SIZE, AGENT_INIT, SKIP_DAX_HEADER, MEASURED_ROOTFS, SKIP_ROOTFS_CHECK,
  IMAGE_SIZE_ALIGNMENT_MB, BUILD_VARIANT (root_hash_<variant>.txt beside the image), ARCH
`;

export const INITRD_BUILDER_USAGE = `usage: osbuild osbuilder initrd-builder [-o IMAGE] ROOTFS_DIR
  what initrd_builder.sh does: a Kata initrd of ROOTFS_DIR. Environment: INITRD_IMAGE, AGENT_INIT
`;

export const ROOTFS_BUILDER_USAGE = `usage: osbuild osbuilder rootfs-builder [-r DIR] [-o VERSION] [-a VERSION] [-d] [-l] [-t DISTRO] DISTRO
  what rootfs.sh does: a Kata rootfs directory of DISTRO (default DIR: ./rootfs-DISTRO, or ROOTFS_DIR).
  -d prunes the systemd units Kata does not need; -o is the osbuilder version osbuilder.yaml names.
  Environment: the variables of \`osbuild osbuilder\` (AGENT_SOURCE_BIN, AGENT_INIT, OS_VERSION, ...)
  distros: ${Object.keys(DISTROS).sort().join(" ")}
`;

function rootfsOperand(operands: readonly string[], usage: string): string | undefined {
  if (operands.length === 0) return undefined;
  if (operands.length > 1) throw new ConfigError(`expected one rootfs directory, got ${operands.length}: ${operands.join(" ")}`, undefined, usage.split("\n")[0]);
  const dir = resolve(operands[0]!);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError(`${operands[0]} is not a directory`);
  return dir;
}

function outputName(path: string, what: string): string {
  const name = basename(path);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new ConfigError(`${what} ${path}: osbuild writes outputs under names of letters, digits, '.', '_' and '-' (starting with a letter or digit)`);
  return name;
}

/** What image_builder.sh and initrd_builder.sh share: getopts, then one rootfs directory (none: usage). */
function directoryScript(args: readonly string[], spec: string, command: string, usage: string, vars: Variables): { plan: Plan; options: Map<string, string>; tree?: string } {
  const { options, operands } = getopts(args, spec, command);
  const plan = new Plan(sourceDateEpochOf(vars), archOf(vars));
  const rootfs = options.has("h") ? undefined : rootfsOperand(operands, usage);
  if (!rootfs) return { plan, options };
  return { plan, options, tree: plan.call("fetchBase", "tree", undefined, { directory: rootfs }, `the rootfs directory ${rootfs}`) };
}

export function planImageBuilder(args: readonly string[], vars: Variables): ScriptPlan {
  const { plan, options, tree } = directoryScript(args, "ho:r:f:", "image-builder", IMAGE_BUILDER_USAGE, vars);
  if (!tree) return { plan, filesDir: ".", rootfsDirs: [], print: IMAGE_BUILDER_USAGE };
  const image = resolve(options.get("o") ?? vars.get("IMAGE") ?? "kata-containers.img");
  addImage(plan, tree, diskSettings(vars, { fsType: options.get("f"), extraFreeMiB: options.get("r") }), outputName(image, "-o"));
  return { plan, filesDir: dirname(image), rootfsDirs: [] };
}

export function planInitrdBuilder(args: readonly string[], vars: Variables): ScriptPlan {
  const { plan, options, tree } = directoryScript(args, "ho:", "initrd-builder", INITRD_BUILDER_USAGE, vars);
  if (!tree) return { plan, filesDir: ".", rootfsDirs: [], print: INITRD_BUILDER_USAGE };
  const initrd = resolve(options.get("o") ?? vars.get("INITRD_IMAGE") ?? "kata-containers-initrd.img");
  addInitrd(plan, tree, vars.yesNo("AGENT_INIT", false) ? "agent" : "systemd", outputName(initrd, "-o"));
  return { plan, filesDir: dirname(initrd), rootfsDirs: [] };
}

export function planRootfsBuilder(args: readonly string[], vars: Variables): ScriptPlan {
  const { options, operands } = getopts(args, "a:dhlo:r:t:", "rootfs-builder");
  const plan = new Plan(sourceDateEpochOf(vars), archOf(vars));
  const printing = (text: string): ScriptPlan => ({ plan, filesDir: ".", rootfsDirs: [], print: text });
  if (options.has("h") || args.length === 0) return printing(ROOTFS_BUILDER_USAGE);
  if (options.has("l")) return printing(`${Object.keys(DISTROS).sort().join("\n")}\n`);
  const tested = options.get("t");
  if (tested !== undefined) {
    const distro = findDistro(tested);
    if (!distro) throw new ConfigError(`rootfs-builder -t ${tested}: not a distro osbuild knows`, undefined, `distros: ${Object.keys(DISTROS).sort().join(", ")}`);
    const excluded = (["x86_64", "aarch64", "ppc64le", "s390x"] as const).filter((arch) => !distro.architectures.includes(arch));
    return printing(`INIT_PROCESS:\t\t${distro.initProcess === "systemd" ? "systemd" : "kata-agent"}\nARCH_EXCLUDE_LIST:\t\t${excluded.join(" ")}\n`);
  }
  const distro = operands[0];
  if (distro === undefined) {
    throw new ConfigError("rootfs-builder without a DISTRO (provisioning an existing ROOTFS_DIR, osbuilder's dracut overlay) is not supported", undefined, "name the distro: osbuild osbuilder rootfs-builder [-r DIR] DISTRO");
  }
  const guest = guestSettings(vars, distro, { pruneSystemdUnits: options.has("d"), builderVersion: options.get("o"), agentVersion: options.get("a") });
  const dir = resolve(options.get("r") ?? vars.get("ROOTFS_DIR") ?? `rootfs-${guest.distro}`);
  const rootfs = addRootfs(plan, guest);
  return { plan, filesDir: dirname(dir), rootfsDirs: [{ from: rootfs, dir }] };
}
