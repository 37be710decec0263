// /var/lib/osbuilder/osbuilder.yaml, byte for byte in the layout of osbuilder's
// create_summary_file (file-format-version 0.0.2), which Kata's kata-collect-data.sh reads.

import { OSBUILD_VERSION } from "./version.js";

export interface OsbuilderYamlInput {
  sourceDateEpoch: number;
  architecture: string;
  distro: { name: string; version: string; packages: { default: readonly string[]; extra: readonly string[] } };
  agent: { version: string; isInit: boolean };
}

export function osbuilderYaml(input: OsbuilderYamlInput): string {
  const list = (packages: readonly string[]): string[] => [...new Set(packages)].sort().map((name) => `      - "${name}"`);
  const lines = [
    "---",
    "osbuilder:",
    `  url: "osbuild"`,
    `  version: "${OSBUILD_VERSION}"`,
    `rootfs-creation-time: "${creationTime(input.sourceDateEpoch)}"`,
    `description: "osbuilder rootfs"`,
    `file-format-version: "0.0.2"`,
    `architecture: "${input.architecture}"`,
    "base-distro:",
    `  name: "${input.distro.name}"`,
    `  version: "${input.distro.version}"`,
    "  packages:",
    "    default:",
    ...list(input.distro.packages.default),
    "    extra:",
    ...(input.distro.packages.extra.length > 0 ? list(input.distro.packages.extra) : [""]),
    "agent:",
    `  url: "https://github.com/kata-containers/kata-containers"`,
    `  name: "kata-agent"`,
    `  version: "${input.agent.version}"`,
    `  agent-is-init-daemon: "${input.agent.isInit ? "yes" : "no"}"`,
  ];
  return `${lines.join("\n")}\n`;
}

/** `date -u -d@EPOCH '+%Y-%m-%dT%T.%N%zZ'`, as osbuilder writes it (with SOURCE_DATE_EPOCH). */
function creationTime(epoch: number): string {
  return `${new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, "")}.000000000+0000Z`;
}

/** Reads back the fields other steps need (the init mode) from an osbuilder.yaml. */
export function agentIsInit(yaml: string): boolean | undefined {
  const match = /^\s*agent-is-init-daemon:\s*"?(yes|no)"?\s*$/m.exec(yaml);
  return match ? match[1] === "yes" : undefined;
}
