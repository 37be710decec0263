// External programs steps run: found on PATH before anything is built (a missing one names
// its Debian package), and their versions, which go into cache keys, remembered per binary.

import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, realpathSync, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { readMemoFile, writeMemoFile } from "./memo.js";
import type { ToolSpec } from "./types.js";
import { TOOL_PATH, toolEnvironment } from "./tool-environment.js";

/** What a cache key records for an optional tool that is not installed. */
export const TOOL_NOT_INSTALLED = "(not installed)";

export class MissingToolError extends Error {
  constructor(readonly tool: ToolSpec) {
    super(`the program '${tool.command}' is not installed (looked in ${TOOL_PATH})`);
    this.name = "MissingToolError";
  }
  get hint(): string {
    return `install the Debian package ${this.tool.package}: apt-get install ${this.tool.package}`;
  }
}

/** Where `command` is found in TOOL_PATH (or the path itself, when it has a slash), if anywhere. */
export function findOnPath(command: string): string | undefined {
  if (command.includes("/")) return existsSync(command) ? command : undefined;
  for (const dir of TOOL_PATH.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

export class ToolVersions {
  private readonly memo: Record<string, string> = {};
  private dirty = false;

  constructor(private readonly memoFile: string) {
    Object.assign(this.memo, readMemoFile<Record<string, string>>(memoFile, {}));
  }

  /** The version line of a tool; throws MissingToolError. */
  version(tool: ToolSpec): string {
    const found = findOnPath(tool.command);
    if (!found) throw new MissingToolError(tool);
    const real = realpathSync(found);
    const stats = statSync(real);
    const args = tool.versionArgs ?? ["--version"];
    const memoKey = `${real}:${stats.size}:${stats.mtimeMs}:${args.join(" ")}`;
    const known = this.memo[memoKey];
    if (known !== undefined) return known;
    const result = spawnSync(found, args, { encoding: "utf8", timeout: 10_000, env: toolEnvironment() });
    const output = `${result.stdout ?? ""}\n${result.stderr ?? ""}`;
    const line = output.split("\n").map((text) => text.trim()).find((text) => text.length > 0) ?? `${tool.command} (no version output)`;
    this.memo[memoKey] = line;
    this.dirty = true;
    return line;
  }

  save(): void {
    if (this.dirty) writeMemoFile(this.memoFile, this.memo);
  }
}
