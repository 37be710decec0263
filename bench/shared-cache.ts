// The shared cache, timed as a user waits for it (whole `osbuild` processes) against a real
// registry (Debian's docker-registry on 127.0.0.1), next to the cold build of the same run:
//
//   every step from the registry   the default config on an empty local cache, all from the
//                                  registry: ≤ 0.15× the cold build
//   bytes pushed, agent changed    counted by a proxy in front of the registry: ≤ the new
//                                  layer + the outputs + 1%
//   lookup overhead per step       a chain of small steps on an empty cache, with and without
//                                  a --cache-from registry that has nothing: ≤ 20 ms a step
//
// Self-contained so that the benchmark harness can call `benchSharedCache()`; run alone with
// `npm run bench:shared-cache` (BENCH_RUNS=3 by default), results in bench/results/shared-cache.json.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { ActionRecord } from "../engine/build.js";
import { Store } from "../engine/store.js";
import { OSBUILD, REPO, machine, median, saveResult, sh, timed, type Timed } from "./lib.js";

export interface SharedCacheRow {
  scenario: string;
  osbuildMs?: number;
  value: number;
  unit: "×" | "ms";
  goal: string;
  met: boolean;
  peakMiB?: number;
  note: string;
}

type Event = { type: string; id?: string; key?: string; status?: string; remote?: string; direction?: string; done?: boolean; bytes?: number };

const LOOKUP_STEPS = 30;

