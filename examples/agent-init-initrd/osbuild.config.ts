// A small initrd with the agent as PID 1 (osbuilder's AGENT_INIT=yes initrd).
//   osbuild run --config examples/agent-init-initrd/osbuild.config.ts
//   osbuild boot initrd --config examples/agent-init-initrd/osbuild.config.ts --expect OSBUILD-TEST-AGENT

import { defineConfig, fetchBase, installAgent, mkCpio, param, provision } from "osbuild";

export default defineConfig({
  params: { agent: param.path("../../build/agent/kata-agent", "the kata-agent binary") },
  sourceDateEpoch: 1735689600,
  targets: ({ agent }) => {
    const base = fetchBase({ distro: "debian", release: "bookworm", init: "agent" });
    const rootfs = installAgent(provision(base, { init: "agent" }), { binary: agent, init: "agent" });
    return { initrd: mkCpio(rootfs, { compression: "zstd" }) };
  },
});
