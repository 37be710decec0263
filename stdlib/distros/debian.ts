// Debian: osbuilder's debian/config.sh, which re-uses the Ubuntu configuration.

import type { Arch } from "../../engine/index.js";
import type { Distro } from "./types.js";

const DEBIAN_ARCHES: Readonly<Record<Arch, string>> = { x86_64: "amd64", aarch64: "arm64", ppc64le: "ppc64el", s390x: "s390x" };

/** What osbuilder's ubuntu/config.sh installs (debian/config.sh sources it). */
const DEBIAN_FAMILY_PACKAGES = {
  base: ["chrony", "iptables", "dbus", "cryptsetup-bin", "e2fsprogs", "libseccomp2"],
  systemd: ["init"],
} as const;

/** What osbuilder's ubuntu rootfs_lib.sh deletes right after mmdebstrap. */
const DEBIAN_FAMILY_PRUNE = ["bash-completion", "bug", "doc", "info", "lintian", "locale", "man", "menu", "misc", "pixmaps", "terminfo", "zsh"].map((name) => `usr/share/${name}`);

/** What Debian and Ubuntu share: arches, packages, init and pruning. */
export const DEBIAN_FAMILY = {
  architectures: ["x86_64", "aarch64", "ppc64le", "s390x"],
  archName: (arch: Arch) => DEBIAN_ARCHES[arch],
  packages: DEBIAN_FAMILY_PACKAGES,
  initProcess: "systemd",
  prunePaths: DEBIAN_FAMILY_PRUNE,
  // Inside a distro's OCI image (fetchBase({ distro, image })): apt, lists removed after.
  packageManager: { format: "deb", installScript: 'apt-get update && apt-get install -y --no-install-recommends "$@" && apt-get clean && rm -rf /var/lib/apt/lists/*' },
} as const satisfies Partial<Distro>;

export const debian: Distro = {
  ...DEBIAN_FAMILY,
  name: "debian",
  prettyName: "debian",
  releases: {
    buster: "10",
    bullseye: "11",
    bookworm: "12",
    trixie: "13",
    forky: "14",
    sid: "unstable",
    "10": "10",
    "11": "11",
    "12": "12",
    "13": "13",
  },
  defaultRelease: "bookworm",
  bootstrap: {
    kind: "mmdebstrap",
    variant: "required",
    defaultMirror: () => "http://deb.debian.org/debian",
    components: ["main"],
  },
};
