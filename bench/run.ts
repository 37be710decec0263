// npm run bench: the `osbuild` command, spawned as a user runs it, against Kata's real
// osbuilder (bench/osbuilder.ts), both measured the same way (bench/measure.ts: wall time,
// CPU time and peak memory of the whole process tree), turn about (A B A B), medians.
// Every scenario's baseline is measured in this run. Needs root (osbuilder loop-mounts and
// chroots) and the Debian mirror. Each run is kept in bench/results/ (report.ts).
//
//   BENCH_RUNS=3 npm run bench                  # runs per side and scenario (default 3)
//   BENCH_ONLY=noop,version npm run bench       # some scenarios only (ids below)
//   BENCH_KEEP=1                                # keep the scratch directory
//   BENCH_DRY=1                                 # print the table, keep no result (trying things out)

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OSBUILD, REPO, load, machine, median, mib, sh, timed, type Timed } from "./lib.js";
import { osbuilder, osbuilderRunner } from "./osbuilder.js";
import { formatRun, saveRun, type BenchRow, type BenchRun, type Side } from "./report.js";

const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(",")) : undefined;
const wanted = (id: string): boolean => !ONLY || ONLY.has(id);
const MEMORY_GOAL_MIB = 300;
const log = (message: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);

// Every scenario but these two needs the real osbuilder, which needs root.
const runner = osbuilderRunner();
if ([...["cold", "agent", "initrd", "image", "matrix"]].some(wanted)) {
  if (!runner.ok) {
    log(runner.reason);
    process.exit(2);
  }
  if (process.getuid?.() !== 0) {
    log("the real osbuilder needs root (loop devices, mounts, chroot): run the benchmark as root");
    process.exit(2);
  }
}

// Scratch on the cache's filesystem, as a user's would be (/tmp may be a tmpfs elsewhere).
const work = mkdtempSync(join(REPO, "..", `.osbuild-bench-${process.pid}-`));
const DEFAULT_CONFIG = join(REPO, "osbuild.config.ts");
const baseAgent = join(REPO, "build/agent/kata-agent");
let agentCount = 0;
/** A kata-agent no build has seen: the test agent with a build id of its own (kept by strip). */
function freshAgent(): string {
  const path = join(work, "agents", `kata-agent-${++agentCount}`);
  mkdirSync(join(path, ".."), { recursive: true });
  sh(`gcc -static -O1 -Wl,--build-id=0x${agentCount.toString(16).padStart(8, "0")}${"b".repeat(24)} -o ${path} ${join(REPO, "agent/test-agent.c")}`);
  return path;
}

type Events = Array<{ type: string; id?: string; kind?: string; status?: string; ms?: number; written?: boolean }>;
type Run = Timed & { events: Events };

function osbuild(args: readonly string[], options: { config?: string } = {}): Run {
  sh("sync"); // no writeback pending from what ran before, on either side
  const result = timed(process.execPath, [OSBUILD, "run", "--json", "--config", options.config ?? DEFAULT_CONFIG, ...args], { cwd: work });
  const events = result.stdout.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line) as Events[number]);
  return { ...result, events };
}

function baseline(workDir: string, args: readonly string[], env: Record<string, string> = {}): Timed {
  sh("sync");
  const command = osbuilder(workDir, args, env);
  return timed(command.command, command.args, { env: command.env });
}

const osbuilderAgentArgs = (agent: string): string[] => ["AGENT_INIT=yes", `AGENT_SOURCE_BIN=${agent}`];

function side(runs: readonly Timed[]): Side {
  const fullest = runs.reduce((max, run) => (run.peakBytes > max.peakBytes ? run : max));
  return { wallMs: median(runs.map((run) => run.ms)), cpuMs: median(runs.map((run) => run.cpuMs)), peakMiB: mib(fullest.peakBytes), peakTree: describeTree(fullest.peakTree), runsMs: runs.map((run) => Math.round(run.ms)) };
}

