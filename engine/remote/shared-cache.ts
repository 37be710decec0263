// The shared cache of a build: step results looked up in each --cache-from registry after the
// local store, their content brought in only where it is used (an input of a step that must
// run, or a target), and every result pushed to --cache-to when it lacks it. A registry is
// never trusted: an entry that fails a check is refused and its step built here. A registry
// that is down or refuses makes one warning, and the build goes on without it.

import { join } from "node:path";
import { RegistryError } from "../../registry/errors.js";
import type { RepositoryRef } from "../../registry/reference.js";
import type { Access } from "../../registry/client.js";
import type { TransportOptions } from "../../registry/transport.js";
import type { ActionRecord } from "../build.js";
import { errorMessage } from "../errors.js";
import { parseCacheRefs, type SharedCacheSettings } from "./settings.js";
import type { EventSink } from "../events.js";
import type { CacheKey } from "../key.js";
import type { Layers } from "../rootfs.js";
import type { Store } from "../store.js";
import { recordContent, RefusedContentError } from "./format.js";
import { RemoteCache, type RemoteEntry } from "./remote-cache.js";
import { TransferMeter } from "./transfers.js";
import { MemoUploadSessions } from "./upload-sessions.js";


/** Thrown where a step needs content that the registry's entry could not give: the build goes another round, building it here. */
export class RefusedEntryError extends Error {
  constructor(readonly key: CacheKey) {
    super(`the shared cache's entry ${key} was refused`);
    this.name = "RefusedEntryError";
  }
}


export class SharedCache {
  private readonly sources: RemoteCache[] = [];
  private readonly target: RemoteCache | undefined;
  private readonly unusable = new Set<RemoteCache>();
  /** Keys whose entry in a repository was refused: pushed there again. */
  private readonly refused = new Map<RemoteCache, Set<CacheKey>>();
  private readonly localized = new Map<CacheKey, Promise<ActionRecord>>();
  private readonly pushes = new Map<CacheKey, Promise<void>>();
  /** The entries found in the registries, by key. */
  private readonly hits = new Map<CacheKey, RemoteEntry>();
  /** The latest result of each key seen in this build, for the repairs at the end. */
  private readonly results = new Map<CacheKey, { record: ActionRecord; entry?: RemoteEntry }>();
  readonly meter: TransferMeter;

  constructor(
    settings: SharedCacheSettings,
    private readonly local: { store: Store; layers: Layers; cacheDir: string },
    private readonly emit: EventSink,
  ) {
    const refs = parseCacheRefs(settings);
    this.meter = new TransferMeter(emit);
    const transport: TransportOptions = { caFile: settings.registryCa, plainHttp: settings.plainHttp };
    const sessions = new MemoUploadSessions(join(local.cacheDir, "memo", "uploads.json"));
    const same = (a: RepositoryRef, b: RepositoryRef | undefined): boolean => b !== undefined && a.registry === b.registry && a.repository === b.repository;
    const make = (ref: RepositoryRef, access: Access[]): RemoteCache => new RemoteCache(ref, { access, transport, sessions, meter: this.meter });
    this.target = refs.to ? make(refs.to, ["pull", "push"]) : undefined;
    for (const ref of refs.from) {
      if (this.sources.some((cache) => same(cache.ref, ref))) continue;
      this.sources.push(same(ref, refs.to) ? this.target! : make(ref, ["pull"]));
    }
  }

  get active(): boolean {
    return this.sources.length > 0 || this.target !== undefined;
  }

  /** The first usable entry of `key` in the --cache-from registries. Never throws. */
  async lookup(key: CacheKey, stepId: string): Promise<RemoteEntry | undefined> {
    for (const cache of this.sources) {
      if (this.unusable.has(cache)) continue;
      try {
        const entry = await cache.lookup(key);
        if (!entry) continue;
        // Content this registry served damaged before, and that is not here: the entry cannot be used.
        const damaged = entry.content.find((item) => cache.bad.has(item.digest) && !this.local.store.hasContent(item.digest));
        if (damaged) {
          this.refuse(cache, key, stepId, `it needs ${damaged.digest}, which that registry holds damaged`);
          continue;
        }
        this.hits.set(key, entry);
        // What the step told of its provenance is small and came with the entry: keep it now, for the SBOMs.
        await cache.bringProvenance(entry, this.local.store);
        return entry;
      } catch (error) {
        this.failed(cache, error, key, stepId);
      }
    }
    return undefined;
  }

  /** The newest entry a --cache-from registry has of this step (same id and kind, another key): what explain compares with. */
  async newestOf(stepId: string, kind: string, except: CacheKey): Promise<RemoteEntry | undefined> {
    for (const cache of this.sources) {
      if (this.unusable.has(cache)) continue;
      try {
        const newest = (await cache.list()).find((listed) => listed.step === stepId && listed.kind === kind && listed.key !== except);
        const entry = newest && (await cache.lookup(newest.key));
        if (entry) return entry;
      } catch (error) {
        this.failed(cache, error, except, stepId);
      }
    }
    return undefined;
  }

