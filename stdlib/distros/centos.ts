// CentOS Stream: osbuilder's centos/config.sh (dnf --installroot there; here the official
// image plus dnf inside it).

import type { Distro } from "./types.js";

export const centos: Distro = {
  name: "centos",
  prettyName: "centos",
  releases: { stream9: "9", "9": "9", stream10: "10", "10": "10" },
  defaultRelease: "stream9",
  architectures: ["x86_64", "aarch64", "ppc64le", "s390x"],
  archName: (arch) => arch,
  packages: { base: ["chrony", "libseccomp"], systemd: ["systemd"] },
  initProcess: "systemd",
  bootstrap: {
    kind: "image",
    image: (release) => `quay.io/centos/centos:${release.startsWith("stream") ? release : `stream${release}`}`,
  },
  packageManager: { format: "rpm", installScript: 'dnf install -y --setopt=install_weak_deps=False "$@" && dnf clean all' },
  prunePaths: ["usr/share/man", "usr/share/doc", "usr/share/info"],
};
