// fetchBase: the bottom layer of a rootfs, from a directory or a tar archive on the host.

import { defineStep } from "../engine/index.js";

export type FetchBaseOptions =
  | {
      /** A directory holding a root filesystem; copied with owners (when root), modes, links and xattrs. */
      directory: string;
      tarball?: never;
    }
  | {
      /** A tar archive (plain, gzip, zstd, xz or bzip2) of a root filesystem. */
      tarball: string;
      directory?: never;
    };

export const fetchBase = defineStep({
  kind: "fetch-base",
  version: 1,
  inputs: [],
  output: "rootfs",
  hostPaths: ["directory", "tarball"],
  tools: (options: FetchBaseOptions) => (options.directory !== undefined ? [{ command: "cp", package: "coreutils" }] : []),
  validate(options: FetchBaseOptions) {
    const sources = (["directory", "tarball"] as const).filter((name) => options[name] !== undefined);
    if (sources.length !== 1) return `give exactly one of 'directory' or 'tarball' (got ${sources.length === 0 ? "none" : sources.join(" and ")})`;
    return undefined;
  },
  async run(options: FetchBaseOptions, ctx) {
    if (options.tarball !== undefined) {
      await ctx.appendLayer(options.tarball);
      return;
    }
    const tree = await ctx.tree();
    // The tree is empty, so cp cannot be led through a symlink already in it.
    await ctx.exec("cp", ["-a", "--no-target-directory", `${options.directory}/.`, tree.root]);
  },
});