  /** The entry's content brought into the store, and its local record. Throws RefusedEntryError. */
  localize(entry: RemoteEntry): Promise<ActionRecord> {
    let pending = this.localized.get(entry.key);
    if (!pending) {
      pending = entry.cache.fetch(entry, this.local).catch((error: unknown) => {
        this.localized.delete(entry.key);
        this.failed(entry.cache, error, entry.key, entry.record.stepId);
        throw new RefusedEntryError(entry.key);
      });
      this.localized.set(entry.key, pending);
    }
    return pending;
  }

  /**
   * Pushes a result to --cache-to unless it is there already, in the background (see
   * `settle`). `entry` is where the result came from when it came from a registry.
   */
  schedulePush(key: CacheKey, record: ActionRecord, entry?: RemoteEntry): void {
    this.results.set(key, { record, ...(entry && { entry }) });
    if (!this.pushes.has(key)) this.pushes.set(key, this.pushOne(key, record, entry, false));
  }

  /**
   * Waits for the pushes, then repairs the target's entries found damaged in this build (their
   * content is here by now), reports what moved, and closes the connections.
   */
  async settle(): Promise<void> {
    await Promise.all(this.pushes.values());
    // Entries whose content came in for others (a base's layer is in every rootfs above it) are
    // recorded here too, so that the next build finds them without asking the registry.
    for (const [key, entry] of this.hits) {
      if (this.localized.has(key) || !(await entry.cache.isHere(entry, this.local.store))) continue;
      await entry.cache.fetch(entry, this.local).catch(() => undefined);
    }
    const target = this.target;
    if (target) {
      const repairs = [...this.results].filter(([key, { record, entry }]) => (this.refused.get(target)?.has(key) ?? false) || this.damagedIn(target, entry?.record ?? record));
      await Promise.all(repairs.map(([key, { record, entry }]) => this.pushOne(key, record, entry, true)));
    }
    this.meter.summary();
    for (const cache of new Set([...this.sources, ...(this.target ? [this.target] : [])])) cache.close();
  }

  /** Pushes unless the target has the key (or, with `repair`, always); never throws. */
  private async pushOne(key: CacheKey, record: ActionRecord, entry: RemoteEntry | undefined, repair: boolean): Promise<void> {
    const target = this.target;
    if (!target || this.unusable.has(target)) return;
    try {
      if (!repair) {
        // Entries refused or found damaged wait for the repairs at the end, when their content is here.
        if (this.refused.get(target)?.has(key) || this.damagedIn(target, entry?.record ?? record)) return;
        if (entry?.cache === target) return; // it came from there
        if (await target.has(key)) return;
      }
      await target.push(entry ? await this.localize(entry) : record, this.local.store);
    } catch (error) {
      if (error instanceof RefusedEntryError) return; // said when it was refused
      this.failed(target, error, key, record.stepId, "push");
    }
  }

  private damagedIn(cache: RemoteCache, record: ActionRecord): boolean {
    return recordContent(record).some((item) => cache.bad.has(item.digest));
  }

  private refuse(cache: RemoteCache, key: CacheKey, stepId: string, why: string): void {
    let keys = this.refused.get(cache);
    if (!keys) this.refused.set(cache, (keys = new Set()));
    if (keys.has(key)) return;
    keys.add(key);
    this.emit({ type: "warning", id: stepId, message: `refused its cache entry in ${cache.display}: ${why}; building it here` });
  }

  /** A registry that failed: a damaged entry is refused, anything else makes the registry unusable for this build. */
  private failed(cache: RemoteCache, error: unknown, key: CacheKey, stepId: string, doing: "lookup" | "push" = "lookup"): void {
    if (error instanceof RefusedContentError) return this.refuse(cache, key, stepId, error.message);
    if (error instanceof RegistryError && error.code === "tampered" && doing === "lookup") return this.refuse(cache, key, stepId, error.message);
    if (!(error instanceof RegistryError)) {
      if (doing === "lookup") throw error;
      this.emit({ type: "warning", id: stepId, message: `not pushed to ${cache.display}: ${errorMessage(error)}` });
      return;
    }
    if (error.code === "tampered") {
      // The registry found our upload not to match: the local copy is damaged.
      this.emit({ type: "warning", id: stepId, message: `not pushed to ${cache.display}: ${error.message} (${error.hint})` });
      return;
    }
    if (this.unusable.has(cache)) return;
    this.unusable.add(cache);
    const after = doing === "push" ? "the build goes on without pushing there; the next build with --cache-to pushes what is missing" : "the build goes on without it";
    this.emit({ type: "warning", message: `shared cache ${cache.display}: ${error.message} (${error.hint}); ${after}` });
  }
}