/** Runs the three scenarios in `work` (a scratch directory) and returns their rows. */
export async function benchSharedCache(options: { runs: number; work: string; log: (message: string) => void }): Promise<SharedCacheRow[]> {
  const { runs, work, log } = options;
  const registry = await startRegistry(join(work, "registry"));
  const rows: SharedCacheRow[] = [];
  try {
    const config = join(REPO, "osbuild.config.ts");
    const build = (cache: string, args: string[]): Timed & { events: Event[] } => {
      sh("sync");
      const result = timed(process.execPath, [OSBUILD, "run", "--json", "--config", config, "--cache-dir", cache, "--out", join(cache, "out"), ...args], { cwd: work });
      return { ...result, events: result.stdout.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line) as Event) };
    };
    const remote = (address: string, repository: string): string => `oci://${address}/${repository}`;

    // --- every step from the registry ----------------------------------------------------
    log("shared cache: a cold build, then one that pushes everything");
    const cold = build(join(work, "cold"), []);
    const pusher = join(work, "pusher");
    const pushing = build(pusher, ["--cache-to", remote(registry.address, "kata")]);
    log(`shared cache: ${runs} builds from an empty local cache, every step from the registry`);
    const pulls: Array<Timed & { events: Event[] }> = [];
    for (let run = 0; run < runs; run++) pulls.push(build(join(work, `pull-${run}`), ["--cache-from", remote(registry.address, "kata")]));
    const pullMs = median(pulls.map((pull) => pull.ms));
    const allRemote = pulls.every((pull) => pull.events.filter((event) => event.type === "step").every((event) => event.status === "cached" && event.remote));
    rows.push({
      scenario: "every step from a loopback registry",
      osbuildMs: pullMs,
      value: pullMs / cold.ms,
      unit: "×",
      goal: "≤ 0.15× the cold build",
      met: pullMs / cold.ms <= 0.15 && allRemote,
      peakMiB: mib(Math.max(...pulls.map((pull) => pull.peakBytes))),
      note: `cold ${seconds(cold.ms)}, cold with --cache-to ${seconds(pushing.ms)}${allRemote ? "" : "; some step did not come from the registry!"}`,
    });

    // --- bytes pushed after an agent change ------------------------------------------------
    log("shared cache: the agent changes, the change is pushed through a counting proxy");
    const agent = join(work, "kata-agent-2");
    sh(`gcc -static -O1 -o ${agent} ${join(REPO, "agent/test-agent.c")}`);
    const proxy = await countingProxy(registry.address);
    // Not through spawnSync: the proxy runs in this process's event loop.
    sh("sync");
    const changedRun = await timedAsync(process.execPath, [OSBUILD, "run", "--json", "--config", config, "--cache-dir", pusher, "--out", join(pusher, "out"), "--set", `agent=${agent}`, "--cache-to", remote(proxy.address, "kata")], work);
    const changed = { ...changedRun, events: changedRun.stdout.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line) as Event) };
    await proxy.stop();
    const keys = Object.fromEntries(changed.events.filter((event) => event.type === "step").map((event) => [event.id!, event.key!]));
    const store = Store.open(pusher);
    /** A blob output's size, or a rootfs output's top layer's. */
    const sizeOf = async (step: string): Promise<number> => {
      const output = (await store.getJson<ActionRecord>(`osbuild:action:${keys[step]}`))!.value.outputs.out!;
      return output.kind === "blob" ? output.size : output.layers[output.layers.length - 1]!.size;
    };
    const needed = (await sizeOf("install-agent")) + (await sizeOf("mk-cpio")) + (await sizeOf("mk-ext4"));
    rows.push({
      scenario: "bytes pushed after an agent change",
      osbuildMs: changed.ms,
      value: proxy.uploaded / needed,
      unit: "×",
      goal: "≤ the new layer + outputs + 1%",
      // Less than what had to go up means the count missed it (or nothing was pushed): not a pass.
      met: proxy.uploaded >= needed && proxy.uploaded <= needed * 1.01,
      note: `${(proxy.uploaded / 2 ** 20).toFixed(1)} MiB sent for ${(needed / 2 ** 20).toFixed(1)} MiB of new layer and outputs${proxy.uploaded < needed ? "; less than what had to go up: the count missed it!" : ""}`,
    });

    // --- lookup overhead per step, nothing in the registry -----------------------------------
    log(`shared cache: ${runs} × 2 builds of ${LOOKUP_STEPS} small steps, with and without an empty --cache-from`);
    const chain = join(work, "chain");
    mkdirSync(join(chain, "base/etc"), { recursive: true });
    writeFileSync(join(chain, "base/etc/os-release"), "ID=bench\n");
    for (let step = 0; step < LOOKUP_STEPS; step++) {
      mkdirSync(join(chain, `d-${step}`));
      writeFileSync(join(chain, `d-${step}`, `file-${step}`), `${step}\n`);
    }
    const steps = Array.from({ length: LOOKUP_STEPS }, (_, step) => `  rootfs = overlay(rootfs, { from: "./d-${step}", to: "/etc" });`).join("\n");
    writeFileSync(
      join(chain, "osbuild.config.ts"),
      `import { defineConfig, fetchBase, overlay } from "osbuild";\nexport default defineConfig(() => {\n  let rootfs = fetchBase({ directory: "./base" });\n${steps}\n  return { rootfs };\n});\n`,
    );
    // Each run on an empty cache but for the type check's memo (the same for both series, and not what is measured).
    const warm = join(work, "chain-warm");
    timed(process.execPath, [OSBUILD, "check", "--cache-dir", warm], { cwd: chain });
    const chainBuild = (run: string, args: string[]): Timed => {
      const cache = join(work, `chain-${run}`);
      mkdirSync(join(cache, "memo"), { recursive: true });
      writeFileSync(join(cache, "memo", "typecheck.json"), readFileSync(join(warm, "memo", "typecheck.json")));
      const result = timed(process.execPath, [OSBUILD, "run", "--json", "--cache-dir", cache, "--out", join(cache, "out"), ...args], { cwd: chain });
      rmSync(cache, { recursive: true, force: true });
      return result;
    };
    const without: number[] = [];
    const withEmpty: number[] = [];
    for (let run = 0; run < runs + 2; run++) {
      // Turn about, so that the machine's ups and downs fall on both.
      without.push(chainBuild(`without-${run}`, []).ms);
      withEmpty.push(chainBuild(`with-${run}`, ["--cache-from", remote(registry.address, `empty-${run}`)]).ms);
    }
    // The fastest run of each series: what is left when the machine's other load is least.
    const perStep = (Math.min(...withEmpty) - Math.min(...without)) / (LOOKUP_STEPS + 1);
    const perStepMedian = (median(withEmpty) - median(without)) / (LOOKUP_STEPS + 1);
    rows.push({
      scenario: "lookup overhead per step, the registry has nothing",
      value: perStep,
      unit: "ms",
      goal: "≤ 20 ms",
      met: perStep <= 20,
      note: `${LOOKUP_STEPS + 1} steps, fastest of ${runs + 2}: ${seconds(Math.min(...without))} without, ${seconds(Math.min(...withEmpty))} with --cache-from (medians ${seconds(median(without))}, ${seconds(median(withEmpty))}: ${perStepMedian.toFixed(1)} ms a step)`,
    });
  } finally {
    await registry.stop();
  }
  return rows;
}

