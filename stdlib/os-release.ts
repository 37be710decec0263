// os-release(5): KEY=value lines, values optionally quoted.

/** The value of `key` in an os-release text, unquoted; "" when absent. */
export function osReleaseValue(text: string, key: string): string {
  return (new RegExp(`^${key}=(.*)$`, "m").exec(text)?.[1] ?? "").replace(/^"|"$/g, "");
}
