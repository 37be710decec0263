// The default build: a Kata guest from Debian bookworm, the agent installed as init (or
// started by systemd with --set init=systemd), packed as an initrd and as a disk image,
// and kept as a rootfs (an OCI image layout).
//
//   osbuild run                                  # build everything into ./out
//   osbuild run --set agent=/path/to/kata-agent  # any real kata-agent binary
//   osbuild run --set init=systemd               # systemd as PID 1

import { defineConfig, fetchBase, installAgent, mkCpio, mkExt4, param, provision } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path("./build/agent/kata-agent", "the kata-agent binary to install (default: osbuild's test agent)"),
    init: param.choice(["agent", "systemd"], "agent", "who is PID 1: the agent itself, or systemd"),
    release: param.string("bookworm", "the Debian release"),
  },
  // Every mtime in the outputs is clamped to this (2025-01-01); SOURCE_DATE_EPOCH overrides it.
  sourceDateEpoch: 1735689600,
  targets: ({ agent, init, release }) => {
    const base = fetchBase({ distro: "debian", release, init });
    // pruneSystemdUnits: the systemd units Kata does not need go, as with osbuilder's `make rootfs`
    const provisioned = provision(base, { init, pruneSystemdUnits: true });
    const rootfs = installAgent(provisioned, { binary: agent, init });
    return {
      initrd: mkCpio(rootfs, { compression: "gzip" }),
      image: mkExt4(rootfs),
      rootfs,
    };
  },
});
