// The "osbuild" package: the engine's API plus the standard library of steps.

export * from "./engine/index.js";
export * from "./stdlib/index.js";
