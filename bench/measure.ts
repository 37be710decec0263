// Measures one command as a whole process tree, the same way for osbuild and for osbuilder:
//
//   node dist/bench/measure.js RESULT.json -- COMMAND ARGS...
//
// - wall time: from spawning the command to its exit, in this process (Node's clock);
// - CPU time: user + system of the command and every descendant it waited for, as GNU time
//   reports it (getrusage's RUSAGE_CHILDREN);
// - peak memory of the tree: the largest sum of the resident set sizes of every process of
//   the tree at one moment, sampled every 20 ms through /proc/PID/task/*/children. Pages
//   shared between processes (libc, the node binary) count once per process, and a process
//   that lives less than 20 ms can be missed: the figure is what the tree held resident at
//   its fullest, as the kernel accounts each process. (GNU time's %M, kept as `maxRssBytes`,
//   is the largest single process only.) Page cache is not counted: the files the build writes
//   are its output, not its memory.
// - what the tree held at that peak, process by process (`peakTree`: the command's name, its
//   resident and its anonymous bytes), so that a missed memory goal says what made it. A
//   child that a process forked and that has not yet exec'd shows its parent's name and
//   holds a copy of its parent's anonymous pages' mappings, which the kernel counts again.
//
// The command's stdout and stderr pass through. This file runs as a separate process so that
// the caller can use spawnSync and still have the tree sampled while it runs.

import { spawn } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";

/** One process of the tree at its peak. */
export interface PeakProcess {
  command: string;
  residentBytes: number;
  /** Resident but not shared with a file (statm's resident minus shared): heaps, stacks, buffers. */
  anonymousBytes: number;
}

export interface Measured {
  wallMs: number;
  cpuMs: number;
  peakTreeBytes: number;
  peakTree: PeakProcess[];
  maxRssBytes: number;
  status: number;
}

const PAGE = 4096;
const INTERVAL_MS = 20;

function descendants(pid: number, into: Set<number>): void {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return;
  }
  for (const task of tasks) {
    let children: string;
    try {
      children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8");
    } catch {
      continue;
    }
    for (const word of children.split(" ")) {
      const child = Number(word);
      if (word !== "" && !into.has(child)) {
        into.add(child);
        descendants(child, into);
      }
    }
  }
}

function processMemory(pid: number): PeakProcess | undefined {
  try {
    const [, resident, shared] = readFileSync(`/proc/${pid}/statm`, "utf8").split(" ").map(Number) as [number, number, number];
    const command = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    return { command, residentBytes: resident * PAGE, anonymousBytes: (resident - shared) * PAGE };
  } catch {
    return undefined; // exited meanwhile
  }
}

/** The tree below `root` (GNU time), without `root` itself: time's own few pages are not the command's. */
function tree(root: number): PeakProcess[] {
  const pids = new Set<number>();
  descendants(root, pids);
  return [...pids].map(processMemory).filter((found): found is PeakProcess => found !== undefined);
}

async function main(): Promise<void> {
  const [resultFile, separator, command, ...args] = process.argv.slice(2);
  if (!resultFile || separator !== "--" || !command) {
    process.stderr.write("usage: measure.js RESULT.json -- COMMAND ARGS...\n");
    process.exit(2);
  }
  const timeFile = `${resultFile}.time`;
  const started = performance.now();
  const child = spawn("/usr/bin/time", ["-o", timeFile, "-f", "%U %S %M", command, ...args], { stdio: "inherit" });
  let peak = 0;
  let peakTree: PeakProcess[] = [];
  const sample = (): void => {
    if (child.pid === undefined) return;
    const now = tree(child.pid);
    const bytes = now.reduce((sum, found) => sum + found.residentBytes, 0);
    if (bytes > peak) [peak, peakTree] = [bytes, now];
  };
  const timer = setInterval(sample, INTERVAL_MS);
  setImmediate(sample);
  const status = await new Promise<number>((resolve) => child.on("close", (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  const wallMs = performance.now() - started;
  clearInterval(timer);
  // time writes "Command exited with non-zero status N" before the figures when it fails.
  const figures = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ");
  const [user, system, maxRssKiB] = figures.map(Number) as [number, number, number];
  const measured: Measured = { wallMs, cpuMs: (user + system) * 1000, peakTreeBytes: peak, peakTree, maxRssBytes: maxRssKiB * 1024, status };
  writeFileSync(resultFile, JSON.stringify(measured));
  process.exitCode = status;
}

await main();
