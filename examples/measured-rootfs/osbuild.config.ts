// osbuilder's measured rootfs (MEASURED_ROOTFS=yes): a dm-verity protected image, its root
// hash file, and the kernel parameters that make the guest verify its root.

import { defineConfig, fetchBase, installAgent, mkVerityImage, param, provision } from "osbuild";

export default defineConfig({
  params: { agent: param.path("../../build/agent/kata-agent", "the kata-agent binary") },
  sourceDateEpoch: 1735689600,
  targets: ({ agent }) => {
    const base = fetchBase({ distro: "debian", release: "bookworm", init: "systemd" });
    const rootfs = installAgent(provision(base, { init: "systemd", confidential: true, pruneSystemdUnits: true }), { binary: agent, init: "systemd", confidential: true });
    const { image, rootHash, kernelParams } = mkVerityImage(rootfs);
    return { image, root_hash: rootHash, "kernel-params": kernelParams };
  },
});
