// One repository of one OCI distribution registry: manifests, blobs (downloads verified
// against their digest as they stream; uploads chunked and resumable) and tags, with the
// credentials container tools keep, as HTTP Basic or as bearer tokens from the registry's
// token server. The engine's shared cache and stdlib's image pulls both use this client.

import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { findCredentials, type Credentials, type FoundCredentials } from "./credentials.js";
import { describeCause, RegistryError, TAMPERED_HINT } from "./errors.js";
import { isLoopback, type RepositoryRef } from "./reference.js";
import { Transport, type HttpRequest, type HttpResponse, type RequestBody, type TransportOptions } from "./transport.js";

export type Access = "pull" | "push" | "delete";

/** What a descriptor says of a blob: enough to fetch and check it. */
export interface BlobDescriptor {
  digest: string;
  size: number;
}

export interface ClientOptions extends TransportOptions {
  /** What the client does: the token scope it asks for. Default pull. */
  access?: readonly Access[];
  /** Credentials to use; default: looked up in the container tools' files on the first challenge. */
  credentials?: Credentials;
  /** The environment credential files and helpers are looked up in. */
  env?: NodeJS.ProcessEnv;
}

export interface FetchedManifest {
  digest: string;
  /** The Content-Type the registry gave (the document's own mediaType is authoritative). */
  contentType: string;
  bytes: Buffer;
}

/** Where an interrupted chunked upload stands, kept so that the next process can go on. */
export interface UploadSession {
  location: string;
  offset: number;
}

export interface UploadSessions {
  get(key: string): UploadSession | undefined;
  set(key: string, session: UploadSession): void;
  delete(key: string): void;
}

export interface UploadOptions {
  /** Blobs bigger than this go up in PATCH chunks of this size (default 32 MiB); smaller ones in one PUT. */
  chunkSize?: number;
  /** Sessions of chunked uploads, to go on after a failure instead of starting again. */
  sessions?: UploadSessions;
  /** Bytes as they go out (a chunk that fails and is sent again counts twice: these are the bytes on the wire). */
  onSent?: (bytes: number) => void;
}

export type UploadSource = { path: string } | { bytes: Buffer };

const DEFAULT_CHUNK = 32 << 20;
const MANIFEST_LIMIT = 4 << 20;

export class RegistryClient {
  readonly transport: Transport;
  private readonly base: string;
  private authorization: string | undefined;
  private authenticating: Promise<void> | undefined;
  private credentials: Promise<FoundCredentials | Credentials | undefined> | undefined;
  private readonly access: readonly Access[];

  constructor(
    readonly ref: RepositoryRef,
    private readonly options: ClientOptions = {},
  ) {
    this.transport = new Transport(ref.registry, options);
    this.base = `/v2/${ref.repository}`;
    this.access = options.access ?? ["pull"];
    if (options.credentials) this.credentials = Promise.resolve(options.credentials);
  }

  /** "HOST/REPOSITORY" */
  get name(): string {
    return `${this.ref.registry}/${this.ref.repository}`;
  }

  close(): void {
    this.transport.close();
  }

  /** GET /v2/ with credentials: fails early (unreachable, denied) before anything is sent. */
  async ping(): Promise<void> {
    const response = await this.send({ method: "GET", url: "/v2/" });
    await response.discard();
    if (response.status !== 200) throw this.unexpected(response, "the API version check");
  }

  /**
   * A manifest by tag or digest, or undefined when there is none. Its bytes are checked against
   * the digest asked for or announced, and against `expectedSize` (an index's descriptor)
   * when given; at most 4 MiB are read (containerd's limit too).
   */
  async manifest(reference: string, accept: readonly string[], expectedSize?: number): Promise<FetchedManifest | undefined> {
    const response = await this.send({ method: "GET", url: `${this.base}/manifests/${reference}`, headers: { accept: accept.join(", ") } });
    if (response.status === 404) {
      await response.discard();
      return undefined;
    }
    if (response.status !== 200) throw this.unexpected(response, `manifest ${reference}`);
    const bytes = await response.bytes(MANIFEST_LIMIT);
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    const expected = reference.startsWith("sha256:") ? reference : headerValue(response.headers["docker-content-digest"]);
    if ((expected !== undefined && expected.startsWith("sha256:") && digest !== expected) || (expectedSize !== undefined && bytes.length !== expectedSize)) {
      throw new RegistryError(`manifest ${expected ?? reference} of ${this.name} does not match its digest and size (got ${digest}, ${bytes.length} bytes)`, TAMPERED_HINT, "tampered");
    }
    return { digest, contentType: (headerValue(response.headers["content-type"]) ?? "").split(";")[0]!.trim(), bytes };
  }

