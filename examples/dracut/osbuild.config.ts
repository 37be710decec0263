// osbuilder's dracut build method (BUILD_METHOD=dracut): the initrd comes from the host
// system through dracut, with the agent and Kata's files as an overlay; the disk image is
// made from that initrd turned back into a rootfs, as osbuilder does.

import { defineConfig, dracut, fromInitrd, mkCpio, mkExt4, param } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path("../../build/agent/kata-agent", "the kata-agent binary"),
    init: param.choice(["agent", "systemd"], "agent"),
    kernel: param.string("6.1.0-56-amd64", "the guest kernel's release, whose modules dracut adds"),
  },
  sourceDateEpoch: 1735689600,
  targets: ({ agent, init, kernel }) => {
    const initrd = dracut({ agent, init, kernelVersion: kernel, drivers: ["virtio_blk", "vmw_vsock_virtio_transport"] });
    const rootfs = fromInitrd(initrd);
    return { initrd: mkCpio(rootfs), image: mkExt4(rootfs, { checks: false }), "dracut-initrd": initrd };
  },
});
