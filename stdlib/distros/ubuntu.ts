// Ubuntu: osbuilder's ubuntu/config.sh and rootfs_lib.sh.

import type { Distro } from "./types.js";
import { DEBIAN_FAMILY } from "./debian.js";

export const ubuntu: Distro = {
  ...DEBIAN_FAMILY,
  name: "ubuntu",
  prettyName: "ubuntu",
  releases: {
    focal: "20.04",
    jammy: "22.04",
    noble: "24.04",
    plucky: "25.04",
    questing: "25.10",
    resolute: "26.04",
    "20.04": "20.04",
    "22.04": "22.04",
    "24.04": "24.04",
    "26.04": "26.04",
  },
  defaultRelease: "noble",
  bootstrap: {
    kind: "mmdebstrap",
    variant: "required",
    // osbuilder: archive.ubuntu.com for x86_64, ports.ubuntu.com for the others
    defaultMirror: (arch) => (arch === "x86_64" ? "http://archive.ubuntu.com/ubuntu" : "http://ports.ubuntu.com"),
    // archive.ubuntu.com and security.ubuntu.com (and their country mirrors) carry amd64 and
    // i386 only; ports.ubuntu.com every other architecture. Other mirrors: unknown, so trusted.
    archiveServes: (uri, arch) => {
      if (/\/\/([a-z]{2}\.)?(archive|security)\.ubuntu\.com\b/.test(uri)) return arch === "x86_64";
      if (/\/\/ports\.ubuntu\.com\b/.test(uri)) return arch !== "x86_64";
      return true;
    },
    components: ["main"],
    keyring: "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
  },
};
