// The engine's public API: how configs and steps are written. Nothing here knows about
// Kata or Linux distributions.

export { defineConfig, defineStep, param, ref } from "./define.js";
export { ConfigError } from "./errors.js";

/** Defines an `osbuild` subcommand (the standard library's boot and verify-reproducible use this). */
export function defineCommand(spec: import("./types.js").CommandSpec): import("./types.js").CommandSpec {
  return spec;
}
export type * from "./types.js";
