// run: commands inside the rootfs, the equivalent of a Dockerfile RUN, for whatever the
// standard library does not cover. Runs in private namespaces (see sandbox.ts); as root the
// commands may chown freely, without root they run as a mapped root user.

import { defineStep } from "../engine/index.js";
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
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  tools: [{ command: "unshare", package: "util-linux" }],
  validate(options: RunOptions) {
    if (typeof options.script !== "string" || options.script.trim() === "") return "script must be a non-empty shell script";
    return undefined;
  },
  async run(options: RunOptions, ctx) {
    const tree = await ctx.tree();
    await runInTree(ctx, tree, [options.shell ?? "/bin/sh", "-ec", options.script], { network: options.network, env: options.env, cwd: options.cwd });
  },
});
