// HTTP to one registry, as container tools do it: TLS checked against the system's CAs (plus
// any given CA and the registry's certs.d directory), plain HTTP only on the loopback
// interface (when the registry does not speak TLS there) or when asked for, kept-alive
// connections, redirects followed (credentials never sent to another host), and idempotent
// requests retried with backoff.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { rootCertificates } from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { describeCause, RegistryError } from "./errors.js";
import { isLoopback } from "./reference.js";

export interface TransportOptions {
  /** A PEM file of CA certificates trusted on top of the system's (a private registry's CA). */
  caFile?: string;
  /** Plain HTTP to a registry that is not on the loopback interface (never the default). */
  plainHttp?: boolean;
  /** Per-registry certificate directories (HOST[:PORT]/ca.crt, client.cert, client.key). Default: those of containers and docker. */
  certDirs?: readonly string[];
}

/** A request body that can be sent again (after a retry or a redirect). */
export type RequestBody = Buffer | { length: number; open(): Readable };

export interface HttpRequest {
  method: "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";
  url: string;
  headers?: Record<string, string>;
  body?: RequestBody;
  /** Retry connection failures and 429/5xx answers. Default true; off for requests that must not be repeated blindly. */
  retry?: boolean;
  /** Bytes of the body as they go out. */
  onSent?: (bytes: number) => void;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The URL that answered, after redirects. */
  url: string;
  body: Readable;
  /** The body as text, at most `limit` bytes (more is an error: a registry's answer is small). */
  text(limit?: number): Promise<string>;
  bytes(limit?: number): Promise<Buffer>;
  discard(): Promise<void>;
}

const CERT_DIRS = ["/etc/containers/certs.d", "/etc/docker/certs.d"];
const SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];
const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);
const ATTEMPTS = 3;
const IDLE_TIMEOUT_MS = 60_000;
const USER_AGENT = "osbuild";

export class Transport {
  /** TLS or not; undecided on loopback until the registry answers (TLS is tried first). */
  private secure: boolean | undefined;
  private readonly http = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  private readonly https: HttpsAgent;

  constructor(
    readonly registry: string,
    options: TransportOptions = {},
  ) {
    this.secure = options.plainHttp ? false : isLoopback(registry) ? undefined : true;
    this.https = new HttpsAgent({ keepAlive: true, maxSockets: 16, ...tlsOptions(registry, options) });
  }

  /** "https://HOST[:PORT]", or "http://..." on loopback without TLS or when asked for. */
  get origin(): string {
    return `${this.secure === false ? "http" : "https"}://${this.registry}`;
  }

  close(): void {
    this.http.destroy();
    this.https.destroy();
  }

  /** Sends the request (following redirects, retrying what may be retried). Never throws for an HTTP status. */
  async request(request: HttpRequest): Promise<HttpResponse> {
    const retry = request.retry ?? true;
    for (let attempt = 1; ; attempt++) {
      let response: HttpResponse;
      try {
        if (this.secure === undefined) await this.decideScheme();
        response = await this.follow(request);
      } catch (error) {
        if (!retry || attempt >= ATTEMPTS || !(error instanceof RegistryError && error.code === "unreachable")) throw error;
        await sleep(backoff(attempt));
        continue;
      }
      if (!retry || attempt >= ATTEMPTS || !RETRY_STATUSES.has(response.status)) return response;
      await response.discard();
      await sleep(retryAfter(response.headers["retry-after"]) ?? backoff(attempt));
    }
  }

  private deciding: Promise<void> | undefined;

  /**
   * On loopback, container tools use TLS when the registry speaks it and plain HTTP when it does
   * not. Asked in plain HTTP first (no TLS set-up for the usual local registry): a TLS server
   * answers that with a 400 saying so.
   */
  private decideScheme(): Promise<void> {
    this.deciding ??= (async () => {
      const response = await this.send({ method: "GET", url: "/v2/" }, new URL(`http://${this.registry}/v2/`), {});
      const text = response.status === 400 ? await response.text(4096).catch(() => "") : (await response.discard(), "");
      this.secure = /HTTPS server/i.test(text);
    })().catch((error: unknown) => {
      this.secure = undefined;
      this.deciding = undefined;
      throw error;
    });
    return this.deciding;
  }

  private async follow(request: HttpRequest): Promise<HttpResponse> {
    let url = new URL(request.url, this.origin);
    let headers = { ...request.headers };
    for (let hop = 0; ; hop++) {
      const response = await this.send(request, url, headers);
      const location = response.headers.location;
      const redirect = [301, 302, 303, 307, 308].includes(response.status) && location !== undefined && (request.method === "GET" || request.method === "HEAD");
      if (!redirect) return response;
      await response.discard();
      if (hop >= 5) throw new RegistryError(`registry ${this.registry} redirected ${request.method} ${url.pathname} more than 5 times`, "the registry or its storage is misconfigured; tell its operator", "failed");
      const next = new URL(location, url);
      // Blobs are often redirected to storage elsewhere: the registry's credentials stay with the registry.
      if (next.origin !== url.origin) headers = Object.fromEntries(Object.entries(headers).filter(([name]) => name.toLowerCase() !== "authorization"));
      url = next;
    }
  }

