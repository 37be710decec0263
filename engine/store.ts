// The content-addressed store, on cacache. This is the only module that imports cacache.
//
// Content (layers, blobs, TOCs, action records) is addressed by sha256, so a layer's cacache
// integrity *is* its OCI digest. Every piece of content has an index entry naming it, so
// cacache's own garbage collection (`verify`) keeps exactly what the index references.
// Big files are moved into cacache's content directory instead of copied through a stream;
// that relies on cacache's documented on-disk layout (content-v2/<algo>/<2>/<2>/<rest>).
//
// cacache (with glob, semver, minipass...) costs ~70 ms to load, a third of a no-op build, so
// it is imported only when needed: the index entries a build looked up or wrote are kept in
// a memo (memo/index.json), and a later build that finds an entry there, less than a day old
// and with its content present, uses it without asking cacache. The memo only saves work: the
// content it points to is read by digest and verified like any other, and an entry it lacks,
// or one whose content is gone, is looked up in cacache's index.

import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { chmod, mkdir, open, rename, stat, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform, type Readable } from "node:stream";
import { createReadStream } from "node:fs";
import { CorruptContentError } from "./errors.js";
import { digestOf, type Digest } from "./key.js";
import { readMemoFile, writeMemoFile } from "./memo.js";

type Cacache = typeof import("cacache");
let cacacheModule: Promise<Cacache> | undefined;
/** cacache, loaded on first use. */
function cacache(): Promise<Cacache> {
  cacacheModule ??= import("cacache").then((module) => (module as unknown as { default: Cacache }).default);
  return cacacheModule;
}

/** Index entries older than this are looked up in cacache again (which also refreshes their time, see touch). */
const MEMO_MAX_AGE_MS = 86_400_000;
/** The most entries the memo keeps (the most recently used). */
const MEMO_ENTRIES = 4096;

export interface StoredContent {
  digest: Digest;
  size: number;
}

export interface IndexEntry {
  key: string;
  digest: Digest;
  size: number;
  time: number;
  metadata: unknown;
}

export class Store {
  readonly tmp: string;
  private readonly written = new Set<Digest>();
  private readonly memoFile: string;
  private memo?: Map<string, IndexEntry>;
  /** Keys this process looked up or changed: what saveMemo writes back. */
  private readonly memoChanged = new Map<string, IndexEntry | undefined>();

  private constructor(readonly dir: string) {
    this.tmp = join(dir, "tmp-osbuild");
    this.memoFile = join(dir, "memo", "index.json");
  }

  private memoEntries(): Map<string, IndexEntry> {
    this.memo ??= new Map(Object.entries(readMemoFile<Record<string, IndexEntry>>(this.memoFile, {})));
    return this.memo;
  }

  private remember(key: string, entry: IndexEntry | undefined): void {
    if (entry) this.memoEntries().set(key, entry);
    else this.memoEntries().delete(key);
    this.memoChanged.set(key, entry);
  }

  /** Writes this process's lookups into the memo, merged with what other builds wrote meanwhile. */
  saveMemo(): void {
    if (this.memoChanged.size === 0) return;
    const merged = new Map(Object.entries(readMemoFile<Record<string, IndexEntry>>(this.memoFile, {})));
    for (const [key, entry] of this.memoChanged) {
      if (entry) merged.set(key, entry);
      else merged.delete(key);
    }
    const kept = [...merged].sort((a, b) => b[1].time - a[1].time).slice(0, MEMO_ENTRIES);
    writeMemoFile(this.memoFile, Object.fromEntries(kept));
    this.memoChanged.clear();
  }

  private async insert(key: string, digest: Digest, size: number, metadata: unknown): Promise<void> {
    await (await cacache()).index.insert(this.dir, key, sriOf(digest), { size, metadata });
    this.remember(key, { key, digest, size, time: Date.now(), metadata: metadata ?? null });
  }

  static open(dir: string): Store {
    const store = new Store(dir);
    mkdirSync(store.tmp, { recursive: true });
    return store;
  }

  /**
   * True when this process put the content into the store itself, under a digest computed
   * from the bytes it wrote: no need to verify it again before use. Content that was already
   * there (from an earlier build, or another process) is not.
   */
  wroteThisRun(digest: Digest): boolean {
    return this.written.has(digest);
  }

