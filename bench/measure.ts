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
//
// The command's stdout and stderr pass through. This file runs as a separate process so that
// the caller can use spawnSync and still have the tree sampled while it runs.

import { spawn } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";

export interface Measured {
  wallMs: number;
  cpuMs: number;
  peakTreeBytes: number;
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

function residentBytes(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/statm`, "utf8").split(" ")[1]) * PAGE;
  } catch {
    return 0; // exited meanwhile
  }
}

/** The tree below `root` (GNU time), without `root` itself: time's own few pages are not the command's. */
function treeBytes(root: number): number {
  const pids = new Set<number>();
  descendants(root, pids);
  let sum = 0;
  for (const pid of pids) sum += residentBytes(pid);
  return sum;
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
  const sample = (): void => {
    if (child.pid !== undefined) peak = Math.max(peak, treeBytes(child.pid));
  };
  const timer = setInterval(sample, INTERVAL_MS);
  setImmediate(sample);
  const status = await new Promise<number>((resolve) => child.on("close", (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  const wallMs = performance.now() - started;
  clearInterval(timer);
  // time writes "Command exited with non-zero status N" before the figures when it fails.
  const figures = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ");
  const [user, system, maxRssKiB] = figures.map(Number) as [number, number, number];
  const measured: Measured = { wallMs, cpuMs: (user + system) * 1000, peakTreeBytes: peak, maxRssBytes: maxRssKiB * 1024, status };
  writeFileSync(resultFile, JSON.stringify(measured));
  process.exitCode = status;
}

await main();
