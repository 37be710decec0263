// Shared test helpers: temporary projects and running the real `osbuild` command.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";

export const REPO = fileURLToPath(new URL("..", import.meta.url));
export const OSBUILD = join(REPO, "bin", "osbuild.js");
/**
 * The workplace's shared/ folder (the real osbuilder, the SPDX schema): $OSBUILD_SHARED, else
 * beside the checkout, else /work/shared (CI may clone the repository anywhere on the machine).
 */
export const SHARED = [process.env.OSBUILD_SHARED, join(REPO, "..", "shared"), "/work/shared"].find((dir): dir is string => dir !== undefined && existsSync(join(dir, "osbuilder"))) ?? join(REPO, "..", "shared");

/** Kata's real osbuilder, run on this machine as root without Docker (shared/osbuilder/run.sh). */
export const OSBUILDER_RUN_SH = join(SHARED, "osbuilder", "run.sh");

/**
 * The command line that runs `run.sh ARGS` in a mount namespace of its own. osbuilder mounts
 * its disk's loop partition while osbuild's steps start namespaces beside it (other test files,
 * or the parity test's other lane); a mount namespace started while that partition is mounted
 * keeps a copy of the mount, so osbuilder's umount leaves the device busy and its
 * `fsck.ext4 -D` aborts ("Cannot continue, aborting", make Error 8). Mounted in a namespace
 * of its own, the partition is never copied into anyone else's.
 */
export function osbuilderCommand(args: string[]): { command: string; args: string[] } {
  return { command: "unshare", args: ["--mount", "--propagation", "private", "bash", OSBUILDER_RUN_SH, ...args] };
}

/** osbuild's test agent, built by the global set-up (as scripts/setup.sh builds it). */
export const AGENT = join(REPO, "build/agent/kata-agent");

const created: string[] = [];
afterAll(() => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory, removed after the test file. */
export function tempDir(label = "osbuild-test"): string {
  const dir = mkdtempSync(join(tmpdir(), `${label}-`));
  created.push(dir);
  return dir;
}

/** Writes files (path → content) under `dir`. */
export function writeFiles(dir: string, files: Record<string, string | Buffer>): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Parsed NDJSON lines of stdout (when --json was given). */
  events: Array<Record<string, unknown> & { type: string }>;
}

export interface RunOptions {
  cwd: string;
  /** Added to the environment; an undefined value unsets a variable. */
  env?: Record<string, string | undefined>;
  /** Run as this unprivileged uid (and its gid), with no capabilities and HOME=cwd. */
  asUser?: number;
  /** A command that runs osbuild, e.g. ["unshare", "--net"] for a build without a network. */
  wrap?: readonly string[];
}

/** The unprivileged user the tests build as. */
export const NOBODY = 65534;

export function osbuild(args: string[], options: RunOptions): Promise<RunResult> {
  return finished(startOsbuild(args, options));
}

/** Runs any program to its end, collecting its output. */
export function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  return finished(spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] }));
}

function finished(child: ChildProcess): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr, events: parseEvents(stdout) }));
  });
}

export function startOsbuild(args: string[], options: RunOptions): ChildProcess {
  const env = { ...process.env, ...options.env };
  const stdio = ["ignore", "pipe", "pipe"] as const;
  if (options.wrap) return spawn(options.wrap[0]!, [...options.wrap.slice(1), process.execPath, OSBUILD, ...args], { cwd: options.cwd, env, stdio: [...stdio] });
  if (options.asUser === undefined) return spawn(process.execPath, [OSBUILD, ...args], { cwd: options.cwd, env, stdio: [...stdio] });
  const user = String(options.asUser);
  const privileges = [`--reuid=${user}`, `--regid=${user}`, "--clear-groups", "--inh-caps=-all"];
  return spawn("setpriv", [...privileges, process.execPath, OSBUILD, ...args], { cwd: options.cwd, env: { ...env, HOME: options.cwd }, stdio: [...stdio] });
}

function parseEvents(stdout: string): RunResult["events"] {
  const events: RunResult["events"] = [];
  for (const line of stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      events.push(JSON.parse(line) as RunResult["events"][number]);
    } catch {
      /* not an event line */
    }
  }
  return events;
}

/** Step statuses by id from a --json run. */
export function statuses(result: RunResult): Record<string, string> {
  const map: Record<string, string> = {};
  for (const event of result.events) if (event.type === "step") map[event.id as string] = event.status as string;
  return map;
}

/** The error of the failed step (of step `id`, when given) from a --json run. */
export function failure(result: RunResult, id?: string): string {
  return String(result.events.find((event) => event.type === "step" && event.status === "failed" && (id === undefined || event.id === id))?.error);
}

/** Runs a shell command, throwing with its output when it fails. */
export function sh(command: string, cwd?: string): string {
  const result = spawnSync("bash", ["-o", "pipefail", "-c", command], { cwd, encoding: "utf8", maxBuffer: 1 << 28 });
  if (result.status !== 0) throw new Error(`${command} failed (${result.status}):\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

export const isRoot = process.getuid?.() === 0;

/** `length` bytes of `file` at `offset`. */
export { readAt } from "../stdlib/reproducibility/compare.js";

/**
 * A rootfs target (an OCI image layout) unpacked as a container runtime would: layers in
 * order with GNU tar (as root: owners, modes, devices and xattrs as stored), whiteouts applied.
 */
export function unpackOciLayout(layout: string): string {
  const dir = tempDir("layout-tree");
  const blob = (digest: string): string => join(layout, "blobs/sha256", digest.slice("sha256:".length));
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0]!.digest), "utf8")) as { layers: Array<{ digest: string }> };
  for (const layer of manifest.layers) {
    for (const line of sh(`tar -tf ${blob(layer.digest)}`).split("\n")) {
      const match = /^(.*\/)?\.wh\.(.+)$/.exec(line);
      if (match && match[2] !== ".wh..opq") sh(`rm -rf -- "${join(dir, match[1] ?? "", match[2]!)}"`);
    }
    sh(`tar --xattrs --xattrs-include='*' --numeric-owner -xpf ${blob(layer.digest)} -C ${dir} --exclude='*.wh.*'`);
  }
  return dir;
}

/** mulberry32: a small deterministic generator, so that a random test's failure names the seed that makes it. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