/** "node 168 MiB (130 anonymous), mke2fs 12 MiB (3 anonymous)", largest first. */
function describeTree(tree: Timed["peakTree"]): string | undefined {
  if (tree.length === 0) return undefined;
  return [...tree]
    .sort((a, b) => b.residentBytes - a.residentBytes)
    .map((found) => `${found.command} ${mib(found.residentBytes)} MiB (${mib(found.anonymousBytes)} anonymous)`)
    .join(", ");
}

function built(run: Run): string[] {
  return run.events.filter((event) => event.type === "step" && event.status === "built").map((event) => event.id!);
}

function stepMedians(runs: readonly Run[]): Record<string, number> {
  const ids = [...new Set(runs.flatMap((run) => built(run)))];
  return Object.fromEntries(ids.map((id) => [id, Math.round(median(runs.map((run) => run.events.find((event) => event.type === "step" && event.id === id)?.ms ?? 0)))]));
}

/** A scenario timed against osbuilder: the ratio of the medians is what its goal is about. */
function against(row: Omit<BenchRow, "ratio" | "met" | "osbuild" | "baseline">, theirs: readonly Timed[], ours: readonly Timed[], limit: number, alsoMet = true): BenchRow {
  const a = side(theirs);
  const b = side(ours);
  const ratio = b.wallMs / a.wallMs;
  return { ...row, osbuild: b, baseline: a, ratio, met: ratio <= limit && alsoMet };
}

const rows: BenchRow[] = [];
let completed = false; // every scenario asked for measured, nothing thrown
const startedAt = new Date();
const loadBefore = load();
const osbuildVersion = sh(`${process.execPath} ${OSBUILD} --version`).trim().replace(/^osbuild /, "");
const commit = process.env.BENCH_COMMIT ?? commitOf(REPO);

/** This run as a result: `complete` once every scenario asked for is measured. */
function result(complete: boolean): BenchRun {
  return {
    date: startedAt.toISOString(),
    finished: new Date().toISOString(),
    complete,
    machine: machine(),
    load: { before: loadBefore, after: load() },
    runs: RUNS,
    osbuilder: runner.ok ? runner.describe : "(none)",
    osbuildVersion,
    commit,
    only: ONLY ? [...ONLY] : undefined,
    rows,
  };
}

/**
 * Adds a scenario's row and keeps the run so far: a run killed later (the machine is shared,
 * osbuilder's builds are long) still leaves the scenarios it finished.
 */
function add(row: BenchRow): void {
  rows.push(row);
  if (!process.env.BENCH_DRY) saveRun(result(false));
}

// --- shared set-up, made on first use -------------------------------------------------------
let baselineRootfs: string | undefined; // osbuilder's debian_rootfs, for the packers alone
let warmCache: string | undefined; // a cache holding the default config's build
const baselineRootfsDir = (): string => {
  if (!baselineRootfs) {
    log("set-up: osbuilder's rootfs for the packer scenarios (untimed)");
    const dir = join(work, "osbuilder-rootfs");
    baseline(dir, ["rootfs", ...osbuilderAgentArgs(baseAgent)]);
    baselineRootfs = join(dir, "debian_rootfs");
  }
  return baselineRootfs;
};
const warmCacheDir = (): string => {
  if (!warmCache) {
    log("set-up: a cache with the default config built (untimed)");
    warmCache = join(work, "cache-warm");
    osbuild(["--cache-dir", warmCache, "--out", join(work, "out-warm"), "--set", `agent=${baseAgent}`]);
  }
  return warmCache;
};

