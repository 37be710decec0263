// Only the kernel modules a guest needs, with their dependencies, from the machine's
// linux-image-amd64 (osbuilder can only copy a whole modules tree).
//   osbuild run --config examples/kernel-modules/osbuild.config.ts --set kernel=$(ls /lib/modules | head -1)

import { addKernelModules, defineConfig, fetchBase, installAgent, mkCpio, param, provision } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path("../../build/agent/kata-agent", "the kata-agent binary"),
    kernel: param.string("6.1.0-56-amd64", "the kernel release the modules are for (uname -r)"),
  },
  sourceDateEpoch: 1735689600,
  targets: ({ agent, kernel }) => {
    const base = provision(fetchBase({ distro: "debian", release: "bookworm", init: "agent" }), { init: "agent" });
    const withModules = addKernelModules(base, { from: "/lib/modules", kernelVersion: kernel, modules: ["virtio_blk", "virtio_net", "vsock", "vmw_vsock_virtio_transport", "9p", "9pnet_virtio", "virtiofs"] });
    return { initrd: mkCpio(installAgent(withModules, { binary: agent, init: "agent" })) };
  },
});
