// Faults, each run for real on the default build (the repository's osbuild.config.ts: a
// Debian bookworm base by mmdebstrap, provision, install-agent, mk-cpio, mk-ext4):
//   - SIGKILL at random moments of every step, mmdebstrap included: every next run succeeds
//     with outputs equal to those of a clean build in a cache of its own;
//   - SIGINT and SIGTERM: no scratch directory or temp file left, no partial output, a
//     non-zero exit, and the next build succeeds;
//   - four concurrent builds on one cache while `cache prune` runs in a loop;
//   - a cache on a small, nearly full filesystem: a clear error, and the cache still verifies.
// `osbuild cache verify` runs after each of them and must pass.
//
// A cold build for every kill would take an hour, so a few kills land in the cold build
// (fetch-base, then provision), and the rest in rounds that each change the agent binary (a
// section added with objcopy: strip would drop appended bytes), so that install-agent,
// mk-cpio and mk-ext4 run again every round. Each round's outputs are compared with those of
// the same agent built once in the reference cache, which is never interrupted.
//
// OSBUILD_FAULTS=full runs the issue's 50 kills (17 minutes of kills on this shared 2-core
// machine under heavy load, 48 minutes for the whole file); the default is a CI-sized 12. The figures (where each kill landed, how long the recovering runs took) go
// to bench/results/faults-latest.json and to the test's output.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { beforeAll, describe, expect, it } from "vitest";
import { AGENT, isRoot, osbuild, REPO, seededRandom as random, sh, startOsbuild, tempDir } from "../helpers.js";

const FULL = process.env.OSBUILD_FAULTS === "full";
/** Kills in the cold build (fetch-base, then provision), and in the agent rounds after it. */
const COLD_KILLS = FULL ? ["fetch-base", "fetch-base", "fetch-base", "fetch-base", "provision", "provision"] : ["fetch-base", "provision"];
const ROUND_KILLS = (FULL ? 50 : 12) - COLD_KILLS.length;
/** Fixed, so that a failure can be run again with the same moments. */
const SEED = Number(process.env.OSBUILD_FAULTS_SEED ?? 20261201);
const CONFIG = join(REPO, "osbuild.config.ts");
const TARGETS = ["initrd", "image", "rootfs"];
const LATER_STEPS = ["install-agent", "mk-cpio", "mk-ext4"];

type Event = Record<string, unknown> & { type: string };
interface TimedEvent {
  at: number;
  event: Event;
}

/** Where a kill should land: before the first step, in a step (by id), or while the outputs are written. */
type Target = "startup" | "outputs" | string;

interface Watched {
  code: number | null;
  signal: NodeJS.Signals | null;
  events: TimedEvent[];
  stderr: string;
  /** Where the signal landed; undefined when the run ended before it was sent. */
  landed?: string;
  /** When it was sent (ms after the start). */
  sentAt?: number;
  ms: number;
}

/**
 * Runs `osbuild run --json` and, when `kill` is given, sends its signal `fraction` of the
 * way into the target (using the reference run's timings for how long the target lasts).
 */
function watchedRun(args: string[], cwd: string, kill?: { target: Target; fraction: number; signal: NodeJS.Signals; timings: Timings }): Promise<Watched> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = startOsbuild(["run", "--json", ...args], { cwd });
    const events: TimedEvent[] = [];
    let stderr = "";
    let buffered = "";
    let timer: NodeJS.Timeout | undefined;
    let landed: string | undefined;
    let sentAt: number | undefined;
    const fire = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      landed = whereIs(events);
      sentAt = Math.round(performance.now() - started);
      child.kill(kill!.signal);
    };
    const arm = (delay: number): void => {
      if (!timer) timer = setTimeout(fire, Math.max(0, delay));
    };
    if (kill?.target === "startup") arm(kill.fraction * kill.timings.startup);
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith("{")) continue;
        const event = JSON.parse(line) as Event;
        events.push({ at: performance.now() - started, event });
        if (!kill || timer) continue;
        if (event.type === "step-start" && event.id === kill.target) arm(kill.fraction * (kill.timings.steps[kill.target] ?? 1000));
        if (kill.target === "outputs" && event.type === "step" && finishedSteps(events) === kill.timings.stepCount) arm(kill.fraction * kill.timings.outputs);
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, events, stderr, landed, sentAt, ms: Math.round(performance.now() - started) });
    });
  });
}