  /** Where cacache keeps the bytes of this digest. Read-only. */
  contentPath(digest: Digest): string {
    const hex = hexOf(digest);
    return join(this.dir, "content-v2", "sha256", hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
  }

  hasContent(digest: Digest): boolean {
    return existsSync(this.contentPath(digest));
  }

  /**
   * Moves a finished file into the store under `key`. When `digest` is given (computed
   * while the file was written) the file is not read again.
   */
  async adoptFile(file: string, key: string | ((digest: Digest) => string), metadata?: unknown, digest?: Digest): Promise<StoredContent> {
    const finalDigest = digest ?? (await hashFile(file));
    const size = (await stat(file)).size;
    const target = this.contentPath(finalDigest);
    if (existsSync(target)) {
      await unlink(file);
    } else {
      await mkdir(dirname(target), { recursive: true });
      await chmod(file, 0o444);
      await rename(file, target);
      this.written.add(finalDigest);
    }
    const indexKey = typeof key === "string" ? key : key(finalDigest);
    await this.insert(indexKey, finalDigest, size, metadata);
    return { digest: finalDigest, size };
  }

  /** Stores small data (JSON records, TOCs) under `key`. */
  async putBytes(key: string, data: Buffer | string, metadata?: unknown): Promise<StoredContent> {
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    const digest = digestOf(bytes);
    if (!this.hasContent(digest)) {
      const file = this.tempPath("put");
      await writeFile(file, bytes);
      return this.adoptFile(file, key, metadata, digest);
    }
    await this.insert(key, digest, bytes.length, metadata);
    return { digest, size: bytes.length };
  }

  async putJson(key: string, value: unknown, metadata?: unknown): Promise<StoredContent> {
    return this.putBytes(key, JSON.stringify(value), metadata);
  }

  /** The index entry of `key`, or undefined. */
  async lookup(key: string): Promise<IndexEntry | undefined> {
    const known = this.memoEntries().get(key);
    if (known && Date.now() - known.time < MEMO_MAX_AGE_MS && this.hasContent(known.digest)) return known;
    const info = await (await cacache()).get.info(this.dir, key);
    const entry = info ? { key, digest: digestOfIntegrity(info.integrity), size: info.size ?? 0, time: info.time, metadata: info.metadata } : undefined;
    this.remember(key, entry);
    return entry;
  }

  /** Reads and verifies small content; undefined when missing. Throws CorruptContentError. */
  readBytesSync(digest: Digest): Buffer | undefined {
    const path = this.contentPath(digest);
    let data: Buffer;
    try {
      data = readFileSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    const actual = digestOf(data);
    if (actual !== digest) throw new CorruptContentError(digest, `read ${actual}`);
    return data;
  }

  /** The JSON stored under `key`; undefined when missing. Throws CorruptContentError. */
  async getJson<T>(key: string): Promise<{ value: T; entry: IndexEntry } | undefined> {
    const entry = await this.lookup(key);
    if (!entry) return undefined;
    const data = this.readBytesSync(entry.digest);
    if (!data) return undefined;
    return { value: JSON.parse(data.toString("utf8")) as T, entry };
  }

  /** A stream of the content that fails with CorruptContentError when the bytes don't match. */
  openVerified(digest: Digest): Readable {
    const hash = createHash("sha256");
    const check = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        callback(null, chunk);
      },
      flush(callback) {
        const actual = `sha256:${hash.digest("hex")}`;
        callback(actual === digest ? null : new CorruptContentError(digest, `read ${actual}`));
      },
    });
    const source = createReadStream(this.contentPath(digest), { highWaterMark: 1 << 20 });
    source.on("error", (error) => check.destroy((error as NodeJS.ErrnoException).code === "ENOENT" ? new CorruptContentError(digest, "missing") : error));
    return source.pipe(check);
  }

  /** Removes content (e.g. found corrupted) so that the next lookup is a miss. */
  async removeContent(digest: Digest): Promise<void> {
    await (await cacache()).rm.content(this.dir, sriOf(digest)).catch(() => undefined);
    for (const [key, entry] of this.memoEntries()) if (entry.digest === digest) this.remember(key, undefined);
  }

  /** Records a fresh use of `key`, so that pruning by age keeps what is still used. */
  async touch(entry: IndexEntry): Promise<void> {
    await this.insert(entry.key, entry.digest, entry.size, entry.metadata);
  }

  async removeEntry(key: string): Promise<void> {
    await ((await cacache()).rm.entry as (cache: string, key: string, options: { removeFully: boolean }) => Promise<unknown>)(this.dir, key, { removeFully: true });
    this.remember(key, undefined);
  }

  async list(): Promise<IndexEntry[]> {
    const entries = await (await cacache()).ls(this.dir);
    return Object.values(entries).map((info) => ({
      key: info.key,
      digest: digestOfIntegrity(info.integrity),
      size: info.size ?? 0,
      time: info.time,
      metadata: info.metadata,
    }));
  }

  /** cacache's verify: checks every content file, drops corrupt and unreferenced ones. */
  async verify(): Promise<{ verifiedContent: number; badContentCount: number; reclaimedCount: number; reclaimedSize: number }> {
    const stats = await (await cacache()).verify(this.dir);
    this.memo = new Map();
    writeMemoFile(this.memoFile, {}); // what it dropped may be in the memo
    return {
      verifiedContent: stats.verifiedContent ?? 0,
      badContentCount: stats.badContentCount ?? 0,
      reclaimedCount: stats.reclaimedCount ?? 0,
      reclaimedSize: stats.reclaimedSize ?? 0,
    };
  }

  /** A unique path for a temporary file on the store's filesystem (so it can be renamed in). */
  tempPath(label: string): string {
    return join(this.tmp, ownedName(label));
  }
}