  /** Whether a tag or digest exists, without its body: its digest when the registry says. */
  async hasManifest(reference: string, accept: readonly string[]): Promise<{ digest?: string } | undefined> {
    const response = await this.send({ method: "HEAD", url: `${this.base}/manifests/${reference}`, headers: { accept: accept.join(", ") } });
    await response.discard();
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw this.unexpected(response, `manifest ${reference}`);
    const digest = headerValue(response.headers["docker-content-digest"]);
    return digest ? { digest } : {};
  }

  /**
   * PUT a manifest under a tag (or its digest); returns its digest. A refusal that names a
   * blob it references as unknown or its link as bad is asked again a few times: docker-registry
   * 2.8 (filesystem storage) rewrites a link file in place, truncated first, so while another
   * client pushes the same blobs a check can read an empty link and answer 400 DIGEST_INVALID
   * or MANIFEST_BLOB_UNKNOWN for a blob that is there. A blob really missing fails every time.
   */
  async putManifest(reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      const response = await this.send({ method: "PUT", url: `${this.base}/manifests/${reference}`, headers: { "content-type": mediaType }, body: bytes });
      if (response.status === 201 || response.status === 200) {
        await response.discard();
        return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
      }
      const detail = await response.text().catch(() => "");
      if (response.status !== 400 || attempt >= MANIFEST_PUT_ATTEMPTS || !errorCodes(detail).some((code) => RACING_LINK_CODES.has(code))) {
        throw this.unexpected(response, `the upload of manifest ${reference}`, detail);
      }
      await sleep(50 * 2 ** attempt * (0.5 + Math.random()));
    }
  }

  /** DELETE a manifest (by digest: every tag naming it goes). A missing one is no error. */
  async deleteManifest(digest: string): Promise<void> {
    const response = await this.send({ method: "DELETE", url: `${this.base}/manifests/${digest}` });
    await response.discard();
    if (response.status === 202 || response.status === 200 || response.status === 404) return;
    if (response.status === 405) {
      throw new RegistryError(`registry ${this.ref.registry} does not allow deleting from ${this.ref.repository}`, "ask its operator to enable deletes (docker-registry: storage.delete.enabled: true), or prune with the registry's own tools", "unsupported");
    }
    throw this.unexpected(response, `the deletion of manifest ${digest}`);
  }

  /** The size of a blob the repository holds, or undefined. */
  async blobSize(digest: string): Promise<number | undefined> {
    const response = await this.send({ method: "HEAD", url: `${this.base}/blobs/${digest}` });
    await response.discard();
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw this.unexpected(response, `blob ${digest}`);
    const size = Number(headerValue(response.headers["content-length"]));
    return Number.isSafeInteger(size) ? size : undefined;
  }

  /**
   * The blob's bytes as a stream that fails (code "tampered") when they turn out longer,
   * shorter or other than the descriptor says: consume it fully before trusting anything.
   */
  async openBlob(descriptor: BlobDescriptor): Promise<Readable> {
    const response = await this.send({ method: "GET", url: `${this.base}/blobs/${descriptor.digest}` });
    if (response.status === 404) {
      await response.discard();
      throw new RegistryError(`blob ${descriptor.digest} is missing from ${this.name}`, "the registry lacks data its manifest names; push it again or tell the registry's operator", "not-found");
    }
    if (response.status !== 200) throw this.unexpected(response, `blob ${descriptor.digest}`);
    const hash = createHash("sha256");
    let received = 0;
    const mismatch = (got: string) => new RegistryError(`blob ${descriptor.digest} of ${this.name} does not match its digest and size (got ${got})`, TAMPERED_HINT, "tampered");
    const check = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        received += chunk.length;
        // Stop early rather than take in an endless answer.
        if (received > descriptor.size) return done(mismatch(`more than ${descriptor.size} bytes`));
        hash.update(chunk);
        done(null, chunk);
      },
      flush(done) {
        const actual = `sha256:${hash.digest("hex")}`;
        done(actual === descriptor.digest && received === descriptor.size ? null : mismatch(`${actual}, ${received} bytes`));
      },
    });
    response.body.on("error", (error) => check.destroy(new RegistryError(`download of blob ${descriptor.digest} from ${this.ref.registry} failed: ${describeCause(error)}`, "check the network and try again", "unreachable")));
    response.body.on("aborted", () => check.destroy(new RegistryError(`download of blob ${descriptor.digest} from ${this.ref.registry} was cut short`, "check the network and try again", "unreachable")));
    return response.body.pipe(check);
  }

  /** Streams a blob to `path`, verified; on any failure no file is left. */
  async downloadBlob(descriptor: BlobDescriptor, path: string): Promise<void> {
    const partial = `${path}.partial`;
    try {
      await pipeline(await this.openBlob(descriptor), createWriteStream(partial));
      await rename(partial, path);
    } catch (error) {
      await rm(partial, { force: true });
      if (error instanceof RegistryError) throw error;
      throw new RegistryError(`download of blob ${descriptor.digest} from ${this.ref.registry} failed: ${describeCause(error)}`, "check the network and try again", "unreachable");
    }
  }

  /**
   * Uploads a blob: in one PUT when small, else in PATCH chunks whose progress is kept in
   * `sessions`, so that a failed upload (here or in an earlier process) goes on from the last
   * chunk the registry took, when the registry can say where it stands.
   */
  async uploadBlob(descriptor: BlobDescriptor, source: UploadSource, options: UploadOptions = {}): Promise<void> {
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
    const body = (start: number, end: number): RequestBody =>
      "bytes" in source ? source.bytes.subarray(start, end) : { length: end - start, open: () => createReadStream(source.path, { start, end: end - 1, highWaterMark: 1 << 20 }) };
    const key = `${this.name}@${descriptor.digest}`;
    let saved = options.sessions?.get(key);
    let lastError: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        if (descriptor.size <= chunkSize) {
          const location = await this.startUpload();
          await this.finishUpload(location, descriptor, body(0, descriptor.size), options.onSent);
          return;
        }
        let session = (await this.resumable(saved)) ?? { location: await this.startUpload(), offset: 0 };
        while (session.offset < descriptor.size) {
          const end = Math.min(session.offset + chunkSize, descriptor.size);
          const response = await this.send({
            method: "PATCH",
            url: session.location,
            headers: { "content-type": "application/octet-stream", "content-range": `${session.offset}-${end - 1}` },
            body: body(session.offset, end),
            retry: false,
            onSent: options.onSent,
          });
          await response.discard();
          if (response.status !== 202) throw this.unexpected(response, `a chunk of blob ${descriptor.digest}`);
          session = { location: this.uploadLocation(response), offset: end };
          saved = session;
          options.sessions?.set(key, session);
        }
        await this.finishUpload(session.location, descriptor, undefined, options.onSent);
        options.sessions?.delete(key);
        return;
      } catch (error) {
        lastError = error;
        if (!(error instanceof RegistryError) || (error.code !== "unreachable" && error.code !== "failed")) throw error;
        // Only chunks the registry confirmed count: ask it where the upload stands before going on.
      }
    }
    throw lastError;
  }

  /** Every tag of the repository (none when it does not exist yet). */
  async tags(): Promise<string[]> {
    const tags: string[] = [];
    let url: string | undefined = `${this.base}/tags/list?n=1000`;
    while (url) {
      const response = await this.send({ method: "GET", url });
      if (response.status === 404) {
        await response.discard();
        return tags;
      }
      if (response.status !== 200) throw this.unexpected(response, "the tag list");
      const body = parseJsonObject(await response.text(MANIFEST_LIMIT * 4), `the tag list of ${this.name}`) as { tags?: unknown };
      if (Array.isArray(body.tags)) tags.push(...body.tags.filter((tag): tag is string => typeof tag === "string"));
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(headerValue(response.headers.link) ?? "");
      url = next ? new URL(next[1]!, response.url).href : undefined;
    }
    return tags;
  }

  // -------------------------------------------------------------------------

  private async startUpload(): Promise<string> {
    const response = await this.send({ method: "POST", url: `${this.base}/blobs/uploads/` });
    await response.discard();
    if (response.status !== 202) throw this.unexpected(response, "the start of an upload");
    return this.uploadLocation(response);
  }

  private async finishUpload(location: string, descriptor: BlobDescriptor, body: RequestBody | undefined, onSent: UploadOptions["onSent"]): Promise<void> {
    const url = new URL(location);
    url.searchParams.set("digest", descriptor.digest);
    const response = await this.send({ method: "PUT", url: url.href, headers: { "content-type": "application/octet-stream" }, body, retry: false, onSent });
    const detail = response.status === 201 || response.status === 204 ? "" : await response.text().catch(() => "");
    await response.discard();
    if (response.status === 201 || response.status === 204) return;
    if (response.status === 400 && /DIGEST_INVALID|SIZE_INVALID/.test(detail)) {
      throw new RegistryError(`registry ${this.ref.registry} found blob ${descriptor.digest} not to match its digest as uploaded`, "the local copy is damaged: run osbuild cache verify, then build again", "tampered");
    }
    throw this.unexpected(response, `the upload of blob ${descriptor.digest}`, detail);
  }

  /** A stored session the registry still knows at the same offset, or undefined. */
  private async resumable(session: UploadSession | undefined): Promise<UploadSession | undefined> {
    if (!session) return undefined;
    const response = await this.send({ method: "GET", url: session.location }).catch(() => undefined);
    if (!response) return undefined;
    await response.discard();
    if (response.status !== 204) return undefined;
    const range = /^(?:bytes=)?0-(\d+)$/.exec(headerValue(response.headers.range) ?? "");
    // "0-0" is both nothing and one byte: only a non-empty upload is worth going on with.
    const offset = range ? Number(range[1]) + 1 : -1;
    if (offset !== session.offset || offset <= 1) return undefined;
    return { location: this.uploadLocation(response, session.location), offset };
  }

  private uploadLocation(response: HttpResponse, fallback?: string): string {
    const location = headerValue(response.headers.location) ?? fallback;
    if (!location) throw new RegistryError(`registry ${this.ref.registry} started an upload without saying where to send it`, "the registry does not follow the distribution API; tell its operator", "unsupported");
    return new URL(location, response.url).href;
  }

  /** Sends with the current authorization; on a challenge, authenticates once and sends again. */
  private async send(request: HttpRequest): Promise<HttpResponse> {
    const used = this.authorization;
    const withAuth = (): HttpRequest => ({ ...request, headers: { ...request.headers, ...(this.authorization && { authorization: this.authorization }) } });
    let response = await this.transport.request(withAuth());
    if (response.status === 401) {
      const challenge = headerValue(response.headers["www-authenticate"]);
      await response.discard();
      // Requests that met the same expired token wait for one new token between them.
      if (this.authorization === used) {
        this.authenticating ??= this.authenticate(challenge).finally(() => (this.authenticating = undefined));
        await this.authenticating;
      } else await this.authenticating;
      response = await this.transport.request(withAuth());
    }
    if (response.status === 401 || response.status === 403) {
      await response.discard();
      throw await this.denied();
    }
    return response;
  }

  private async authenticate(challenge: string | undefined): Promise<void> {
    const parsed = parseChallenge(challenge);
    const credentials = await this.findCredentials();
    if (parsed?.scheme === "basic") {
      if (!credentials || !("username" in credentials)) throw await this.denied();
      this.authorization = basic(credentials);
      return;
    }
    if (parsed?.scheme !== "bearer" || parsed.params.realm === undefined) throw await this.denied();
    const realm = new URL(parsed.params.realm);
    const scope = `repository:${this.ref.repository}:${this.access.join(",")}`;
    // Credentials never go in clear to a token server off this machine.
    const sendSecrets = credentials !== undefined && (realm.protocol === "https:" || isLoopback(realm.host) || this.options.plainHttp === true);
    let response: HttpResponse;
    if (sendSecrets && "identityToken" in credentials) {
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: credentials.identityToken, service: parsed.params.service ?? "", scope, client_id: "osbuild" });
      response = await this.transport.request({ method: "POST", url: realm.href, headers: { "content-type": "application/x-www-form-urlencoded" }, body: Buffer.from(form.toString()) });
    } else {
      if (parsed.params.service !== undefined) realm.searchParams.set("service", parsed.params.service);
      realm.searchParams.set("scope", scope);
      const headers: Record<string, string> = sendSecrets && "username" in credentials ? { authorization: basic(credentials) } : {};
      response = await this.transport.request({ method: "GET", url: realm.href, headers });
    }
    if (response.status !== 200) {
      await response.discard();
      throw await this.denied();
    }
    const body = parseJsonObject(await response.text(), `the token from ${realm.origin}`) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === "string" && body.token !== "" ? body.token : body.access_token;
    if (typeof token !== "string" || token === "") {
      throw new RegistryError(`the token server of ${this.ref.registry} (${realm.origin}) answered without a token`, "try again later; the registry's auth service may be failing", "denied");
    }
    this.authorization = `Bearer ${token}`;
  }

  private findCredentials(): Promise<FoundCredentials | Credentials | undefined> {
    this.credentials ??= findCredentials(this.ref.registry, this.ref.repository, this.options.env);
    return this.credentials;
  }

  private async denied(): Promise<RegistryError> {
    let credentials: FoundCredentials | Credentials | undefined;
    try {
      credentials = await this.findCredentials();
    } catch (error) {
      if (error instanceof RegistryError) return error;
      throw error;
    }
    const what = this.access.includes("push") ? "push to" : this.access.includes("delete") ? "delete from" : "pull from";
    const source = credentials && "source" in credentials ? credentials.source : undefined;
    const hint = credentials
      ? `the credentials${source ? ` from ${source}` : ""} were refused or do not allow you to ${what} it: log in again (skopeo login ${this.ref.registry})`
      : `the repository may be private (or may not exist) and osbuild found no credentials for ${this.ref.registry}: log in with \`skopeo login ${this.ref.registry}\` (or podman/docker login); osbuild reads $REGISTRY_AUTH_FILE, \${XDG_RUNTIME_DIR}/containers/auth.json and ~/.docker/config.json`;
    return new RegistryError(`access to ${this.ref.repository} on ${this.ref.registry} was denied`, hint, "denied");
  }

  private unexpected(response: HttpResponse, what: string, detail = ""): RegistryError {
    const hint = response.status === 429 ? "the registry limits requests; wait, or use a mirror" : "the registry may be down or overloaded; try again later";
    const code = response.status >= 500 || response.status === 429 ? "unreachable" : "failed";
    const said = /"message"\s*:\s*"([^"]{1,200})"/.exec(detail)?.[1];
    return new RegistryError(`registry ${this.ref.registry} answered ${response.status} for ${what} of ${this.ref.repository}${said ? `: ${said}` : ""}`, hint, code);
  }
}

