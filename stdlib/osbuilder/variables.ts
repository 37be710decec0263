// The variables osbuilder 4.1 reads (its Makefile and scripts), where osbuild takes each
// from, and what osbuild does with it. make's precedence: a VAR=VALUE argument beats the
// environment, and a variable the Makefile sets with ':=' ignores the environment (make
// does, unless run with -e). The scripts themselves read only the environment.

import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError, type Arch } from "../../engine/index.js";

interface VariableInfo {
  /** The Makefile sets it with ':=' (its value, not the environment's, unless given as an argument). */
  makefileSets?: boolean;
  /** Said once when it is set: it changes nothing here, and why. */
  noEffect?: string;
  /** Why osbuild refuses this value (undefined: accepted). */
  refuse?: (value: string) => string | undefined;
}

const NO_CONTAINERS = "osbuild builds without a container engine";

/** Every variable osbuilder 4.1 reads. */
const VARIABLES: Readonly<Record<string, VariableInfo>> = {
  DISTRO: {},
  OS_VERSION: {},
  BUILD_METHOD: { makefileSets: true },
  AGENT_INIT: {},
  AGENT_SOURCE_BIN: {},
  AGENT_TARBALL: {},
  AGENT_VERSION: {},
  AGENT_POLICY: {},
  AGENT_POLICY_FILE: {},
  KERNEL_MODULES_DIR: {},
  EXTRA_PKGS: {},
  REPO_URL: {},
  REPO_URL_X86_64: {},
  REPO_COMPONENTS: {},
  ARCH: {},
  GUEST_HOOKS_TARBALL: {},
  COCO_GUEST_COMPONENTS_TARBALL: {},
  PAUSE_IMAGE_TARBALL: {},
  CONFIDENTIAL_GUEST: {},
  MEASURED_ROOTFS: {},
  SKIP_DAX_HEADER: {},
  IMAGE_SIZE_ALIGNMENT_MB: {},
  FS_TYPE: {},
  BUILD_VARIANT: { refuse: (value) => (value === "nvidia" || value.startsWith("nvidia-") ? `BUILD_VARIANT=${value}: the NVIDIA GPU stack (rootfs-builder/nvidia) is not supported by osbuild` : undefined) },
  SKIP_ROOTFS_CHECK: {},
  DRACUT_KVERSION: {},
  ROOTFS_BUILD_DEST: { makefileSets: true },
  IMAGES_BUILD_DEST: { makefileSets: true },
  SOURCE_DATE_EPOCH: {},
  DEBUG: {},
  USE_DOCKER: {},
  USE_PODMAN: {},
  ROOTFS_ONLY: {},
  // image_builder.sh, initrd_builder.sh, rootfs.sh's environment
  IMAGE: {},
  INITRD_IMAGE: {},
  ROOTFS_DIR: {},
  ROOT_FREE_SPACE: {},
  BLOCK_SIZE: {},
  AGENT_BIN: { refuse: (value) => (value !== "" && value !== "kata-agent" ? `AGENT_BIN=${value}: osbuild installs the agent as /usr/bin/kata-agent only` : undefined) },
  SELINUX: { refuse: (value) => (value === "yes" ? "SELINUX=yes: a guest labelled for SELinux is not supported by osbuild" : undefined) },
  NVIDIA_GPU_STACK: { refuse: (value) => (value !== "" ? `NVIDIA_GPU_STACK=${value}: the NVIDIA GPU stack is not supported by osbuild` : undefined) },
  SECCOMP: { refuse: (value) => (value === "no" ? "SECCOMP=no: osbuild does not build the agent, and always installs libseccomp2 (SECCOMP=yes)" : undefined) },
  KBUILD_SIGN_PIN: { noEffect: "it signs the NVIDIA kernel modules, which osbuild does not build" },
  LIBC: { noEffect: "it picks the libc of an agent built from source; osbuild installs a built agent" },
  GRACEFUL_EXIT: { noEffect: "osbuild fails a build that fails" },
  DOCKER_RUNTIME: { noEffect: NO_CONTAINERS },
  IMAGE_REGISTRY: { noEffect: NO_CONTAINERS },
  INSIDE_CONTAINER: { noEffect: NO_CONTAINERS },
  NSDAX_BIN: { noEffect: "osbuild writes the NVDIMM PFN block itself" },
  DNF_CONF: { noEffect: "osbuild makes dnf-based distros from their OCI images" },
  DISTRO_REPO: { noEffect: "osbuild makes dnf-based distros from their OCI images" },
  PKG_MANAGER: { noEffect: "osbuild makes dnf-based distros from their OCI images" },
  OSBUILDER_USE_CHRONIC: { noEffect: "osbuild prints one line per step" },
};

export type Origin = "argument" | "environment";

/** Variable values with make's precedence, plus what was said about them. */
export class Variables {
  private readonly said = new Set<string>();

