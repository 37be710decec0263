// The text getfattr --dump writes and setfattr --restore reads: for each file a
// "# file: PATH" line and one "NAME=0xHEX" line per attribute. Paths and names escape
// control characters, blanks, "=", backslash and bytes above 0x7e as \ooo, so any name
// (see names.ts) is data in it, never a second line or a second attribute.

import { decodeName, encodeName } from "./names.js";

export type XattrItem = { readonly path: string; readonly xattrs: Readonly<Record<string, Buffer>> };

/** A dump for `setfattr -h --restore`, run in the directory the (relative) paths start from. */
export function encodeXattrDump(items: readonly XattrItem[]): string {
  return items
    .map(({ path, xattrs }) => {
      const lines = Object.entries(xattrs).map(([name, value]) => `${escapeAttrText(name)}=0x${value.toString("hex")}`);
      return `# file: ${escapeAttrText(`./${path}`)}\n${lines.join("\n")}\n`;
    })
    .join("\n");
}

/** Reads `getfattr -d -m - -e hex` output; `pathOf` maps each dumped path to the caller's. */
export function parseXattrDump(dump: string, pathOf: (dumped: string) => string, into: Map<string, Record<string, Buffer>>): void {
  let current: Record<string, Buffer> | undefined;
  for (const line of dump.split("\n")) {
    if (line.startsWith("# file: ")) {
      current = Object.create(null) as Record<string, Buffer>;
      into.set(pathOf(unescapeAttrText(line.slice("# file: ".length))), current);
    } else if (current && line.includes("=")) {
      const equals = line.indexOf("=");
      const value = line.slice(equals + 1);
      current[unescapeAttrText(line.slice(0, equals))] = value.startsWith("0x") ? Buffer.from(value.slice(2), "hex") : Buffer.from(value.replace(/^"|"$/g, ""));
    }
  }
}

function escapeAttrText(text: string): string {
  let out = "";
  for (const byte of encodeName(text)) {
    out += byte < 0x21 || byte > 0x7e || byte === 0x5c || byte === 0x3d ? `\\${byte.toString(8).padStart(3, "0")}` : String.fromCharCode(byte);
  }
  return out;
}

function unescapeAttrText(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\\" && /^[0-7]{3}$/.test(text.slice(i + 1, i + 4))) {
      bytes.push(parseInt(text.slice(i + 1, i + 4), 8));
      i += 3;
    } else bytes.push(...Buffer.from(text[i]!, "utf8"));
  }
  return decodeName(Buffer.from(bytes));
}
