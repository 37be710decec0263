// `make -C tools/osbuilder TARGET... VAR=VALUE...` as a plan: which rootfs, images and
// initrds the targets ask for, and where osbuilder's Makefile puts them.

import { join, resolve } from "node:path";
import { ConfigError } from "../../engine/index.js";
import { DISTROS } from "../distros/index.js";
import { Plan } from "./plan.js";
import { addImage, addInitrd, addRootfs, archOf, diskSettings, guestSettings, sourceDateEpochOf } from "./recipes.js";
import type { Variables } from "./variables.js";

/** A rootfs directory to write, from a plan variable. */
export interface RootfsOutput {
  from: string;
  dir: string;
  /** make's marker file beside it (.${DISTRO}_rootfs.done). */
  marker?: string;
}

export interface MakePlan {
  plan: Plan;
  /** Where the plan's targets (images, initrds, root hash files) go: IMAGES_BUILD_DEST. */
  imagesDir: string;
  rootfsDirs: RootfsOutput[];
  /** `clean`: what it removes, before anything is built. */
  clean: string[];
  /** `list-distros` */
  listDistros: boolean;
}

interface Wanted {
  image?: string;
  initrd?: string;
}

export const MAKE_TARGETS = "rootfs, image, initrd, all, rootfs-DISTRO, image-DISTRO, initrd-DISTRO, clean, list-distros";

export function planMake(targets: readonly string[], vars: Variables): MakePlan {
  const rootfsDest = resolve(vars.raw("ROOTFS_BUILD_DEST") ?? ".");
  const imagesDest = resolve(vars.raw("IMAGES_BUILD_DEST") ?? ".");
  const method = vars.choice("BUILD_METHOD", ["distro", "dracut"], "distro");
  const distro = vars.get("DISTRO") ?? "ubuntu";
  const plan = new Plan(sourceDateEpochOf(vars), archOf(vars));
  const result: MakePlan = { plan, imagesDir: imagesDest, rootfsDirs: [], clean: [], listDistros: false };

  // Requests by distro ("" is the dracut method's rootfs); `all` is the Makefile's first rule.
  const wanted = new Map<string, Wanted>();
  const want = (name: string, what: Wanted = {}): void => void wanted.set(name, { ...wanted.get(name), ...what });
  const main = method === "dracut" ? "" : distro;
  for (const target of targets.length > 0 ? targets : ["all"]) {
    const suffixed = /^(rootfs|image|initrd)-(.+)$/.exec(target);
    if (target === "rootfs") want(main);
    else if (target === "image") want(main, { image: "kata-containers.img" });
    else if (target === "initrd") want(main, { initrd: "kata-containers-initrd.img" });
    else if (target === "all") want(main, { image: "kata-containers.img", initrd: "kata-containers-initrd.img" });
    else if (suffixed) {
      const [, kind, name] = suffixed as unknown as [string, "rootfs" | "image" | "initrd", string];
      if (kind === "rootfs") want(name!);
      else if (kind === "image") want(name!, { image: `kata-containers-image-${name}.img` });
      else want(name!, { initrd: `kata-containers-initrd-${name}.img` });
    } else if (target === "clean") {
      const rootfsDir = join(rootfsDest, `${method === "dracut" ? "dracut" : distro}_rootfs`);
      result.clean.push(join(rootfsDest, `.${method === "dracut" ? "dracut" : distro}_rootfs.done`), rootfsDir, `${rootfsDir}.oci`, join(imagesDest, "kata-containers.img"), join(imagesDest, "kata-containers-initrd.img"));
    } else if (target === "list-distros") result.listDistros = true;
    else throw new ConfigError(`osbuilder: no target '${target}'`, undefined, `targets: ${MAKE_TARGETS}`);
  }

  for (const [name, what] of wanted) {
    const disk = what.image ? diskSettings(vars) : undefined;
    if (name === "") {
      planDracut(plan, vars, what, disk, rootfsDest, result);
      continue;
    }
    // make's rootfs rule runs rootfs.sh -o VERSION -d -r DIR DISTRO: units pruned.
    const guest = guestSettings(vars, name, { pruneSystemdUnits: true });
    const rootfs = addRootfs(plan, guest);
    const dir = join(rootfsDest, `${name}_rootfs`);
    result.rootfsDirs.push({ from: rootfs, dir, marker: join(rootfsDest, `.${name}_rootfs.done`) });
    if (what.image) addImage(plan, rootfs, disk!, what.image);
    if (what.initrd) addInitrd(plan, rootfs, guest.init, what.initrd);
  }
  return result;
}

/** BUILD_METHOD=dracut: the initrd from this machine's files by dracut; rootfs and image from that initrd. */
function planDracut(plan: Plan, vars: Variables, what: Wanted, disk: ReturnType<typeof diskSettings> | undefined, rootfsDest: string, result: MakePlan): void {
  const agent = vars.path("AGENT_SOURCE_BIN", "file");
  if (!agent) throw new ConfigError("BUILD_METHOD=dracut needs AGENT_SOURCE_BIN (a kata-agent binary for this machine): osbuild does not build the agent, and dracut takes no tarball");
  const init = vars.yesNo("AGENT_INIT", false) ? "agent" : "systemd";
  // The Makefile sets DRACUT_KVERSION with ':=' under BUILD_METHOD=dracut: only an argument sets it.
  const kernelVersion = vars.origin("DRACUT_KVERSION") === "argument" ? vars.get("DRACUT_KVERSION") : undefined;
  if (kernelVersion === undefined && vars.get("DRACUT_KVERSION")) vars.once("DRACUT_KVERSION from the environment is ignored with BUILD_METHOD=dracut, as make ignores it: pass it as an argument");
  const initrd = plan.call("dracut", "dracutInitrd", undefined, { agent, init, kernelVersion }, "the dracut build method: this machine's systemd, udev and dbus, and the agent");
  const rootfs = plan.call("fromInitrd", "dracutRootfs", initrd, {}, "the dracut rootfs: the initrd unpacked");
  const dir = join(rootfsDest, "dracut_rootfs");
  result.rootfsDirs.push({ from: rootfs, dir, marker: join(rootfsDest, ".dracut_rootfs.done") });
  if (what.initrd) plan.target(what.initrd, initrd);
  if (what.image) addImage(plan, rootfs, disk!, what.image);
}

/** `make list-distros`: rootfs.sh -l. */
export function distroList(): string {
  return `${Object.keys(DISTROS).sort().join("\n")}\n`;
}
