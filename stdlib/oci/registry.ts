// Pulls container images from OCI distribution registries (Docker Hub, ghcr.io, quay.io, a local
// registry): anonymous token auth, one platform picked from multi-arch indexes, and every blob
// checked against its digest while it streams to disk, so a pulled layer is exactly what the
// manifest names and a corrupted one never reaches the build.

import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { MEDIA_TYPES, type Descriptor, type Platform } from "../../formats/oci.js";

export interface ImageReference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export interface PullOptions {
  /** OCI architecture name: amd64, arm64, ppc64le, s390x. */
  architecture: string;
  /** Platform variant, e.g. "v8" for arm64 (which also accepts images that name none). */
  variant?: string;
  /** Where the layer files go; created when missing. */
  downloadDir: string;
  log?: (message: string) => void;
}

export interface PulledLayer {
  /** The layer as served, still compressed. */
  path: string;
  digest: string;
  mediaType: string;
  size: number;
}

export interface PulledImage {
  reference: string;
  /** Digest of the image manifest the layers come from (the platform's one, for a multi-arch image). */
  manifestDigest: string;
  /** The image config, parsed. */
  config: unknown;
  /** Bottom layer first. */
  layers: PulledLayer[];
}

/** A pull that failed for a reason the user can act on; `hint` says what to do. */
export class RegistryError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = "RegistryError";
  }
}

const DOCKER_HUB = "registry-1.docker.io";
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]{0,127}$/;
const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;
const MANIFEST_TYPES = [MEDIA_TYPES.index, MEDIA_TYPES.manifest, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.dockerManifest];
const INDEX_TYPES: readonly string[] = [MEDIA_TYPES.index, MEDIA_TYPES.dockerManifestList];
const CONFIG_TYPES: readonly string[] = [MEDIA_TYPES.config, MEDIA_TYPES.dockerConfig];
const LAYER_TYPES: readonly string[] = [MEDIA_TYPES.layerTar, MEDIA_TYPES.layerGzip, MEDIA_TYPES.layerZstd, MEDIA_TYPES.dockerLayerGzip];
const TAMPERED_HINT = "the registry, or something between it and this machine, altered the data; try again, and report it to the registry's operator if it persists";