try {
  // --- cold: the default config from an empty cache, against make rootfs image initrd --------
  if (wanted("cold")) {
    log(`cold: osbuilder make rootfs image initrd, then osbuild run on an empty cache, ${RUNS} times each`);
    const theirs: Timed[] = [];
    const ours: Run[] = [];
    for (let run = 0; run < RUNS; run++) {
      const dir = join(work, `cold-osbuilder-${run}`);
      theirs.push(baseline(dir, ["rootfs", "image", "initrd", ...osbuilderAgentArgs(baseAgent)]));
      if (baselineRootfs) rmSync(join(baselineRootfs, ".."), { recursive: true, force: true });
      baselineRootfs = join(dir, "debian_rootfs"); // the last one serves the packer scenarios
      const cache = join(work, `cold-cache-${run}`);
      ours.push(osbuild(["--cache-dir", cache, "--out", join(work, `cold-out-${run}`), "--set", `agent=${baseAgent}`]));
      if (warmCache) rmSync(warmCache, { recursive: true, force: true });
      warmCache = cache;
    }
    const note = `steps: ${Object.entries(stepMedians(ours)).map(([id, ms]) => `${id} ${(ms / 1000).toFixed(1)} s`).join(", ")}`;
    add(against({ id: "cold", scenario: "cold, default config", baselineCommand: "make rootfs image initrd", goal: "≤ 0.55× the real osbuilder", note }, theirs, ours, 0.55));
  }

  // --- agent changed: a new agent binary, against osbuilder's full rebuild -------------------
  if (wanted("agent")) {
    const cache = warmCacheDir();
    log(`agent changed: osbuilder's full make again, then osbuild run with another agent, ${RUNS} times each`);
    const theirs: Timed[] = [];
    const ours: Run[] = [];
    for (let run = 0; run < RUNS; run++) {
      const agent = freshAgent();
      const dir = join(work, `agent-osbuilder-${run}`);
      theirs.push(baseline(dir, ["rootfs", "image", "initrd", ...osbuilderAgentArgs(agent)]));
      rmSync(dir, { recursive: true, force: true });
      ours.push(osbuild(["--cache-dir", cache, "--out", join(work, "out-warm"), "--set", `agent=${agent}`]));
    }
    const rebuilt = built(ours[0]!);
    const note = `rebuilt: ${rebuilt.join(", ")}; steps: ${Object.entries(stepMedians(ours)).map(([id, ms]) => `${id} ${ms} ms`).join(", ")}`;
    const only = !rebuilt.includes("fetch-base") && !rebuilt.includes("provision");
    add(against({ id: "agent", scenario: "agent changed", baselineCommand: "make rootfs image initrd", goal: "≤ 1.0 s and ≤ 0.011× osbuilder's full rebuild", note }, theirs, ours, 0.011, only && median(ours.map((run) => run.ms)) <= 1000));
  }

  // --- agent changed, the initrd only ----------------------------------------------------
  if (wanted("agent-initrd")) {
    const cache = warmCacheDir();
    log(`agent changed, osbuild run initrd only, ${RUNS} times`);
    const ours: Run[] = [];
    for (let run = 0; run < RUNS; run++) ours.push(osbuild(["initrd", "--cache-dir", cache, "--out", join(work, "out-warm"), "--set", `agent=${freshAgent()}`]));
    const b = side(ours);
    add({
      id: "agent-initrd",
      scenario: "agent changed, `osbuild run initrd` only",
      osbuild: b,
      goal: "≤ 0.6 s",
      met: b.wallMs <= 600,
      note: `rebuilt: ${built(ours[0]!).join(", ")}; steps: ${Object.entries(stepMedians(ours)).map(([id, ms]) => `${id} ${ms} ms`).join(", ")}`,
    });
  }

  // --- no-op and --version -----------------------------------------------------------------
  if (wanted("noop")) {
    const cache = warmCacheDir();
    const args = ["--cache-dir", cache, "--out", join(work, "out-warm"), "--set", `agent=${baseAgent}`];
    osbuild(args); // whatever the scenarios before left to write
    log(`no-op rebuild of the default config, ${RUNS + 2} times`);
    const ours: Run[] = [];
    for (let run = 0; run < RUNS + 2; run++) ours.push(osbuild(args));
    const b = side(ours);
    const idle = ours.every((run) => built(run).length === 0 && run.events.every((event) => event.type !== "output" || !event.written));
    add({ id: "noop", scenario: "no-op rebuild, default config", osbuild: b, goal: "≤ 0.25 s", met: b.wallMs <= 250 && idle, note: idle ? "nothing built or written" : "something was built or written!" });
  }
  if (wanted("version")) {
    log(`osbuild --version, ${RUNS + 2} times`);
    const ours: Timed[] = [];
    for (let run = 0; run < RUNS + 2; run++) ours.push(timed(process.execPath, [OSBUILD, "--version"]));
    const b = side(ours);
    const node = side(Array.from({ length: RUNS + 2 }, () => timed(process.execPath, ["-e", "0"])));
    add({ id: "version", scenario: "`osbuild --version`", osbuild: b, goal: "≤ 0.15 s", met: b.wallMs <= 150, note: `node -e 0: ${(node.wallMs / 1000).toFixed(3)} s` });
  }

  // --- the packers alone, on osbuilder's own rootfs ---------------------------------------------
  // The rootfs is imported into osbuild's cache untimed (it is "cached"); each timed run makes
  // the packer run again. The initrd: a fresh cache each time (mkCpio would otherwise reuse the
  // layer's compressed part). The image: one cache, a dummy option that changes its key.
  const packersConfig = join(work, "packers.config.ts");
  const packers = (tree: string): string => {
    writeFileSync(
      packersConfig,
      `import { defineConfig, fetchBase, mkCpio, mkExt4, param, type MkCpioOptions, type MkExt4Options } from "osbuild";
export default defineConfig({
  params: { run: param.string("0") },
  sourceDateEpoch: 1735689600,
  targets: ({ run }) => {
    const rootfs = fetchBase({ directory: ${JSON.stringify(tree)}, id: "tree" });
    return { rootfs, initrd: mkCpio(rootfs, { benchRun: run } as MkCpioOptions), image: mkExt4(rootfs, { benchRun: run } as MkExt4Options) };
  },
});
`,
    );
    return packersConfig;
  };
  if (wanted("initrd")) {
    const tree = baselineRootfsDir();
    const config = packers(tree);
    log(`initrd only: initrd_builder.sh, then osbuild run initrd, on osbuilder's rootfs, ${RUNS} times each`);
    const theirs: Timed[] = [];
    const ours: Run[] = [];
    const theirImage = join(work, "osbuilder-initrd.img");
    for (let run = 0; run < RUNS; run++) {
      theirs.push(baseline(join(work, "initrd-osbuilder"), ["initrd-builder", "-o", theirImage, tree], { AGENT_INIT: "yes" }));
      const cache = join(work, `initrd-cache-${run}`);
      osbuild(["rootfs", "--cache-dir", cache, "--out", join(work, "initrd-tree-out")], { config });
      ours.push(osbuild(["initrd", "--cache-dir", cache, "--out", join(work, "initrd-out"), "--set", `run=${run}`], { config }));
      rmSync(cache, { recursive: true, force: true });
    }
    const size = statSync(join(work, "initrd-out", "initrd")).size / statSync(theirImage).size;
    const note = `size ${size.toFixed(3)}× osbuilder's (gzip -9; osbuild: libdeflate -6)`;
    add(against({ id: "initrd", scenario: "initrd only, cached rootfs", baselineCommand: "initrd_builder.sh", goal: "≤ 0.15× initrd_builder.sh, size ≤ 1.01×", note }, theirs, ours, 0.15, size <= 1.01));
  }
  if (wanted("image")) {
    const tree = baselineRootfsDir();
    const config = packers(tree);
    const cache = join(work, "image-cache");
    osbuild(["rootfs", "--cache-dir", cache, "--out", join(work, "image-tree-out")], { config });
    log(`image only: image_builder.sh, then osbuild run image (DAX header on), on osbuilder's rootfs, ${RUNS} times each`);
    const theirs: Timed[] = [];
    const ours: Run[] = [];
    const theirImage = join(work, "osbuilder.img");
    for (let run = 0; run < RUNS; run++) {
      rmSync(theirImage, { force: true });
      theirs.push(baseline(join(work, "image-osbuilder"), ["image-builder", "-o", theirImage, tree], { AGENT_INIT: "yes" }));
      ours.push(osbuild(["image", "--cache-dir", cache, "--out", join(work, "image-out"), "--set", `run=${run}`], { config }));
    }
    const size = statSync(join(work, "image-out", "image")).size / statSync(theirImage).size;
    const note = `file size ${size.toFixed(3)}× osbuilder's; steps: ${Object.entries(stepMedians(ours)).map(([id, ms]) => `${id} ${ms} ms`).join(", ")}`;
    add(against({ id: "image", scenario: "image only, cached rootfs (DAX header on)", baselineCommand: "image_builder.sh", goal: "≤ 0.7× image_builder.sh", note }, theirs, ours, 0.7));
  }

  // --- the Kata matrix: four artifacts from one config, against four osbuilder runs ------------
  if (wanted("matrix")) {
    const extension = join(work, "extension");
    makeExtensionTree(extension);
    const config = join(work, "matrix.config.ts");
    writeFileSync(
      config,
      `import { defineConfig, fetchBase, installAgent, mkCpio, mkExt4, mkVerityImage, param, provision } from "osbuild";
export default defineConfig({
  params: { agent: param.path(${JSON.stringify(baseAgent)}) },
  sourceDateEpoch: 1735689600,
  targets: ({ agent }) => {
    const rootfs = installAgent(provision(fetchBase({ distro: "debian", release: "bookworm", init: "agent" }), { init: "agent" }), { binary: agent, init: "agent" });
    const measured = mkVerityImage(rootfs);
    // Kata's extension image: erofs, dm-verity, no DAX header, no init (image_builder.sh
    // FS_TYPE=erofs MEASURED_ROOTFS=yes SKIP_DAX_HEADER=yes SKIP_ROOTFS_CHECK=yes).
    const extension = mkVerityImage(fetchBase({ directory: ${JSON.stringify(extension)}, id: "extension-tree" }), { fsType: "erofs", daxHeader: false, checks: false });
    return {
      image: mkExt4(rootfs),
      initrd: mkCpio(rootfs),
      measured: measured.image,
      measuredRootHash: measured.rootHash,
      extension: extension.image,
      extensionRootHash: extension.rootHash,
    };
  },
});
`,
    );
    log(`Kata matrix: osbuilder's four runs (make image, make initrd, make image MEASURED_ROOTFS=yes, image_builder.sh erofs extension), then one osbuild run on an empty cache, ${RUNS} times each`);
    const theirs: Timed[] = [];
    const parts: Record<string, number[]> = { image: [], initrd: [], measured: [], extension: [] };
    const ours: Run[] = [];
    for (let run = 0; run < RUNS; run++) {
      const dir = (name: string): string => join(work, `matrix-osbuilder-${run}`, name);
      const four = {
        image: baseline(dir("image"), ["image", ...osbuilderAgentArgs(baseAgent)]),
        initrd: baseline(dir("initrd"), ["initrd", ...osbuilderAgentArgs(baseAgent)]),
        measured: baseline(dir("measured"), ["image", "MEASURED_ROOTFS=yes", ...osbuilderAgentArgs(baseAgent)]),
        extension: baseline(dir("extension"), ["image-builder", "-o", join(dir("extension"), "extension.img"), extension], {
          FS_TYPE: "erofs",
          MEASURED_ROOTFS: "yes",
          SKIP_DAX_HEADER: "yes",
          SKIP_ROOTFS_CHECK: "yes",
        }),
      };
      for (const [name, result] of Object.entries(four)) parts[name]!.push(result.ms);
      const fullestOfFour = Object.values(four).reduce((max, result) => (result.peakBytes > max.peakBytes ? result : max));
      theirs.push({ ms: sum(Object.values(four).map((result) => result.ms)), cpuMs: sum(Object.values(four).map((result) => result.cpuMs)), peakBytes: fullestOfFour.peakBytes, peakTree: fullestOfFour.peakTree, stdout: "", stderr: "" });
      rmSync(join(work, `matrix-osbuilder-${run}`), { recursive: true, force: true });
      const cache = join(work, `matrix-cache-${run}`);
      ours.push(osbuild(["--cache-dir", cache, "--out", join(work, `matrix-out-${run}`)], { config }));
      rmSync(cache, { recursive: true, force: true });
    }
    const note = `osbuilder: ${Object.entries(parts).map(([name, ms]) => `${name} ${(median(ms) / 1000).toFixed(1)} s`).join(", ")}; osbuild steps: ${Object.entries(stepMedians(ours)).map(([id, ms]) => `${id} ${(ms / 1000).toFixed(1)} s`).join(", ")}`;
    add(against({ id: "matrix", scenario: "Kata matrix: image, initrd, measured image, erofs extension", baselineCommand: "4 osbuilder runs", goal: "≤ 0.3× osbuilder's four runs", note }, theirs, ours, 0.3));
  }

  if (rows.length > 0) {
    const worst = rows.reduce((max, row) => (row.osbuild.peakMiB > max.osbuild.peakMiB ? row : max));
    rows.push({
      id: "memory",
      scenario: "peak memory, any scenario",
      osbuild: { ...worst.osbuild },
      goal: `≤ ${MEMORY_GOAL_MIB} MiB`,
      met: rows.every((row) => row.osbuild.peakMiB <= MEMORY_GOAL_MIB),
      note: `the most: ${worst.scenario}${worst.osbuild.peakTree ? `; the process tree at that peak: ${worst.osbuild.peakTree}` : ""}`,
    });
  }
  completed = true;
} finally {
  if (rows.length > 0) {
    const run = result(completed);
    if (process.env.BENCH_DRY) process.stdout.write(`\n${formatRun(run)}\n\n(BENCH_DRY: not kept)\n`);
    else {
      const { path, table } = saveRun(run);
      process.stdout.write(`\n${table}\n\nwritten to ${path}\n`);
    }
  }
  if (process.env.BENCH_KEEP) log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}

