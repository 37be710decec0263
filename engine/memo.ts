// Memo files: small JSON files under the cache that only save work (tool versions,
// fingerprints, type checks, output states). Kept apart from the store so that commands
// which only read memos (check, doctor) do not load cacache.

import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/** Writes a file atomically: temp file in the same directory, then rename. */
function replaceFileSync(path: string, write: (tempPath: string) => void): void {
  const temp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    write(temp);
    renameSync(temp, path);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      /* already gone */
    }
    throw error;
  }
}

/** A JSON memo file's value, or `fallback` when it is missing or damaged: a memo only saves work. */
export function readMemoFile<T>(path: string, fallback: T): T {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return fallback;
  }
}

/** Saves a JSON memo atomically; failing to only costs the work it would have saved. */
export function writeMemoFile(path: string, value: unknown): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
    replaceFileSync(path, (temp) => writeFileSync(temp, JSON.stringify(value)));
  } catch {
    /* only an optimization */
  }
}
