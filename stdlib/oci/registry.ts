// Pulls container images from OCI distribution registries (Docker Hub, ghcr.io, quay.io, a local
// registry): one platform picked from multi-arch indexes, and every blob checked against its
// digest while it streams to disk, so a pulled layer is exactly what the manifest names and a
// corrupted one never reaches the build. The registry protocol itself (auth, transport) is the
// shared client in registry/.

import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { MEDIA_TYPES, type Descriptor, type Platform } from "../../formats/oci.js";
import { RegistryClient, parseJsonObject } from "../../registry/client.js";
import { RegistryError } from "../../registry/errors.js";
import { parseImageReference, SHA256_DIGEST } from "../../registry/reference.js";

export { RegistryError } from "../../registry/errors.js";
export { parseImageReference, type ImageReference } from "../../registry/reference.js";

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

const MANIFEST_TYPES = [MEDIA_TYPES.index, MEDIA_TYPES.manifest, MEDIA_TYPES.dockerManifestList, MEDIA_TYPES.dockerManifest];
const INDEX_TYPES: readonly string[] = [MEDIA_TYPES.index, MEDIA_TYPES.dockerManifestList];
const CONFIG_TYPES: readonly string[] = [MEDIA_TYPES.config, MEDIA_TYPES.dockerConfig];
const LAYER_TYPES: readonly string[] = [MEDIA_TYPES.layerTar, MEDIA_TYPES.layerGzip, MEDIA_TYPES.layerZstd, MEDIA_TYPES.dockerLayerGzip];

/** Downloads the image's config and layers for one linux platform into `options.downloadDir`. */
export async function pullImage(reference: string, options: PullOptions): Promise<PulledImage> {
  const log = options.log ?? (() => {});
  const ref = parseImageReference(reference);
  const client = new RegistryClient(ref);
  try {
    const wanted = platformName({ os: "linux", architecture: options.architecture, variant: options.variant });
    log(`pulling ${reference} for ${wanted}`);
    const top = await imageManifest(client, reference, ref.digest ?? ref.tag ?? "latest");
    let image = top;
    if (INDEX_TYPES.includes(top.mediaType)) {
      const entry = selectPlatform(descriptorsOf(top.document, "manifests"), options, reference, wanted);
      log(`${reference} is multi-arch: using the ${platformName(entry.platform)} manifest ${entry.digest}`);
      image = await imageManifest(client, reference, entry.digest, entry.size);
      if (INDEX_TYPES.includes(image.mediaType)) throw new RegistryError(`image ${reference} nests an index in its index, which osbuild does not follow`, "use the reference of a platform's image instead", "unsupported");
    }
    const config = descriptorsOf(image.document, "config")[0]!;
    const layers = descriptorsOf(image.document, "layers");
    if (!CONFIG_TYPES.includes(config.mediaType)) throw new RegistryError(`${reference} is not a container image (its config is ${config.mediaType})`, "give the reference of a container image", "unsupported");
    // Checked before any download, so an unusable image fails at once.
    for (const layer of layers) {
      if (!LAYER_TYPES.includes(layer.mediaType)) {
        throw new RegistryError(
          `image ${reference} has a layer of media type ${layer.mediaType}, which osbuild cannot unpack`,
          "osbuild reads tar layers (plain, gzip or zstd); foreign or non-distributable layers (e.g. Windows images) are not supported",
          "unsupported",
        );
      }
    }
    await mkdir(options.downloadDir, { recursive: true });
    const configPath = join(options.downloadDir, `config-${config.digest.slice(7)}`);
    await download(client, reference, config, configPath);
    const parsedConfig = parseJsonObject(await readFile(configPath, "utf8"), `config ${config.digest} of ${reference}`) as { os?: unknown; architecture?: unknown };
    await rm(configPath, { force: true });
    if (parsedConfig.os !== "linux" || parsedConfig.architecture !== options.architecture) {
      throw new RegistryError(`image ${reference} is for ${String(parsedConfig.os)}/${String(parsedConfig.architecture)}, not ${wanted}`, `use an image built for ${wanted}, or a multi-arch image that includes it`, "unsupported");
    }
    const pulled: PulledLayer[] = [];
    for (const [index, layer] of layers.entries()) {
      log(`fetching layer ${index + 1}/${layers.length} ${layer.digest} (${(layer.size / 1e6).toFixed(1)} MB)`);
      // Named by position too: a manifest may list the same layer twice, and each entry gets its own file.
      const path = join(options.downloadDir, `layer${index}-${layer.digest.slice(7)}`);
      await download(client, reference, layer, path);
      pulled.push({ path, digest: layer.digest, mediaType: layer.mediaType, size: layer.size });
    }
    return { reference, manifestDigest: image.digest, config: parsedConfig, layers: pulled };
  } finally {
    client.close();
  }
}

/** A manifest or index with its media type: the document's own is authoritative, else the header or the shape tells. */
async function imageManifest(client: RegistryClient, display: string, tagOrDigest: string, expectedSize?: number): Promise<{ digest: string; mediaType: string; document: unknown }> {
  const fetched = await client.manifest(tagOrDigest, MANIFEST_TYPES, expectedSize).catch((error: unknown) => {
    // The registry's wording names the repository; a pull names the image as the user wrote it.
    if (error instanceof RegistryError && error.code === "tampered") throw new RegistryError(error.message.replace(` of ${client.name} `, ` of ${display} `), error.hint, error.code);
    throw error;
  });
  if (!fetched) throw new RegistryError(`image ${display} not found in ${client.ref.registry}`, "check the repository and the tag (or digest)", "not-found");
  const document = parseJsonObject(fetched.bytes.toString("utf8"), `manifest ${tagOrDigest} of ${display}`) as { mediaType?: unknown; manifests?: unknown };
  const declared = typeof document.mediaType === "string" ? document.mediaType : fetched.contentType;
  let mediaType = declared;
  if (declared === "" || declared === "application/json") mediaType = Array.isArray(document.manifests) ? MEDIA_TYPES.index : MEDIA_TYPES.manifest;
  else if (!(MANIFEST_TYPES as readonly string[]).includes(declared)) {
    throw new RegistryError(`image ${display} has a manifest of type ${declared}, which osbuild does not read`, "osbuild reads OCI and Docker v2 schema 2 images; push the image again with a current tool", "unsupported");
  }
  return { digest: fetched.digest, mediaType, document };
}

async function download(client: RegistryClient, display: string, descriptor: Descriptor, path: string): Promise<void> {
  try {
    await client.downloadBlob(descriptor, path);
  } catch (error) {
    if (error instanceof RegistryError && error.code === "tampered") throw new RegistryError(error.message.replace(` of ${client.name} `, ` of ${display} from ${client.ref.registry} `), error.hint, error.code);
    throw error;
  }
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
  throw new RegistryError(`image ${reference} has no ${wanted} image; it has: ${available.join(", ") || "no platforms"}`, `use an image built for ${wanted}, or build for one of the platforms it has`, "unsupported");
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
      throw new RegistryError(
        `a manifest names a malformed or non-sha256 descriptor in '${field}': ${JSON.stringify(item)}`,
        "the image is malformed or uses a digest algorithm osbuild does not check; push it again with a current tool",
        "unsupported",
      );
    }
    return descriptor as Descriptor;
  });
}
