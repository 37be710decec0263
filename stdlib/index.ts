// The standard library of steps: every one written with the public defineStep, one file each.

export { fetchBase, type FetchBaseOptions } from "./fetch-base.js";
export { overlay, type OverlayOptions } from "./overlay.js";
export { mkCpio, type MkCpioOptions, type CpioCompression } from "./mk-cpio.js";
