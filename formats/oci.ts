// OCI image format documents (image-spec v1.1): media types, manifests, configs, indexes.

export const MEDIA_TYPES = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerLayerTar: "application/vnd.docker.image.rootfs.diff.tar",
  /** The config of an artifact manifest that has none (image-spec 1.1). */
  empty: "application/vnd.oci.empty.v1+json",
} as const;

/** The empty JSON object "{}" an artifact manifest names as its config. */
export const EMPTY_DESCRIPTOR: Descriptor = { mediaType: MEDIA_TYPES.empty, digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", size: 2 };

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  /** In an index: the artifactType of the manifest it names (the referrers API lists them so). */
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  /** Set on an artifact manifest (an SBOM, a provenance statement). */
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  /** The manifest this one refers to (the OCI referrers API lists it under that digest). */
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

export interface ImageConfig {
  architecture: string;
  os: string;
  created?: string;
  rootfs: { type: "layers"; diff_ids: string[] };
  config?: Record<string, unknown>;
}

/** OCI/Go architecture names from `uname -m` ones. */
export function ociArchitecture(arch: string): string {
  return { x86_64: "amd64", aarch64: "arm64", ppc64le: "ppc64le", s390x: "s390x" }[arch] ?? arch;
}

export function imageConfig(arch: string, diffIds: string[], created: Date): ImageConfig {
  return { architecture: ociArchitecture(arch), os: "linux", created: created.toISOString(), rootfs: { type: "layers", diff_ids: diffIds }, config: {} };
}

export function imageManifest(config: Descriptor, layers: Descriptor[]): ImageManifest {
  return { schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config, layers };
}

/**
 * An artifact manifest attaching `blob` (an SBOM, a provenance statement: `artifactType` is
 * its media type) to the image manifest `subject`, for registries with the referrers API.
 */
export function referrerManifest(subject: Descriptor, artifactType: string, blob: Descriptor): ImageManifest {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    artifactType,
    config: EMPTY_DESCRIPTOR,
    layers: [{ ...blob, mediaType: artifactType }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  };
}

export function imageIndex(manifests: Descriptor[]): ImageIndex {
  return { schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests };
}

export const OCI_LAYOUT = { imageLayoutVersion: "1.0.0" };
