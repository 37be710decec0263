// run: commands inside the rootfs, the equivalent of a Dockerfile RUN, for whatever the
// standard library does not cover. Runs in a user namespace of its own where the rootfs's
// root is root and the host's is no one (see sandbox.ts); the commands may chown freely
// within the rootfs's ids 0–65535.

import { defineStep } from "../engine/index.js";
import { recordInstalledPackages } from "./packages/index.js";
import { sandboxRequirements } from "./machine.js";
import { runInTree } from "./sandbox.js";

export interface RunOptions {
  /** Shell script run with `sh -e`. */
  script: string;
  /** The interpreter inside the rootfs. Default "/bin/sh". */
  shell?: string;
  /** Keep network access (default true; false isolates the commands from the network). */
  network?: boolean;
  env?: Record<string, string>;
  /** Working directory inside the rootfs. Default "/". */
  cwd?: string;
}

export const run = defineStep({
  kind: "run",
  version: 3,
  inputs: ["rootfs"],
  output: "rootfs",
  tools: [
    { command: "unshare", package: "util-linux" },
    { command: "setpriv", package: "util-linux" },
  ],
  requirements: (_options: RunOptions, machine) => sandboxRequirements(machine),
  validate(options: RunOptions) {
    if (typeof options.script !== "string" || options.script.trim() === "") return "script must be a non-empty shell script";
    return undefined;
  },
  async run(options: RunOptions, ctx) {
    const tree = await ctx.tree();
    await runInTree(ctx, tree, [options.shell ?? "/bin/sh", "-ec", options.script], { network: options.network, env: options.env, cwd: options.cwd });
    // What the script changed is its doing; packages it installed are read from the database it left.
    ctx.provenance.command(options.script);
    recordInstalledPackages(ctx.provenance, tree);
  },
});
