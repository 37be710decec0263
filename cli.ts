// The `osbuild` command: the engine's commands plus those of the standard library.

import { main } from "./engine/cli/main.js";
import { stdlibCommands } from "./stdlib/commands/index.js";

export async function runCli(argv: readonly string[]): Promise<number> {
  return main(argv, stdlibCommands);
}