/** The commit benchmarked (BENCH_COMMIT names it when the tree is a copy, not a checkout). */
function commitOf(dir: string): string {
  try {
    return sh("git rev-parse --short HEAD", dir).trim();
  } catch {
    return "unknown";
  }
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

/**
 * What an extension holds (Kata's coco extension: a few programs and libraries under
 * /usr/local, a components manifest): here, the host's cryptsetup, e2fsprogs and gzip
 * programs with the libraries they link, about 15 MB.
 */
function makeExtensionTree(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "etc/kata-extensions"), { recursive: true });
  mkdirSync(join(dir, "usr/local/bin"), { recursive: true });
  mkdirSync(join(dir, "usr/local/lib"), { recursive: true });
  writeFileSync(join(dir, "etc/kata-extensions/components.toml"), '[components]\nbench = { version = "1" }\n');
  const programs = ["/usr/sbin/cryptsetup", "/usr/sbin/veritysetup", "/usr/sbin/mke2fs", "/usr/sbin/e2fsck", "/usr/bin/gzip", "/usr/bin/cpio", "/usr/bin/tar"].filter((path) => existsSync(path));
  for (const program of programs) copyFileSync(program, join(dir, "usr/local/bin", program.split("/").pop()!));
  const libraries = sh(`ldd ${programs.join(" ")} | awk '/=> \\//{print $3}' | sort -u`).trim().split("\n").filter(Boolean);
  for (const library of libraries) copyFileSync(library, join(dir, "usr/local/lib", library.split("/").pop()!));
  if (readdirSync(join(dir, "usr/local/bin")).length === 0) throw new Error("no programs for the extension tree");
}
