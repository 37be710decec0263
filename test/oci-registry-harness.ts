// A real OCI registry for tests: Debian's docker-registry (distribution v2) on a free loopback
// port, optionally behind token auth served by a small token server or htpasswd Basic auth,
// optionally over TLS (a test CA), filled with skopeo; and a byte-counting TCP proxy to put in
// front of it.

import { spawn, spawnSync } from "node:child_process";
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, createServer as createNetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { imageConfig, imageIndex, imageManifest, MEDIA_TYPES, OCI_LAYOUT, type Descriptor } from "../formats/oci.js";
import { writeFiles } from "./helpers.js";

export interface RegistryCredentials {
  username: string;
  password: string;
}

export interface StartRegistryOptions {
  /**
   * "token": the registry demands bearer tokens from a token server, as Docker Hub, ghcr.io and
   * quay.io do. "htpasswd": HTTP Basic auth against an htpasswd file (docker-registry's own).
   */
  auth?: "none" | "token" | "htpasswd";
  /** Serve HTTPS with a certificate for 127.0.0.1 from a test CA (`caPath`). */
  tls?: boolean;
  /** Allow DELETE of manifests (for pruning). */
  deletes?: boolean;
  /**
   * Token auth only: anonymous pulls are denied. `true` or "refuse-token": the token server
   * answers 401 (as ghcr.io does for private images); "empty-grant": it issues a token that grants
   * nothing and the registry answers 401 (as Docker Hub does).
   */
  denyPull?: boolean | "refuse-token" | "empty-grant";
}

