// The registry client against a real distribution registry (Debian's docker-registry), filled by skopeo.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MEDIA_TYPES } from "../../formats/oci.js";
import { parseImageReference, pullImage, RegistryError, type PulledImage, type PulledLayer } from "../../stdlib/oci/registry.js";
import { tempDir } from "../helpers.js";
import { makeOciLayout, pushOciLayout, pushRawImage, registryBlobPath, startRegistry, type TestRegistry } from "../oci-registry-harness.js";

const FILES = { "etc/os-release": "ID=osbuild-test\n", "usr/bin/hello": "#!/bin/sh\necho hello\n" };
const LISTING = ["etc/", "etc/os-release", "usr/", "usr/bin/", "usr/bin/hello"];

/** The layer as a plain tar, decompressed the way its media type says. */
function layerTar(layer: PulledLayer): Buffer {
  const bytes = readFileSync(layer.path);
  if (layer.mediaType === MEDIA_TYPES.layerZstd) return run("zstd", ["-dc"], bytes);
  if (layer.mediaType === MEDIA_TYPES.layerTar) return bytes;
  return gunzipSync(bytes);
}

function tarList(tar: Buffer): string[] {
  return run("tar", ["-t"], tar).toString().trim().split("\n");
}

function tarRead(tar: Buffer, path: string): string {
  return run("tar", ["-xO", path], tar).toString();
}

