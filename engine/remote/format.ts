// How a step result sits in an OCI registry (written down for other tools in the README):
//
//   tag       osbuild-v1-<cache key>
//   manifest  an OCI image manifest, artifactType application/vnd.osbuild.step-result.v1,
//             annotated with the key, step id, kind and creation time
//   config    JSON holding the action record (key preimage included) under "dev.osbuild.action",
//             and the step's provenance record as text under "dev.osbuild.provenance"; for a
//             rootfs result it is also a whole OCI image config, so the entry is an image
//   layers    the result's content, output by output (names sorted): a rootfs's layer tars
//             bottom first, a blob as one layer titled with its output name
//
// Content is stored as it is in the local store (the digest the record names), or gzipped when
// the registry holds a damaged copy under that digest that it will not replace (see the
// SharedCache). Everything read back is checked here before the engine trusts it.

import { MEDIA_TYPES, ociArchitecture, type Descriptor } from "../../formats/oci.js";
import type { ActionRecord, StoredArtifact } from "../build.js";
import { cacheKeyOf, digestOf, type CacheKey, type Digest } from "../key.js";
import { rootfsOf } from "../rootfs.js";

export const ENTRY_ARTIFACT_TYPE = "application/vnd.osbuild.step-result.v1";
export const ACTION_CONFIG_TYPE = "application/vnd.osbuild.action.v1+json";
export const BLOB_TYPE = "application/vnd.osbuild.blob.v1";
const BLOB_GZIP_TYPE = `${BLOB_TYPE}+gzip`;
export const ACTION_MEMBER = "dev.osbuild.action";
/** The step's provenance record (the JSON text whose sha256 the action record names), when it has one. */
export const PROVENANCE_MEMBER = "dev.osbuild.provenance";
export const ANNOTATIONS = {
  key: "dev.osbuild.key",
  step: "dev.osbuild.step",
  kind: "dev.osbuild.kind",
  created: "org.opencontainers.image.created",
  title: "org.opencontainers.image.title",
} as const;
const TAG_PREFIX = "osbuild-v1-";
const SHA256 = /^sha256:[0-9a-f]{64}$/;
const STEP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const OUTPUT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** What the registry served that osbuild will not use. */
export class RefusedContentError extends Error {
  constructor(
    message: string,
    /** The content digest at fault, when one blob is. */
    readonly digest?: Digest,
  ) {
    super(message);
    this.name = "RefusedContentError";
  }
}

export type Encoding = "none" | "gzip";

/** One piece of a result's content and how the registry holds it. */
export interface EntryContent {
  /** The content's own digest and size (the local store's). */
  digest: Digest;
  size: number;
  output: string;
  /** A rootfs layer (with its position) or a blob output. */
  role: "layer" | "blob";
  index: number;
  /** The registry's blob: the content itself, or its gzip. */
  descriptor: Descriptor;
  encoding: Encoding;
}

export function entryTag(key: CacheKey): string {
  return `${TAG_PREFIX}${key}`;
}

export function keyOfTag(tag: string): CacheKey | undefined {
  const key = tag.startsWith(TAG_PREFIX) ? tag.slice(TAG_PREFIX.length) : "";
  return /^[0-9a-f]{64}$/.test(key) ? (key as CacheKey) : undefined;
}

/** The content of a record, output by output in name order, as it is stored locally. */
export type RecordContent = Omit<EntryContent, "descriptor" | "encoding">;

export function recordContent(record: Pick<ActionRecord, "outputs">): RecordContent[] {
  return Object.keys(record.outputs)
    .sort()
    .flatMap((output): RecordContent[] => {
      const artifact = record.outputs[output]!;
      if (artifact.kind === "blob") return [{ digest: artifact.digest, size: artifact.size, output, role: "blob", index: 0 }];
      return artifact.layers.map((layer, index) => ({ digest: layer.digest, size: layer.size, output, role: "layer", index }));
    });
}

/** The media type of a piece of content in the registry. */
function mediaTypeOf(role: EntryContent["role"], encoding: Encoding): string {
  if (role === "layer") return encoding === "gzip" ? MEDIA_TYPES.layerGzip : MEDIA_TYPES.layerTar;
  return encoding === "gzip" ? BLOB_GZIP_TYPE : BLOB_TYPE;
}

export function plainDescriptor(item: Pick<EntryContent, "digest" | "size" | "role">, encoding: Encoding = "none", encoded?: { digest: string; size: number }): Descriptor {
  return { mediaType: mediaTypeOf(item.role, encoding), digest: encoded?.digest ?? item.digest, size: encoded?.size ?? item.size };
}

export interface EntryDocuments {
  config: Buffer;
  configDescriptor: Descriptor;
  manifest: Buffer;
}

/**
 * The config and manifest of a record's entry, given each content's registry descriptor
 * (in `recordContent` order). `extra` goes into the config (a fresh one when the registry's
 * copy of the old one is damaged).
 */