/**
 * Marks this process as using the cache at `dir` until the returned function is called.
 * Garbage collection (cache prune and verify) waits for a cache no build is using: a build
 * puts content in before the index entry naming it, and would lose it otherwise.
 */
export function markInUse(dir: string): () => void {
  const users = join(dir, "users");
  mkdirSync(users, { recursive: true });
  removeLeftovers(users);
  const mark = join(users, ownedName("build"));
  writeFileSync(mark, "");
  return () => rmSync(mark, { force: true });
}

/** How many other live processes use the cache at `dir` (see markInUse). */
export function otherUsers(dir: string): number {
  const users = join(dir, "users");
  removeLeftovers(users);
  let names: string[];
  try {
    names = readdirSync(users);
  } catch {
    return 0;
  }
  return names.filter((name) => !name.startsWith(`p${process.pid}.`)).length;
}

/** A unique file name that records the creating process, so leftovers of dead processes can be found. */
export function ownedName(label: string): string {
  return `p${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.${label}`;
}

/**
 * Removes what processes that no longer run left in `dir` under names from `ownedName`
 * (with `prefix` before them, and ending in one of `labels` when given). A live process's
 * files, even one that reused the pid, are left alone; so is `pid`'s own when given (`pid`:
 * remove this live process's leftovers instead, e.g. its own after an interrupt).
 *
 * Best effort: what cannot be removed now (a tool of the dead build still writing there,
 * a mount inside a tree) stays for a later build, and never fails this one. A leftover with
 * a mount point inside is never descended into: a recursive removal would reach through it.
 */
export function removeLeftovers(dir: string, options: { prefix?: string; labels?: readonly string[]; pid?: number } = {}): void {
  const prefix = options.prefix ?? "";
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  let mounts: string[] | undefined;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const owned = /^p(\d{1,9})\.[0-9a-z]+\.(.+)$/.exec(name.slice(prefix.length)); // ownedName's shape
    if (!owned || (options.labels && !options.labels.includes(owned[2]!))) continue;
    const pid = Number(owned[1]);
    if (options.pid !== undefined ? pid !== options.pid : pid === process.pid || processAlive(pid)) continue;
    const path = join(dir, name);
    mounts ??= mountPoints();
    const real = join(realpathSync(dir), name); // mountinfo has real paths
    if (mounts.some((mount) => mount === real || mount.startsWith(`${real}/`))) continue;
    try {
      rmSync(path, { recursive: true, force: true });
    } catch {
      /* still in use: a later build removes it */
    }
  }
}

/** Every mount point this process sees (/proc/self/mountinfo, octal escapes decoded). */
function mountPoints(): string[] {
  let text: string;
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => line.split(" ")[4]!.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))));
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function sriOf(digest: Digest): string {
  return `sha256-${Buffer.from(hexOf(digest), "hex").toString("base64")}`;
}

function digestOfIntegrity(integrity: string): Digest {
  const [algorithm, base64] = integrity.split(/-(.*)/s) as [string, string];
  if (algorithm !== "sha256") throw new Error(`unexpected integrity algorithm ${algorithm}`);
  return `sha256:${Buffer.from(base64, "base64").toString("hex")}` as Digest;
}

export function hexOf(digest: string): string {
  const match = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!match) throw new Error(`not a sha256 digest: ${digest}`);
  return match[1]!;
}

/** The digest of a small file (config inputs, TOCs): read and hashed on the calling thread. */
export function hashFileSync(file: string): Digest {
  const hash = createHash("sha256");
  const fd = openSync(file, "r");
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const read = readSync(fd, buffer, 0, buffer.length, null);
      if (read === 0) break;
      hash.update(buffer.subarray(0, read));
    }
  } finally {
    closeSync(fd);
  }
  return `sha256:${hash.digest("hex")}` as Digest;
}

/**
 * The digest of a big file (a disk image, a layer): the next chunk is read on libuv's thread
 * pool while this one is hashed, so reading (slow for a freshly written sparse file's holes)
 * and hashing overlap on the two cores instead of adding up.
 */
export async function hashFile(file: string): Promise<Digest> {
  const hash = createHash("sha256");
  const handle = await open(file, "r");
  try {
    const chunk = 4 << 20;
    let ready = Buffer.allocUnsafe(chunk);
    let spare = Buffer.allocUnsafe(chunk);
    let position = 0;
    let reading = handle.read(ready, 0, chunk, position);
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      position += bytesRead;
      reading = handle.read(spare, 0, chunk, position);
      hash.update(ready.subarray(0, bytesRead));
      [ready, spare] = [spare, ready];
    }
  } finally {
    await handle.close();
  }
  return `sha256:${hash.digest("hex")}` as Digest;
}
