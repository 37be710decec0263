// What osbuild knows about a Linux distribution, as data: the equivalent of osbuilder's
// per-distro config.sh. Adding a distro is adding one such module (and listing it in index.ts).

import type { Arch } from "../../engine/index.js";
import type { PackageFormat } from "./package-names.js";

export interface Distro {
  /** Name used in configs: fetchBase({ distro: "debian" }). */
  name: string;
  /** As written in osbuilder.yaml's base-distro name. */
  prettyName: string;
  /** Release names (and aliases) this module knows → the version they stand for. */
  releases: Readonly<Record<string, string>>;
  defaultRelease: string;
  /** Architectures Kata supports this distro on (osbuilder's ARCH_EXCLUDE_LIST inverted). */
  architectures: readonly Arch[];
  /** The distro's name for an architecture (Debian: amd64, arm64, ppc64el, s390x). */
  archName(arch: Arch): string;
  /** osbuilder's PACKAGES: always installed; `systemd` only with systemd as init. */
  packages: { readonly base: readonly string[]; readonly systemd: readonly string[] };
  /** osbuilder's INIT_PROCESS: the init program when the agent is not init. */
  initProcess: string;
  /** How the base is made. */
  bootstrap: DebianBootstrap | ImageBootstrap;
  /**
   * The distro's package manager: the grammar of its package names, and a shell script run
   * inside a rootfs to install packages, which it gets as its arguments ("$@"), never pasted in.
   */
  packageManager: { format: PackageFormat; installScript: string };
  /** Removed right after bootstrap (docs, man pages, locales...), as osbuilder's build_rootfs does. */
  prunePaths: readonly string[];
}

/** mmdebstrap from a Debian-style archive. */
export interface DebianBootstrap {
  kind: "mmdebstrap";
  variant: string;
  /** The archive when neither the config nor the host's apt sources give one. */
  defaultMirror(arch: Arch): string;
  /**
   * Whether an archive (the URI of one of the host's apt sources) carries packages for
   * `arch`, when that is not the host's architecture. Default: yes (Debian's mirrors carry
   * every release architecture).
   */
  archiveServes?(uri: string, arch: Arch): boolean;
  /** Extra suites next to the release's, e.g. "-updates", "-security" and their archive. */
  components: readonly string[];
  keyring?: string;
}

/** A distro osbuild starts from its official OCI image, then installs packages in it. */
export interface ImageBootstrap {
  kind: "image";
  image(release: string): string;
}
