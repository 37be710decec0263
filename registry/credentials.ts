// Registry credentials where container tools keep them, read the way they read them
// (containers-auth.json(5), docker's config.json): the first file that knows the registry
// wins, and a file may hand the registry to a credential helper (docker-credential-NAME).
// `skopeo login`, `podman login` and `docker login` write these files: osbuild only reads.

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { DOCKER_HUB } from "./reference.js";
import { RegistryError } from "./errors.js";

export type Credentials = { username: string; password: string } | { identityToken: string };

/** Credentials and where they came from (for messages, never the secret itself). */
export type FoundCredentials = Credentials & { source: string };

interface AuthFile {
  auths?: Record<string, { auth?: string; identitytoken?: string } | undefined>;
  credHelpers?: Record<string, string | undefined>;
  credsStore?: string;
}

/**
 * The files to look in, in containers/image's order: $REGISTRY_AUTH_FILE (or else
 * ${XDG_RUNTIME_DIR}/containers/auth.json, then $XDG_CONFIG_HOME/containers/auth.json), then
 * docker's $DOCKER_CONFIG/config.json or ~/.docker/config.json.
 */
export function authFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const home = env.HOME || homedir();
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  else {
    if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, "containers", "auth.json"));
    files.push(join(env.XDG_CONFIG_HOME || join(home, ".config"), "containers", "auth.json"));
  }
  files.push(env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, "config.json") : join(home, ".docker", "config.json"));
  return files;
}

/** The credentials for a repository, or undefined when no file knows its registry. */
export async function findCredentials(registry: string, repository: string, env: NodeJS.ProcessEnv = process.env): Promise<FoundCredentials | undefined> {
  const hub = registry === DOCKER_HUB;
  const hosts = hub ? ["docker.io", "index.docker.io", DOCKER_HUB] : [registry];
  // Most specific first: a repository's own entry, then its namespaces, then the registry.
  const parts = repository.split("/");
  const candidates = hosts.flatMap((host) => [...parts.keys()].reverse().map((count) => `${host}/${parts.slice(0, count + 1).join("/")}`).concat(host));
  for (const file of authFiles(env)) {
    const config = readAuthFile(file);
    if (!config) continue;
    const helper = hosts.map((host) => config.credHelpers?.[host]).find((name) => name);
    if (helper) {
      const found = await fromHelper(helper, hub ? "https://index.docker.io/v1/" : registry, file, env);
      if (found) return found;
      continue;
    }
    const auths = new Map(Object.entries(config.auths ?? {}).map(([key, value]) => [normalizeKey(key), value]));
    for (const candidate of candidates) {
      const entry = auths.get(candidate);
      if (!entry) continue;
      if (entry.identitytoken) return { identityToken: entry.identitytoken, source: file };
      if (entry.auth) return { ...decodeAuth(entry.auth, file, candidate), source: file };
    }
    if (config.credsStore) {
      const found = await fromHelper(config.credsStore, hub ? "https://index.docker.io/v1/" : registry, file, env);
      if (found) return found;
    }
  }
  return undefined;
}

function readAuthFile(file: string): AuthFile | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as AuthFile;
  } catch {
    /* reported below */
  }
  throw new RegistryError(`the credentials file ${file} is not a JSON object`, "fix or remove it (skopeo login, podman login and docker login write it)", "denied");
}

/** "https://ghcr.io/", "ghcr.io/v2/" and "ghcr.io" all name ghcr.io. */
function normalizeKey(key: string): string {
  return key.replace(/^https?:\/\//, "").replace(/\/(v1|v2)\/?$/, "").replace(/\/+$/, "");
}

function decodeAuth(auth: string, file: string, key: string): { username: string; password: string } {
  const text = Buffer.from(auth, "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon <= 0) throw new RegistryError(`the credentials for ${key} in ${file} are not base64 of USER:PASSWORD`, `log in again (e.g. skopeo login ${key})`, "denied");
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** docker-credential-NAME get: the server URL on stdin, {"Username","Secret"} on stdout. */
async function fromHelper(name: string, serverUrl: string, file: string, env: NodeJS.ProcessEnv): Promise<FoundCredentials | undefined> {
  const program = `docker-credential-${name}`;
  // The name comes from a file: it must stay a program name, never a path.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new RegistryError(`${file} names the credential helper '${name}', which is not a valid helper name`, "fix credHelpers or credsStore in it", "denied");
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(program, ["get"], { env, stdio: ["pipe", "pipe", "pipe"], timeout: 30_000 });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
    child.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "ENOENT"
          ? new RegistryError(`the credential helper ${program}, named in ${file}, is not installed (not on PATH)`, `install it, or remove it from ${file}`, "denied")
          : new RegistryError(`the credential helper ${program} could not be run: ${error.message}`, `check ${program}`, "denied"),
      ),
    );
    child.on("close", (exit) => resolve({ code: exit, stdout: out, stderr: err }));
    child.stdin.on("error", () => undefined); // a helper that exits without reading
    child.stdin.end(serverUrl);
  });
  if (code !== 0) {
    if (/credentials not found/i.test(stdout + stderr)) return undefined;
    throw new RegistryError(`the credential helper ${program} failed for ${serverUrl}: ${(stderr || stdout).trim() || `exit status ${code}`}`, `check that ${program} works: echo ${serverUrl} | ${program} get`, "denied");
  }
  let answer: { Username?: unknown; Secret?: unknown };
  try {
    answer = JSON.parse(stdout) as typeof answer;
  } catch {
    throw new RegistryError(`the credential helper ${program} answered something other than JSON`, `check that ${program} works: echo ${serverUrl} | ${program} get`, "denied");
  }
  if (typeof answer.Secret !== "string" || answer.Secret === "") return undefined;
  const source = `${program} (from ${file})`;
  // Docker's convention: the user "<token>" means the secret is an identity (refresh) token.
  if (answer.Username === "<token>") return { identityToken: answer.Secret, source };
  if (typeof answer.Username !== "string" || answer.Username === "") return undefined;
  return { username: answer.Username, password: answer.Secret, source };
}
