// The starting points `osbuild init` writes. Each folder beside this file is one template,
// copied as it is into the new project: an osbuild.config.ts and the files it names. From
// then on they are the user's own config, so they are written as plain configs importing
// "osbuild" (they are not compiled with osbuild; the package test type-checks and builds
// them against the installed package).

export interface Template {
  readonly name: string;
  readonly summary: string;
  /** The config installs ./build/kata-agent, where `osbuild init` builds osbuild's test agent. */
  readonly agent: boolean;
  /** What to run once it built. */
  readonly next: string;
}

export const TEMPLATES: readonly Template[] = [
  { name: "kata-initrd", summary: "a Debian initrd with the agent as init (osbuilder's AGENT_INIT=yes)", agent: true, next: "npx osbuild boot initrd --expect OSBUILD-TEST-AGENT" },
  { name: "kata-image", summary: "a Debian disk image where systemd starts the agent (osbuilder's default image)", agent: true, next: "npx osbuild boot image --nvdimm --expect OSBUILD-TEST-AGENT" },
  { name: "extension", summary: "an erofs + dm-verity image of ./extension (a Kata guest extension image)", agent: false, next: "cat out/root_hash" },
  { name: "custom-step", summary: "a step of your own (defineStep) in a Debian initrd", agent: true, next: "npx osbuild boot initrd --expect OSBUILD-TEST-AGENT" },
];

export const DEFAULT_TEMPLATE = "kata-initrd";
