// What steps tell later steps through the rootfs itself, in osbuilder's own directory:
// fetchBase records the distro it made, and installAgent writes osbuilder.yaml from it
// (Kata's kata-collect-data.sh reads that file back). The installed packages are not kept in
// the image: steps record them as provenance, beside the layers (see stdlib/packages).

import { readFileSync } from "node:fs";
import type { Tree } from "../engine/index.js";

export const OSBUILDER_DIR = "var/lib/osbuilder";
export const BASE_FACTS_PATH = `${OSBUILDER_DIR}/base.json`;
export const OSBUILDER_YAML_PATH = `${OSBUILDER_DIR}/osbuilder.yaml`;

export interface BaseFacts {
  distro: string;
  prettyName: string;
  release: string;
  version: string;
  architecture: string;
  init: "agent" | "systemd";
  /** As osbuilder.yaml lists them: the distro's defaults and the user's extras. */
  packages: { default: string[]; extra: string[] };
}

export function readBaseFacts(tree: Tree): BaseFacts | undefined {
  try {
    return JSON.parse(readFileSync(tree.path(BASE_FACTS_PATH), "utf8")) as BaseFacts;
  } catch {
    return undefined;
  }
}
