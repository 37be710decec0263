// The `osbuild` command line. Exit status: 0 success, 1 a step failed, 2 bad usage or config,
// 128 + N when signal N (SIGINT, SIGTERM) stopped a build.

import { availableParallelism, constants, homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { BuildSettings } from "../build.js";
import type { LoadedConfig } from "../config/load.js";
import { registeredNodes, resetRegistry } from "../define.js";
import { ConfigError, StepError, errorMessage, formatLocation } from "../errors.js";
import type { Arch, BuildOverrides, CommandContext, CommandSpec } from "../types.js";
import { parseArch } from "../arch.js";
import { displayPathFor } from "../provenance/display-path.js";
import type { Invocation } from "../provenance/slsa.js";
import { parseCacheRefs, type SharedCacheSettings } from "../remote/settings.js";
import { jsonSink, plainSink, terminalSink } from "./progress.js";
import { OSBUILD_VERSION } from "../version.js";

// The build, the store (cacache) and the config loader are imported by the commands that
// use them, so that `--version`, `--help`, `init` and the like start without them.
const importBuild = (): Promise<typeof import("../build.js")> => import("../build.js");
const importLoader = (): Promise<typeof import("../config/load.js")> => import("../config/load.js");

const USAGE = `usage: osbuild <command> [options]

commands:
  run [TARGET...]     build the targets (default: all) into --out
  check               type-check the config
  graph               print the build graph (--format dot|mermaid)
  explain STEP        why STEP is cached or will rebuild
  why TARGET PATH     which steps put PATH into TARGET, from what (--json: one object)
  push TARGET REF     build TARGET and push it to a registry (oci://HOST/REPOSITORY[:TAG])
  cache ls|verify|prune [oci://HOST/REPOSITORY]   inspect, check or trim the cache (or a registry's)
  doctor              check that this machine has what the config's steps need

options:
  --config FILE       the config (default ./osbuild.config.ts)
  --out DIR           where targets are written (default ./out)
  --cache-dir DIR     the cache (default $OSBUILD_CACHE_DIR, $XDG_CACHE_HOME/osbuild, ~/.cache/osbuild)
  --set NAME=VALUE    override a config parameter (repeatable)
  --arch ARCH         build for x86_64, aarch64, ppc64le or s390x instead of the config's arch
  --jobs N            steps run at once (default: number of cores)
  --json              print build events as NDJSON on stdout
  --keep-going        keep building independent steps after a failure
  --verbose           show step logs as they come
  --no-sbom           run: no <target>.spdx.json beside the outputs
  --no-provenance     run: no <target>.intoto.json beside the outputs
  --cache-from REF    also look step results up in this registry (oci://HOST[:PORT]/REPOSITORY; repeatable)
  --cache-to REF      push step results this registry lacks to it
  --registry-ca FILE  trust this CA for registries' TLS (besides the system's and certs.d)
  --plain-http        talk plain HTTP to registries not on loopback
`;

const BUILTIN_COMMANDS = ["run", "check", "graph", "explain", "why", "push", "cache", "doctor"];

const OPTIONS = {
  config: { type: "string" },
  out: { type: "string" },
  "cache-dir": { type: "string" },
  set: { type: "string", multiple: true },
  arch: { type: "string" },
  jobs: { type: "string" },
  json: { type: "boolean" },
  "keep-going": { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
  "no-sbom": { type: "boolean" },
  "no-provenance": { type: "boolean" },
  format: { type: "string" },
  all: { type: "boolean" },
  "older-than": { type: "string" },
  unused: { type: "boolean" },
  "cache-from": { type: "string", multiple: true },
  "cache-to": { type: "string" },
  "registry-ca": { type: "string" },
  "plain-http": { type: "boolean" },
  "media-type": { type: "string" },
  annotation: { type: "string", multiple: true },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} satisfies ParseArgsConfig["options"];

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>["values"];

export async function main(argv: readonly string[], commands: readonly CommandSpec[] = []): Promise<number> {
  // The subcommand decides which options exist, so find it before parsing strictly.
  const name = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: false }).positionals[0];
  const plugin = commands.find((command) => command.name === name);
  if (plugin?.rawArguments) return runRawCommand(plugin, argv, commands);
  const options = { ...OPTIONS, ...(plugin?.options ?? {}) } as ParseArgsConfig["options"];
  const usage = usageText(commands);
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true });
  } catch (error) {
    process.stderr.write(`osbuild: ${errorMessage(error)}\n\n${usage}`);
    return 2;
  }
  const values = parsed.values as Values & Record<string, string | boolean | string[] | undefined>;
  const positionals = parsed.positionals;
  if (values.version) {
    process.stdout.write(`osbuild ${OSBUILD_VERSION}\n`);
    return 0;
  }
  const [command, ...rest] = positionals;
  if (values.help || !command || command === "help") {
    process.stdout.write(plugin ? `usage: osbuild ${plugin.usage}\n\n${pluginOptionsText(plugin)}` : usage);
    return command || values.help ? 0 : 2;
  }
  try {
    if (plugin) return await plugin.run(rest, values, commandContext(values));
    switch (command) {
      case "run":
        return await runCommand(values, rest);
      case "check":
        return await check(values);
      case "graph":
        return await graph(values);
      case "explain": {
        if (rest.length !== 1) throw new ConfigError("explain needs exactly one step id: osbuild explain STEP");
        const { explainStep } = await import("./explain.js");
        return await explainStep(await load(values), rest[0]!, settingsOf(values, await load(values)));
      }
      case "why": {
        if (rest.length !== 2) throw new ConfigError("why needs a target and a path: osbuild why TARGET PATH (e.g. osbuild why image /usr/bin/kata-agent)");
        const { whyCommand } = await import("./why.js");
        return await whyCommand(await load(values), rest[0]!, rest[1]!, settingsOf(values, await load(values)), values.json ?? false);
      }
      case "cache": {
        const { cacheCommand } = await import("./cache.js");
        return await cacheCommand(rest, cacheDirOf(values), {
          all: values.all ?? false,
          olderThanDays: values["older-than"],
          unused: values.unused ?? false,
          transport: { caFile: values["registry-ca"], plainHttp: values["plain-http"] },
          usedBy: async () => {
            const config = await load(values);
            return { config, settings: settingsOf(values, config) };
          },
        });
      }
      case "push": {
        const { pushCommand } = await import("./push.js");
        return await pushCommand(rest, await load(values), settingsOf(values, await load(values)), {
          mediaType: values["media-type"],
          annotations: values.annotation ?? [],
          transport: { caFile: values["registry-ca"], plainHttp: values["plain-http"] },
        });
      }
      case "doctor": {
        const { doctor } = await import("./doctor.js");
        return await doctor(await load(values));
      }
      default:
        throw new ConfigError(`unknown command '${command}'`, undefined, `commands: ${[...BUILTIN_COMMANDS, ...commands.map((item) => item.name)].join(", ")}`);
    }
  } catch (error) {
    return reportError(error);
  }
}

