// The engine's public API: how configs and steps are written. Nothing here knows about
// Kata or Linux distributions.

export { defineConfig, defineStep, param, ref } from "./define.js";
export type * from "./types.js";
