// Path resolution as the kernel does it inside a chroot: absolute symlink targets restart
// at the root, ".." stops at the root. One walker for the two places paths are resolved:
// a tree on disk (writing without leaving it) and a merged view of layers (reading files).

const MAX_SYMLINK_HOPS = 40;

/** What the walker needs to know about a path (its components joined by "/"). */
export type LookupPath = (path: string) => { symlinkTarget?: string } | undefined;

/**
 * Resolves `path` component by component. A missing component ends the walk with undefined
 * (`missing: "stop"`) or is taken literally, as for a file about to be created ("literal").
 * Returns the resolved components, relative to the root.
 */
export function resolveSymlinks(path: string, lookup: LookupPath, options: { followFinal: boolean; missing: "stop" | "literal" }): string[] | undefined {
  let pending = path.split("/").filter((part) => part !== "" && part !== ".");
  const resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const isFinal = pending.length === 0;
    const found = !isFinal || options.followFinal || options.missing === "stop" ? lookup([...resolved, part].join("/")) : { symlinkTarget: undefined };
    if (found === undefined && options.missing === "stop") return undefined;
    const target = found?.symlinkTarget;
    if (target === undefined || (isFinal && !options.followFinal)) {
      resolved.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINK_HOPS) throw new Error(`too many levels of symbolic links resolving '${path}'`);
    if (target.startsWith("/")) resolved.length = 0;
    pending = [...target.split("/").filter((item) => item !== "" && item !== "."), ...pending];
  }
  return resolved;
}