/** A command that parses its own arguments: osbuild's options may only come before its name. */
async function runRawCommand(command: CommandSpec, argv: readonly string[], commands: readonly CommandSpec[]): Promise<number> {
  const at = argv.indexOf(command.name);
  let values: Values;
  try {
    const before = parseArgs({ args: argv.slice(0, at), options: OPTIONS, allowPositionals: false });
    values = before.values as Values;
  } catch (error) {
    process.stderr.write(`osbuild: ${errorMessage(error)} (osbuild's own options go before '${command.name}')\n\n${usageText(commands)}`);
    return 2;
  }
  try {
    return await command.run(argv.slice(at + 1), {}, commandContext(values));
  } catch (error) {
    return reportError(error);
  }
}

function usageText(commands: readonly CommandSpec[]): string {
  const extra = commands.map((command) => `  ${command.usage.padEnd(20)}${command.usage.length >= 20 ? "\n" + " ".repeat(22) : ""}${command.summary}\n`).join("");
  return USAGE.replace("\noptions:", `${extra}\noptions:`);
}

function pluginOptionsText(command: CommandSpec): string {
  const lines = Object.entries(command.options ?? {}).map(([name, option]) => `  --${name}${option.type === "string" ? " VALUE" : ""}`.padEnd(24) + option.description);
  return `${command.summary}\n\n${lines.join("\n")}\n`;
}

