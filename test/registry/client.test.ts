// The shared registry client: references, credentials where container tools keep them, the
// choice of TLS or plain HTTP, TLS with a private CA, and chunked uploads that go on in another
// process; against Debian's docker-registry where a registry is involved.

import { createHash, randomBytes } from "node:crypto";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf } from "../../engine/key.js";
import { RegistryClient, type UploadSession, type UploadSessions } from "../../registry/client.js";
import { authFiles, findCredentials } from "../../registry/credentials.js";
import { RegistryError } from "../../registry/errors.js";
import { parseOciReference } from "../../registry/reference.js";
import { Transport } from "../../registry/transport.js";
import { startCountingProxy, startRegistry, type TestRegistry } from "../oci-registry-harness.js";
import { tempDir, writeFiles } from "../helpers.js";

describe("oci:// references", () => {
  it.each([
    ["oci://ghcr.io/team/cache", { registry: "ghcr.io", repository: "team/cache" }],
    ["oci://127.0.0.1:5000/kata", { registry: "127.0.0.1:5000", repository: "kata" }],
    ["oci://localhost:5000/a/b/c", { registry: "localhost:5000", repository: "a/b/c" }],
    ["oci://registry/kata", { registry: "registry", repository: "kata" }],
    ["oci://docker.io/library/x", { registry: "registry-1.docker.io", repository: "library/x" }],
  ])("%s names a cache repository", (text, expected) => {
    expect(parseOciReference(text)).toEqual(expected);
  });

  it("takes a tag where something is pushed, latest by default, with or without oci://", () => {
    expect(parseOciReference("oci://ghcr.io/team/rootfs:v1", { allowTag: true })).toEqual({ registry: "ghcr.io", repository: "team/rootfs", tag: "v1" });
    expect(parseOciReference("127.0.0.1:5000/rootfs", { allowTag: true })).toEqual({ registry: "127.0.0.1:5000", repository: "rootfs", tag: "latest" });
  });

  it.each([
    ["ghcr.io/team/cache", /must start with oci:\/\//],
    ["oci://ghcr.io", /names no repository/],
    ["oci://ghcr.io/Team/cache", /not a valid repository name/],
    ["oci://ghcr.io/team/cache:v1", /osbuild names its tags itself: drop ':v1'/],
    ["oci://ghcr.io/team/cache@sha256:" + "a".repeat(64), /a digest cannot be pushed to/],
    ["oci://bad host/x", /is not a registry host/],
  ])("refuses %s", (text, message) => {
    expect(() => parseOciReference(text)).toThrow(message);
  });
});

describe("credentials as container tools keep them", () => {
  const basic = (user: string, password: string): string => Buffer.from(`${user}:${password}`).toString("base64");

  it("looks in $REGISTRY_AUTH_FILE, else ${XDG_RUNTIME_DIR}/containers/auth.json and ~/.config, then docker's config.json", () => {
    expect(authFiles({ HOME: "/h", XDG_RUNTIME_DIR: "/run/user/1" })).toEqual(["/run/user/1/containers/auth.json", "/h/.config/containers/auth.json", "/h/.docker/config.json"]);
    expect(authFiles({ HOME: "/h", REGISTRY_AUTH_FILE: "/a.json", DOCKER_CONFIG: "/d" })).toEqual(["/a.json", "/d/config.json"]);
  });

  it("takes the first file that knows the registry, the most specific entry in it, and docker's https:// keys", async () => {
    const home = tempDir("home");
    const runtime = tempDir("runtime");
    writeFiles(runtime, { "containers/auth.json": JSON.stringify({ auths: { "ghcr.io/team": { auth: basic("team", "t") }, "ghcr.io": { auth: basic("any", "a") } } }) });
    writeFiles(home, { ".docker/config.json": JSON.stringify({ auths: { "https://quay.io/v1/": { auth: basic("q", "pass:with:colons") }, "ghcr.io": { auth: basic("docker", "d") } } }) });
    const env = { HOME: home, XDG_RUNTIME_DIR: runtime };
    expect(await findCredentials("ghcr.io", "team/cache", env)).toEqual({ username: "team", password: "t", source: join(runtime, "containers/auth.json") });
    expect(await findCredentials("ghcr.io", "other/cache", env)).toMatchObject({ username: "any" });
    expect(await findCredentials("quay.io", "x/y", env)).toEqual({ username: "q", password: "pass:with:colons", source: join(home, ".docker/config.json") });
    expect(await findCredentials("example.org", "x", env)).toBeUndefined();
    // $REGISTRY_AUTH_FILE replaces the runtime file, and Docker Hub goes by its aliases.
    const file = join(tempDir(), "auth.json");
    writeFileSync(file, JSON.stringify({ auths: { "docker.io": { auth: basic("hub", "h") } } }));
    expect(await findCredentials("registry-1.docker.io", "library/debian", { ...env, REGISTRY_AUTH_FILE: file })).toMatchObject({ username: "hub" });
    expect(await findCredentials("ghcr.io", "team/cache", { ...env, REGISTRY_AUTH_FILE: file })).toMatchObject({ username: "docker" });
  });

  it("asks credential helpers (credHelpers, then credsStore), and takes identity tokens", async () => {
    const home = tempDir("home");
    const bin = tempDir("helpers");
    // A helper answers for one server and says "not found" for the rest, as docker's helpers do.
    const helper = (name: string, server: string, answer: object): void => {
      writeFiles(bin, { [`docker-credential-${name}`]: `#!/bin/sh\n[ "$1" = get ] || exit 2\nread s\n[ "$s" = "${server}" ] || { echo 'credentials not found in native keychain'; exit 1; }\necho '${JSON.stringify(answer)}'\n` });
      chmodSync(join(bin, `docker-credential-${name}`), 0o755);
    };
    helper("pass", "ghcr.io", { ServerURL: "ghcr.io", Username: "helped", Secret: "s3cret" });
    helper("store", "https://index.docker.io/v1/", { ServerURL: "", Username: "<token>", Secret: "refresh-me" });
    writeFiles(home, { ".docker/config.json": JSON.stringify({ credHelpers: { "ghcr.io": "pass" }, credsStore: "store", auths: { "quay.io": { identitytoken: "idt" } } }) });
    const env = { HOME: home, PATH: `${bin}:${process.env.PATH}` };
    expect(await findCredentials("ghcr.io", "a/b", env)).toMatchObject({ username: "helped", password: "s3cret", source: expect.stringContaining("docker-credential-pass") });
    expect(await findCredentials("registry-1.docker.io", "library/x", env)).toMatchObject({ identityToken: "refresh-me" });
    expect(await findCredentials("quay.io", "a/b", env)).toMatchObject({ identityToken: "idt" });
    expect(await findCredentials("example.org", "a", env)).toBeUndefined();
  });

  it("says which helper is missing, and never runs a helper named like a path", async () => {
    const home = tempDir("home");
    writeFiles(home, { ".docker/config.json": JSON.stringify({ credHelpers: { "a.io": "not-installed-anywhere", "b.io": "../../bin/sh" } }) });
    await expect(findCredentials("a.io", "x", { HOME: home, PATH: "/nonexistent" })).rejects.toThrow(/docker-credential-not-installed-anywhere, named in .*config.json, is not installed/);
    await expect(findCredentials("b.io", "x", { HOME: home })).rejects.toThrow(/not a valid helper name/);
  });
});

describe("transport", () => {
  it("uses TLS off loopback, plain HTTP only when asked", () => {
    expect(new Transport("ghcr.io").origin).toBe("https://ghcr.io");
    expect(new Transport("10.0.0.5:5000").origin).toBe("https://10.0.0.5:5000");
    expect(new Transport("10.0.0.5:5000", { plainHttp: true }).origin).toBe("http://10.0.0.5:5000");
  });

  describe("with registries on loopback", () => {
    let plain: TestRegistry;
    let tls: TestRegistry;
    beforeAll(async () => {
      [plain, tls] = await Promise.all([startRegistry(), startRegistry({ tls: true })]);
    }, 60_000);
    afterAll(() => Promise.all([plain?.stop(), tls?.stop()]));

    it("talks plain HTTP to one without TLS and HTTPS to one with it", async () => {
      const toPlain = new RegistryClient({ registry: plain.address, repository: "x" });
      const toTls = new RegistryClient({ registry: tls.address, repository: "x" }, { caFile: tls.caPath });
      try {
        await toPlain.ping();
        await toTls.ping();
        expect(toPlain.transport.origin).toBe(`http://${plain.address}`);
        expect(toTls.transport.origin).toBe(`https://${tls.address}`);
      } finally {
        toPlain.close();
        toTls.close();
      }
    });

    it("refuses a certificate it cannot verify, and says how to trust its CA", async () => {
      const client = new RegistryClient({ registry: tls.address, repository: "x" });
      try {
        const error = await client.ping().then(() => undefined, (thrown: unknown) => thrown);
        expect(error).toBeInstanceOf(RegistryError);
        expect((error as RegistryError).code).toBe("tls");
        expect((error as RegistryError).hint).toMatch(/--registry-ca FILE/);
      } finally {
        client.close();
      }
    });

    it("lets many clients push the same blobs and the same manifest under the same tag at once", async () => {
      // docker-registry 2.8 writes a link file by truncating it and writing it again, so a
      // manifest PUT that checks its blobs while another client links the same ones can see an
      // empty link and answer 400 DIGEST_INVALID (a CI run hit it with two builds sharing a cache).
      const layer = randomBytes(64 << 10);
      const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [digestOf(layer)] } }));
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(config), size: config.length },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: digestOf(layer), size: layer.length }],
      }));
      for (let round = 0; round < 6; round++) {
        const ref = { registry: plain.address, repository: `race/r${round}` };
        const clients = Array.from({ length: 8 }, () => new RegistryClient(ref, { access: ["pull", "push"] }));
        try {
          const digests = await Promise.all(clients.map(async (client) => {
            for (const bytes of [layer, config]) await client.uploadBlob({ digest: digestOf(bytes), size: bytes.length }, { bytes });
            return client.putManifest("same-tag", manifest, "application/vnd.oci.image.manifest.v1+json");
          }));
          expect(new Set(digests)).toEqual(new Set([digestOf(manifest)]));
          expect((await clients[0]!.manifest("same-tag", ["application/vnd.oci.image.manifest.v1+json"]))?.digest).toBe(digestOf(manifest));
        } finally {
          for (const client of clients) client.close();
        }
      }
    });

    it("goes on with a chunked upload in another process from the last chunk the registry took", async () => {
      const proxy = await startCountingProxy(plain.address);
      const content = randomBytes(5 << 20);
      const descriptor = { digest: `sha256:${createHash("sha256").update(content).digest("hex")}`, size: content.length };
      const saved = new Map<string, UploadSession>();
      // The first process dies right after the registry took its second chunk (and it was noted).
      const dying: UploadSessions = {
        get: (key) => saved.get(key),
        set: (key, session) => {
          saved.set(key, session);
          if (session.offset >= 2 << 20) throw new Error("the process died");
        },
        delete: (key) => saved.delete(key),
      };
      const sessions: UploadSessions = { get: (key) => saved.get(key), set: (key, session) => saved.set(key, session), delete: (key) => saved.delete(key) };
      const ref = { registry: proxy.address, repository: "resume/test" };
      try {
        const first = new RegistryClient(ref, { access: ["pull", "push"] });
        await expect(first.uploadBlob(descriptor, { bytes: content }, { chunkSize: 1 << 20, sessions: dying })).rejects.toThrow("the process died");
        first.close();
        expect(proxy.uploaded).toBeGreaterThan(2 << 20);
        proxy.reset();
        const second = new RegistryClient(ref, { access: ["pull", "push"] });
        await second.uploadBlob(descriptor, { bytes: content }, { chunkSize: 1 << 20, sessions });
        // Only the three chunks left went up again (plus the requests' headers).
        expect(proxy.uploaded).toBeGreaterThanOrEqual(3 << 20);
        expect(proxy.uploaded).toBeLessThan((3 << 20) + 64 * 1024);
        expect(await second.blobSize(descriptor.digest)).toBe(content.length);
        expect(saved.size).toBe(0);
        second.close();
        const check = await fetch(`http://${plain.address}/v2/resume/test/blobs/${descriptor.digest}`);
        expect(Buffer.from(await check.arrayBuffer()).equals(content)).toBe(true);
      } finally {
        await proxy.stop();
      }
    });
  });
});
