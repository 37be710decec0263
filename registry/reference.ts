// Names of things in registries: image references (docker's grammar) and the oci:// form
// osbuild uses for a cache repository or a push target.

import { RegistryError } from "./errors.js";

/** One repository of one registry. */
export interface RepositoryRef {
  /** Host and optional port, as written (Docker Hub is "registry-1.docker.io"). */
  registry: string;
  /** e.g. "library/debian", "team/osbuild-cache". */
  repository: string;
}

export interface ImageReference extends RepositoryRef {
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = "registry-1.docker.io";
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]{0,127}$/;
const HOST = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$/;
export const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;

/** Splits "[registry/]repository[:tag][@sha256:digest]" by Docker's rules (Docker Hub and "library/" by default). */
export function parseImageReference(reference: string): ImageReference {
  const invalid = (why: string) =>
    new RegistryError(`invalid image reference '${reference}': ${why}`, "write it as [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. docker.io/library/debian:bookworm", "unsupported");
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
  if (!HOST.test(registry)) throw invalid(`'${registry}' is not a registry host`);
  if (!repository.split("/").every((part) => PATH_COMPONENT.test(part))) throw invalid(`'${repository}' is not a valid repository name (lowercase letters, digits, and . _ - between them)`);
  if (tag === undefined && digest === undefined) tag = "latest";
  return { registry, repository, ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

/**
 * "oci://HOST[:PORT]/REPOSITORY[:TAG]": the registry is always named (no Docker Hub
 * default). Without `allowTag` (a cache repository, whose tags osbuild picks) a tag is an
 * error; with it, the "oci://" may be left out and the tag defaults to "latest".
 */
export function parseOciReference(text: string, options: { allowTag?: boolean } = {}): ImageReference {
  const hint = options.allowTag ? "write it as oci://HOST[:PORT]/REPOSITORY[:TAG], e.g. oci://ghcr.io/team/kata-rootfs:v1" : "write it as oci://HOST[:PORT]/REPOSITORY, e.g. oci://ghcr.io/team/osbuild-cache";
  const invalid = (why: string) => new RegistryError(`invalid registry reference '${text}': ${why}`, hint, "unsupported");
  const rest = text.startsWith("oci://") ? text.slice("oci://".length) : options.allowTag ? text : undefined;
  if (rest === undefined) throw invalid("it must start with oci://");
  const slash = rest.indexOf("/");
  if (slash <= 0) throw invalid("it names no repository after the registry");
  const host = rest.slice(0, slash);
  let path = rest.slice(slash + 1);
  if (!HOST.test(host)) throw invalid(`'${host}' is not a registry host`);
  if (path.includes("@")) throw invalid("a digest cannot be pushed to; name a tag");
  let tag: string | undefined;
  const colon = path.lastIndexOf(":");
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!options.allowTag) throw invalid(`a cache is a whole repository and osbuild names its tags itself: drop ':${tag}'`);
    if (!TAG.test(tag)) throw invalid(`'${tag}' is not a valid tag`);
  }
  if (!path.split("/").every((part) => PATH_COMPONENT.test(part))) throw invalid(`'${path}' is not a valid repository name (lowercase letters, digits, and . _ - between them)`);
  const registry = host === "docker.io" || host === "index.docker.io" ? DOCKER_HUB : host;
  return { registry, repository: path, ...(options.allowTag ? { tag: tag ?? "latest" } : {}) };
}

/** "oci://HOST/REPOSITORY", the form users write. */
export function formatOciReference(ref: RepositoryRef): string {
  return `oci://${ref.registry}/${ref.repository}`;
}

/** Container tools talk plain http to registries on the loopback interface only ("insecure localhost"). */
export function isLoopback(registry: string): boolean {
  const host = registry.startsWith("[") ? registry.slice(0, registry.indexOf("]") + 1) : registry.split(":")[0];
  return host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host ?? "");
}