/** Splits "[registry/]repository[:tag][@sha256:digest]" by Docker's rules (Docker Hub and "library/" by default). */
export function parseImageReference(reference: string): ImageReference {
  const invalid = (why: string) =>
    new RegistryError(`invalid image reference '${reference}': ${why}`, "write it as [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. docker.io/library/debian:bookworm");
  let rest = reference;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!SHA256_DIGEST.test(digest)) throw invalid("the digest must be 'sha256:' and 64 lowercase hex digits");
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  // A colon before the last slash belongs to the registry's port, not to a tag.
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(`'${tag}' is not a valid tag`);
  }
  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf("/");
  const first = rest.slice(0, slash);
  if (slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    registry = first === "docker.io" || first === "index.docker.io" ? DOCKER_HUB : first;
    repository = rest.slice(slash + 1);
  }
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (!repository.split("/").every((part) => PATH_COMPONENT.test(part))) throw invalid(`'${repository}' is not a valid repository name (lowercase letters, digits, and . _ - between them)`);
  if (tag === undefined && digest === undefined) tag = "latest";
  return { registry, repository, ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

/** Downloads the image's config and layers for one linux platform into `options.downloadDir`. */
export async function pullImage(reference: string, options: PullOptions): Promise<PulledImage> {
  const log = options.log ?? (() => {});
  const client = new RegistryClient(parseImageReference(reference), reference);
  const wanted = platformName({ os: "linux", architecture: options.architecture, variant: options.variant });
  log(`pulling ${reference} for ${wanted}`);
  const top = await client.manifest(client.ref.digest ?? client.ref.tag ?? "latest", client.ref.digest);
  let image = top;
  if (INDEX_TYPES.includes(top.mediaType)) {
    const entry = selectPlatform(descriptorsOf(top.document, "manifests"), options, reference, wanted);
    log(`${reference} is multi-arch: using the ${platformName(entry.platform)} manifest ${entry.digest}`);
    image = await client.manifest(entry.digest, entry.digest, entry.size);
    if (INDEX_TYPES.includes(image.mediaType)) throw new RegistryError(`image ${reference} nests an index in its index, which osbuild does not follow`, "use the reference of a platform's image instead");
  }
  const config = descriptorsOf(image.document, "config")[0]!;
  const layers = descriptorsOf(image.document, "layers");
  if (!CONFIG_TYPES.includes(config.mediaType)) throw new RegistryError(`${reference} is not a container image (its config is ${config.mediaType})`, "give the reference of a container image");
  // Checked before any download, so an unusable image fails at once.
  for (const layer of layers) {
    if (!LAYER_TYPES.includes(layer.mediaType)) {
      throw new RegistryError(`image ${reference} has a layer of media type ${layer.mediaType}, which osbuild cannot unpack`, "osbuild reads tar layers (plain, gzip or zstd); foreign or non-distributable layers (e.g. Windows images) are not supported");
    }
  }
  await mkdir(options.downloadDir, { recursive: true });
  const configPath = await client.blob(config, join(options.downloadDir, `config-${config.digest.slice(7)}`));
  const parsedConfig = parseJson(await readFile(configPath, "utf8"), `config ${config.digest} of ${reference}`) as { os?: unknown; architecture?: unknown };
  await rm(configPath, { force: true });
  if (parsedConfig.os !== "linux" || parsedConfig.architecture !== options.architecture) {
    throw new RegistryError(`image ${reference} is for ${String(parsedConfig.os)}/${String(parsedConfig.architecture)}, not ${wanted}`, `use an image built for ${wanted}, or a multi-arch image that includes it`);
  }
  const pulled: PulledLayer[] = [];
  for (const [index, layer] of layers.entries()) {
    log(`fetching layer ${index + 1}/${layers.length} ${layer.digest} (${(layer.size / 1e6).toFixed(1)} MB)`);
    // Named by position too: a manifest may list the same layer twice, and each entry gets its own file.
    const path = await client.blob(layer, join(options.downloadDir, `layer${index}-${layer.digest.slice(7)}`));
    pulled.push({ path, digest: layer.digest, mediaType: layer.mediaType, size: layer.size });
  }
  return { reference, manifestDigest: image.digest, config: parsedConfig, layers: pulled };
}

/** One repository of one registry: requests, with the anonymous bearer token they need. */
class RegistryClient {
  private readonly base: string;
  private authorization: string | undefined;

  constructor(
    readonly ref: ImageReference,
    private readonly display: string,
  ) {
    this.base = `${isLoopback(ref.registry) ? "http" : "https"}://${ref.registry}/v2/${ref.repository}`;
  }

  async manifest(tagOrDigest: string, expectedDigest: string | undefined, expectedSize?: number): Promise<{ digest: string; mediaType: string; document: unknown }> {
    const response = await this.get(`${this.base}/manifests/${tagOrDigest}`, { accept: MANIFEST_TYPES.join(", ") });
    if (response.status === 404) throw new RegistryError(`image ${this.display} not found in ${this.ref.registry}`, "check the repository and the tag (or digest)");
    if (!response.ok || response.body === null) throw this.unexpected(response, `manifest ${tagOrDigest}`);
    const bytes = await readLimited(response.body, MAX_MANIFEST_BYTES, () => new RegistryError(`manifest ${tagOrDigest} of ${this.display} from ${this.ref.registry} is larger than ${MAX_MANIFEST_BYTES} bytes: no image manifest is`, TAMPERED_HINT));
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if ((expectedDigest !== undefined && digest !== expectedDigest) || (expectedSize !== undefined && bytes.length !== expectedSize)) {
      throw new RegistryError(`manifest ${expectedDigest} of ${this.display} from ${this.ref.registry} does not match its digest and size (got ${digest}, ${bytes.length} bytes)`, TAMPERED_HINT);
    }
    const document = parseJson(bytes.toString("utf8"), `manifest ${tagOrDigest} of ${this.display}`) as { mediaType?: unknown; manifests?: unknown };
    // The document's own mediaType is authoritative; old OCI manifests omit it, and then the header or the shape tells.
    const declared = typeof document.mediaType === "string" ? document.mediaType : (response.headers.get("content-type") ?? "").split(";")[0]!.trim();
    let mediaType = declared;
    if (declared === "" || declared === "application/json") mediaType = Array.isArray(document.manifests) ? MEDIA_TYPES.index : MEDIA_TYPES.manifest;
    else if (!(MANIFEST_TYPES as readonly string[]).includes(declared)) {
      throw new RegistryError(`image ${this.display} has a manifest of type ${declared}, which osbuild does not read`, "osbuild reads OCI and Docker v2 schema 2 images; push the image again with a current tool");
    }
    return { digest, mediaType, document };
  }

  /** Streams a blob to `path`, verifying size and digest on the way; on any failure no file is left. */
  async blob(descriptor: Descriptor, path: string): Promise<string> {
    const response = await this.get(`${this.base}/blobs/${descriptor.digest}`, {});
    if (response.status === 404) throw new RegistryError(`blob ${descriptor.digest} of ${this.display} is missing from ${this.ref.registry}`, "the registry lacks data its manifest names; push the image again or tell the registry's operator");
    if (!response.ok || response.body === null) throw this.unexpected(response, `blob ${descriptor.digest}`);
    const partial = `${path}.partial`;
    const hash = createHash("sha256");
    let received = 0;
    const meter = new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        received += chunk.length;
        // Stop early rather than write an endless answer to disk.
        if (received > descriptor.size) return done(this.mismatch(descriptor, `more than ${descriptor.size} bytes`));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), meter, createWriteStream(partial));
      const actual = `sha256:${hash.digest("hex")}`;
      if (actual !== descriptor.digest || received !== descriptor.size) throw this.mismatch(descriptor, `${actual}, ${received} bytes`);
      await rename(partial, path);
      return path;
    } catch (error) {
      await rm(partial, { force: true });
      if (error instanceof RegistryError) throw error;
      throw new RegistryError(`download of blob ${descriptor.digest} from ${this.ref.registry} failed: ${describeCause(error)}`, "check the network and try again");
    }
  }

  /** GET with the current token; on 401 asks the token server for a fresh one and tries once more. */
  private async get(url: string, headers: Record<string, string>): Promise<Response> {
    let response = await this.send(url, { ...headers, ...(this.authorization && { authorization: this.authorization }) });
    if (response.status === 401) {
      await response.body?.cancel();
      this.authorization = await this.anonymousToken(response.headers.get("www-authenticate"));
      response = await this.send(url, { ...headers, authorization: this.authorization });
    }
    if (response.status === 401 || response.status === 403) {
      await response.body?.cancel();
      throw this.denied();
    }
    return response;
  }

  /** The Docker token protocol, anonymously: GET realm?service=...&scope=repository:REPO:pull. */
  private async anonymousToken(challenge: string | null): Promise<string> {
    const params = parseBearerChallenge(challenge);
    // No Bearer challenge (e.g. Basic): the registry wants credentials, which osbuild never sends.
    if (params?.realm === undefined) throw this.denied();
    const url = new URL(params.realm);
    if (params.service !== undefined) url.searchParams.set("service", params.service);
    url.searchParams.set("scope", params.scope ?? `repository:${this.ref.repository}:pull`);
    const response = await this.send(url.href, {});
    if (!response.ok) {
      await response.body?.cancel();
      throw this.denied();
    }
    const body = parseJson(await response.text(), `the token from ${url.origin}`) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === "string" && body.token !== "" ? body.token : body.access_token;
    if (typeof token !== "string" || token === "") throw new RegistryError(`the token server of ${this.ref.registry} (${url.origin}) answered without a token`, "try again later; the registry's auth service may be failing");
    return `Bearer ${token}`;
  }

  private async send(url: string, headers: Record<string, string>): Promise<Response> {
    try {
      // Blobs are often redirected to storage; fetch drops Authorization when the redirect leaves the origin.
      return await fetch(url, { headers, redirect: "follow" });
    } catch (error) {
      throw new RegistryError(`cannot reach registry ${this.ref.registry}: ${describeCause(error)}`, "check the registry name in the image reference and the network (DNS, proxy, firewall)");
    }
  }

  private denied(): RegistryError {
    return new RegistryError(
      `access to ${this.ref.repository} on ${this.ref.registry} was denied`,
      "the image may be private (or may not exist); osbuild pulls anonymously, so use a public image or copy it to a registry that allows anonymous pulls",
    );
  }

  private mismatch(descriptor: Descriptor, got: string): RegistryError {
    return new RegistryError(`blob ${descriptor.digest} of ${this.display} from ${this.ref.registry} does not match its digest and size (got ${got})`, TAMPERED_HINT);
  }

  private unexpected(response: Response, what: string): RegistryError {
    const hint = response.status === 429 ? "the registry limits anonymous pulls; wait, or pull through a mirror" : "the registry may be down or overloaded; try again later";
    return new RegistryError(`registry ${this.ref.registry} answered ${response.status} ${response.statusText} for ${what} of ${this.ref.repository}`, hint);
  }
}

