// A Kata Containers guest initrd: Debian with the agent as PID 1, what osbuilder builds
// with AGENT_INIT=yes.
//
//   npx osbuild run                                        # builds out/initrd
//   npx osbuild boot initrd --expect OSBUILD-TEST-AGENT    # boots it in QEMU
//   npx osbuild run --set agent=/path/to/kata-agent        # with a real kata-agent
//
// Every step and option is typed (hover over them in your editor): `npx osbuild check`
// reports a mistake at its file:line:col before anything runs.

import { defineConfig, fetchBase, installAgent, mkCpio, param, provision } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path("./build/kata-agent", "the kata-agent binary (osbuild init built osbuild's test agent there)"),
    release: param.string("bookworm", "the Debian release"),
  },
  // Every mtime in the outputs is clamped to this (2025-01-01); SOURCE_DATE_EPOCH overrides it.
  sourceDateEpoch: 1735689600,
  targets: ({ agent, release }) => {
    // packages: more Debian packages on top of osbuilder's (its EXTRA_PKGS).
    const base = fetchBase({ distro: "debian", release, init: "agent", packages: [] });
    const rootfs = installAgent(provision(base, { init: "agent" }), { binary: agent, init: "agent" });
    return { initrd: mkCpio(rootfs) };
  },
});