function finishedSteps(events: readonly TimedEvent[]): number {
  return events.filter(({ event }) => event.type === "step" || event.type === "step-skipped").length;
}

/** What a run was doing at this moment of its event stream. */
function whereIs(events: readonly TimedEvent[]): string {
  const started = new Set<string>();
  for (const { event } of events) {
    if (event.type === "step-start") started.add(event.id as string);
    if (event.type === "step") started.delete(event.id as string);
  }
  if (started.size > 0) return [...started].sort().join("+");
  if (!events.some(({ event }) => event.type === "step")) return "startup";
  return events.some(({ event }) => event.type === "done") ? "exiting" : "outputs";
}

interface Timings {
  startup: number;
  steps: Record<string, number>;
  stepCount: number;
  outputs: number;
}

/** How long each part of a clean run took. */
function timingsOf(run: Watched): Timings {
  const steps: Record<string, number> = {};
  const startAt = new Map<string, number>();
  let firstStep = Infinity;
  let lastStep = 0;
  for (const { at, event } of run.events) {
    if (event.type === "step-start") startAt.set(event.id as string, at);
    if (event.type === "step-start" || event.type === "step") firstStep = Math.min(firstStep, at);
    if (event.type === "step") {
      lastStep = Math.max(lastStep, at);
      if (event.status === "built") steps[event.id as string] = at - (startAt.get(event.id as string) ?? at);
    }
  }
  const done = run.events.find(({ event }) => event.type === "done")?.at ?? lastStep;
  return { startup: firstStep, steps, stepCount: finishedSteps(run.events), outputs: done - lastStep };
}

/** sha256 of every file of the targets, by path. */
function outputsOf(out: string): Record<string, string> {
  const digests: Record<string, string> = {};
  const visit = (path: string): void => {
    if (statSync(path).isDirectory()) for (const name of readdirSync(path).sort()) visit(join(path, name));
    else digests[relative(out, path)] = createHash("sha256").update(readFileSync(path)).digest("hex");
  };
  for (const target of TARGETS) visit(join(out, target));
  return digests;
}

function failedSteps(run: Watched): unknown[] {
  return run.events.filter(({ event }) => event.type === "step" && event.status === "failed").map(({ event }) => event);
}

/** The agent of round `round`: the test agent with a section of its own, which strip keeps. */
function agentVariant(dir: string, round: number): string {
  const path = join(dir, `kata-agent-${round}`);
  if (!existsSync(path)) {
    writeFileSync(join(dir, `variant-${round}`), `osbuild fault round ${round}\n`);
    sh(`objcopy --add-section .osbuild-fault-round=variant-${round} ${AGENT} ${path}`, dir);
  }
  return path;
}

async function verifyCache(cache: string, cwd: string): Promise<void> {
  const verify = await osbuild(["cache", "verify", "--cache-dir", cache], { cwd });
  expect(verify.code, `cache verify:\n${verify.stdout}${verify.stderr}`).toBe(0);
  expect(verify.stdout).toMatch(/: 0 corrupted/);
}

/** Nothing of a stopped build is left: no scratch directory, no temp file, no half-written output, no mount, no program. */
function expectNothingLeft(cache: string, out: string): void {
  for (const dir of ["scratch", "tmp-osbuild"]) expect(existsSync(join(cache, dir)) ? readdirSync(join(cache, dir)) : [], `${dir}/`).toEqual([]);
  expect(existsSync(out) ? readdirSync(out).filter((name) => name.startsWith(".")) : [], "partial outputs").toEqual([]);
  expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(cache);
  expect(sh(`ps -eo args`).split("\n").filter((line) => line.includes(cache) && !line.startsWith("ps "))).toEqual([]);
}