  private send(request: HttpRequest, url: URL, headers: Record<string, string>): Promise<HttpResponse> {
    const secure = url.protocol === "https:";
    const body = request.body;
    const length = body === undefined ? 0 : body.length;
    const allHeaders: Record<string, string> = { "user-agent": USER_AGENT, ...headers };
    if (body !== undefined || request.method === "PUT" || request.method === "POST" || request.method === "PATCH") allHeaders["content-length"] = String(length);
    return new Promise<HttpResponse>((resolve, reject) => {
      const fail = (error: unknown): void =>
        reject(error instanceof RegistryError ? error : new RegistryError(`cannot reach registry ${this.registry}: ${describeCause(error)}`, "check the registry's name and port, that it is running, and the network (DNS, proxy, firewall)", "unreachable"));
      const outgoing = (secure ? httpsRequest : httpRequest)(url, { method: request.method, headers: allHeaders, agent: secure ? this.https : this.http }, (incoming) => {
        incoming.socket?.setTimeout(IDLE_TIMEOUT_MS);
        resolve(wrapResponse(incoming, url.href, this.registry, request.method === "HEAD"));
      });
      outgoing.setTimeout(IDLE_TIMEOUT_MS, () => outgoing.destroy(Object.assign(new Error(`no answer within ${IDLE_TIMEOUT_MS / 1000} s`), { code: "ETIMEDOUT" })));
      outgoing.on("error", (error) => fail(tlsProblem(error, this.registry) ?? error));
      if (body === undefined) outgoing.end();
      else if (Buffer.isBuffer(body)) {
        request.onSent?.(body.length);
        outgoing.end(body);
      } else {
        const counter = new Transform({
          transform(chunk: Buffer, _encoding, done) {
            request.onSent?.(chunk.length);
            done(null, chunk);
          },
        });
        pipeline(body.open(), counter, outgoing).catch((error: unknown) => {
          outgoing.destroy();
          fail(error);
        });
      }
    });
  }
}

function wrapResponse(incoming: IncomingMessage, url: string, registry: string, headOnly: boolean): HttpResponse {
  const bytes = async (limit = 4 << 20): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of incoming) {
        total += (chunk as Buffer).length;
        if (total > limit) {
          incoming.destroy();
          throw new RegistryError(`registry ${registry} sent more than ${limit} bytes for ${new URL(url).pathname}`, "the registry answered something unexpected; check the reference", "failed");
        }
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof RegistryError) throw error;
      throw new RegistryError(`the answer of registry ${registry} was cut short: ${describeCause(error)}`, "check the network and try again", "unreachable");
    }
    return Buffer.concat(chunks);
  };
  return {
    status: incoming.statusCode ?? 0,
    headers: incoming.headers,
    url,
    body: incoming,
    bytes,
    text: async (limit) => (await bytes(limit)).toString("utf8"),
    discard: async () => {
      if (incoming.destroyed) return;
      // The socket goes back to the pool only once the body has been read to its end (even an
      // empty one, even when it has all arrived): read a small rest; a big one is not worth it.
      const declared = Number(incoming.headers["content-length"] ?? NaN);
      if (declared > 1 << 20 && !incoming.complete && !headOnly) incoming.destroy();
      else incoming.resume();
    },
  };
}

/** CA certificates: the system's, a given file, and the registry's certs.d (ca.crt, *.crt; client.cert + client.key). */
function tlsOptions(registry: string, options: TransportOptions): { ca: string[]; cert?: Buffer; key?: Buffer } {
  const ca: string[] = [];
  const systemBundle = [process.env.SSL_CERT_FILE, ...SYSTEM_BUNDLES].find((file) => file && existsSync(file));
  if (systemBundle) ca.push(readFileSync(systemBundle, "utf8"));
  else ca.push(...rootCertificates);
  if (options.caFile) {
    try {
      ca.push(readFileSync(options.caFile, "utf8"));
    } catch (error) {
      throw new RegistryError(`cannot read the CA file ${options.caFile}: ${describeCause(error)}`, "give a PEM file of the registry's CA certificate", "unsupported");
    }
  }
  let cert: Buffer | undefined;
  let key: Buffer | undefined;
  for (const root of options.certDirs ?? CERT_DIRS) {
    const dir = join(root, registry);
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.endsWith(".crt")) ca.push(readFileSync(join(dir, name), "utf8"));
      else if (name.endsWith(".cert") && names.includes(`${name.slice(0, -5)}.key`)) {
        cert = readFileSync(join(dir, name));
        key = readFileSync(join(dir, `${name.slice(0, -5)}.key`));
      }
    }
  }
  return { ca, ...(cert && key ? { cert, key } : {}) };
}

function tlsProblem(error: unknown, registry: string): RegistryError | undefined {
  const code = (error as NodeJS.ErrnoException).code ?? "";
  if (!/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|EPROTO/.test(code)) return undefined;
  return new RegistryError(
    `the TLS connection to registry ${registry} failed: ${describeCause(error)}`,
    `if the registry uses a private CA, give it with --registry-ca FILE (or put it in /etc/containers/certs.d/${registry}/ca.crt)`,
    "tls",
  );
}

function backoff(attempt: number): number {
  return 200 * 3 ** (attempt - 1) * (0.75 + Math.random() / 2);
}

function retryAfter(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const seconds = Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), 10_000) : undefined;
}
