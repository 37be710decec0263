// A Kata Containers guest disk image: Debian with systemd as PID 1 starting
// kata-agent.service, what osbuilder builds by default.
//
//   npx osbuild run                                                 # builds out/image and out/rootfs
//   npx osbuild boot image --nvdimm --expect OSBUILD-TEST-AGENT     # boots it in QEMU, as Kata does on x86
//   npx osbuild run --set agent=/path/to/kata-agent                 # with a real kata-agent
//
// Every step and option is typed (hover over them in your editor): `npx osbuild check`
// reports a mistake at its file:line:col before anything runs.

import { defineConfig, fetchBase, installAgent, mkExt4, param, provision } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path("./build/kata-agent", "the kata-agent binary (osbuild init built osbuild's test agent there)"),
    release: param.string("bookworm", "the Debian release"),
  },
  // Every mtime in the outputs is clamped to this (2025-01-01); SOURCE_DATE_EPOCH overrides it.
  sourceDateEpoch: 1735689600,
  targets: ({ agent, release }) => {
    // packages: more Debian packages on top of osbuilder's (its EXTRA_PKGS).
    const base = fetchBase({ distro: "debian", release, init: "systemd", packages: [] });
    const rootfs = installAgent(provision(base, { init: "systemd", pruneSystemdUnits: true }), { binary: agent, init: "systemd" });
    // The image (ext4 in an MBR behind osbuilder's NVDIMM DAX header), and the rootfs as an
    // OCI image layout (skopeo copy oci:out/rootfs docker://...).
    return { image: mkExt4(rootfs), rootfs };
  },
});