export interface TestRegistry {
  /** "127.0.0.1:PORT" */
  address: string;
  /** The registry's filesystem storage root. */
  storageDir: string;
  /**
   * With token auth: the user the token server grants push to (anonymous requests get pull at
   * most). With htpasswd: the only user.
   */
  credentials?: RegistryCredentials;
  /** With TLS: the CA that signed the registry's certificate. */
  caPath?: string;
  /** How many tokens were asked for so far (token auth). */
  readonly tokenRequests: number;
  /** Kills the registry process at once (SIGKILL), keeping its storage. */
  kill(): Promise<void>;
  /** Starts it again on the same address, with the same storage and configuration. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

const SERVICE = "osbuild-test-registry";
const ISSUER = "osbuild-test-token-server";

export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const workDir = mkdtempSync(join(tmpdir(), "osbuild-registry-"));
  const storageDir = join(workDir, "storage");
  mkdirSync(storageDir);
  let tokenServer: Server | undefined;
  let credentials: RegistryCredentials | undefined;
  let authSection = "";
  let tlsSection = "";
  let caPath: string | undefined;
  let tokenRequests = 0;
  if (options.tls) {
    const tls = makeServerCert(workDir);
    caPath = tls.caPath;
    tlsSection = ["  tls:", `    certificate: ${tls.certPath}`, `    key: ${tls.keyPath}`].join("\n");
  }
  if (options.auth === "htpasswd") {
    credentials = { username: "osbuild", password: randomBytes(12).toString("hex") };
    const htpasswd = spawnSync("htpasswd", ["-nbB", credentials.username, credentials.password], { encoding: "utf8" });
    if (htpasswd.status !== 0) throw new Error(`htpasswd failed (install apache2-utils): ${htpasswd.stderr}`);
    writeFileSync(join(workDir, "htpasswd"), htpasswd.stdout);
    authSection = ["auth:", "  htpasswd:", "    realm: osbuild-test", `    path: ${join(workDir, "htpasswd")}`].join("\n");
  }
  if (options.auth === "token") {
    credentials = { username: "osbuild", password: randomBytes(12).toString("hex") };
    const signer = makeSigningCert(workDir);
    const deny = options.denyPull === true ? "refuse-token" : options.denyPull || undefined;
    tokenServer = await listen(
      createHttpServer((request, response) => {
        tokenRequests++;
        serveToken(request, response, { signer, credentials: credentials!, deny });
      }),
    );
    authSection = [
      "auth:",
      "  token:",
      `    realm: http://127.0.0.1:${portOf(tokenServer)}/token`,
      `    service: ${SERVICE}`,
      `    issuer: ${ISSUER}`,
      `    rootcertbundle: ${signer.certPath}`,
    ].join("\n");
  }

  const stopTokenServer = async (): Promise<void> => {
    tokenServer?.closeAllConnections();
    if (tokenServer) await new Promise<void>((resolve) => tokenServer!.close(() => resolve()));
  };
  // One secret for every start: upload sessions stay valid when the registry is restarted.
  const secret = randomBytes(16).toString("hex");
  const scheme = options.tls ? "https" : "http";
  // The free port may be taken between finding it and the registry binding it: then try another.
  for (let attempt = 1; ; attempt++) {
    const address = `127.0.0.1:${await freePort()}`;
    const configPath = writeRegistryConfig(workDir, { storageDir, address, secret, authSection, tlsSection, deletes: options.deletes ?? false });
    let stopRegistry = await serveRegistry(configPath, address, scheme, caPath).catch(async (error: Error) => {
      if (attempt < 3 && /address already in use/.test(error.message)) return undefined;
      await stopTokenServer();
      rmSync(workDir, { recursive: true, force: true });
      throw error;
    });
    if (!stopRegistry) continue;
    const stop = async (): Promise<void> => {
      await stopRegistry?.();
      await stopTokenServer();
      rmSync(workDir, { recursive: true, force: true });
    };
    return {
      address,
      storageDir,
      credentials,
      ...(caPath && { caPath }),
      get tokenRequests() {
        return tokenRequests;
      },
      kill: async () => {
        await stopRegistry?.("SIGKILL");
        stopRegistry = undefined;
      },
      start: async () => {
        if (stopRegistry) return;
        stopRegistry = await serveRegistry(configPath, address, scheme, caPath);
      },
      stop,
    };
  }
}

function writeRegistryConfig(
  workDir: string,
  settings: { storageDir: string; address: string; secret: string; authSection: string; tlsSection: string; deletes: boolean },
): string {
  const configPath = join(workDir, "config.yml");
  writeFileSync(
    configPath,
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${settings.storageDir}`,
      ...(settings.deletes ? ["  delete:", "    enabled: true"] : []),
      "http:",
      `  addr: ${settings.address}`,
      `  secret: ${settings.secret}`,
      settings.tlsSection,
      settings.authSection,
    ].join("\n") + "\n",
  );
  return configPath;
}

/** Starts docker-registry and waits until it answers; resolves to a function that stops it. */
async function serveRegistry(configPath: string, address: string, scheme: "http" | "https", caPath: string | undefined): Promise<(signal?: NodeJS.Signals) => Promise<void>> {
  const registry = spawn("/usr/bin/docker-registry", ["serve", configPath], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  registry.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  let running = true;
  const exited = new Promise<void>((resolve) => {
    const done = () => {
      running = false;
      resolve();
    };
    registry.once("exit", done);
    // Not started at all (no binary): there is no exit event, only this.
    registry.once("error", (error) => {
      stderr += error.message;
      done();
    });
  });
  const stop = async (signal: NodeJS.Signals = "SIGTERM"): Promise<void> => {
    if (running) registry.kill(signal);
    await exited;
  };
  try {
    await waitUntilServing(address, scheme, caPath, () => !running);
  } catch (error) {
    await stop();
    throw new Error(`docker-registry did not start on ${address}: ${(error as Error).message}\n${stderr}`);
  }
  return stop;
}

/** Where the registry keeps a blob's bytes, for tests that corrupt them. */
export function registryBlobPath(storageDir: string, digest: string): string {
  const hex = digest.replace(/^sha256:/, "");
  return join(storageDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
}

async function waitUntilServing(address: string, scheme: "http" | "https", caPath: string | undefined, hasExited: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (hasExited()) throw new Error("it exited");
    // 401 counts: with auth, /v2/ answers 401 as soon as the registry is up.
    if (scheme === "http") {
      const status = await fetch(`http://${address}/v2/`).then((response) => response.status, () => 0);
      if (status === 200 || status === 401) return;
    } else {
      const curl = spawnSync("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", caPath!, `https://${address}/v2/`], { encoding: "utf8" });
      if (curl.stdout === "200" || curl.stdout === "401") return;
    }
    if (Date.now() > deadline) throw new Error(`nothing answered on ${scheme}://${address}/v2/ within 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A test CA and a certificate for 127.0.0.1 signed by it. */
function makeServerCert(dir: string): { caPath: string; certPath: string; keyPath: string } {
  const caPath = join(dir, "ca.crt");
  const certPath = join(dir, "server.crt");
  const keyPath = join(dir, "server.key");
  const run = (args: string[]): void => {
    const result = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (result.status !== 0) throw new Error(`openssl ${args.join(" ")} failed:\n${result.stderr}`);
  };
  writeFileSync(join(dir, "san.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
  run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", caPath, "-days", "2", "-subj", "/CN=osbuild-test-ca"]);
  run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
  run(["x509", "-req", "-in", "server.csr", "-CA", caPath, "-CAkey", "ca.key", "-CAcreateserial", "-out", certPath, "-days", "2", "-extfile", "san.cnf"]);
  return { caPath, certPath, keyPath };
}

// ---------------------------------------------------------------------------
// A proxy that counts

export interface CountingProxy {
  /** "127.0.0.1:PORT", to use instead of the registry's. */
  address: string;
  /** Bytes from clients to the registry (requests: what a push uploads), since the start or the last reset. */
  readonly uploaded: number;
  readonly downloaded: number;
  reset(): void;
  stop(): Promise<void>;
}

/**
 * A TCP proxy to `target` that counts the bytes each way; `onUploaded` sees the running
 * upload count (a test can kill the registry half-way through a push).
 */
export async function startCountingProxy(target: string, onUploaded?: (bytes: number) => void): Promise<CountingProxy> {
  let uploaded = 0;
  let downloaded = 0;
  const sockets = new Set<Socket>();
  const [host, port] = target.split(":") as [string, string];
  const server = createNetServer((client) => {
    const upstream = connect(Number(port), host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => undefined);
    }
    client.on("data", (chunk: Buffer) => {
      uploaded += chunk.length;
      onUploaded?.(uploaded);
    });
    upstream.on("data", (chunk: Buffer) => (downloaded += chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await listen(server);
  return {
    address: `127.0.0.1:${portOf(server)}`,
    get uploaded() {
      return uploaded;
    },
    get downloaded() {
      return downloaded;
    },
    reset() {
      uploaded = 0;
      downloaded = 0;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function freePort(): Promise<number> {
  const server = await listen(createNetServer());
  const port = portOf(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function listen<S extends Server | ReturnType<typeof createNetServer>>(server: S): Promise<S> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return server;
}

function portOf(server: { address(): unknown }): number {
  return (server.address() as { port: number }).port;
}

// ---------------------------------------------------------------------------
// The token server

interface Signer {
  certPath: string;
  privateKeyPem: string;
  /** base64 DER of the self-signed certificate, for the JWT's x5c header. */
  certDer: string;
}

/** A self-signed RSA certificate: the registry trusts tokens whose x5c chain ends in its rootcertbundle. */
function makeSigningCert(dir: string): Signer {
  const keyPath = join(dir, "token.key");
  const certPath = join(dir, "token.crt");
  const result = spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", `/CN=${ISSUER}`], {
    encoding: "utf8",
  });
  if (result.status !== 0) throw new Error(`openssl could not make the token signing certificate:\n${result.stderr}`);
  const certDer = new X509Certificate(readFileSync(certPath)).raw.toString("base64");
  return { certPath, privateKeyPem: readFileSync(keyPath, "utf8"), certDer };
}

interface TokenPolicy {
  signer: Signer;
  credentials: RegistryCredentials;
  deny: "refuse-token" | "empty-grant" | undefined;
}

/**
 * GET /token?service=...&scope=repository:NAME:pull,push (the Docker token protocol).
 * Anonymous callers get pull; callers with the test credentials (Basic auth) get pull and push,
 * which is how skopeo fills the registry even when anonymous pulls are denied.
 */
function serveToken(request: IncomingMessage, response: ServerResponse, policy: TokenPolicy): void {
  const url = new URL(request.url ?? "/", "http://token.invalid");
  const expected = `Basic ${Buffer.from(`${policy.credentials.username}:${policy.credentials.password}`).toString("base64")}`;
  const authenticated = request.headers.authorization === expected;
  if (request.headers.authorization !== undefined && !authenticated) return reply(response, 401, { errors: [{ code: "UNAUTHORIZED", message: "wrong credentials" }] });
  const allowed = authenticated ? ["pull", "push"] : policy.deny ? [] : ["pull"];
  const scopes = url.searchParams.getAll("scope").flatMap((scope) => scope.split(" ")).filter((scope) => scope !== "");
  if (!authenticated && policy.deny === "refuse-token" && scopes.length > 0) return reply(response, 401, { errors: [{ code: "DENIED", message: "pull access denied" }] });
  const access = scopes.flatMap((scope) => {
    const [type, name, actions] = scope.split(":");
    if (type !== "repository" || name === undefined || actions === undefined) return [];
    return [{ type, name, actions: actions.split(",").filter((action) => allowed.includes(action)) }];
  });
  const token = signJwt(policy.signer, {
    iss: ISSUER,
    sub: authenticated ? policy.credentials.username : "",
    aud: url.searchParams.get("service") ?? SERVICE,
    iat: nowSeconds(),
    nbf: nowSeconds() - 10,
    exp: nowSeconds() + 300,
    jti: randomBytes(8).toString("hex"),
    access,
  });
  reply(response, 200, { token, expires_in: 300 });
}

function signJwt(signer: Signer, claims: Record<string, unknown>): string {
  const header = { typ: "JWT", alg: "RS256", x5c: [signer.certDer] };
  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const signature = sign("sha256", Buffer.from(signingInput), createPrivateKey(signer.privateKeyPem));
  return `${signingInput}.${base64url(signature)}`;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(body));
}

// ---------------------------------------------------------------------------
// Filling the registry

export interface PushOptions {
  /** The layout holds an index: push every image of it and the index itself. */
  all?: boolean;
  /** How skopeo compresses the layers on the way (the layout's are plain tar). Default gzip. */
  compression?: "gzip" | "zstd";
  /** Manifest format in the registry: OCI (default) or Docker v2 schema 2, whose gzip layers have the Docker media type. */
  format?: "oci" | "v2s2";
  /** Needed with token auth: anonymous tokens never grant push. */
  credentials?: RegistryCredentials;
}

/**
 * Copies an OCI layout into the registry; returns the digest of the pushed manifest (or index).
 * Asynchronous on purpose: the token server runs in this process and must answer skopeo.
 */
export async function pushOciLayout(layoutDir: string, destination: string, options: PushOptions = {}): Promise<{ digest: string }> {
  const digestFile = join(layoutDir, `.pushed-digest-${randomBytes(4).toString("hex")}`);
  const args = ["copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false", "--digestfile", digestFile];
  if (options.all) args.push("--all");
  if (options.format) args.push("--format", options.format);
  args.push("--dest-compress-format", options.compression ?? "gzip");
  if (options.credentials) args.push("--dest-creds", `${options.credentials.username}:${options.credentials.password}`);
  else args.push("--dest-no-creds");
  args.push(`oci:${layoutDir}`, `docker://${destination}`);
  const skopeo = spawn("skopeo", args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  skopeo.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  skopeo.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    skopeo.once("error", reject);
    skopeo.once("close", resolve);
  });
  if (code !== 0) throw new Error(`skopeo ${args.join(" ")} failed (${code}):\n${output}`);
  const digest = readFileSync(digestFile, "utf8").trim();
  rmSync(digestFile);
  return { digest };
}

// ---------------------------------------------------------------------------
// Test images

export interface TestImage {
  architecture: string;
  variant?: string;
  /** path → content of the single layer's files. */
  files: Record<string, string>;
}

/**
 * Writes an OCI image layout: one uncompressed tar layer per image and a linux config for its
 * architecture. With several images, index.json points at an inner image index listing them by
 * platform, which is what `skopeo copy --all` needs to push a multi-arch index.
 */
export function makeOciLayout(dir: string, images: TestImage[]): void {
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  const manifests = images.map((image, index) => {
    const tree = join(dir, `.tree-${index}`);
    writeFiles(tree, image.files);
    const tar = spawnSync("tar", ["-C", tree, "-c", "-f", "-", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@0", "--sort=name", ...readdirSync(tree).sort()], {
      maxBuffer: 1 << 28,
    });
    if (tar.status !== 0) throw new Error(`tar failed: ${tar.stderr.toString()}`);
    rmSync(tree, { recursive: true });
    const layer = writeBlob(dir, MEDIA_TYPES.layerTar, tar.stdout);
    const config = writeBlob(dir, MEDIA_TYPES.config, JSON.stringify(imageConfig(image.architecture, [layer.digest], new Date(0))));
    const manifest = writeBlob(dir, MEDIA_TYPES.manifest, JSON.stringify(imageManifest(config, [layer])));
    return { ...manifest, platform: { architecture: image.architecture, os: "linux", ...(image.variant ? { variant: image.variant } : {}) } };
  });
  const top = manifests.length === 1 ? manifests : [writeBlob(dir, MEDIA_TYPES.index, JSON.stringify(imageIndex(manifests)))];
  writeFileSync(join(dir, "oci-layout"), JSON.stringify(OCI_LAYOUT));
  writeFileSync(join(dir, "index.json"), JSON.stringify(imageIndex(top)));
}

function writeBlob(layoutDir: string, mediaType: string, content: string | Buffer): Descriptor {
  const hex = createHash("sha256").update(content).digest("hex");
  writeFileSync(join(layoutDir, "blobs", "sha256", hex), content);
  return { mediaType, digest: `sha256:${hex}`, size: Buffer.byteLength(content) };
}

export interface RawImage {
  /** The config document; any os and architecture, unlike what skopeo would accept. */
  config: Record<string, unknown>;
  /** Layers with any media type: the registry stores what it is given. */
  layers: Array<{ mediaType: string; content: Buffer }>;
}

/**
 * Pushes an OCI image through the registry API directly (no auth), for images skopeo would not
 * make: foreign layer types, configs for other operating systems. Returns the manifest digest.
 */
export async function pushRawImage(address: string, repository: string, tag: string, image: RawImage): Promise<string> {
  const upload = async (mediaType: string, content: Buffer): Promise<Descriptor> => {
    const digest = `sha256:${createHash("sha256").update(content).digest("hex")}`;
    const started = await fetch(`http://${address}/v2/${repository}/blobs/uploads/`, { method: "POST" });
    const location = new URL(started.headers.get("location") ?? "", `http://${address}`);
    location.searchParams.set("digest", digest);
    const finished = await fetch(location, { method: "PUT", body: content, headers: { "content-type": "application/octet-stream" } });
    if (finished.status !== 201) throw new Error(`blob upload to ${address}/${repository} failed: ${finished.status} ${await finished.text()}`);
    return { mediaType, digest, size: content.length };
  };
  const config = await upload(MEDIA_TYPES.config, Buffer.from(JSON.stringify(image.config)));
  const layers: Descriptor[] = [];
  for (const layer of image.layers) layers.push(await upload(layer.mediaType, layer.content));
  const manifest = Buffer.from(JSON.stringify(imageManifest(config, layers)));
  const response = await fetch(`http://${address}/v2/${repository}/manifests/${tag}`, { method: "PUT", body: manifest, headers: { "content-type": MEDIA_TYPES.manifest } });
  if (response.status !== 201) throw new Error(`manifest upload to ${address}/${repository}:${tag} failed: ${response.status} ${await response.text()}`);
  return `sha256:${createHash("sha256").update(manifest).digest("hex")}`;
}