/** Docker talks plain http to registries on the loopback interface only ("insecure localhost"). */
/** Manifests and indexes are small; containerd refuses more than 4 MiB too. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** A response body of at most `limit` bytes, read as it comes (a lying registry can't exhaust memory). */
async function readLimited(body: ReadableStream<Uint8Array>, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value.byteLength;
    if (received > limit) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(Buffer.from(value));
  }
  return Buffer.concat(chunks);
}

function isLoopback(registry: string): boolean {
  const host = registry.startsWith("[") ? registry.slice(0, registry.indexOf("]") + 1) : registry.split(":")[0];
  return host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host ?? "");
}

function parseBearerChallenge(header: string | null): Record<string, string> | undefined {
  if (header === null || !/^\s*bearer\s/i.test(header)) return undefined;
  const params: Record<string, string> = {};
  for (const match of header.matchAll(/(\w+)="([^"]*)"/g)) params[match[1]!.toLowerCase()] = match[2]!;
  return params;
}

/** The manifest-list entry for linux on the wanted architecture; arm64 images often name no variant, meaning v8. */
function selectPlatform(entries: Descriptor[], options: PullOptions, reference: string, wanted: string): Descriptor {
  const variantOf = (platform: Platform) => platform.variant ?? (platform.architecture === "arm64" ? "v8" : undefined);
  const wantedVariant = options.variant ?? (options.architecture === "arm64" ? "v8" : undefined);
  const match = entries.find(
    ({ platform }) => platform?.os === "linux" && platform.architecture === options.architecture && (wantedVariant === undefined || variantOf(platform) === wantedVariant),
  );
  if (match) return match;
  // Attestation entries (unknown/unknown) are not platforms anyone can ask for.
  const available = entries.flatMap(({ platform }) => (platform && platform.os !== "unknown" ? [platformName(platform)] : []));
  throw new RegistryError(`image ${reference} has no ${wanted} image; it has: ${available.join(", ") || "no platforms"}`, `use an image built for ${wanted}, or build for one of the platforms it has`);
}

