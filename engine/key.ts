// Cache keys: sha256 of a canonical JSON preimage, and the field-by-field difference of
// two preimages that `osbuild explain` prints.

import { createHash } from "node:crypto";

/** A sha256 digest, "sha256:<hex>". Branded so a key can't be confused with a path. */
export type Digest = string & { readonly __digest: true };
export type CacheKey = string & { readonly __cacheKey: true };

/** Bumped when the preimage layout itself changes. */
export const KEY_SCHEMA = 1;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Preimage {
  schema: number;
  kind: string;
  version: number;
  arch: string;
  sourceDateEpoch: number;
  /** Step options; host paths replaced by `{ sha256, type }` of their content. */
  options: Json;
  /** Digests of the input artifacts, in argument order. */
  inputs: Json[];
  /** Versions of the external tools the step runs, by command. */
  tools: Record<string, string>;
}

/** JSON with sorted object keys and no undefined: the same value always gives the same text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(canonicalize(value));
}

function canonicalize(value: unknown): Json {
  if (value === null) return null;
  if (Array.isArray(value)) return value.map((item) => (item === undefined ? null : canonicalize(item)));
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isFinite(value)) throw new Error(`cannot put ${value} into a cache key`);
      return value;
    case "object": {
      const result: { [key: string]: Json } = {};
      for (const key of Object.keys(value as object).sort()) {
        const item = (value as Record<string, unknown>)[key];
        if (item !== undefined) result[key] = canonicalize(item);
      }
      return result;
    }
    default:
      throw new Error(`cannot put a ${typeof value} into a cache key`);
  }
}

export function sha256Hex(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

export function digestOf(data: string | Buffer): Digest {
  return `sha256:${sha256Hex(data)}` as Digest;
}

export function cacheKeyOf(preimage: Preimage): CacheKey {
  return sha256Hex(canonicalJson(preimage)) as CacheKey;
}

/** Paths (like `options.packages[2]`) where two JSON values differ, with both sides. */
export function diffJson(before: unknown, after: unknown, path = ""): Array<{ path: string; before: unknown; after: unknown }> {
  const a = canonicalize(before ?? null);
  const b = canonicalize(after ?? null);
  if (canonicalJson(a) === canonicalJson(b)) return [];
  const bothObjects = typeof a === "object" && typeof b === "object" && a !== null && b !== null && !Array.isArray(a) && !Array.isArray(b);
  if (bothObjects) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((key) => diffJson(a[key], b[key], path ? `${path}.${key}` : key));
  }
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) {
    return a.flatMap((item, index) => diffJson(item, b[index], `${path}[${index}]`));
  }
  return [{ path: path || "(all)", before: a, after: b }];
}
