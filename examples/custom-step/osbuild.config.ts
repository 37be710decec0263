// A step of your own, written with the same defineStep as the standard library: it adds a
// file and a service user; the engine records the change as one layer and caches it.

import { mkdirSync, writeFileSync, appendFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase, installAgent, mkCpio, param, provision } from "osbuild";

/** Writes /etc/motd and adds a system user, as a step with typed options. */
const customize = defineStep({
  kind: "customize",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  validate: (options: { motd: string; user: string }) => (/^[a-z_][a-z0-9_-]*$/.test(options.user) ? undefined : `user '${options.user}' is not a valid user name`),
  async run(options: { motd: string; user: string }, ctx) {
    const tree = await ctx.tree();
    writeFileSync(tree.path("/etc/motd"), `${options.motd}\n`);
    appendFileSync(tree.path("/etc/passwd"), `${options.user}:x:999:999::/var/lib/${options.user}:/usr/sbin/nologin\n`);
    appendFileSync(tree.path("/etc/group"), `${options.user}:x:999:\n`);
    mkdirSync(tree.path(`/var/lib/${options.user}`), { recursive: true });
    tree.chown(`/var/lib/${options.user}`, 999, 999); // works without root: owners live in the layer
    ctx.log(`added user ${options.user}`);
  },
});

export default defineConfig({
  params: { agent: param.path("../../build/agent/kata-agent", "the kata-agent binary") },
  sourceDateEpoch: 1735689600,
  targets: ({ agent }) => {
    const base = fetchBase({ distro: "debian", release: "bookworm", init: "agent" });
    const custom = customize(provision(base, { init: "agent" }), { motd: "built with osbuild", user: "guest" });
    return { initrd: mkCpio(installAgent(custom, { binary: agent, init: "agent" })) };
  },
});