interface Figures {
  seed: number;
  full: boolean;
  date?: string;
  coldReferenceMs?: number;
  kills: Array<{ round: number; target: string; landed: string; killedAtMs: number; recoveryMs?: number; recoveredSteps?: Record<string, string> }>;
  interrupts: Array<{ signal: string; target: string; landed: string; stopMs: number; exit: number | null }>;
  concurrent?: { builds: number; prunes: number; ms: number };
  diskFull?: { error: string; hint: string };
}

const figures: Figures = { seed: SEED, full: FULL, kills: [], interrupts: [] };

function saveFigures(): void {
  const dir = join(REPO, "bench/results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "faults-latest.json"), `${JSON.stringify({ ...figures, date: new Date().toISOString() }, null, 2)}\n`);
}

describe.skipIf(!isRoot)("faults on the default build (as root: mmdebstrap in root mode)", () => {
  const next = random(SEED);
  let work: string;
  let agents: string;
  let reference: string;
  let referenceRun: Watched;
  let timings: Timings;
  /** Outputs of each agent round, built once in the reference cache. */
  const expected = new Map<number, { outputs: Record<string, string>; timings: Timings }>();

  const buildArgs = (cache: string, out: string, round: number): string[] => ["--config", CONFIG, "--cache-dir", cache, "--out", out, ...(round === 0 ? [] : ["--set", `agent=${agentVariant(agents, round)}`])];

  /** The reference outputs of `round`, built in the reference cache (once). */
  async function referenceOf(round: number): Promise<{ outputs: Record<string, string>; timings: Timings }> {
    let known = expected.get(round);
    if (!known) {
      const out = join(work, `reference-out-${round}`);
      const run = await watchedRun(buildArgs(reference, out, round), work);
      expect(run.code, run.stderr).toBe(0);
      known = { outputs: outputsOf(out), timings: timingsOf(run) };
      expected.set(round, known);
    }
    return known;
  }

  /** Interrupts a build of `round` in `cache` with `signal` in `target`, and checks that nothing is left. */
  async function interrupted(cache: string, round: number, target: Target, signal: NodeJS.Signals, given: Timings): Promise<Watched> {
    const out = join(work, `interrupted-out-${round}`);
    const run = await watchedRun(buildArgs(cache, out, round), work, { target, fraction: 0.2 + 0.6 * next(), signal, timings: given });
    if (run.landed === undefined || run.landed === "exiting") {
      expect(run.code, run.stderr).toBe(0); // it finished first: then it must have succeeded
    } else {
      expect(run.code, run.stderr).toBe(signal === "SIGINT" ? 130 : 143);
      expect(run.events.at(-1)?.event).toMatchObject({ type: "done", ok: false, error: `interrupted by ${signal}` });
      expectNothingLeft(cache, out);
    }
    figures.interrupts.push({ signal, target, landed: run.landed ?? "finished first", stopMs: run.ms - (run.sentAt ?? run.ms), exit: run.code });
    return run;
  }

  beforeAll(async () => {
    work = tempDir("faults");
    agents = join(work, "agents");
    mkdirSync(agents);
    reference = join(work, "reference-cache");
    // The reference cache's own cold build, after a SIGINT and a SIGTERM in its mmdebstrap:
    // those must leave it clean, and the build after them is the reference.
    const rough: Timings = { startup: 3000, steps: { "fetch-base": 40_000 }, stepCount: 5, outputs: 1000 };
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      await interrupted(reference, 0, "fetch-base", signal, rough);
      await verifyCache(reference, work);
    }
    const out = join(work, "reference-out-0");
    referenceRun = await watchedRun(buildArgs(reference, out, 0), work);
    if (referenceRun.code !== 0) throw new Error(`the reference build failed:\n${referenceRun.stderr}`);
    timings = timingsOf(referenceRun);
    expected.set(0, { outputs: outputsOf(out), timings });
    figures.coldReferenceMs = referenceRun.ms;
  }, 900_000);

  // SIGINT and the concurrent builds first, while the reference cache is small (cache verify
  // hashes all of it; the kill rounds add an image and an initrd per agent).
  it("SIGINT and SIGTERM in each later step leave nothing behind, and the next build succeeds", async () => {
    const targets: Target[] = [...LATER_STEPS, "outputs"];
    try {
      for (const [index, target] of targets.entries()) {
        const round = 1000 + index;
        const wanted = await referenceOf(1); // the timings of a build like this one
        const signal = index % 2 === 0 ? "SIGINT" : "SIGTERM";
        await interrupted(reference, round, target, signal, wanted.timings);
        await verifyCache(reference, work);
        const out = join(work, `interrupted-out-${round}`);
        const after = await watchedRun(buildArgs(reference, out, round), work);
        expect(after.code, after.stderr).toBe(0);
        expect(Object.keys(outputsOf(out)).length).toBeGreaterThan(2);
      }
    } finally {
      saveFigures();
    }
  }, 1_800_000);

  it("four concurrent builds on one cache while `cache prune` runs in a loop all succeed with the same outputs", async () => {
    const cache = join(work, "shared-cache");
    sh(`cp -a --reflink=auto ${reference} ${cache}`);
    const round = 2000;
    const started = performance.now();
    const builds = [1, 2, 3, 4].map((n) => watchedRun(buildArgs(cache, join(work, `concurrent-out-${n}`), round), work));
    let running = true;
    let prunes = 0;
    const pruning = (async () => {
      while (running) {
        const args = prunes % 2 === 0 ? ["cache", "prune", "--older-than", "0"] : ["cache", "prune"];
        const prune = await osbuild([...args, "--cache-dir", cache], { cwd: work });
        expect(prune.code, prune.stderr).toBe(0);
        prunes++;
        await sleep(200);
      }
    })();
    const runs = await Promise.all(builds);
    running = false;
    await pruning;
    try {
      for (const run of runs) expect(run.code, run.stderr).toBe(0);
      const first = outputsOf(join(work, "concurrent-out-1"));
      for (const n of [2, 3, 4]) expect(outputsOf(join(work, `concurrent-out-${n}`)), `concurrent build ${n} against build 1`).toEqual(first);
      expect(first, "the concurrent builds against the same agent built alone in the reference cache").toEqual((await referenceOf(round)).outputs);
      expect(prunes).toBeGreaterThan(3);
      await verifyCache(cache, work);
      figures.concurrent = { builds: 4, prunes, ms: Math.round(performance.now() - started) };
    } finally {
      saveFigures();
    }
  }, 1_800_000);

  it(`SIGKILL at ${COLD_KILLS.length + ROUND_KILLS} random moments (seed ${SEED}): every next run succeeds with the outputs of a clean build`, async () => {
    const cache = join(work, "killed-cache");
    const out = join(work, "killed-out");
    try {
      // The cold build, killed again and again: each next run must get on without a failure.
      for (const [index, target] of COLD_KILLS.entries()) {
        // (at most 70% into the reference's time: a cold run that finishes first leaves the later kills nothing to hit)
        const run = await watchedRun(buildArgs(cache, out, 0), work, { target, fraction: 0.7 * next(), signal: "SIGKILL", timings });
        expect(failedSteps(run), run.stderr).toEqual([]);
        if (run.landed === undefined) expect(run.code, run.stderr).toBe(0);
        figures.kills.push({ round: 0, target, landed: run.landed ?? "finished first", killedAtMs: run.sentAt ?? run.ms });
        if (target === "fetch-base") {
          // mmdebstrap and what it runs die with osbuild, and their mounts with them.
          await sleep(1000);
          expect(readFileSync("/proc/self/mountinfo", "utf8"), `kill ${index + 1}`).not.toContain(cache);
          expect(sh("ps -eo args").split("\n").filter((line) => line.includes("mmdebstrap") && line.includes(cache))).toEqual([]);
        }
      }
      const recovered = await watchedRun(buildArgs(cache, out, 0), work);
      expect(recovered.code, recovered.stderr).toBe(0);
      expect(outputsOf(out)).toEqual(expected.get(0)!.outputs);
      figures.kills.at(-1)!.recoveryMs = recovered.ms;

      // Rounds with a new agent: the kill lands in one of the steps that rebuild, before
      // them, or while the outputs are written.
      const targets: Target[] = ["startup", ...LATER_STEPS, "outputs"];
      for (let round = 1; round <= ROUND_KILLS; round++) {
        const wanted = await referenceOf(round);
        const target = targets[(round - 1) % targets.length]!;
        const run = await watchedRun(buildArgs(cache, out, round), work, { target, fraction: next(), signal: "SIGKILL", timings: wanted.timings });
        expect(failedSteps(run), run.stderr).toEqual([]);
        if (run.landed === undefined) expect(run.code, run.stderr).toBe(0);
        const after = await watchedRun(buildArgs(cache, out, round), work);
        expect(after.code, `round ${round}, after a kill in ${run.landed}:\n${after.stderr}`).toBe(0);
        expect(outputsOf(out), `round ${round}, after a kill in ${run.landed}`).toEqual(wanted.outputs);
        const recoveredSteps = Object.fromEntries(after.events.filter(({ event }) => event.type === "step").map(({ event }) => [event.id as string, event.status as string]));
        figures.kills.push({ round, target, landed: run.landed ?? "finished first", killedAtMs: run.sentAt ?? run.ms, recoveryMs: after.ms, recoveredSteps });
      }
      await verifyCache(cache, work);
    } finally {
      saveFigures();
      const landed = new Map<string, number>();
      for (const kill of figures.kills) landed.set(kill.landed, (landed.get(kill.landed) ?? 0) + 1);
      console.log(`SIGKILL (seed ${SEED}): ${figures.kills.length} kills, landed in: ${[...landed].map(([where, count]) => `${where} ${count}`).join(", ")}`);
    }
  }, 3_600_000);
});

