// Helpers for the benchmarks: timing commands, medians, peak memory, result files.

import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const OSBUILD = join(REPO, "bin", "osbuild.js");

export interface Timed {
  ms: number;
  /** Peak resident memory of the command and its children, in bytes (GNU time). */
  peakBytes: number;
  stdout: string;
}

/** Runs a command under /usr/bin/time to get its wall time and peak memory. */
export function timed(command: string, args: readonly string[], options: { cwd?: string; env?: Record<string, string> } = {}): Timed {
  const started = performance.now();
  const result = spawnSync("/usr/bin/time", ["-f", "%M", command, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, encoding: "utf8", maxBuffer: 1 << 28 });
  const ms = performance.now() - started;
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (${result.status}):\n${result.stdout}\n${result.stderr}`);
  const lines = result.stderr.trim().split("\n");
  const peakKiB = Number(lines[lines.length - 1]);
  return { ms, peakBytes: Number.isFinite(peakKiB) ? peakKiB * 1024 : 0, stdout: result.stdout };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function machine(): string {
  return `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB`;
}

export function saveResult(name: string, result: unknown): string {
  const dir = join(REPO, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.json`);
  writeFileSync(path, `${JSON.stringify(result, null, 2)}\n`);
  return path;
}

export function sh(command: string, cwd?: string): string {
  const result = spawnSync("bash", ["-o", "pipefail", "-c", command], { cwd, encoding: "utf8", maxBuffer: 1 << 28 });
  if (result.status !== 0) throw new Error(`${command} failed:\n${result.stderr}`);
  return result.stdout;
}
