// The architectures osbuild builds for, and reading one from the command line.

import { arch as nodeArch } from "node:os";
import { ConfigError } from "./errors.js";
import type { Arch } from "./types.js";

/** In `uname -m` spelling, as Kata's ARCH and the config's `arch`. */
export const ARCHES: readonly Arch[] = ["x86_64", "aarch64", "ppc64le", "s390x"];

/** Other names people give these architectures (Debian's, Go's, OCI's, Node's), for a helpful error. */
const ALIASES: Readonly<Record<string, Arch>> = { amd64: "x86_64", x64: "x86_64", arm64: "aarch64", ppc64el: "ppc64le" };

export function isArch(value: unknown): value is Arch {
  return typeof value === "string" && (ARCHES as readonly string[]).includes(value);
}

/** `value` as an Arch, or a ConfigError naming `where` (e.g. "--arch"). */
export function parseArch(value: string, where: string): Arch {
  if (isArch(value)) return value;
  const alias = Object.hasOwn(ALIASES, value) ? ALIASES[value] : undefined;
  throw new ConfigError(`${where} ${value}: expected one of ${ARCHES.join(", ")}${alias ? ` (${value} is ${alias} in uname -m spelling)` : ""}`);
}

/** The build machine's architecture. */
export function machineArch(): Arch {
  const map: Record<string, Arch> = { x64: "x86_64", arm64: "aarch64", ppc64: "ppc64le", s390x: "s390x" };
  return map[nodeArch()] ?? "x86_64";
}
