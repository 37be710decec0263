// `osbuild push TARGET REF[:TAG]`: builds the target (from the caches when it can) and pushes
// it: a rootfs as an OCI image that skopeo, podman and fetchBase({ image }) pull, a blob as an
// OCI artifact of its step's media type, with its SBOM and provenance attached as referrers.
// The pushed manifest's digest goes to stdout.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { IN_TOTO_MEDIA_TYPE } from "../../formats/in-toto.js";
import { EMPTY_DESCRIPTOR, MEDIA_TYPES, imageConfig, imageIndex, imageManifest, referrerManifest, type Descriptor } from "../../formats/oci.js";
import { SPDX_MEDIA_TYPE } from "../../formats/spdx.js";
import { RegistryError } from "../../registry/errors.js";
import { parseOciReference, type ImageReference } from "../../registry/reference.js";
import type { TransportOptions } from "../../registry/transport.js";
import { Build, type BuildSettings, type BuiltTarget } from "../build.js";
import type { Attestations } from "../types.js";
import type { LoadedConfig } from "../config/load.js";
import { ConfigError } from "../errors.js";
import { digestOf } from "../key.js";
import { ANNOTATIONS } from "../remote/format.js";
import { RemoteCache } from "../remote/remote-cache.js";
import { TransferMeter } from "../remote/transfers.js";
import { Store } from "../store.js";
import { plainSink, terminalSink } from "./progress.js";

const EMPTY_CONFIG = Buffer.from("{}");
const DEFAULT_BLOB_TYPE = "application/octet-stream";

export interface PushOptions {
  /** Overrides the step's media type of a blob target. */
  mediaType?: string;
  /** KEY=VALUE annotations added to the manifest (and replacing osbuild's own). */
  annotations: readonly string[];
  transport: TransportOptions;
}

export async function pushCommand(args: readonly string[], config: LoadedConfig, settings: BuildSettings, options: PushOptions): Promise<number> {
  const targets = [...config.graph.targets.keys()];
  if (args.length !== 2) throw new ConfigError("push needs a target and where to push it: osbuild push TARGET oci://HOST[:PORT]/REPOSITORY[:TAG]", undefined, `targets: ${targets.join(", ")}`);
  const [target, text] = args as [string, string];
  if (!config.graph.targets.has(target)) throw new ConfigError(`unknown target '${target}'`, config.definition.location, `targets: ${targets.join(", ")}`);
  let ref: ImageReference;
  try {
    ref = parseOciReference(text, { allowTag: true });
  } catch (error) {
    if (error instanceof RegistryError) throw new ConfigError(error.message, undefined, error.hint);
    throw error;
  }
  if (options.mediaType !== undefined && !/^[\w.+-]+\/[\w.+-]+$/.test(options.mediaType)) throw new ConfigError(`--media-type ${options.mediaType}: not a media type (TYPE/SUBTYPE)`);
  const extra = parseAnnotations(options.annotations);

  const terminal = process.stderr.isTTY ? terminalSink(process.stderr, process.stderr) : undefined;
  const sink = terminal?.sink ?? plainSink(process.stderr, process.stderr);
  try {
    const result = await new Build(config.graph, settings, sink).run([target]);
    const built = result.targets?.[target];
    if (!result.ok || !built) return 1;
    const created = new Date(settings.sourceDateEpoch * 1000).toISOString();
    const source = sourceUrl(dirname(config.file));
    const annotations: Record<string, string> = {
      [ANNOTATIONS.created]: created,
      ...(source && { "org.opencontainers.image.source": source }),
      [ANNOTATIONS.key]: built.key,
      [ANNOTATIONS.step]: built.stepId,
      [ANNOTATIONS.kind]: built.kind,
      "dev.osbuild.target": target,
      ...extra,
    };
    const meter = new TransferMeter(sink);
    const remote = new RemoteCache(ref, { access: ["pull", "push"], transport: options.transport, meter });
    try {
      const store = Store.open(settings.cacheDir);
      const manifest = built.artifact.kind === "rootfs" ? await imageOf(remote, store, built, settings, annotations) : await artifactOf(remote, store, built, target, options.mediaType, annotations);
      const digest = await remote.client.putManifest(ref.tag ?? "latest", manifest, MEDIA_TYPES.manifest);
      const attached = await attach(remote, { mediaType: MEDIA_TYPES.manifest, digest, size: manifest.length }, result.attestations[target] ?? {});
      meter.summary();
      if (attached.length > 0) process.stderr.write(`attached ${attached.join(" and ")} to ${digest}\n`);
      process.stderr.write(`pushed ${target} to oci://${ref.registry}/${ref.repository}:${ref.tag ?? "latest"}@${digest}\n`);
      process.stdout.write(`${digest}\n`);
      return 0;
    } catch (error) {
      if (!(error instanceof RegistryError)) throw error;
      process.stderr.write(`osbuild: push of ${target} failed: ${error.message}\n  hint: ${error.hint}\n`);
      return 1;
    } finally {
      remote.close();
    }
  } finally {
    terminal?.stop();
  }
}

