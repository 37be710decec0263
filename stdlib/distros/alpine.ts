// Alpine: osbuilder's alpine/config.sh. The agent must be init (no systemd on Alpine).

import type { Distro } from "./types.js";

export const alpine: Distro = {
  name: "alpine",
  prettyName: "Alpine",
  releases: { "latest-stable": "latest-stable", "3.19": "3.19", "3.20": "3.20", "3.21": "3.21", "3.22": "3.22", edge: "edge" },
  defaultRelease: "latest-stable",
  architectures: ["x86_64", "aarch64", "ppc64le", "s390x"],
  archName: (arch) => arch,
  packages: { base: ["alpine-base", "libseccomp"], systemd: [] },
  initProcess: "kata-agent",
  bootstrap: {
    kind: "image",
    image: (release) => `docker.io/library/alpine:${release === "latest-stable" ? "latest" : release}`,
  },
  packageManager: { format: "apk", installScript: 'apk add --no-cache "$@"' },
  prunePaths: ["usr/share/man", "usr/share/doc"],
};
