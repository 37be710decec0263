// A no-op rebuild of a 3-step config (base → overlay → initrd) next to its cold build.
// Goal: the no-op rebuild under 0.5 s. Run: npm run bench:noop

import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OSBUILD, machine, median, saveResult, sh, timed } from "./lib.js";

const RUNS = 7;

const dir = mkdtempSync(join(tmpdir(), "osbuild-bench-noop-"));
try {
  // A base of 3000 files (~60 MB), an overlay, and an initrd: three steps.
  sh("mkdir -p base/usr/lib overlay/etc && for d in $(seq 1 30); do mkdir base/usr/lib/d$d; for f in $(seq 1 100); do head -c $((RANDOM * 2)) /dev/urandom > base/usr/lib/d$d/f$f; done; done && echo hi > overlay/etc/motd", dir);
  mkdirSync(join(dir, "cache"));
  writeFileSync(
    join(dir, "osbuild.config.ts"),
    `import { defineConfig, fetchBase, overlay, mkCpio } from "osbuild";
export default defineConfig(() => ({ initrd: mkCpio(overlay(fetchBase({ directory: "./base" }), { from: "./overlay" })) }));
`,
  );
  const run = (): ReturnType<typeof timed> => timed(process.execPath, [OSBUILD, "run", "--json", "--cache-dir", join(dir, "cache")], { cwd: dir });
  const cold = run();
  const noop: number[] = [];
  for (let i = 0; i < RUNS; i++) noop.push(run().ms);
  const noopMedianMs = median(noop);
  const result = {
    benchmark: "noop-rebuild",
    machine: machine(),
    date: new Date().toISOString(),
    steps: 3,
    coldMs: Math.round(cold.ms),
    noopMedianMs: Math.round(noopMedianMs),
    noopRunsMs: noop.map(Math.round),
    goal: "no-op rebuild < 500 ms",
    met: noopMedianMs < 500,
  };
  console.log(`cold build      ${result.coldMs} ms`);
  console.log(`no-op rebuild   ${result.noopMedianMs} ms (median of ${RUNS}; goal < 500 ms: ${result.met ? "met" : "MISSED"})`);
  console.log(`written to ${saveResult("noop-rebuild", result)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