/** What a plugin command can do: build the config's targets, or artifacts of its own. */
function commandContext(values: Values): CommandContext {
  const cacheDir = cacheDirOf(values);
  const outDir = resolve(values.out ?? "out");
  const log = (message: string): void => void process.stderr.write(`${message}\n`);
  const quietSink = plainSink(process.stderr, process.stderr);
  return {
    cacheDir,
    outDir,
    log,
    async targetNames() {
      return [...(await load(values)).graph.targets.keys()];
    },
    async build(targets, overrides) {
      const { Build } = await importBuild();
      const { config, settings, names } = await overridden(values, targets, overrides);
      const result = await new Build(config.graph, settings, quietSink).run(names);
      return { ok: result.ok, arch: settings.arch, outputs: result.outputs, attestations: result.attestations };
    },
    async buildInputs(targets, overrides) {
      const [{ BuildContext, neededSteps }, { configInputs, hostInputs }] = await Promise.all([importBuild(), import("../provenance/slsa.js")]);
      const { config, settings, names } = await overridden(values, targets, overrides);
      const context = new BuildContext(settings);
      const needed = neededSteps(config.graph, names.map((name) => config.graph.targets.get(name)!.from));
      const steps = config.graph.order.filter((id) => needed.has(id)).map((id) => ({ id, prepared: context.prepare(config.graph.steps.get(id)!) }));
      return [...configInputs(settings.attest!.invocation), ...hostInputs(steps)];
    },
    async buildArtifacts(name, makeTargets, options) {
      const [{ Build }, { buildGraph }, { machineArch }] = await Promise.all([importBuild(), import("../graph.js"), importLoader()]);
      resetRegistry(); // only this call's steps: ids of an earlier call must not clash
      const targets = makeTargets();
      const graph = buildGraph(targets, registeredNodes());
      const settings: BuildSettings = {
        configFile: join(cacheDir, "commands", `${name}.ts`),
        cacheDir,
        outDir: options?.outDir ?? join(cacheDir, "commands", name),
        jobs: availableParallelism(),
        sourceDateEpoch: options?.sourceDateEpoch ?? 0,
        arch: options?.arch ?? machineArch(),
        keepGoing: false,
        verbose: options?.verbose ?? values.verbose ?? false,
      };
      if (options?.attest) {
        const invocation = { configFile: settings.configFile, configFiles: {}, params: options.attest.parameters, sourceDateEpoch: settings.sourceDateEpoch, arch: settings.arch, displayPath: (path: string) => (path === settings.configFile ? `osbuild ${name} (made by the command: see parameters)` : path) };
        settings.attest = { sbom: !(values["no-sbom"] ?? false), provenance: !(values["no-provenance"] ?? false), invocation };
      }
      const result = await new Build(graph, settings, quietSink).run([...graph.targets.keys()]);
      return { ok: result.ok, arch: settings.arch, outputs: result.outputs, attestations: result.attestations };
    },
  };
}

/** The config loaded with a command's overrides (recorded parameters, source date), its settings and target names. */
async function overridden(values: Values, targets: readonly string[] | undefined, overrides: BuildOverrides = {}): Promise<{ config: LoadedConfig; settings: BuildSettings; names: string[] }> {
  let config = await load(values);
  if (overrides.params !== undefined || overrides.sourceDateEpoch !== undefined || overrides.arch !== undefined) {
    const configDir = dirname(config.file);
    // Recorded parameters replace the command line's; an architecture alone keeps them.
    const recorded = overrides.params !== undefined || overrides.sourceDateEpoch !== undefined;
    const sets: Array<[string, string]> = recorded
      ? Object.entries(overrides.params ?? {}).map(([name, value]) => [name, config.definition.params[name]?.type === "path" ? resolve(configDir, String(value)) : String(value)])
      : parseSets(values);
    config = await load(values, { sets, sourceDateEpoch: overrides.sourceDateEpoch, arch: overrides.arch });
  }
  // A cache of its own means a build from nothing: no registries of the shared cache either.
  const settings = { ...settingsOf(values, config), ...(overrides.outDir ? { outDir: overrides.outDir } : {}), ...(overrides.cacheDir ? { cacheDir: overrides.cacheDir, cache: undefined } : {}) };
  const names = targets && targets.length > 0 ? [...targets] : [...config.graph.targets.keys()];
  checkTargets(config, names);
  return { config, settings, names };
}

