// Metadata Node has no API for: device nodes, fifos and extended attributes. They are
// applied and read in batches through the coreutils and attr programs, one spawn per batch.

import { spawnSync } from "node:child_process";
import { writeFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";

export interface SpecialNode {
  path: string;
  type: "char" | "block" | "fifo";
  major: number;
  minor: number;
}

/** Creates device nodes (root only) and fifos under `root`. */
export function createSpecialNodes(root: string, nodes: readonly SpecialNode[]): void {
  if (nodes.length === 0) return;
  const script = nodes
    .map((node) =>
      node.type === "fifo" ? `mkfifo -- ${shellQuote(node.path)}` : `mknod -- ${shellQuote(node.path)} ${node.type === "char" ? "c" : "b"} ${node.major} ${node.minor}`,
    )
    .join("\n");
  const result = spawnSync("sh", ["-e", "-c", script], { cwd: root, encoding: "utf8" });
  if (result.status !== 0) throw new Error(`could not create device nodes or fifos: ${result.stderr.trim()}`);
}

/** Sets extended attributes, all at once via `setfattr --restore`. */
export function applyXattrs(root: string, items: ReadonlyArray<{ path: string; xattrs: Record<string, Buffer> }>, tempDir: string): void {
  if (items.length === 0) return;
  const dump = items
    .map(({ path, xattrs }) => {
      const lines = Object.entries(xattrs).map(([name, value]) => `${name}=0x${value.toString("hex")}`);
      return `# file: ${escapeAttrPath(path)}\n${lines.join("\n")}\n`;
    })
    .join("\n");
  const file = join(tempDir, `xattrs-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, dump);
  try {
    const result = spawnSync("setfattr", ["-h", `--restore=${file}`], { cwd: root, encoding: "utf8" });
    if (result.error) throw new Error(`cannot run setfattr: ${result.error.message} (install the Debian package attr)`);
    if (result.status !== 0) throw new Error(`setfattr failed: ${result.stderr.trim()}`);
  } finally {
    unlinkSync(file);
  }
}

/** Reads every extended attribute of `paths` (relative to `root`); missing ones are omitted. */
export function readXattrs(root: string, paths: readonly string[]): Map<string, Record<string, Buffer>> {
  const result = new Map<string, Record<string, Buffer>>();
  const batch = 2000;
  for (let start = 0; start < paths.length; start += batch) {
    const chunk = paths.slice(start, start + batch).map((path) => `./${path}`);
    const run = spawnSync("getfattr", ["-h", "-d", "-m", "-", "-e", "hex", "--", ...chunk], { cwd: root, encoding: "utf8", maxBuffer: 1 << 28 });
    if (run.error) throw new Error(`cannot run getfattr: ${run.error.message} (install the Debian package attr)`);
    let current: Record<string, Buffer> | undefined;
    for (const line of run.stdout.split("\n")) {
      if (line.startsWith("# file: ")) {
        current = {};
        let path = unescapeAttrPath(line.slice("# file: ".length));
        while (path.startsWith("./")) path = path.slice(2);
        result.set(path, current);
      } else if (current && line.includes("=")) {
        const equals = line.indexOf("=");
        const value = line.slice(equals + 1);
        current[line.slice(0, equals)] = value.startsWith("0x") ? Buffer.from(value.slice(2), "hex") : Buffer.from(value.replace(/^"|"$/g, ""));
      }
    }
  }
  for (const [path, xattrs] of result) if (Object.keys(xattrs).length === 0) result.delete(path);
  return result;
}

/** Whether the attr tools exist; without them xattrs are kept in layers but not on disk. */
let attrTools: boolean | undefined;

/** Whether getfattr/setfattr are installed (asked once per process). */
export function haveAttrTools(): boolean {
  attrTools ??= spawnSync("getfattr", ["--version"]).status === 0;
  return attrTools;
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

// getfattr/setfattr escape control characters, backslash and non-ASCII bytes as \ooo.
function escapeAttrPath(path: string): string {
  let out = "";
  for (const byte of Buffer.from(path, "utf8")) {
    out += byte < 0x21 || byte > 0x7e || byte === 0x5c ? `\\${byte.toString(8).padStart(3, "0")}` : String.fromCharCode(byte);
  }
  return out;
}

function unescapeAttrPath(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\\" && /^[0-7]{3}$/.test(text.slice(i + 1, i + 4))) {
      bytes.push(parseInt(text.slice(i + 1, i + 4), 8));
      i += 3;
    } else bytes.push(...Buffer.from(text[i]!, "utf8"));
  }
  return Buffer.from(bytes).toString("utf8");
}
