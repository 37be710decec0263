// Benchmark results: one file per run in bench/results/ (run-<date>.json, never overwritten),
// `latest.json` a symlink to the newest, and the README's bench block generated from them:
// the newest table, then the spread of the runs before it.
//
//   node dist/bench/report.js      # regenerates the README's block from bench/results/

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { REPO, seconds } from "./lib.js";

export interface Side {
  /** Medians over the runs. */
  wallMs: number;
  cpuMs: number;
  /** The largest of the runs. */
  peakMiB: number;
  /** That run's process tree at its peak (bench/run.ts describeTree), when it was sampled. */
  peakTree?: string;
  runsMs: number[];
}

export interface BenchRow {
  id: string;
  scenario: string;
  osbuild: Side;
  baseline?: Side;
  baselineCommand?: string;
  /** osbuild's median wall time over the baseline's. */
  ratio?: number;
  goal: string;
  met: boolean;
  note?: string;
}

export interface BenchRun {
  date: string;
  /** When the run was last written (the end, or its last finished scenario). */
  finished: string;
  /** False while running, and for a run that was stopped or failed: its rows are the scenarios it finished. */
  complete?: boolean;
  machine: string;
  /** 1-minute load averages when the run started and ended (the machine is shared). */
  load: { before: number; after: number };
  runs: number;
  osbuilder: string;
  osbuildVersion: string;
  commit: string;
  only?: string[];
  rows: BenchRow[];
}

const RESULTS = join(REPO, "bench", "results");
const README = join(REPO, "README.md");
const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";

/** The result files this process wrote: a run rewrites its own file as scenarios finish, no other. */
const ownFiles = new Set<string>();

/**
 * Keeps the run as a file of its own, points latest.json at it and regenerates the README's
 * block. Called again for the same run as it goes on, it replaces that run's file.
 */
export function saveRun(run: BenchRun): { path: string; table: string } {
  mkdirSync(RESULTS, { recursive: true });
  const name = `run-${run.date.replace(/[:.]/g, "-")}.json`;
  const path = join(RESULTS, name);
  if (existsSync(path) && !ownFiles.has(path)) throw new Error(`${path} exists: results are never overwritten`);
  ownFiles.add(path);
  const temp = join(RESULTS, `.run-${process.pid}.tmp`);
  writeFileSync(temp, `${JSON.stringify(run, null, 2)}\n`);
  renameSync(temp, path);
  const link = join(RESULTS, `.latest-${process.pid}`);
  symlinkSync(name, link);
  renameSync(link, join(RESULTS, "latest.json"));
  updateReadme();
  return { path, table: formatRun(run) };
}

export function allRuns(): BenchRun[] {
  if (!existsSync(RESULTS)) return [];
  return readdirSync(RESULTS)
    .filter((name) => /^run-.*\.json$/.test(name))
    .sort()
    .map((name) => JSON.parse(readFileSync(join(RESULTS, name), "utf8")) as BenchRun);
}

export function formatRun(run: BenchRun): string {
  const stopped = run.complete === false ? "; **stopped before the end** (the scenarios it finished)" : "";
  const against = run.rows.some((row) => row.baseline) ? `against ${run.osbuilder}` : "(osbuilder not run)";
  const header = `osbuild ${run.osbuildVersion} (${run.commit}) ${against}, on ${run.machine}, ${run.date.slice(0, 16).replace("T", " ")} UTC, load average ${run.load.before} → ${run.load.after}; medians of ${run.runs} runs each, turn about${run.only ? `; scenarios: ${run.only.join(", ")}` : ""}${stopped}`;
  const lines = [
    header,
    "",
    "| scenario | osbuild wall | osbuild CPU | osbuilder wall | osbuilder CPU | ratio | peak memory osbuild / osbuilder | goal | met | note |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const row of run.rows) {
    const peak = `${row.osbuild.peakMiB} MiB${row.baseline ? ` / ${row.baseline.peakMiB} MiB` : ""}`;
    const against = row.baselineCommand ? ` (${row.baselineCommand})` : "";
    lines.push(
      `| ${row.scenario} | ${seconds(row.osbuild.wallMs)} | ${seconds(row.osbuild.cpuMs)} | ${seconds(row.baseline?.wallMs)}${against} | ${seconds(row.baseline?.cpuMs)} | ${row.ratio === undefined ? "" : `${row.ratio.toFixed(3)}×`} | ${peak} | ${row.goal} | ${row.met ? "yes" : "**no**"} | ${row.note ?? ""} |`,
    );
  }
  return lines.join("\n");
}

/** Per scenario, the range of the figure its goal is about over the earlier runs. */
export function formatSpread(earlier: readonly BenchRun[]): string {
  if (earlier.length === 0) return "No earlier runs.";
  const figures = new Map<string, { scenario: string; values: string[]; misses: number; runs: number }>();
  for (const run of earlier) {
    for (const row of run.rows) {
      const entry = figures.get(row.id) ?? { scenario: row.scenario, values: [], misses: 0, runs: 0 };
      entry.values.push(row.ratio !== undefined ? `${row.ratio.toFixed(3)}×` : row.id === "memory" ? `${row.osbuild.peakMiB} MiB` : seconds(row.osbuild.wallMs));
      entry.runs++;
      if (!row.met) entry.misses++;
      figures.set(row.id, entry);
    }
  }
  const lines = [`The ${earlier.length} run${earlier.length === 1 ? "" : "s"} before it (${earlier[0]!.date.slice(0, 10)} to ${earlier[earlier.length - 1]!.date.slice(0, 10)}; bench/results/):`, "", "| scenario | runs | figure, oldest to newest | goal missed |", "|---|---|---|---|"];
  for (const entry of figures.values()) lines.push(`| ${entry.scenario} | ${entry.runs} | ${entry.values.join(", ")} | ${entry.misses} of ${entry.runs} |`);
  return lines.join("\n");
}

export function updateReadme(): void {
  const runs = allRuns();
  if (runs.length === 0) return;
  const text = readFileSync(README, "utf8");
  const start = text.indexOf(START);
  const end = text.indexOf(END);
  if (start < 0 || end < start) throw new Error(`README.md has no ${START} … ${END} block`);
  const newest = runs[runs.length - 1]!;
  // A run of some scenarios only (BENCH_ONLY) does not hide the newest run of them all.
  const newestFull = newest.only ? runs.findLast((run) => !run.only) : undefined;
  const full = newestFull ? `\n\nThe newest run started for every scenario:\n\n${formatRun(newestFull)}` : "";
  const block = `${START}\n<!-- generated by bench/report.ts from bench/results/: do not edit by hand -->\nThe newest \`npm run bench\` (bench/results/latest.json); each ratio is osbuild's median wall time over osbuilder's, measured in the same run:\n\n${formatRun(newest)}${full}\n\n${formatSpread(runs.slice(0, -1))}\n${END}`;
  const updated = text.slice(0, start) + block + text.slice(end + END.length);
  const temp = `${README}.tmp-${process.pid}`;
  writeFileSync(temp, updated);
  renameSync(temp, README);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  updateReadme();
  const latest = join(RESULTS, "latest.json");
  if (existsSync(latest)) process.stdout.write(`${formatRun(JSON.parse(readFileSync(latest, "utf8")) as BenchRun)}\n`);
}