function cacheDirOf(values: Values): string {
  if (values["cache-dir"]) return resolve(values["cache-dir"]);
  if (process.env.OSBUILD_CACHE_DIR) return resolve(process.env.OSBUILD_CACHE_DIR);
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, "osbuild");
  return join(homedir(), ".cache", "osbuild");
}

function parseSets(values: Values): Array<[string, string]> {
  return (values.set ?? []).map((item) => {
    const equals = item.indexOf("=");
    if (equals <= 0) throw new ConfigError(`--set ${item}: expected NAME=VALUE`);
    return [item.slice(0, equals), item.slice(equals + 1)];
  });
}

const loaded = new Map<string, Promise<LoadedConfig>>();

/**
 * The config with the command line's --set and --arch, or other values given; type-checked unless
 * this osbuild checked the same bytes before (`alwaysCheck`: check them again, as `osbuild check` does).
 */
async function load(values: Values, instead?: { sets: Array<[string, string]>; sourceDateEpoch: number | undefined; arch?: Arch | undefined }, alwaysCheck = false): Promise<LoadedConfig> {
  const { checkConfig, loadConfig, resolveConfigPath } = await importLoader();
  const file = resolveConfigPath(values.config);
  const sets = instead?.sets ?? parseSets(values);
  const arch = instead?.arch ?? (values.arch === undefined ? undefined : parseArch(values.arch, "--arch"));
  const memoKey = JSON.stringify([file, sets, instead?.sourceDateEpoch ?? null, arch ?? null, alwaysCheck]);
  let pending = loaded.get(memoKey);
  if (!pending) {
    pending = (async () => {
      const cacheDir = cacheDirOf(values);
      const configFiles = await checkConfig(file, cacheDir, { always: alwaysCheck });
      return loadConfig(file, { cacheDir, sets, configFiles, ...(instead?.sourceDateEpoch !== undefined ? { sourceDateEpoch: instead.sourceDateEpoch } : {}), ...(arch ? { arch } : {}) });
    })();
    loaded.set(memoKey, pending);
  }
  return pending;
}

function settingsOf(values: Values, config: LoadedConfig): BuildSettings {
  let jobs = availableParallelism();
  if (values.jobs !== undefined) {
    jobs = Number(values.jobs);
    if (!Number.isInteger(jobs) || jobs < 1) throw new ConfigError(`--jobs ${values.jobs}: expected a positive integer`);
  }
  return {
    configFile: config.file,
    cacheDir: cacheDirOf(values),
    outDir: resolve(values.out ?? "out"),
    jobs,
    sourceDateEpoch: config.sourceDateEpoch,
    arch: config.arch,
    keepGoing: values["keep-going"] ?? false,
    verbose: values.verbose ?? false,
    attest: {
      sbom: config.sbom && !(values["no-sbom"] ?? false),
      provenance: config.provenance && !(values["no-provenance"] ?? false),
      invocation: invocationOf(config),
    },
    cache: cacheSettingsOf(values, config),
  };
}

/** How this config is built, as its provenance records it: parameter values with host paths relative to the config. */
function invocationOf(config: LoadedConfig): Invocation {
  const displayPath = displayPathFor(config.file);
  const params = Object.fromEntries(
    Object.entries(config.params).map(([name, value]) => [name, config.definition.params[name]?.type === "path" && typeof value === "string" ? displayPath(value) : value]),
  );
  return { configFile: config.file, configFiles: config.configFiles, params, sourceDateEpoch: config.sourceDateEpoch, arch: config.arch, displayPath };
}

/**
 * The shared cache's registries: the flags, else OSBUILD_CACHE_FROM / OSBUILD_CACHE_TO
 * (lists split at commas or spaces), else the config's `cache`. An empty value turns one off.
 */
