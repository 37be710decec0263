// File names are bytes; JavaScript strings are UTF-16. osbuild keeps a name as a string: a
// name that is valid UTF-8 is its decoded text, and each byte that is not part of valid
// UTF-8 becomes the lone surrogate U+DC80 + (byte - 0x80), as Python's "surrogateescape"
// does. Every byte string has exactly one such string and comes back from it unchanged, so
// a base's names round-trip through layers, TOCs (JSON keeps lone surrogates as \udcXX) and
// packers, whatever bytes they hold. Node's fs turns strings into UTF-8 and would replace
// the escapes with U+FFFD: `hostPath` gives such a path to fs as the exact bytes instead.

const ESCAPE_BASE = 0xdc00;
/** A low surrogate without a high one before it, in the range decodeName produces. */
const LONE_ESCAPE = /(?<![\uD800-\uDBFF])[\uDC80-\uDCFF]/;

/** The string of a name's bytes (see above). */
export function decodeName(bytes: Uint8Array): string {
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = buffer.toString("utf8");
  // Node decodes invalid UTF-8 as U+FFFD; without one (the usual case) the bytes were valid.
  if (!text.includes("\uFFFD") || Buffer.from(text, "utf8").equals(buffer)) return text;
  let out = "";
  let index = 0;
  while (index < buffer.length) {
    const length = validSequenceLength(buffer, index);
    if (length === 0) {
      out += String.fromCharCode(ESCAPE_BASE + buffer[index]!);
      index++;
    } else {
      out += buffer.toString("utf8", index, index + length);
      index += length;
    }
  }
  return out;
}

/** The bytes of a name made by decodeName (or any string: plain text is UTF-8). */
export function encodeName(name: string): Buffer {
  if (!LONE_ESCAPE.test(name)) return Buffer.from(name, "utf8");
  const parts: Buffer[] = [];
  let start = 0;
  for (let index = 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    const previous = index > 0 ? name.charCodeAt(index - 1) : 0;
    if (code >= 0xdc80 && code <= 0xdcff && !(previous >= 0xd800 && previous <= 0xdbff)) {
      parts.push(Buffer.from(name.slice(start, index), "utf8"), Buffer.of(code - ESCAPE_BASE));
      start = index + 1;
    }
  }
  parts.push(Buffer.from(name.slice(start), "utf8"));
  return Buffer.concat(parts);
}

/** Whether a name holds bytes that are not UTF-8 (and so needs `hostPath` for fs calls). */
export function hasEscapedBytes(name: string): boolean {
  return LONE_ESCAPE.test(name);
}

/** A path for Node's fs: the string itself, or its exact bytes when it holds escaped bytes. */
export function hostPath(path: string): string | Buffer {
  return LONE_ESCAPE.test(path) ? encodeName(path) : path;
}

/** How many bytes the well-formed UTF-8 sequence at `index` has (0: not well formed). */
function validSequenceLength(bytes: Buffer, index: number): number {
  const first = bytes[index]!;
  if (first < 0x80) return 1;
  const continuation = (offset: number, low = 0x80, high = 0xbf): boolean => {
    const byte = bytes[index + offset];
    return byte !== undefined && byte >= low && byte <= high;
  };
  // RFC 3629 table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF.
  if (first >= 0xc2 && first <= 0xdf) return continuation(1) ? 2 : 0;
  if (first === 0xe0) return continuation(1, 0xa0) && continuation(2) ? 3 : 0;
  if ((first >= 0xe1 && first <= 0xec) || first === 0xee || first === 0xef) return continuation(1) && continuation(2) ? 3 : 0;
  if (first === 0xed) return continuation(1, 0x80, 0x9f) && continuation(2) ? 3 : 0;
  if (first === 0xf0) return continuation(1, 0x90) && continuation(2) && continuation(3) ? 4 : 0;
  if (first >= 0xf1 && first <= 0xf3) return continuation(1) && continuation(2) && continuation(3) ? 4 : 0;
  if (first === 0xf4) return continuation(1, 0x80, 0x8f) && continuation(2) && continuation(3) ? 4 : 0;
  return 0;
}