export function entryDocuments(record: ActionRecord, layers: readonly Descriptor[], provenance: string | undefined, extra: Record<string, string> = {}): EntryDocuments {
  if ((record.provenance === undefined) !== (provenance === undefined)) throw new Error(`the provenance of ${record.key} is ${provenance === undefined ? "missing" : "not named by its record"}`);
  const told = provenance === undefined ? {} : { [PROVENANCE_MEMBER]: provenance };
  const single = Object.values(record.outputs);
  const rootfs = single.length === 1 && single[0]!.kind === "rootfs" ? single[0]! : undefined;
  const document = rootfs?.kind === "rootfs"
    ? {
        architecture: ociArchitecture(record.preimage.arch),
        os: "linux",
        rootfs: { type: "layers", diff_ids: rootfs.layers.map((layer) => layer.digest) },
        config: {},
        [ACTION_MEMBER]: record,
        ...told,
        ...extra,
      }
    : { [ACTION_MEMBER]: record, ...told, ...extra };
  const config = Buffer.from(JSON.stringify(document));
  const configDescriptor: Descriptor = { mediaType: rootfs ? MEDIA_TYPES.config : ACTION_CONFIG_TYPE, digest: digestOf(config), size: config.length };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.manifest,
      artifactType: ENTRY_ARTIFACT_TYPE,
      config: configDescriptor,
      layers: layers.map((layer, index) => {
        const item = recordContent(record)[index]!;
        return item.role === "blob" ? { ...layer, annotations: { [ANNOTATIONS.title]: item.output } } : layer;
      }),
      annotations: { [ANNOTATIONS.key]: record.key, [ANNOTATIONS.step]: record.stepId, [ANNOTATIONS.kind]: record.kind, [ANNOTATIONS.created]: record.createdAt },
    }),
  );
  return { config, configDescriptor, manifest };
}

export interface ParsedManifest {
  config: Descriptor;
  layers: Descriptor[];
  annotations: Record<string, string>;
}

/** The manifest of the entry for `key`, checked for shape. */
export function parseEntryManifest(key: CacheKey, bytes: Buffer): ParsedManifest {
  const document = parseObject(bytes, "its manifest");
  if (document.schemaVersion !== 2 || (document.mediaType !== undefined && document.mediaType !== MEDIA_TYPES.manifest)) throw new RefusedContentError("its manifest is not an OCI image manifest");
  if (document.artifactType !== ENTRY_ARTIFACT_TYPE) throw new RefusedContentError(`it is not an osbuild step result (artifactType ${JSON.stringify(document.artifactType)})`);
  const config = descriptorOf(document.config, "config");
  if (config.mediaType !== MEDIA_TYPES.config && config.mediaType !== ACTION_CONFIG_TYPE) throw new RefusedContentError(`its config has the media type ${config.mediaType}`);
  if (config.size > 16 << 20) throw new RefusedContentError(`its config is ${config.size} bytes`);
  if (!Array.isArray(document.layers)) throw new RefusedContentError("its manifest lists no layers");
  const layers = document.layers.map((layer, index) => descriptorOf(layer, `layer ${index + 1}`));
  const annotations = typeof document.annotations === "object" && document.annotations !== null ? (document.annotations as Record<string, string>) : {};
  if (annotations[ANNOTATIONS.key] !== undefined && annotations[ANNOTATIONS.key] !== key) throw new RefusedContentError(`its manifest is for the key ${String(annotations[ANNOTATIONS.key])}`);
  return { config, layers, annotations };
}

/**
 * The record in the entry's config, checked against the key (its preimage must hash to it),
 * against itself (a rootfs's digest is that of its layers) and against the manifest (every
 * piece of content is there, in order, under a descriptor that fits it).
 */
export function parseEntryConfig(key: CacheKey, manifest: ParsedManifest, bytes: Buffer): { record: ActionRecord; content: EntryContent[]; provenance?: string } {
  const document = parseObject(bytes, "its config");
  const record = checkedRecord(key, document[ACTION_MEMBER]);
  const provenance = document[PROVENANCE_MEMBER];
  if (record.provenance !== undefined && (typeof provenance !== "string" || digestOf(provenance) !== record.provenance)) throw new RefusedContentError("its provenance record is missing or not the one its record names");
  const expected = recordContent(record);
  if (expected.length !== manifest.layers.length) throw new RefusedContentError(`its manifest lists ${manifest.layers.length} blobs where the record has ${expected.length}`);
  const content = expected.map((item, index): EntryContent => {
    const descriptor = manifest.layers[index]!;
    const encoding: Encoding | undefined = descriptor.mediaType === mediaTypeOf(item.role, "none") ? "none" : descriptor.mediaType === mediaTypeOf(item.role, "gzip") ? "gzip" : undefined;
    if (!encoding) throw new RefusedContentError(`layer ${index + 1} has the media type ${descriptor.mediaType}, not that of a ${item.role}`);
    if (encoding === "none" && (descriptor.digest !== item.digest || descriptor.size !== item.size)) {
      throw new RefusedContentError(`layer ${index + 1} (${descriptor.digest}) is not the ${item.role} the record names (${item.digest})`);
    }
    return { ...item, descriptor, encoding };
  });
  if (manifest.config.mediaType === MEDIA_TYPES.config) {
    const rootfs = document.rootfs as { diff_ids?: unknown } | undefined;
    const diffIds = expected.map((item) => item.digest);
    if (JSON.stringify(rootfs?.diff_ids) !== JSON.stringify(diffIds) || document.architecture !== ociArchitecture(record.preimage.arch)) {
      throw new RefusedContentError("its image config does not describe the record's layers");
    }
  }
  return { record, content, ...(record.provenance !== undefined && { provenance: provenance as string }) };
}