describe("a cache on a nearly full filesystem", () => {
  it.skipIf(!isRoot)("fails with a clear error naming the lack of space, the cache still verifies, and a build with space succeeds", async () => {
    const dir = tempDir("disk-full");
    const mount = join(dir, "small");
    mkdirSync(mount);
    sh(`mount -t tmpfs -o size=300m osbuild-disk-full ${mount}`);
    try {
      // A base of 40 MB of incompressible files, an initrd and a disk image of it.
      writeFileSync(
        join(dir, "osbuild.config.ts"),
        `import { defineConfig, fetchBase, mkCpio, mkExt4 } from "osbuild";
export default defineConfig({
  sourceDateEpoch: 1700000000,
  targets: () => {
    const base = fetchBase({ tarball: "./base.tar" });
    return { initrd: mkCpio(base, { checks: false }), image: mkExt4(base, { checks: false, daxHeader: false }) };
  },
});
`,
      );
      sh(`mkdir -p tree/usr/lib && for i in $(seq 1 400); do head -c 100000 /dev/urandom > tree/usr/lib/f$i; done && tar --numeric-owner -cf base.tar -C tree . && rm -rf tree`, dir);
      const cache = join(mount, "cache");
      const out = join(dir, "out");
      const filler = join(mount, "filler");
      // Leave 110 MiB: room for the base layer and its tree, not for the initrd and the image.
      sh(`fallocate -l $(( $(df -B1 --output=avail ${mount} | tail -1) - 110 * 1024 * 1024 )) ${filler}`);
      const full = await osbuild(["run", "--json", "--cache-dir", cache, "--out", out], { cwd: dir });
      expect(full.code, full.stderr).toBe(1);
      const failed = full.events.find((event) => event.type === "step" && event.status === "failed");
      expect(failed, full.stdout + full.stderr).toBeDefined();
      expect(String(failed!.error)).toMatch(/ENOSPC|no space left/i);
      expect(String(failed!.hint)).toContain(cache);
      expect(String(failed!.hint)).toMatch(/free|prune/);
      figures.diskFull = { error: String(failed!.error).split("\n")[0]!, hint: String(failed!.hint) };
      saveFigures();
      for (const leftovers of ["scratch", "tmp-osbuild"]) expect(readdirSync(join(cache, leftovers)), leftovers).toEqual([]);
      await verifyCache(cache, dir);
      sh(`rm ${filler}`);
      const later = await osbuild(["run", "--json", "--cache-dir", cache, "--out", out], { cwd: dir });
      expect(later.code, later.stderr).toBe(0);
      expect(statSync(join(out, "image")).size).toBeGreaterThan(40_000_000);
      await verifyCache(cache, dir);
    } finally {
      sh(`umount ${mount}`);
    }
  }, 600_000);
});