  constructor(
    private readonly args: ReadonlyMap<string, string>,
    private readonly env: Readonly<Record<string, string | undefined>>,
    private readonly log: (message: string) => void,
    /** Whether the values come through make (arguments, ':=' rules) or straight from a script's environment. */
    private readonly viaMake: boolean,
  ) {
    for (const name of args.keys()) if (!Object.hasOwn(VARIABLES, name)) log(`warning: ${name} is not a variable osbuilder 4.1 reads: ignored`);
    for (const [name, info] of Object.entries(VARIABLES)) {
      const value = this.raw(name);
      if (value === undefined) continue;
      const refusal = info.refuse?.(value);
      if (refusal) throw new ConfigError(refusal);
      if (info.noEffect && value !== "") this.once(`${name}=${value} has no effect: ${info.noEffect}`);
    }
    if (viaMake) {
      for (const [name, info] of Object.entries(VARIABLES)) {
        if (info.makefileSets && !args.has(name) && env[name] !== undefined) {
          this.once(`warning: ${name} from the environment is ignored, as make ignores it (osbuilder's Makefile sets it with ':='): pass ${name}=${env[name]} as an argument`);
        }
      }
    }
    const engines = ["USE_DOCKER", "USE_PODMAN"].filter((name) => this.raw(name));
    if (engines.length > 0) this.once(`${engines.join(" and ")}: not needed, osbuild builds without Docker or Podman (and without root)`);
  }

  /** The value make (or the script) would see, or undefined when unset. */
  raw(name: string): string | undefined {
    if (this.args.has(name)) return this.args.get(name);
    if (this.viaMake && VARIABLES[name]?.makefileSets) return undefined;
    return this.env[name];
  }

  /** Every osbuilder variable that is set, by name: what a provenance records as the build's parameters. */
  values(): Record<string, string> {
    const set = Object.keys(VARIABLES).sort().flatMap((name) => {
      const value = this.raw(name);
      return value === undefined ? [] : [[name, value] as const];
    });
    return Object.fromEntries(set);
  }

  /** Set and not empty (the scripts' `[[ -n $VAR ]]`). */
  get(name: string): string | undefined {
    const value = this.raw(name);
    return value === undefined || value === "" ? undefined : value;
  }

  origin(name: string): Origin | undefined {
    if (this.args.has(name)) return "argument";
    return this.raw(name) === undefined ? undefined : "environment";
  }

  once(message: string): void {
    if (this.said.has(message)) return;
    this.said.add(message);
    this.log(message);
  }

  /** A yes/no variable. osbuilder takes anything but "yes" for no; osbuild refuses a typo rather than guess. */
  yesNo(name: string, fallback: boolean): boolean {
    const value = this.get(name);
    if (value === undefined) return fallback;
    if (value === "yes") return true;
    if (value === "no") return false;
    throw new ConfigError(`${name}=${value}: expected yes or no`, undefined, "osbuilder reads anything but 'yes' as 'no'; osbuild asks to be told");
  }

  /** A whole number at least `minimum`. */
  integer(name: string, minimum: number): number | undefined {
    const value = this.get(name);
    if (value === undefined) return undefined;
    const number = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number < minimum) throw new ConfigError(`${name}=${value}: expected a whole number of at least ${minimum}`);
    return number;
  }

  choice<const C extends string>(name: string, choices: readonly C[], fallback: C): C {
    const value = this.get(name) ?? fallback;
    if (!(choices as readonly string[]).includes(value)) throw new ConfigError(`${name}=${value}: expected one of ${choices.join(", ")}`);
    return value as C;
  }

  /** A host file or directory that must exist, as an absolute path. */
  path(name: string, kind: "file" | "directory"): string | undefined {
    const value = this.get(name);
    if (value === undefined) return undefined;
    const absolute = resolve(value);
    if (!existsSync(absolute)) throw new ConfigError(`${name}=${value}: no such ${kind}`);
    if (kind === "file" ? !statSync(absolute).isFile() : !statSync(absolute).isDirectory()) throw new ConfigError(`${name}=${value}: not a ${kind}`);
    return absolute;
  }
}

/** `uname -m` spellings osbuild builds for. */
export const ARCHES: readonly Arch[] = ["x86_64", "aarch64", "ppc64le", "s390x"];

/** Splits make's command line into targets and VAR=VALUE assignments (in order; a later one wins). */
export function parseMakeArguments(args: readonly string[]): { targets: string[]; assignments: Map<string, string> } {
  const targets: string[] = [];
  const assignments = new Map<string, string>();
  for (const arg of args) {
    const assignment = /^([A-Za-z_][A-Za-z0-9_]*)(?:::?)?=(.*)$/s.exec(arg);
    if (assignment) assignments.set(assignment[1]!, assignment[2]!);
    else if (arg.startsWith("-")) throw new ConfigError(`osbuilder: make option ${arg} is not supported`, undefined, "give targets and VAR=VALUE arguments (osbuild runs the steps it needs, in parallel, by itself)");
    else targets.push(arg);
  }
  return { targets, assignments };
}