function checkedRecord(key: CacheKey, value: unknown): ActionRecord {
  const record = value as Partial<ActionRecord> | undefined;
  if (typeof record !== "object" || record === null) throw new RefusedContentError(`its config holds no ${ACTION_MEMBER} record`);
  if (record.schema !== 1 || record.key !== key) throw new RefusedContentError(`its record is for the key ${String(record.key)} (schema ${String(record.schema)})`);
  let preimageKey: string;
  try {
    preimageKey = cacheKeyOf(record.preimage!);
  } catch {
    preimageKey = "";
  }
  if (preimageKey !== key) throw new RefusedContentError("its record's key preimage does not hash to the key");
  if (typeof record.kind !== "string" || record.kind !== record.preimage!.kind) throw new RefusedContentError("its record's kind is not the preimage's");
  if (typeof record.stepId !== "string" || !STEP_ID.test(record.stepId)) throw new RefusedContentError("its record's step id is malformed");
  if (typeof record.createdAt !== "string" || Number.isNaN(Date.parse(record.createdAt)) || typeof record.ms !== "number" || !Number.isFinite(record.ms)) {
    throw new RefusedContentError("its record's time fields are malformed");
  }
  const outputs = record.outputs;
  if (typeof outputs !== "object" || outputs === null || Array.isArray(outputs) || Object.keys(outputs).length === 0) throw new RefusedContentError("its record has no outputs");
  for (const [name, artifact] of Object.entries(outputs)) {
    if (!OUTPUT_NAME.test(name)) throw new RefusedContentError(`its record has an output named ${JSON.stringify(name)}`);
    checkArtifact(name, artifact);
  }
  return {
    schema: 1,
    key,
    kind: record.kind,
    stepId: record.stepId,
    preimage: record.preimage!,
    createdAt: record.createdAt,
    ms: record.ms,
    outputs: outputs as Record<string, StoredArtifact>,
    ...(record.provenance !== undefined && { provenance: checkedDigest(record.provenance, "its record's provenance") }),
  };
}

function checkedDigest(value: unknown, what: string): Digest {
  if (typeof value !== "string" || !SHA256.test(value)) throw new RefusedContentError(`${what} is not a sha256 digest`);
  return value as Digest;
}

function checkArtifact(name: string, artifact: unknown): void {
  const value = artifact as Partial<StoredArtifact> & { layers?: unknown; size?: unknown };
  const size = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= 0;
  if (value?.kind === "blob") {
    if (typeof value.digest !== "string" || !SHA256.test(value.digest) || !size(value.size)) throw new RefusedContentError(`its output ${name} is a malformed blob`);
    return;
  }
  if (value?.kind !== "rootfs" || !Array.isArray(value.layers)) throw new RefusedContentError(`its output ${name} is neither a blob nor a rootfs`);
  for (const layer of value.layers as unknown[] as Array<Record<string, unknown> | undefined>) {
    if (typeof layer?.digest !== "string" || !SHA256.test(layer.digest) || typeof layer.toc !== "string" || !SHA256.test(layer.toc) || !size(layer.size)) {
      throw new RefusedContentError(`its output ${name} has a malformed layer`);
    }
  }
  if (rootfsOf(value.layers as never).digest !== value.digest) throw new RefusedContentError(`its output ${name}'s digest is not that of its layers`);
}

function descriptorOf(value: unknown, what: string): Descriptor {
  const descriptor = value as Partial<Descriptor> | undefined;
  if (typeof descriptor?.mediaType !== "string" || typeof descriptor.digest !== "string" || !SHA256.test(descriptor.digest) || !Number.isSafeInteger(descriptor.size) || descriptor.size! < 0) {
    throw new RefusedContentError(`its ${what} descriptor is malformed`);
  }
  return { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size! };
}

function parseObject(bytes: Buffer, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(bytes.toString("utf8"));
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    /* below */
  }
  throw new RefusedContentError(`${what} is not a JSON object`);
}
