// What the standard library's steps need of the build machine besides their programs, for
// `osbuild doctor`: user namespaces (the sandbox of `run`; mmdebstrap --mode=unshare) and
// subordinate ids (mmdebstrap without root), and binfmt emulation to run another
// architecture's programs. Each check looks at the machine itself, the way the step will
// use it, and says what to do when it falls short.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { userInfo } from "node:os";
import type { BuildMachine, MachineProblem, MachineRequirement } from "../engine/index.js";
import { foreignProgramsProblem } from "./binfmt.js";

/** mmdebstrap --mode=unshare maps this many ids (a whole 16-bit range). */
const SUBORDINATE_IDS = 65536;

/** Bootstrapping with mmdebstrap: without root it unshares a user namespace mapped with the user's subordinate ids. */
export function mmdebstrapRequirements(machine: BuildMachine): MachineRequirement[] {
  return [...(machine.root ? [] : [userNamespaces, subordinateIds]), ...foreignPrograms(machine)];
}

/**
 * Commands run inside a rootfs (stdlib/sandbox.ts): always in a user namespace (as root
 * too), and through emulation when the rootfs is for another architecture.
 */
export function sandboxRequirements(machine: BuildMachine): MachineRequirement[] {
  return [userNamespaces, ...foreignPrograms(machine)];
}

const userNamespaces: MachineRequirement = {
  name: "user namespaces",
  check() {
    const probe = spawnSync("unshare", ["--user", "--map-root-user", "true"], { encoding: "utf8", timeout: 10_000 });
    if ((probe.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") {
      return { problem: "unshare is not installed", fix: "apt-get install util-linux", packages: ["util-linux"] };
    }
    if (probe.status === 0) return undefined;
    const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim();
    if (sysctl("kernel/unprivileged_userns_clone") === "0") {
      return { problem: `unshare --user failed (${why}): kernel.unprivileged_userns_clone is 0`, fix: "as root: sysctl -w kernel.unprivileged_userns_clone=1 (and set it in /etc/sysctl.d/ to keep it)" };
    }
    if (sysctl("user/max_user_namespaces") === "0") {
      return { problem: `unshare --user failed (${why}): user.max_user_namespaces is 0`, fix: "as root: sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d/ to keep it)" };
    }
    if (sysctl("kernel/apparmor_restrict_unprivileged_userns") === "1") {
      return { problem: `unshare --user failed (${why}): AppArmor restricts unprivileged user namespaces`, fix: "as root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile that allows them for unshare and mmdebstrap" };
    }
    return { problem: `unshare --user failed: ${why}`, fix: "allow user namespaces here (a container may need a seccomp profile that permits unshare), or build as root" };
  },
};

const subordinateIds: MachineRequirement = {
  name: "subordinate ids",
  check() {
    const user = userInfo();
    const missing = ["/etc/subuid", "/etc/subgid"].filter((file) => subordinateRange(file, user.username, user.uid) < SUBORDINATE_IDS);
    const fix = `as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${user.username}`;
    if (missing.length > 0) return { problem: `no range of ${SUBORDINATE_IDS} ids for ${user.username} in ${missing.join(" and ")}`, fix };
    const helpers = ["newuidmap", "newgidmap"].filter((helper) => (spawnSync(helper, [], { timeout: 10_000 }).error as NodeJS.ErrnoException | undefined)?.code === "ENOENT");
    if (helpers.length > 0) return { problem: `${helpers.join(" and ")} (which map them) not installed`, fix: "apt-get install uidmap", packages: ["uidmap"] };
    return undefined;
  },
};

/** Programs of the target architecture run through binfmt_misc and QEMU's user-mode emulators (stdlib/binfmt.ts). */
function foreignPrograms(machine: BuildMachine): MachineRequirement[] {
  if (machine.arch === machine.hostArch) return [];
  return [
    {
      name: `${machine.arch} programs on ${machine.hostArch} (binfmt)`,
      check(): MachineProblem | undefined {
        const found = foreignProgramsProblem(machine.arch);
        if (!found) return undefined;
        const steps = found.commands.filter((command) => !command.startsWith("apt-get install "));
        const registers = steps.every((command) => command.startsWith("mount ") || command.startsWith("update-binfmts --enable "));
        const fix = `as root: ${steps.join(" && ")}${registers ? " (a build as root does this itself)" : ""}`;
        return { problem: found.problem, fix, packages: found.packages };
      },
    },
  ];
}

/** How many ids `user` (by name or uid) gets in a subordinate id file. */
function subordinateRange(file: string, user: string, uid: number): number {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return 0;
  }
  let total = 0;
  for (const line of text.split("\n")) {
    const [owner, , count] = line.trim().split(":");
    if (owner === user || owner === String(uid)) total = Math.max(total, Number(count) || 0);
  }
  return total;
}

function sysctl(name: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${name}`, "utf8").trim();
  } catch {
    return undefined;
  }
}
