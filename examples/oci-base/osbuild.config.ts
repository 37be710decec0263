// A base pulled from an OCI registry instead of bootstrapped: any distro's image works.
//   osbuild run --config examples/oci-base/osbuild.config.ts --set image=127.0.0.1:5000/debian:bookworm
// (the tests fill a local registry with `skopeo copy oci:out/rootfs docker://...`)

import { defineConfig, fetchBase, installAgent, mkCpio, param } from "osbuild";

export default defineConfig({
  params: {
    image: param.string("127.0.0.1:5000/kata/rootfs:bookworm", "REGISTRY/REPO:TAG or ...@sha256:DIGEST"),
    agent: param.path("../../build/agent/kata-agent", "the kata-agent binary"),
  },
  sourceDateEpoch: 1735689600,
  targets: ({ image, agent }) => {
    const rootfs = installAgent(fetchBase({ image }), { binary: agent, init: "agent" });
    return { initrd: mkCpio(rootfs) };
  },
});