function cacheSettingsOf(values: Values, config: LoadedConfig): SharedCacheSettings | undefined {
  const list = (text: string | undefined): string[] => (text ?? "").split(/[\s,]+/).filter((item) => item !== "");
  const configured = config.definition.cache;
  const fromConfig = configured?.from === undefined ? [] : typeof configured.from === "string" ? [configured.from] : [...configured.from];
  const from = values["cache-from"] !== undefined ? values["cache-from"].filter((item) => item !== "") : process.env.OSBUILD_CACHE_FROM !== undefined ? list(process.env.OSBUILD_CACHE_FROM) : fromConfig;
  const to = values["cache-to"] ?? process.env.OSBUILD_CACHE_TO ?? configured?.to;
  if (from.length === 0 && !to) return undefined;
  const settings: SharedCacheSettings = { from, ...(to ? { to } : {}), registryCa: values["registry-ca"], plainHttp: values["plain-http"] };
  try {
    parseCacheRefs(settings);
  } catch (error) {
    if (error instanceof ConfigError && values["cache-from"] === undefined && values["cache-to"] === undefined && process.env.OSBUILD_CACHE_FROM === undefined && process.env.OSBUILD_CACHE_TO === undefined) {
      throw new ConfigError(`the config's cache: ${error.message}`, config.definition.location, error.hint);
    }
    throw error;
  }
  return settings;
}

async function runCommand(values: Values, targetNames: string[]): Promise<number> {
  const json = values.json ?? false;
  let config: LoadedConfig;
  try {
    config = await load(values);
  } catch (error) {
    if (json && error instanceof ConfigError) process.stdout.write(`${JSON.stringify({ type: "done", ok: false, outputs: {}, error: error.message })}\n`);
    throw error;
  }
  checkTargets(config, targetNames);
  const settings = settingsOf(values, config);
  const { Build } = await importBuild();
  const terminal = !json && process.stderr.isTTY ? terminalSink() : undefined;
  const sink = json ? jsonSink() : (terminal?.sink ?? plainSink());
  const build = new Build(config.graph, settings, sink);
  // Ctrl-C (or a SIGTERM from a CI runner) stops the build cleanly: see Build.interrupt.
  const interrupt = (signal: NodeJS.Signals): void => build.interrupt(signal);
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);
  try {
    const result = await build.run(targetNames.length > 0 ? targetNames : [...config.graph.targets.keys()]);
    // The shell's convention for a program that a signal stopped: 128 + the signal's number.
    return result.interrupted ? 128 + constants.signals[result.interrupted] : result.exitCode;
  } finally {
    process.off("SIGINT", interrupt);
    process.off("SIGTERM", interrupt);
    terminal?.stop();
  }
}

async function check(values: Values): Promise<number> {
  const config = await load(values, undefined, true);
  process.stdout.write(`${formatLocation({ file: config.file, line: 1, column: 1 }).replace(/:1:1$/, "")}: ok (${config.graph.steps.size} steps, targets: ${[...config.graph.targets.keys()].join(", ")})\n`);
  return 0;
}

async function graph(values: Values): Promise<number> {
  const config = await load(values);
  const format = values.format ?? "dot";
  if (format !== "dot" && format !== "mermaid") throw new ConfigError(`--format ${format}: expected dot or mermaid`);
  const { renderDot, renderMermaid } = await import("../graph.js");
  process.stdout.write(format === "dot" ? renderDot(config.graph) : renderMermaid(config.graph));
  return 0;
}

function reportError(error: unknown): number {
  if (error instanceof ConfigError) {
    for (const line of error.details) process.stderr.write(`${line}\n`);
    const where = formatLocation(error.location);
    process.stderr.write(`${where ? `${where}: ` : "osbuild: "}error: ${error.message}\n`);
    if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`);
    return 2;
  }
  if (error instanceof StepError) {
    process.stderr.write(`osbuild: step '${error.stepId}' failed: ${error.message}\n`);
    if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`);
    return 1;
  }
  if ((error as NodeJS.ErrnoException | undefined)?.code === "ENOSPC") {
    process.stderr.write(`osbuild: ${errorMessage(error)}\n  hint: the disk is full: free some space (\`osbuild cache prune\` removes what recent builds did not use), or use --cache-dir on a larger filesystem\n`);
    return 1;
  }
  process.stderr.write(`osbuild: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.stderr.write("  hint: this is a bug in osbuild; please report it with the command you ran\n");
  return 1;
}

/** A config error naming the first of `names` that is not a target of the config. */
function checkTargets(config: LoadedConfig, names: readonly string[]): void {
  const unknown = names.find((name) => !config.graph.targets.has(name));
  if (unknown !== undefined) throw new ConfigError(`unknown target '${unknown}'`, config.definition.location, `targets: ${[...config.graph.targets.keys()].join(", ")}`);
}
