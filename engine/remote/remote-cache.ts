// One registry repository of the shared cache: finds a step's entry by its key, brings an
// entry's content into the local store (every blob checked on the way in), and pushes a
// result's content, config and manifest, sending only the blobs the repository lacks.

import { createHash } from "node:crypto";
import { closeSync, createReadStream, createWriteStream, openSync } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { Transform, Writable, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import PQueue from "p-queue";
import { MEDIA_TYPES, type Descriptor } from "../../formats/oci.js";
import { SparseWriter } from "../../formats/io.js";
import { RegistryClient, type Access, type UploadSessions, type UploadSource } from "../../registry/client.js";
import { RegistryError } from "../../registry/errors.js";
import { formatOciReference, type RepositoryRef } from "../../registry/reference.js";
import type { TransportOptions } from "../../registry/transport.js";
import type { ActionRecord, StoredArtifact } from "../build.js";
import { CorruptContentError } from "../errors.js";
import { digestOf, type CacheKey, type Digest } from "../key.js";
import type { Layers, LayerRef } from "../rootfs.js";
import { rootfsOf } from "../rootfs.js";
import { hashFile, type Store } from "../store.js";
import {
  ANNOTATIONS,
  entryDocuments,
  entryTag,
  keyOfTag,
  parseEntryConfig,
  parseEntryManifest,
  plainDescriptor,
  recordContent,
  RefusedContentError,
  type EntryContent,
  type RecordContent,
} from "./format.js";
import { LayerReader } from "./layer-reader.js";
import type { TransferMeter } from "./transfers.js";

/** A step's result as one repository has it. */
export interface RemoteEntry {
  cache: RemoteCache;
  key: CacheKey;
  /** As the registry has it: its TOC digests name TOCs of the machine that pushed it. */
  record: ActionRecord;
  manifestDigest: string;
  content: EntryContent[];
  /** The step's provenance record (JSON text), when its record names one. */
  provenance?: string;
}

/** An entry as `osbuild cache ls` shows it. */
export interface ListedEntry {
  key: CacheKey;
  manifestDigest: string;
  step: string;
  kind: string;
  created: string;
  /** Sum of its blobs' sizes (shared blobs count in every entry). */
  size: number;
  blobs: string[];
}

export interface RemoteCacheOptions {
  access: readonly Access[];
  transport: TransportOptions;
  sessions?: UploadSessions;
  meter?: TransferMeter;
  /** Blobs moved at once. */
  concurrency?: number;
}

export class RemoteCache {
  readonly display: string;
  readonly client: RegistryClient;
  /** Digests this repository served damaged (content, config or manifest): not asked for again, and pushed anew. */
  readonly bad = new Set<string>();
  private readonly present = new Set<string>();
  private readonly inFlight = new Map<string, Promise<unknown>>();
  private readonly queue: PQueue;

  constructor(
    readonly ref: RepositoryRef,
    private readonly options: RemoteCacheOptions,
  ) {
    this.display = formatOciReference(ref);
    this.client = new RegistryClient(ref, { ...options.transport, access: options.access });
    this.queue = new PQueue({ concurrency: options.concurrency ?? 4 });
  }

  close(): void {
    this.client.close();
  }

  /** The entry of `key`, checked (manifest, config, record), or undefined when there is none. */
  async lookup(key: CacheKey): Promise<RemoteEntry | undefined> {
    let fetched;
    try {
      fetched = await this.client.manifest(entryTag(key), [MEDIA_TYPES.manifest]);
    } catch (error) {
      if (error instanceof RegistryError && error.code === "tampered") {
        const announced = /^manifest (sha256:[0-9a-f]{64})/.exec(error.message)?.[1];
        if (announced) this.bad.add(announced);
        throw new RefusedContentError(`its manifest does not match its digest`);
      }
      throw error;
    }
    if (!fetched) return undefined;
    const manifest = parseEntryManifest(key, fetched.bytes);
    const config = await this.readSmallBlob(manifest.config);
    const { record, content, provenance } = parseEntryConfig(key, manifest, config);
    return { cache: this, key, record, manifestDigest: fetched.digest, content, ...(provenance !== undefined && { provenance }) };
  }

  /** Whether the repository has an entry for `key` (by its tag; its content is not checked). */
  async has(key: CacheKey): Promise<boolean> {
    return (await this.client.hasManifest(entryTag(key), [MEDIA_TYPES.manifest])) !== undefined;
  }

  /**
   * Brings an entry's content into the store (what is there already stays) and records the
   * result locally; returns the local record. Throws RefusedContentError or RegistryError.
   */
  async fetch(entry: RemoteEntry, local: { store: Store; layers: Layers }): Promise<ActionRecord> {
    const layers = new Map<string, LayerRef[]>();
    await Promise.all(
      entry.content.map(async (item) => {
        if (item.role === "blob") return this.bringBlob(item, local.store, entry.record.stepId);
        const ref = await this.bringLayer(item, local);
        const list = layers.get(item.output) ?? [];
        list[item.index] = ref;
        layers.set(item.output, list);
      }),
    );
    const outputs: Record<string, StoredArtifact> = {};
    for (const [name, artifact] of Object.entries(entry.record.outputs)) {
      if (artifact.kind === "blob") outputs[name] = artifact;
      else {
        const refs = layers.get(name) ?? [];
        if (rootfsOf(refs).digest !== artifact.digest) throw new RefusedContentError(`its output ${name} does not add up to its digest`);
        outputs[name] = { kind: "rootfs", digest: artifact.digest, layers: refs };
      }
    }
    const record: ActionRecord = { ...entry.record, outputs };
    await this.bringProvenance(entry, local.store);
    await local.store.putJson(`osbuild:action:${entry.key}`, record, { stepId: record.stepId, kind: record.kind });
    return record;
  }

  /** The step's provenance record into the store (it came with the config, checked against its digest). */
  async bringProvenance(entry: RemoteEntry, store: Store): Promise<void> {
    if (entry.provenance === undefined || entry.record.provenance === undefined || store.hasContent(entry.record.provenance)) return;
    await store.putBytes(`osbuild:provenance:${entry.key}`, entry.provenance);
  }

  /** Whether all of the entry's content is in the store already. */
  async isHere(entry: RemoteEntry, store: Store): Promise<boolean> {
    if (entry.record.provenance !== undefined && !store.hasContent(entry.record.provenance) && entry.provenance === undefined) return false;
    for (const item of entry.content) {
      if (item.role === "blob" ? !store.hasContent(item.digest) : !(await localLayer(store, item))) return false;
    }
    return true;
  }

  /**
   * Pushes a result whose content is in `store`: the blobs the repository lacks, the config,
   * then the manifest under the key's tag (last, so that a tag always names a whole entry).
   */
  async push(record: ActionRecord, store: Store): Promise<void> {
    const items = recordContent(record);
    const descriptors = await Promise.all(items.map((item) => this.sendContent(item, store)));
    const provenance = record.provenance === undefined ? undefined : store.readBytesSync(record.provenance)?.toString("utf8");
    if (record.provenance !== undefined && provenance === undefined) throw new CorruptContentError(record.provenance, "missing");
    let documents = entryDocuments(record, descriptors, provenance);
    // The registry keeps a damaged copy of this very config or manifest: make them new.
    if (this.bad.has(documents.configDescriptor.digest) || this.bad.has(digestOf(documents.manifest))) {
      documents = entryDocuments(record, descriptors, provenance, { "dev.osbuild.pushed": new Date().toISOString() });
    }
    await this.ensureBlob(documents.configDescriptor, { bytes: documents.config });
    await this.client.putManifest(entryTag(record.key), documents.manifest, MEDIA_TYPES.manifest);
  }

  /** Every osbuild entry of the repository, as the manifests describe them. */
  async list(): Promise<ListedEntry[]> {
    const keys = (await this.client.tags()).flatMap((tag) => {
      const key = keyOfTag(tag);
      return key ? [key] : [];
    });
    const listed: ListedEntry[] = [];
    await Promise.all(
      keys.map((key) =>
        this.queue.add(async () => {
          const fetched = await this.client.manifest(entryTag(key), [MEDIA_TYPES.manifest]).catch(() => undefined);
          if (!fetched) return;
          let manifest;
          try {
            manifest = parseEntryManifest(key, fetched.bytes);
          } catch {
            return; // not a readable entry: ls shows what it can
          }
          const annotation = (name: string): string => manifest.annotations[name] ?? "?";
          listed.push({
            key,
            manifestDigest: fetched.digest,
            step: annotation(ANNOTATIONS.step),
            kind: annotation(ANNOTATIONS.kind),
            created: annotation(ANNOTATIONS.created),
            size: manifest.config.size + manifest.layers.reduce((sum, layer) => sum + layer.size, 0),
            blobs: [manifest.config.digest, ...manifest.layers.map((layer) => layer.digest)],
          });
        }),
      ),
    );
    return listed.sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
  }

  async remove(manifestDigest: string): Promise<void> {
    await this.client.deleteManifest(manifestDigest);
  }

  // -------------------------------------------------------------------------
  // Pulling

  private async readSmallBlob(descriptor: Descriptor): Promise<Buffer> {
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of await this.client.openBlob(descriptor)) chunks.push(chunk as Buffer);
    } catch (error) {
      if (error instanceof RegistryError && error.code === "tampered") {
        this.bad.add(descriptor.digest);
        throw new RefusedContentError(`its config ${descriptor.digest} does not match its digest`);
      }
      throw error;
    }
    return Buffer.concat(chunks);
  }

  private async bringBlob(item: EntryContent, store: Store, stepId: string): Promise<void> {
    if (store.hasContent(item.digest)) return;
    await this.once(`pull ${item.digest}`, async () => {
      const path = await this.download(item, store);
      try {
        await store.adoptFile(path, `osbuild:blob:${item.digest}`, { stepId, output: item.output }, item.digest);
      } finally {
        await rm(path, { force: true });
      }
    });
  }

  private async bringLayer(item: EntryContent, local: { store: Store; layers: Layers }): Promise<LayerRef> {
    const existing = await localLayer(local.store, item);
    if (existing) return existing;
    return this.once(`pull ${item.digest}`, async () => {
      const reader = new LayerReader(`layer ${item.digest} of ${this.display}`);
      const path = await this.download(item, local.store, reader);
      try {
        return await local.layers.addLayer(path, { digest: item.digest, size: item.size, toc: reader.finish() });
      } finally {
        await rm(path, { force: true });
      }
    });
  }

  /**
   * Streams one blob into a temporary file of the store: checked against its descriptor by
   * the client, decompressed when it was pushed gzipped and then checked against the content's
   * own digest, and fed to `reader` (a layer's TOC) on the way. Returns the file.
   */
  private async download(item: EntryContent, store: Store, reader?: LayerReader): Promise<string> {
    const meter = this.options.meter;
    const path = store.tempPath("pull");
    const fd = openSync(path, "wx", 0o644);
    const sink = new SparseWriter(fd);
    const hash = item.encoding === "gzip" ? createHash("sha256") : undefined;
    let size = 0;
    meter?.started("pull", this.display, item.descriptor.size);
    try {
      await this.queue.add(async () => {
        const source = await this.client.openBlob(item.descriptor);
        const counted = new Transform({
          transform: (chunk: Buffer, _encoding, done) => {
            meter?.moved("pull", this.display, chunk.length);
            done(null, chunk);
          },
        });
        const stages: Array<Readable | Transform> = [source, counted];
        if (item.encoding === "gzip") stages.push(createGunzip());
        const consume = new Writable({
          write: (chunk: Buffer, _encoding, done) => {
            size += chunk.length;
            // A blob that decompresses to more than it should is cut off, not written out.
            if (size > item.size) return done(new RefusedContentError(`blob ${item.descriptor.digest} of ${this.display} holds more than the ${item.size} bytes of ${item.digest}`, item.digest));
            hash?.update(chunk);
            reader?.write(chunk);
            sink.write(chunk);
            done();
          },
        });
        await pipeline([...stages, consume] as unknown as [Readable, Writable]);
      });
      sink.finish();
      if (hash && (`sha256:${hash.digest("hex")}` !== item.digest || size !== item.size)) {
        throw new RefusedContentError(`blob ${item.descriptor.digest} of ${this.display} does not decompress to ${item.digest}`, item.digest);
      }
      if (!hash && size !== item.size) throw new RefusedContentError(`blob ${item.digest} of ${this.display} is not ${item.size} bytes`, item.digest);
      meter?.finished("pull", this.display);
      return path;
    } catch (error) {
      meter?.abandoned("pull", this.display);
      await rm(path, { force: true });
      if (error instanceof RegistryError && error.code === "tampered") {
        this.bad.add(item.descriptor.digest);
        this.bad.add(item.digest);
        throw new RefusedContentError(error.message, item.digest);
      }
      if (error instanceof RefusedContentError) {
        this.bad.add(item.digest);
        throw error;
      }
      if ((error as NodeJS.ErrnoException).code === "Z_DATA_ERROR" || (error as NodeJS.ErrnoException).code === "Z_BUF_ERROR") {
        this.bad.add(item.digest);
        throw new RefusedContentError(`blob ${item.descriptor.digest} of ${this.display} is not gzip data`, item.digest);
      }
      throw error;
    } finally {
      closeSync(fd);
    }
  }

  // -------------------------------------------------------------------------
  // Pushing

  /** Sends one piece of content as it is stored, or gzipped when the repository's copy is damaged; returns its descriptor. */
  private async sendContent(item: RecordContent, store: Store): Promise<Descriptor> {
    if (!this.bad.has(item.digest)) {
      const descriptor = plainDescriptor(item);
      await this.ensureBlob(descriptor, { path: store.contentPath(item.digest) });
      return descriptor;
    }
    const path = store.tempPath("gzip");
    try {
      await pipeline(createReadStream(store.contentPath(item.digest)), createGzip(), createWriteStream(path, { flags: "wx" }));
      const descriptor = plainDescriptor(item, "gzip", { digest: await hashFile(path), size: (await stat(path)).size });
      await this.ensureBlob(descriptor, { path });
      return descriptor;
    } finally {
      await rm(path, { force: true });
    }
  }

  /** Uploads a blob unless the repository has it (HEAD first); one upload per blob at a time. */
  async ensureBlob(descriptor: Descriptor, source: UploadSource): Promise<void> {
    if (this.present.has(descriptor.digest)) return;
    const meter = this.options.meter;
    await this.once(`push ${descriptor.digest}`, () =>
      this.queue.add(async () => {
        if ((await this.client.blobSize(descriptor.digest)) === descriptor.size) {
          meter?.skipped("push", this.display);
        } else {
          meter?.started("push", this.display, descriptor.size);
          try {
            await this.client.uploadBlob(descriptor, source, { sessions: this.options.sessions, onSent: (bytes) => meter?.moved("push", this.display, bytes) });
          } catch (error) {
            meter?.abandoned("push", this.display);
            throw error;
          }
          meter?.finished("push", this.display);
        }
        this.present.add(descriptor.digest);
      }),
    );
  }

  /** Runs `work` once for `id` at a time: concurrent callers share its outcome. */
  private once<T>(id: string, work: () => Promise<T>): Promise<T> {
    let pending = this.inFlight.get(id) as Promise<T> | undefined;
    if (!pending) {
      pending = work().finally(() => this.inFlight.delete(id));
      this.inFlight.set(id, pending);
    }
    return pending;
  }
}

/** The local layer (with its TOC) for a piece of content, when the store has both. */
async function localLayer(store: Store, item: RecordContent): Promise<LayerRef | undefined> {
  if (!store.hasContent(item.digest)) return undefined;
  const entry = await store.lookup(`osbuild:layer:${item.digest}`);
  const toc = (entry?.metadata as { toc?: Digest } | undefined)?.toc;
  return toc && store.hasContent(toc) ? { digest: item.digest, size: item.size, toc } : undefined;
}
