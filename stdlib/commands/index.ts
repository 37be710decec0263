// The subcommands the standard library adds to `osbuild`.

import type { CommandSpec } from "../../engine/index.js";
import { bootCommand } from "./boot.js";

export const stdlibCommands: readonly CommandSpec[] = [bootCommand];
