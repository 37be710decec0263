// The shell's `getopts`, as osbuilder's scripts parse their options: single letters, those
// followed by ':' in the spec take a value (attached, "-rDIR", or the next argument),
// letters may be grouped ("-dr DIR"), and parsing stops at "--" or the first operand.

import { ConfigError } from "../../engine/index.js";

export interface ParsedOptions {
  /** Each option letter given, with its value ("" for a flag); a repeated option keeps the last. */
  options: Map<string, string>;
  operands: string[];
}

export function getopts(args: readonly string[], spec: string, command: string): ParsedOptions {
  const takesValue = new Map<string, boolean>();
  for (let index = 0; index < spec.length; index++) takesValue.set(spec[index]!, spec[index + 1] === ":");
  const options = new Map<string, string>();
  let index = 0;
  for (; index < args.length; index++) {
    const arg = args[index]!;
    if (arg === "--") {
      index++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    for (let position = 1; position < arg.length; position++) {
      const letter = arg[position]!;
      const wantsValue = takesValue.get(letter);
      if (wantsValue === undefined || letter === ":") throw new ConfigError(`${command}: unknown option -${letter}`, undefined, `options: ${usageOf(spec)}`);
      if (!wantsValue) {
        options.set(letter, "");
        continue;
      }
      const attached = arg.slice(position + 1);
      if (attached !== "") options.set(letter, attached);
      else {
        const next = args[++index];
        if (next === undefined) throw new ConfigError(`${command}: option -${letter} needs a value`);
        options.set(letter, next);
      }
      break;
    }
  }
  return { options, operands: args.slice(index) };
}

function usageOf(spec: string): string {
  return [...spec.replace(/:/g, "")].map((letter) => `-${letter}${spec.includes(`${letter}:`) ? " VALUE" : ""}`).join(" ");
}
