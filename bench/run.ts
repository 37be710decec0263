// npm run bench: osbuild against osbuilder's own pipeline (bench/osbuilder-baseline.sh),
// side by side in one run on this machine, medians of several runs. Needs root (the
// baseline's image builder loop-mounts, as osbuilder does) and the Debian mirror.
//
//   BENCH_RUNS=3 npm run bench     # runs per scenario (default 3)

import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OSBUILD, REPO, machine, median, saveResult, sh, timed, type Timed } from "./lib.js";

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const PACKAGES = "chrony,iptables,dbus,cryptsetup-bin,e2fsprogs,libseccomp2"; // the same set osbuild's debian module installs
const AGENT = join(REPO, "build/agent/kata-agent");
const BASELINE = join(REPO, "bench/osbuilder-baseline.sh");

interface Row {
  scenario: string;
  osbuildMs: number;
  baselineMs?: number;
  ratio?: number;
  goal: string;
  met: boolean;
  peakMiB: number;
  note?: string;
}

const CONFIG = `import { defineConfig, fetchBase, installAgent, mkCpio, mkExt4, overlay, param, provision } from "osbuild";

export default defineConfig({
  params: {
    agent: param.path(${JSON.stringify(AGENT)}),
    packages: param.string(""),
    big: param.string("", "a directory of big files to add (the 4× scenario)"),
  },
  sourceDateEpoch: 1735689600,
  targets: ({ agent, packages, big }) => {
    const base = fetchBase({ distro: "debian", release: "bookworm", init: "agent", packages: packages ? packages.split(",") : [] });
    const grown = big ? overlay(base, { from: big, to: "/opt/big" }) : base;
    const rootfs = installAgent(provision(grown, { init: "agent" }), { binary: agent, init: "agent" });
    return { initrd: mkCpio(rootfs), image: mkExt4(rootfs, { daxHeader: false }) };
  },
});
`;

// The packers alone: the tree step is built once, and each timed run changes a dummy option
// (part of the key, ignored by the step) so that only the packer runs.
const PACKERS = `import { defineConfig, fetchBase, mkCpio, mkExt4, param, type MkCpioOptions, type MkExt4Options } from "osbuild";
export default defineConfig({
  params: { tree: param.string(""), run: param.string("0") },
  sourceDateEpoch: 1735689600,
  targets: ({ tree, run }) => {
    const rootfs = fetchBase({ directory: tree, id: "tree" });
    return {
      rootfs,
      initrd: mkCpio(rootfs, { checks: false, benchRun: run } as MkCpioOptions),
      image: mkExt4(rootfs, { daxHeader: false, checks: false, benchRun: run } as MkExt4Options),
    };
  },
});
`;

const work = mkdtempSync(join(tmpdir(), "osbuild-bench-"));
const project = join(work, "project");
mkdirSync(project);
writeFileSync(join(project, "osbuild.config.ts"), CONFIG);
writeFileSync(join(project, "packers.config.ts"), PACKERS);
const otherAgent = join(work, "agent-2");
sh(`gcc -static -O1 -o ${otherAgent} ${join(REPO, "agent/test-agent.c")}`);

type Events = Array<{ type: string; id?: string; kind?: string; status?: string; ms?: number }>;

function osbuild(args: string[], env: Record<string, string> = {}): Timed & { events: Events } {
  sh("sync"); // start with no writeback pending from what ran before, as the baseline does
  const result = timed(process.execPath, [OSBUILD, "run", "--json", ...args], { cwd: project, env });
  const events = result.stdout.trim().split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line) as Events[number]);
  return { ...result, events };
}

function statusOf(events: Events): Record<string, string> {
  return Object.fromEntries(events.filter((event) => event.type === "step").map((event) => [event.id!, event.status!]));
}

function stepMs(events: Events, kind: string): number {
  return events.find((event) => event.type === "step" && event.kind === kind)?.ms ?? NaN;
}

function mib(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}

const rows: Row[] = [];
let breakdown = "";
const seconds = (ms: number | undefined): string => (ms === undefined || Number.isNaN(ms) ? "" : `${(ms / 1000).toFixed(2)} s`);
const peak = (runs: ReadonlyArray<Timed>): number => Math.max(...runs.map((result) => result.peakBytes));
const log = (message: string): void => void process.stderr.write(`${message}\n`);