/** `timed` without blocking this process (which serves the proxy): wall time, and CPU time and peak memory under /usr/bin/time. */
function timedAsync(command: string, args: readonly string[], cwd: string): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn("/usr/bin/time", ["-f", "%U %S %M", command, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${command} ${args.join(" ")} failed (${code}):\n${stdout}\n${stderr}`));
      const [user = 0, system = 0, peakKiB = 0] = (stderr.trim().split("\n").pop() ?? "").split(" ").map(Number);
      resolve({ ms: performance.now() - started, cpuMs: (user + system) * 1000, peakBytes: Number.isFinite(peakKiB) ? peakKiB * 1024 : 0, peakTree: [], stdout, stderr });
    });
  });
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

function mib(bytes: number): number {
  return Math.round((bytes / 2 ** 20) * 10) / 10;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** docker-registry on a free loopback port, storing under `dir`. */
async function startRegistry(dir: string): Promise<{ address: string; stop(): Promise<void> }> {
  mkdirSync(dir, { recursive: true });
  const address = `127.0.0.1:${await freePort()}`;
  const configPath = join(dir, "config.yml");
  writeFileSync(configPath, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "storage")}\nhttp:\n  addr: ${address}\n`);
  const child: ChildProcess = spawn("docker-registry", ["serve", configPath], { stdio: "ignore" });
  for (let attempt = 0; ; attempt++) {
    const up = await fetch(`http://${address}/v2/`).then((response) => response.ok, () => false);
    if (up) break;
    if (attempt > 200 || child.exitCode !== null) throw new Error(`docker-registry did not start on ${address}`);
    await sleep(50);
  }
  return {
    address,
    stop: async () => {
      child.kill("SIGTERM");
      await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once("exit", resolve)));
    },
  };
}

/** A TCP proxy in front of the registry that counts what clients send. */
async function countingProxy(target: string): Promise<{ address: string; readonly uploaded: number; stop(): Promise<void> }> {
  const [host, port] = target.split(":") as [string, string];
  let uploaded = 0;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(port), host);
    client.on("data", (chunk: Buffer) => (uploaded += chunk.length));
    client.pipe(upstream).on("error", () => client.destroy());
    upstream.pipe(client).on("error", () => upstream.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    get uploaded() {
      return uploaded;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function table(rows: readonly SharedCacheRow[]): string {
  const lines = ["| scenario | osbuild | figure | peak memory | goal | met | note |", "|---|---|---|---|---|---|---|"];
  for (const row of rows) {
    const figure = row.unit === "ms" ? `${row.value.toFixed(1)} ms` : `${row.value.toFixed(3)}×`;
    lines.push(`| ${row.scenario} | ${row.osbuildMs === undefined ? "" : seconds(row.osbuildMs)} | ${figure} | ${row.peakMiB === undefined ? "" : `${row.peakMiB} MiB`} | ${row.goal} | ${row.met ? "yes" : "**no**"} | ${row.note} |`);
  }
  return lines.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const work = mkdtempSync(join(tmpdir(), "osbuild-bench-shared-"));
  try {
    const rows = await benchSharedCache({ runs, work, log: (message) => void process.stderr.write(`${message}\n`) });
    const date = new Date().toISOString();
    process.stdout.write(`\nshared cache on ${machine()}, ${date.slice(0, 10)}, medians of ${runs} runs\n\n${table(rows)}\n`);
    saveResult("shared-cache", { date, machine: machine(), runs, rows });
  } finally {
    if (!process.env.BENCH_KEEP) rmSync(work, { recursive: true, force: true });
  }
}
