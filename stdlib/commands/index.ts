// The subcommands the standard library adds to `osbuild`.

import type { CommandSpec } from "../../engine/index.js";
import { bootCommand } from "./boot.js";
import { verifyReproducibleCommand } from "./verify-reproducible.js";

export const stdlibCommands: readonly CommandSpec[] = [bootCommand, verifyReproducibleCommand];
