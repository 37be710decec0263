// Guest extension images attached as Kata's runtime attaches them (composable-vm-images.md):
// each on virtio-blk with the serial extension-<name>, and on the kernel command line
// kata.extension.<name>.verity_params=<params> (a bare key for an unmeasured extension),
// which the guest's kata-extension-mount generator and unit read.

import { readFileSync } from "node:fs";
import { ConfigError } from "../../engine/index.js";
import { parseMbr } from "../../formats/mbr.js";
import { readAt } from "../reproducibility/compare.js";

export interface ExtensionRequest {
  name: string;
  /** A file, or a target of the config. */
  image: string;
  /** A file (or target) holding the verity params: osbuilder's root_hash_<variant>.txt or mkExtensionImage's verityParams. */
  verityParams?: string;
}

/** The extension's name as Kata's generator accepts it (a systemd instance and a file name). */
const NAME = /^[A-Za-z0-9_-]+$/;
/** key=value pairs separated by commas, nothing the kernel command line would split. */
const PARAMS = /^[a-z_]+=[0-9A-Za-z]+(,[a-z_]+=[0-9A-Za-z]+)*$/;

/** At most this many: they take PCI slots 0x18 to 0x1f. */
export const MAX_EXTENSIONS = 8;

/** --extension NAME=IMAGE[,VERITY_PARAMS_FILE] */
export function parseExtensionOption(value: string): ExtensionRequest {
  const match = /^([^=]+)=([^,]+)(?:,(.+))?$/.exec(value);
  if (!match) throw new ConfigError(`--extension ${value}: expected NAME=IMAGE or NAME=IMAGE,VERITY_PARAMS_FILE`);
  const [, name, image, verityParams] = match as unknown as [string, string, string, string | undefined];
  if (!NAME.test(name)) throw new ConfigError(`--extension ${value}: the name '${name}' must be letters, digits, '_' or '-' (Kata's generator takes no other)`);
  return { name, image, verityParams };
}

/** The verity params in a file, checked. */
export function readVerityParams(file: string): string {
  const params = readFileSync(file, "utf8").trim();
  if (!PARAMS.test(params) || !/(^|,)root_hash=/.test(params)) throw new ConfigError(`${file} holds no verity params (root_hash=...,salt=...,data_blocks=...,...)`);
  return params;
}

export function extensionKernelParam(name: string, params: string | undefined): string {
  return params === undefined ? `kata.extension.${name}.verity_params` : `kata.extension.${name}.verity_params=${params}`;
}

/** Whether the image has a second partition, which Kata's mount script takes for a dm-verity hash device. */
export function hasHashPartition(image: string): boolean {
  try {
    return parseMbr(readAt(image, 0, 512)).partitions.length > 1;
  } catch {
    return false;
  }
}
