// A disk image where systemd is PID 1 and starts kata-agent.service (osbuilder's default).
//   osbuild boot image --config examples/systemd-image/osbuild.config.ts --expect "OSBUILD-TEST-AGENT: init=systemd"

import { defineConfig, fetchBase, installAgent, mkExt4, param, provision } from "osbuild";

export default defineConfig({
  params: { agent: param.path("../../build/agent/kata-agent", "the kata-agent binary") },
  sourceDateEpoch: 1735689600,
  targets: ({ agent }) => {
    const base = fetchBase({ distro: "debian", release: "bookworm", init: "systemd", packages: ["kmod"] });
    const rootfs = installAgent(provision(base, { init: "systemd", pruneSystemdUnits: true }), { binary: agent, init: "systemd" });
    return { image: mkExt4(rootfs, { extraFreeMiB: 64 }) };
  },
});
