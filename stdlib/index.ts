// The standard library of steps: every one written with the public defineStep, one file each.

export { fetchBase, type FetchBaseOptions, type DistroBase, type ImageBase, type DirectoryBase, type TarballBase, type InitSystem } from "./fetch-base.js";
export { overlay, type OverlayOptions } from "./overlay.js";
export { installAgent, type InstallAgentOptions } from "./install-agent.js";
export { addKernelModules, type AddKernelModulesOptions } from "./add-kernel-modules.js";
export { provision, type ProvisionOptions } from "./provision.js";
export { run, type RunOptions } from "./run.js";
export { mkCpio, type MkCpioOptions, type CpioCompression } from "./mk-cpio.js";
export { DISTROS, type DistroName } from "./distros/index.js";
export { mkExt4, type MkExt4Options } from "./mk-ext4.js";
export { mkVerityImage, type MkVerityImageOptions } from "./mk-verity-image.js";
export { mkExtensionImage, type MkExtensionImageOptions } from "./mk-extension-image.js";
export { mkTar, type MkTarOptions } from "./mk-tar.js";
export { emptyMachineId } from "./empty-machine-id.js";
export { dracut, type DracutOptions } from "./dracut.js";
export { fromInitrd, type FromInitrdOptions } from "./from-initrd.js";
