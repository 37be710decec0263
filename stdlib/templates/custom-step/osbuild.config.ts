// A step of your own, written with the same defineStep as osbuild's standard library, in a
// Kata guest initrd (Debian, the agent as PID 1).
//
//   npx osbuild run                                        # builds out/initrd
//   npx osbuild boot initrd --expect OSBUILD-TEST-AGENT    # boots it in QEMU
//   npx osbuild explain personalize                        # why it is cached, or what changed
//
// Every step and option is typed (hover over them in your editor): `npx osbuild check`
// reports a mistake at its file:line:col before anything runs.

import { copyFileSync, writeFileSync } from "node:fs";
import { defineConfig, defineStep, fetchBase, installAgent, mkCpio, param, provision } from "osbuild";

interface PersonalizeOptions {
  /** A file of this project, shown at login. */
  motd: string;
  hostname: string;
}

/** Sets the guest's host name and message of the day. */
const personalize = defineStep({
  kind: "personalize",
  // Bump it when run() changes: what the old version built is no longer reused.
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  // Host paths are resolved against this file's directory; the cache key holds their content.
  hostPaths: ["motd"],
  validate: (options: PersonalizeOptions) => (/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(options.hostname) ? undefined : `'${options.hostname}' is not a host name`),
  async run(options: PersonalizeOptions, ctx) {
    // A private copy of the input rootfs; whatever run() changes in it becomes one new layer.
    const tree = await ctx.tree();
    // tree.path() resolves paths as inside a chroot: writing there never leaves the tree.
    copyFileSync(options.motd, tree.path("/etc/motd"));
    writeFileSync(tree.path("/etc/hostname"), `${options.hostname}\n`);
    ctx.log(`host name ${options.hostname}`);
  },
});

export default defineConfig({
  params: {
    agent: param.path("./build/kata-agent", "the kata-agent binary (osbuild init built osbuild's test agent there)"),
    hostname: param.string("kata-guest", "the guest's host name"),
  },
  // Every mtime in the outputs is clamped to this (2025-01-01); SOURCE_DATE_EPOCH overrides it.
  sourceDateEpoch: 1735689600,
  targets: ({ agent, hostname }) => {
    const base = provision(fetchBase({ distro: "debian", release: "bookworm", init: "agent" }), { init: "agent" });
    const personal = personalize(base, { motd: "./motd", hostname });
    return { initrd: mkCpio(installAgent(personal, { binary: agent, init: "agent" })) };
  },
});
