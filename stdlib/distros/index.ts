// The distributions osbuild knows. To add one, write its module and list it here.

import { alpine } from "./alpine.js";
import { centos } from "./centos.js";
import { debian } from "./debian.js";
import type { Distro } from "./types.js";
import { ubuntu } from "./ubuntu.js";

export const DISTROS: Readonly<Record<string, Distro>> = { alpine, centos, debian, ubuntu };

export type DistroName = "alpine" | "centos" | "debian" | "ubuntu";

export function findDistro(name: string): Distro | undefined {
  return Object.hasOwn(DISTROS, name) ? DISTROS[name] : undefined;
}

export type { Distro } from "./types.js";