/** A rootfs as an image: its layers as they are (uncompressed tar), a linux config for the build's architecture. */
async function imageOf(remote: RemoteCache, store: Store, built: BuiltTarget, settings: BuildSettings, annotations: Record<string, string>): Promise<Buffer> {
  if (built.artifact.kind !== "rootfs") throw new Error("not a rootfs");
  const layers: Descriptor[] = built.artifact.layers.map((layer) => ({ mediaType: MEDIA_TYPES.layerTar, digest: layer.digest, size: layer.size }));
  await Promise.all(layers.map((layer) => remote.ensureBlob(layer, { path: store.contentPath(layer.digest as never) })));
  const config = Buffer.from(JSON.stringify(imageConfig(settings.arch, layers.map((layer) => layer.digest), new Date(settings.sourceDateEpoch * 1000))));
  const configDescriptor = { mediaType: MEDIA_TYPES.config, digest: digestOf(config), size: config.length };
  await remote.ensureBlob(configDescriptor, { bytes: config });
  return Buffer.from(JSON.stringify({ ...imageManifest(configDescriptor, layers), annotations }));
}

/** A blob as an OCI artifact: an empty config, the blob as its one layer titled with the target's name. */
async function artifactOf(remote: RemoteCache, store: Store, built: BuiltTarget, target: string, mediaType: string | undefined, annotations: Record<string, string>): Promise<Buffer> {
  if (built.artifact.kind !== "blob") throw new Error("not a blob");
  const type = mediaType ?? built.mediaType ?? DEFAULT_BLOB_TYPE;
  const layer: Descriptor = { mediaType: type, digest: built.artifact.digest, size: built.artifact.size, annotations: { [ANNOTATIONS.title]: target } };
  await Promise.all([remote.ensureBlob(layer, { path: store.contentPath(built.artifact.digest) }), remote.ensureBlob(EMPTY_DESCRIPTOR, { bytes: EMPTY_CONFIG })]);
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, artifactType: type, config: EMPTY_DESCRIPTOR, layers: [layer], annotations }));
}

/**
 * The target's SBOM and provenance, each as an artifact whose subject is the pushed manifest:
 * found through the referrers API where the registry has it, and else through the referrers
 * tag (sha256-HEX, an index of them) that the OCI distribution spec gives clients to keep.
 */
async function attach(remote: RemoteCache, subject: Descriptor, attestations: Attestations): Promise<string[]> {
  const files = [
    { path: attestations.sbom, type: SPDX_MEDIA_TYPE, name: "the SBOM" },
    { path: attestations.provenance, type: IN_TOTO_MEDIA_TYPE, name: "the provenance" },
  ].filter((file): file is { path: string; type: string; name: string } => file.path !== undefined);
  if (files.length === 0) return [];
  await remote.ensureBlob(EMPTY_DESCRIPTOR, { bytes: EMPTY_CONFIG });
  const referrers: Descriptor[] = [];
  for (const file of files) {
    const bytes = readFileSync(file.path);
    const blob: Descriptor = { mediaType: file.type, digest: digestOf(bytes), size: bytes.length };
    await remote.ensureBlob(blob, { bytes });
    const manifest = Buffer.from(JSON.stringify(referrerManifest(subject, file.type, blob)));
    const digest = await remote.client.putManifest(digestOf(manifest), manifest, MEDIA_TYPES.manifest);
    referrers.push({ mediaType: MEDIA_TYPES.manifest, digest, size: manifest.length, artifactType: file.type });
  }
  const tag = subject.digest.replace(":", "-");
  const existing = await remote.client.manifest(tag, [MEDIA_TYPES.index]).catch(() => undefined);
  const listed = existing ? ((JSON.parse(existing.bytes.toString("utf8")) as { manifests?: Descriptor[] }).manifests ?? []) : [];
  const index = imageIndex([...listed.filter((item) => !referrers.some((added) => added.digest === item.digest)), ...referrers]);
  await remote.client.putManifest(tag, Buffer.from(JSON.stringify(index)), MEDIA_TYPES.index);
  return files.map((file) => file.name);
}

function parseAnnotations(items: readonly string[]): Record<string, string> {
  const annotations: Record<string, string> = {};
  for (const item of items) {
    const equals = item.indexOf("=");
    if (equals <= 0) throw new ConfigError(`--annotation ${item}: expected KEY=VALUE`, undefined, "e.g. --annotation org.opencontainers.image.version=1.2.0");
    annotations[item.slice(0, equals)] = item.slice(equals + 1);
  }
  return annotations;
}

/** The config's git remote as a URL without credentials (org.opencontainers.image.source), when there is one. */
function sourceUrl(dir: string): string | undefined {
  const git = spawnSync("git", ["-C", dir, "remote", "get-url", "origin"], { encoding: "utf8", timeout: 5000 });
  const remote = git.status === 0 ? git.stdout.trim() : "";
  if (remote === "") return undefined;
  const scp = /^[\w.-]+@([\w.-]+):(.+)$/.exec(remote);
  if (scp) return `https://${scp[1]}/${scp[2]}`;
  try {
    const url = new URL(remote);
    url.username = "";
    url.password = "";
    return url.protocol === "file:" ? undefined : url.href;
  } catch {
    return undefined;
  }
}