function platformName(platform: Partial<Platform> | undefined): string {
  return [platform?.os ?? "?", platform?.architecture ?? "?", platform?.variant].filter((part) => part !== undefined).join("/");
}

/** The descriptors under `field` of a manifest or index, checked: their digests become file names. */
function descriptorsOf(document: unknown, field: "config" | "layers" | "manifests"): Descriptor[] {
  const value = (document as Record<string, unknown>)[field];
  const list: unknown[] = field === "config" ? [value] : Array.isArray(value) ? value : [];
  return list.map((item) => {
    const descriptor = item as Partial<Descriptor> | undefined;
    if (typeof descriptor?.mediaType !== "string" || typeof descriptor.digest !== "string" || !SHA256_DIGEST.test(descriptor.digest) || !Number.isSafeInteger(descriptor.size) || descriptor.size! < 0) {
      throw new RegistryError(`a manifest names a malformed or non-sha256 descriptor in '${field}': ${JSON.stringify(item)}`, "the image is malformed or uses a digest algorithm osbuild does not check; push it again with a current tool");
    }
    return descriptor as Descriptor;
  });
}

function parseJson(text: string, what: string): unknown {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null) return value;
  } catch {
    /* reported below */
  }
  throw new RegistryError(`${what} is not a JSON object`, "the registry served something other than an image document; check the reference");
}

/** fetch says only "fetch failed"; the socket error (ECONNREFUSED, ENOTFOUND) is in `cause`. */
function describeCause(error: unknown): string {
  const { message, cause } = error as { message?: string; cause?: { message?: string; code?: string } };
  return cause?.message || cause?.code || message || String(error);
}
