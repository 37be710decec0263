// /var/lib/osbuilder/osbuilder.yaml, in the layout of osbuilder's create_summary_file
// (file-format-version 0.0.2), which Kata's kata-collect-data.sh reads. Written and read
// with the yaml library: a version or package name holding a quote or a newline is a
// string in the file, never more YAML.

import { createRequire } from "node:module";
import { OSBUILD_VERSION } from "./version.js";

// Loaded when used: the library is 290 KB of JavaScript that a build with nothing to do
// (every config imports the standard library) should not pay for.
let yamlLibrary: typeof import("yaml") | undefined;
const yaml = (): typeof import("yaml") => (yamlLibrary ??= createRequire(import.meta.url)("yaml") as typeof import("yaml"));

export interface OsbuilderYamlInput {
  sourceDateEpoch: number;
  architecture: string;
  distro: { name: string; version: string; packages: { default: readonly string[]; extra: readonly string[] } };
  agent: { version: string; isInit: boolean };
  /** The builder version recorded (rootfs.sh -o). Default: osbuild's own. */
  builderVersion?: string;
}

export function osbuilderYaml(input: OsbuilderYamlInput): string {
  // osbuilder sorts and de-duplicates the lists, and leaves an empty one empty (null).
  const list = (packages: readonly string[]): string[] | null => (packages.length > 0 ? [...new Set(packages)].sort() : null);
  const document = new (yaml().Document)({
    osbuilder: { url: "osbuild", version: input.builderVersion ?? OSBUILD_VERSION },
    "rootfs-creation-time": creationTime(input.sourceDateEpoch),
    description: "osbuilder rootfs",
    "file-format-version": "0.0.2",
    architecture: input.architecture,
    "base-distro": {
      name: input.distro.name,
      version: input.distro.version,
      packages: { default: list(input.distro.packages.default), extra: list(input.distro.packages.extra) },
    },
    agent: {
      url: "https://github.com/kata-containers/kata-containers",
      name: "kata-agent",
      version: input.agent.version,
      "agent-is-init-daemon": input.agent.isInit ? "yes" : "no",
    },
  });
  document.directives!.docStart = true;
  return document.toString({ defaultStringType: "QUOTE_DOUBLE", defaultKeyType: "PLAIN", nullStr: "", lineWidth: 0 });
}

/** `date -u -d@EPOCH '+%Y-%m-%dT%T.%N%zZ'`, as osbuilder writes it (with SOURCE_DATE_EPOCH). */
function creationTime(epoch: number): string {
  return `${new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, "")}.000000000+0000Z`;
}

/** Reads back the fields other steps need (the init mode) from an osbuilder.yaml. */
export function agentIsInit(text: string): boolean | undefined {
  let value: unknown;
  try {
    value = (yaml().parse(text) as { agent?: { "agent-is-init-daemon"?: unknown } } | null)?.agent?.["agent-is-init-daemon"];
  } catch {
    return undefined;
  }
  return value === "yes" ? true : value === "no" ? false : undefined;
}