/** How often a manifest refused for a racing link is sent; the waits between add up to about 1.5 s. */
const MANIFEST_PUT_ATTEMPTS = 5;
const RACING_LINK_CODES = new Set(["DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"]);

/** The `code`s of a registry's error body (`{"errors":[{"code":...}]}`), none when it is not one. */
function errorCodes(body: string): string[] {
  try {
    const parsed: unknown = JSON.parse(body);
    const errors = typeof parsed === "object" && parsed !== null ? (parsed as { errors?: unknown }).errors : undefined;
    if (!Array.isArray(errors)) return [];
    return errors.flatMap((error: unknown) => (typeof error === "object" && error !== null && typeof (error as { code?: unknown }).code === "string" ? [(error as { code: string }).code] : []));
  } catch {
    return [];
  }
}

function basic(credentials: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`. */
function parseChallenge(header: string | undefined): { scheme: "basic" | "bearer"; params: Record<string, string> } | undefined {
  const match = /^\s*(basic|bearer)\b(.*)$/i.exec(header ?? "");
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const item of match[2]!.matchAll(/(\w+)="([^"]*)"/g)) params[item[1]!.toLowerCase()] = item[2]!;
  return { scheme: match[1]!.toLowerCase() as "basic" | "bearer", params };
}

export function parseJsonObject(text: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    /* reported below */
  }
  throw new RegistryError(`${what} is not a JSON object`, "the registry served something other than the document asked for; check the reference", "failed");
}