try {
  // --- osbuilder's pipeline, as plain commands ---------------------------------------
  // `all` is rootfs (agent as init) + initrd + image: run as its three parts, to see each.
  log(`baseline: osbuilder-baseline.sh rootfs + initrd + image (${RUNS} runs)`);
  const baselineAll: number[] = [];
  const baselineParts: Record<string, number[]> = { rootfs: [], initrd: [], image: [] };
  for (let run = 0; run < RUNS; run++) {
    const dir = join(work, `baseline-${run}`);
    mkdirSync(dir);
    sh("sync");
    const parts = {
      rootfs: timed("bash", [BASELINE, "rootfs", join(dir, "rootfs"), AGENT, "init"], { env: { PACKAGES } }).ms,
      initrd: timed("bash", [BASELINE, "initrd", join(dir, "rootfs"), join(dir, "kata-containers-initrd.img")]).ms,
      image: timed("bash", [BASELINE, "image", join(dir, "rootfs"), join(dir, "kata-containers.img")]).ms,
    };
    for (const [part, ms] of Object.entries(parts)) baselineParts[part]!.push(ms);
    baselineAll.push(parts.rootfs + parts.initrd + parts.image);
    if (run < RUNS - 1) rmSync(dir, { recursive: true, force: true });
  }
  const baselineMs = median(baselineAll);
  const baselineTree = join(work, `baseline-${RUNS - 1}`, "rootfs");

  // --- cold ------------------------------------------------------------------------------
  log(`osbuild: cold builds (${RUNS} runs)`);
  const cold: Array<Timed & { events: Events }> = [];
  for (let run = 0; run < RUNS; run++) cold.push(osbuild(["--cache-dir", join(work, `cache-cold-${run}`), "--out", join(work, `out-cold-${run}`)]));
  const coldMs = median(cold.map((result) => result.ms));
  const stepMedians = Object.fromEntries(["fetch-base", "provision", "install-agent", "mk-cpio", "mk-ext4"].map((kind) => [kind, median(cold.map((result) => stepMs(result.events, kind)))]));
  breakdown = [
    `where the time goes (medians): baseline rootfs ${seconds(median(baselineParts.rootfs!))}, initrd ${seconds(median(baselineParts.initrd!))}, image ${seconds(median(baselineParts.image!))};`,
    `osbuild cold ${seconds(coldMs)}: ${Object.entries(stepMedians).map(([kind, ms]) => `${kind} ${seconds(ms)}`).join(", ")} (mk-cpio and mk-ext4 run at the same time)`,
  ].join(" ");
  const coldPeak = peak(cold);
  rows.push({ scenario: "cold", osbuildMs: coldMs, baselineMs, ratio: coldMs / baselineMs, goal: "≤ 0.6× baseline", met: coldMs / baselineMs <= 0.6, peakMiB: mib(coldPeak) });
  const cache = join(work, "cache-cold-0");
  const out = join(work, "out-cold-0");

  // --- agent changed ---------------------------------------------------------------------
  log(`osbuild: agent changed (${RUNS} runs)`);
  // Each run swaps the agent, so each one rebuilds from the cached base.
  const agentFor = (run: number): string => (run % 2 === 0 ? otherAgent : AGENT);
  const agentRuns: Array<Timed & { events: Events }> = [];
  for (let run = 0; run < RUNS; run++) agentRuns.push(osbuild(["--cache-dir", cache, "--out", out, "--set", `agent=${agentFor(run)}`]));
  const agentMs = median(agentRuns.map((result) => result.ms));
  const agentStatuses = statusOf(agentRuns[0]!.events);
  rows.push({
    scenario: "agent changed",
    osbuildMs: agentMs,
    baselineMs,
    ratio: agentMs / baselineMs,
    goal: "≤ 0.1× baseline",
    met: agentMs / baselineMs <= 0.1 && agentStatuses["fetch-base"] === "cached" && agentStatuses.provision === "cached",
    peakMiB: mib(peak(agentRuns)),
    note: Object.entries(agentStatuses).filter(([, status]) => status === "built").map(([id]) => id).join(", ") + " rebuilt",
  });

  // --- no-op -----------------------------------------------------------------------------
  log(`osbuild: no-op (${RUNS + 2} runs)`);
  const noop: Array<Timed & { events: Events }> = [];
  for (let run = 0; run < RUNS + 2; run++) noop.push(osbuild(["--cache-dir", cache, "--out", out, "--set", `agent=${agentFor(RUNS - 1)}`]));
  const noopMs = median(noop.map((result) => result.ms));
  const allCached = noop.every((result) => Object.values(statusOf(result.events)).every((status) => status === "cached"));
  rows.push({ scenario: "no-op", osbuildMs: noopMs, ratio: noopMs / coldMs, goal: "< 500 ms and ≤ 0.02× cold", met: noopMs < 500 && noopMs / coldMs <= 0.02 && allCached, peakMiB: mib(peak(noop)), note: allCached ? "nothing ran" : "something ran!" });

  // --- package added ---------------------------------------------------------------------
  log("osbuild: one package added");
  const added = osbuild(["--cache-dir", cache, "--out", out, "--set", "packages=less"]);
  const addedStatuses = statusOf(added.events);
  rows.push({
    scenario: "package added",
    osbuildMs: added.ms,
    baselineMs,
    ratio: added.ms / baselineMs,
    goal: "re-runs the base and what follows only",
    met: addedStatuses["fetch-base"] === "built",
    peakMiB: mib(added.peakBytes),
    note: `${Object.values(addedStatuses).filter((status) => status === "built").length} of ${Object.keys(addedStatuses).length} steps rebuilt`,
  });

  // --- a 4× larger rootfs ----------------------------------------------------------------
  const treeBytes = Number(sh(`du -sb --apparent-size ${baselineTree} | cut -f1`));
  const big = join(work, "big");
  mkdirSync(big);
  const bigFiles = 6;
  const perFile = Math.ceil((treeBytes * 3) / bigFiles / 1024 / 1024);
  log(`osbuild: cold build of a 4× larger rootfs (+${bigFiles} × ${perFile} MiB files)`);
  // compressible-ish content (like binaries), not random: text of the tree repeated
  for (let file = 0; file < bigFiles; file++) sh(`find ${baselineTree}/usr/lib -type f -size +100k | head -200 | xargs cat | head -c ${perFile}M > ${join(big, `blob-${file}`)}`);
  const bigRun = osbuild(["--cache-dir", join(work, "cache-big"), "--out", join(work, "out-big"), "--set", `big=${big}`]);
  const growth = bigRun.ms / coldMs;
  const memoryGrowth = bigRun.peakBytes / coldPeak;
  rows.push({ scenario: "big rootfs (4×)", osbuildMs: bigRun.ms, ratio: growth, goal: "time ≤ 4× cold, peak memory ≤ 1.2× cold", met: growth <= 4 && memoryGrowth <= 1.2, peakMiB: mib(bigRun.peakBytes), note: `time ${growth.toFixed(2)}× cold, memory ${memoryGrowth.toFixed(2)}× cold` });

  // --- the packers on the same rootfs ------------------------------------------------------
  log(`packers on the same rootfs (${RUNS} runs each)`);
  // Each packer alone (as the baseline runs them), from a fresh cache, turn about with the
  // baseline, each after a sync so that neither pays for the other's writeback.
  // The image: the tree step built beforehand in a shared cache. The initrd: a fresh cache each
  // time, since mkCpio would otherwise reuse the layers' compressed parts from the store.
  const ours = (tree: string, run: string, target: "initrd" | "image"): Timed & { events: Events } => {
    const size = tree === baselineTree ? "normal" : "big";
    const cache = join(work, target === "image" ? `cache-packers-${size}` : `cache-packers-${size}-initrd-${run}`);
    osbuild(["rootfs", "--config", "packers.config.ts", "--cache-dir", cache, "--out", join(work, "out-packers-tree"), "--set", `tree=${tree}`]);
    return osbuild([target, "--config", "packers.config.ts", "--cache-dir", cache, "--out", join(work, `out-packers-${run}`), "--set", `tree=${tree}`, "--set", `run=${run}`]);
  };
  const theirs = (what: "initrd" | "image", out: string): number => {
    sh("sync");
    return timed("bash", [BASELINE, what, baselineTree, join(work, out)]).ms;
  };
  const baselineInitrd: number[] = [];
  const baselineImage: number[] = [];
  const initrdRuns: Array<Timed & { events: Events }> = [];
  const imageRuns: Array<Timed & { events: Events }> = [];
  for (let run = 0; run < RUNS; run++) {
    baselineInitrd.push(theirs("initrd", "baseline-initrd.img"));
    initrdRuns.push(ours(baselineTree, String(run), "initrd"));
    baselineImage.push(theirs("image", "baseline.img"));
    imageRuns.push(ours(baselineTree, String(run), "image"));
  }
  const packerRuns = [...initrdRuns, ...imageRuns];
  const initrdMs = median(initrdRuns.map((result) => stepMs(result.events, "mk-cpio")));
  const imageMs = median(imageRuns.map((result) => stepMs(result.events, "mk-ext4")));
  const initrdSize = statSync(join(work, "out-packers-0", "initrd")).size / statSync(join(work, "baseline-initrd.img")).size;
  const imageSize = statSync(join(work, "out-packers-0", "image")).size / statSync(join(work, "baseline.img")).size;
  const baselineInitrdMs = median(baselineInitrd);
  const baselineImageMs = median(baselineImage);
  rows.push({ scenario: "initrd, same rootfs", osbuildMs: initrdMs, baselineMs: baselineInitrdMs, ratio: initrdMs / baselineInitrdMs, goal: "≤ 0.5× time, ≤ 1.01× size", met: initrdMs / baselineInitrdMs <= 0.5 && initrdSize <= 1.01, peakMiB: mib(peak(initrdRuns)), note: `size ${initrdSize.toFixed(3)}× gzip -9` });
  rows.push({ scenario: "disk image, same rootfs", osbuildMs: imageMs, baselineMs: baselineImageMs, ratio: imageMs / baselineImageMs, goal: "≤ 1× time, no root, ≤ 1× size", met: imageMs / baselineImageMs <= 1 && imageSize <= 1, peakMiB: mib(peak(imageRuns)), note: `size ${imageSize.toFixed(3)}× osbuilder's` });

  // the packers' memory as the rootfs grows 4×
  const bigTree = join(work, "big-tree");
  sh(`cp -a ${baselineTree} ${bigTree} && cp -a ${big} ${bigTree}/opt/big`);
  const bigPackers = [ours(bigTree, "0", "initrd"), ours(bigTree, "1", "image")];
  const packerMemory = peak(bigPackers) / peak(packerRuns);
  rows.push({ scenario: "packers, 4× rootfs", osbuildMs: stepMs(bigPackers[0]!.events, "mk-cpio") + stepMs(bigPackers[1]!.events, "mk-ext4"), goal: "peak memory ≤ 1.2×", met: packerMemory <= 1.2, peakMiB: mib(peak(bigPackers)), note: `memory ${packerMemory.toFixed(2)}× the normal rootfs` });
} finally {
  const table = `${formatTable(rows)}\n\n${breakdown}`;
  // One date and one title for the table, the JSON and the file names (a run may cross midnight).
  const date = new Date().toISOString();
  const host = machine();
  const report = `osbuild vs osbuilder on ${host}, ${date.slice(0, 10)}, median of ${RUNS} runs\n\n${table}\n`;
  process.stdout.write(`\n${report}`);
  const path = saveResult("latest", { date, machine: host, runs: RUNS, rows, breakdown });
  copyFileSync(path, join(REPO, "bench/results", `bench-${date.slice(0, 10)}.json`));
  writeFileSync(join(REPO, "bench/results/latest.md"), report);
  if (!process.env.BENCH_KEEP) rmSync(work, { recursive: true, force: true });
  else log(`kept ${work}`);
}

function formatTable(list: readonly Row[]): string {
  const lines = ["| scenario | osbuild | baseline | ratio | peak memory | goal | met | note |", "|---|---|---|---|---|---|---|---|"];
  for (const row of list) {
    lines.push(`| ${row.scenario} | ${seconds(row.osbuildMs)} | ${seconds(row.baselineMs)} | ${row.ratio === undefined ? "" : `${row.ratio.toFixed(3)}×`} | ${row.peakMiB} MiB | ${row.goal} | ${row.met ? "yes" : "**no**"} | ${row.note ?? ""} |`);
  }
  return lines.join("\n");
}