function run(command: string, args: string[], input: Buffer): Buffer {
  const result = spawnSync(command, args, { input, maxBuffer: 1 << 28 });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${result.stderr.toString()}`);
  return result.stdout;
}

function sha256File(path: string): string {
  return `sha256:${createHash("sha256").update(readFileSync(path)).digest("hex")}`;
}

/** Resolves to the RegistryError the pull throws (failing the test if it succeeds or throws something else). */
async function pullError(reference: string, options: Partial<Parameters<typeof pullImage>[1]> = {}): Promise<RegistryError> {
  const error: unknown = await pullImage(reference, { architecture: "amd64", downloadDir: tempDir(), ...options }).then(
    () => new Error(`pulling ${reference} succeeded`),
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(RegistryError);
  return error as RegistryError;
}

async function layout(images: Parameters<typeof makeOciLayout>[1]): Promise<string> {
  const dir = tempDir("oci-layout");
  makeOciLayout(dir, images);
  return dir;
}

describe("parseImageReference", () => {
  const DIGEST = `sha256:${"ab".repeat(32)}`;
  it.each([
    ["debian", { registry: "registry-1.docker.io", repository: "library/debian", tag: "latest" }],
    ["debian:bookworm", { registry: "registry-1.docker.io", repository: "library/debian", tag: "bookworm" }],
    ["docker.io/debian:12", { registry: "registry-1.docker.io", repository: "library/debian", tag: "12" }],
    ["kata/agent:v3", { registry: "registry-1.docker.io", repository: "kata/agent", tag: "v3" }],
    ["ghcr.io/org/team/image:1.0", { registry: "ghcr.io", repository: "org/team/image", tag: "1.0" }],
    ["localhost/base", { registry: "localhost", repository: "base", tag: "latest" }],
    ["127.0.0.1:5000/base", { registry: "127.0.0.1:5000", repository: "base", tag: "latest" }],
    [`quay.io/a/b@${DIGEST}`, { registry: "quay.io", repository: "a/b", digest: DIGEST }],
    [`[::1]:5000/a:t@${DIGEST}`, { registry: "[::1]:5000", repository: "a", tag: "t", digest: DIGEST }],
  ])("%s", (reference, expected) => {
    expect(parseImageReference(reference)).toEqual(expected);
  });

  it.each(["Debian", "debian:", "debian@sha256:abc", "ghcr.io/org//image", "a:b:c"])("rejects %s with a hint about the form", (reference) => {
    expect(() => parseImageReference(reference)).toThrow(RegistryError);
    expect(() => parseImageReference(reference)).toThrow(/invalid image reference/);
  });
});

describe("pullImage from a registry without auth", () => {
  let registry: TestRegistry;
  let address: string;
  const pushed: Record<string, string> = {};

  beforeAll(async () => {
    registry = await startRegistry();
    address = registry.address;
    const single = await layout([{ architecture: "amd64", files: FILES }]);
    pushed.single = (await pushOciLayout(single, `${address}/test/single:1.0`)).digest;
    // Content of its own: skopeo would otherwise reuse the gzip blob it pushed above.
    const zstd = await layout([{ architecture: "amd64", files: { ...FILES, "etc/zstd": "yes\n" } }]);
    pushed.zstd = (await pushOciLayout(zstd, `${address}/test/zstd:1.0`, { compression: "zstd" })).digest;
    pushed.docker = (await pushOciLayout(single, `${address}/test/docker:1.0`, { format: "v2s2" })).digest;
    const multi = await layout([
      { architecture: "amd64", files: { ...FILES, "etc/arch": "amd64\n" } },
      { architecture: "arm64", variant: "v8", files: { ...FILES, "etc/arch": "arm64\n" } },
    ]);
    pushed.multi = (await pushOciLayout(multi, `${address}/test/multi:1.0`, { all: true })).digest;
  });
  afterAll(() => registry?.stop());

  it("pulls a single-arch image by tag: its config, and the gzip layer as served", async () => {
    const downloadDir = tempDir();
    const messages: string[] = [];
    const image = await pullImage(`${address}/test/single:1.0`, { architecture: "amd64", downloadDir, log: (message) => messages.push(message) });
    expect(image.reference).toBe(`${address}/test/single:1.0`);
    expect(image.manifestDigest).toBe(pushed.single);
    expect(image.config).toMatchObject({ architecture: "amd64", os: "linux", rootfs: { type: "layers" } });
    expect(image.layers).toHaveLength(1);
    const layer = image.layers[0]!;
    expect(layer.mediaType).toBe(MEDIA_TYPES.layerGzip);
    expect(layer.path.startsWith(downloadDir + "/")).toBe(true);
    expect(readFileSync(layer.path).length).toBe(layer.size);
    expect(sha256File(layer.path)).toBe(layer.digest);
    expect(tarList(layerTar(layer))).toEqual(LISTING);
    // Only the layer stays: the config was parsed and dropped, no partial files linger.
    expect(readdirSync(downloadDir)).toEqual([layer.path.slice(downloadDir.length + 1)]);
    expect(messages.join("\n")).toMatch(/fetching layer 1\/1 sha256:/);
  });

  it("pulls by digest, checking the manifest against it", async () => {
    const image = await pullImage(`${address}/test/single@${pushed.single}`, { architecture: "amd64", downloadDir: tempDir() });
    expect(image.manifestDigest).toBe(pushed.single);
    expect(tarList(layerTar(image.layers[0]!))).toEqual(LISTING);
  });

  it.each([
    ["amd64", undefined],
    ["arm64", undefined],
    ["arm64", "v8"],
  ])("picks the %s (variant %s) image from a multi-arch index", async (architecture, variant) => {
    const image = await pullImage(`${address}/test/multi:1.0`, { architecture, variant, downloadDir: tempDir() });
    expect(image.config).toMatchObject({ architecture, os: "linux" });
    expect(image.manifestDigest).not.toBe(pushed.multi);
    expect(tarRead(layerTar(image.layers[0]!), "etc/arch")).toBe(`${architecture}\n`);
  });

  it("picks from an index named by digest", async () => {
    const image = await pullImage(`${address}/test/multi@${pushed.multi}`, { architecture: "arm64", downloadDir: tempDir() });
    expect(tarRead(layerTar(image.layers[0]!), "etc/arch")).toBe("arm64\n");
  });

  it("lists the platforms an index has when the architecture is missing", async () => {
    const error = await pullError(`${address}/test/multi:1.0`, { architecture: "s390x" });
    expect(error.message).toBe(`image ${address}/test/multi:1.0 has no linux/s390x image; it has: linux/amd64, linux/arm64/v8`);
    const wrongVariant = await pullError(`${address}/test/multi:1.0`, { architecture: "arm64", variant: "v7" });
    expect(wrongVariant.message).toMatch(/no linux\/arm64\/v7 image; it has: linux\/amd64, linux\/arm64\/v8/);
  });

  it("refuses a single-arch image built for another architecture", async () => {
    const error = await pullError(`${address}/test/single:1.0`, { architecture: "arm64" });
    expect(error.message).toBe(`image ${address}/test/single:1.0 is for linux/amd64, not linux/arm64`);
  });

  it("fetches zstd layers, which decompress to the files", async () => {
    const image = await pullImage(`${address}/test/zstd:1.0`, { architecture: "amd64", downloadDir: tempDir() });
    const layer = image.layers[0]!;
    expect(layer.mediaType).toBe(MEDIA_TYPES.layerZstd);
    expect(sha256File(layer.path)).toBe(layer.digest);
    expect(tarList(layerTar(layer))).toEqual(["etc/", "etc/os-release", "etc/zstd", "usr/", "usr/bin/", "usr/bin/hello"]);
  });

  it("reads Docker v2 manifests and their gzip layers", async () => {
    const image = await pullImage(`${address}/test/docker:1.0`, { architecture: "amd64", downloadDir: tempDir() });
    expect(image.manifestDigest).toBe(pushed.docker);
    expect(image.layers[0]!.mediaType).toBe(MEDIA_TYPES.dockerLayerGzip);
    expect(tarList(layerTar(image.layers[0]!))).toEqual(LISTING);
  });

  it("says a missing tag or repository is not found", async () => {
    for (const reference of [`${address}/test/single:2.0`, `${address}/test/nothing:1.0`]) {
      const error = await pullError(reference);
      expect(error.message).toBe(`image ${reference} not found in ${address}`);
      expect(error.hint).toMatch(/check the repository and the tag/);
    }
  });

  it("refuses layer media types it cannot unpack, and configs for other systems", async () => {
    const config = { architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } };
    const foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    await pushRawImage(address, "test/foreign", "1", { config, layers: [{ mediaType: foreign, content: Buffer.from("not a layer") }] });
    const error = await pullError(`${address}/test/foreign:1`);
    expect(error.message).toBe(`image ${address}/test/foreign:1 has a layer of media type ${foreign}, which osbuild cannot unpack`);

    await pushRawImage(address, "test/windows", "1", { config: { ...config, os: "windows" }, layers: [] });
    expect((await pullError(`${address}/test/windows:1`)).message).toBe(`image ${address}/test/windows:1 is for windows/amd64, not linux/amd64`);
  });

  it("rejects a blob corrupted on the registry's disk and leaves no file behind", async () => {
    const reference = `${address}/test/corrupt:1`;
    await pushOciLayout(await layout([{ architecture: "amd64", files: { "etc/unique": `corrupt-${Date.now()}\n` } }]), reference);
    const intact = await pullImage(reference, { architecture: "amd64", downloadDir: tempDir() });
    const digest = intact.layers[0]!.digest;
    const stored = registryBlobPath(registry.storageDir, digest);
    const bytes = readFileSync(stored);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    writeFileSync(stored, bytes);

    const downloadDir = tempDir();
    const error = await pullError(reference, { downloadDir });
    expect(error.message).toMatch(new RegExp(`^blob ${digest} of ${reference} from ${address} does not match its digest`));
    expect(readdirSync(downloadDir)).toEqual([]);
  });

  it("rejects a manifest whose bytes do not hash to the digest asked for", async () => {
    const reference = `${address}/test/tampered:1`;
    const { digest } = await pushOciLayout(await layout([{ architecture: "amd64", files: { "etc/unique": `tampered-${Date.now()}\n` } }]), reference);
    // Still valid JSON, so the registry serves it; only the digest can tell.
    const stored = registryBlobPath(registry.storageDir, digest);
    writeFileSync(stored, readFileSync(stored, "utf8").replace('"schemaVersion":2', '"schemaVersion": 2'));
    const error = await pullError(`${address}/test/tampered@${digest}`);
    expect(error.message).toMatch(new RegExp(`^manifest ${digest} of .* does not match its digest and size \\(got sha256:`));
  });
});

describe("pullImage with token auth", () => {
  const registries: TestRegistry[] = [];
  afterAll(() => Promise.all(registries.map((registry) => registry.stop())));

  async function registryWithImage(denyPull?: boolean | "empty-grant"): Promise<TestRegistry> {
    const registry = await startRegistry({ auth: "token", denyPull });
    registries.push(registry);
    await pushOciLayout(await layout([{ architecture: "amd64", files: FILES }]), `${registry.address}/test/private:1`, { credentials: registry.credentials });
    return registry;
  }

  it("gets an anonymous token and reuses it for the blobs", async () => {
    const registry = await registryWithImage();
    const unauthenticated = await fetch(`http://${registry.address}/v2/test/private/manifests/1`);
    expect(unauthenticated.status).toBe(401);
    const before = registry.tokenRequests;
    const image: PulledImage = await pullImage(`${registry.address}/test/private:1`, { architecture: "amd64", downloadDir: tempDir() });
    expect(tarList(layerTar(image.layers[0]!))).toEqual(LISTING);
    // One token for the manifest, reused for the config and the layer.
    expect(registry.tokenRequests - before).toBe(1);
  });

  it.each([
    ["the token server refuses", true],
    ["the token grants nothing", "empty-grant" as const],
  ])("says access was denied when %s", async (_case, denyPull) => {
    const registry = await registryWithImage(denyPull);
    const error = await pullError(`${registry.address}/test/private:1`);
    expect(error.message).toBe(`access to test/private on ${registry.address} was denied`);
    expect(error.hint).toMatch(/private.*no credentials.*skopeo login/);
  });
});

describe("pullImage without a registry", () => {
  it("says it cannot reach a closed port", async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const downloadDir = join(tempDir(), "downloads");
    const error = await pullError(`127.0.0.1:${port}/test/single:1.0`, { downloadDir });
    expect(error.message).toMatch(new RegExp(`^cannot reach registry 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
    expect(existsSync(downloadDir)).toBe(false);
  });
});
