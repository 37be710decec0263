// Helpers for the benchmarks: whole-process measurements (bench/measure.ts), medians, the
// machine's description and load, result files.

import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Measured, PeakProcess } from "./measure.js";

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const OSBUILD = join(REPO, "bin", "osbuild.js");
const MEASURE = fileURLToPath(new URL("./measure.js", import.meta.url));

export interface Timed {
  /** Wall time, spawn to exit. */
  ms: number;
  /** user + system of the process and the descendants it waited for. */
  cpuMs: number;
  /** Peak resident memory of the whole process tree (see measure.ts), in bytes. */
  peakBytes: number;
  /** The tree at that peak, process by process (empty when GNU time saw one process hold more than any sample did). */
  peakTree: PeakProcess[];
  stdout: string;
  stderr: string;
}

/**
 * Runs a command as a user would, measured as a whole process tree (measure.ts): wall time,
 * CPU time, peak memory. Throws when it fails.
 */
export function timed(command: string, args: readonly string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}): Timed {
  const resultFile = join(REPO, "bench", "results", `.measure-${process.pid}.json`);
  mkdirSync(join(resultFile, ".."), { recursive: true });
  try {
    const result = spawnSync(process.execPath, [MEASURE, resultFile, "--", command, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, encoding: "utf8", maxBuffer: 1 << 28 });
    if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (${result.status}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-4000)}`);
    const measured = JSON.parse(readFileSync(resultFile, "utf8")) as Measured;
    // A process that peaked between two samples still counts: the tree held at least that much.
    const sampled = measured.peakTreeBytes >= measured.maxRssBytes;
    return { ms: measured.wallMs, cpuMs: measured.cpuMs, peakBytes: Math.max(measured.peakTreeBytes, measured.maxRssBytes), peakTree: sampled ? measured.peakTree : [], stdout: result.stdout, stderr: result.stderr };
  } finally {
    rmSync(resultFile, { force: true });
    rmSync(`${resultFile}.time`, { force: true });
  }
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function machine(): string {
  return `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB`;
}

/** The 1-minute load average, for the record: timings taken on a busy machine are not final. */
export function load(): number {
  return Math.round(loadavg()[0]! * 100) / 100;
}

/** Writes bench/results/NAME.json (a benchmark's own result file, overwritten by its next run). */
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

export function mib(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}

export function seconds(ms: number | undefined): string {
  return ms === undefined || Number.isNaN(ms) ? "" : `${(ms / 1000).toFixed(ms < 10_000 ? 3 : 1)} s`;
}
