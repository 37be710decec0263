// The engine's public API: how configs and steps are written. Nothing here knows about
// Kata or Linux distributions.

export { defineConfig, defineStep, param, ref } from "./define.js";
export { ConfigError } from "./errors.js";
/** The architectures osbuild builds for (`uname -m` names), a check for one, and the machine's. */
export { ARCHES, isArch, machineArch, parseArch } from "./arch.js";
/** osbuild's own version, as package.json has it. */
export { OSBUILD_VERSION } from "./version.js";
// Resolves a path's symlinks as the kernel would inside a chroot, through any lookup of a tree.
export { resolveSymlinks, type LookupPath } from "./layers/paths.js";

/** Defines an `osbuild` subcommand (the standard library's boot and verify-reproducible use this). */
export function defineCommand(spec: import("./types.js").CommandSpec): import("./types.js").CommandSpec {
  return spec;
}
export type * from "./types.js";
