// `osbuild cache ls|verify|prune`: what the cache holds, checking it, trimming it; `ls` and
// `prune` also work on a registry of the shared cache (oci://HOST/REPOSITORY).

import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { BuildContext, contentOf, type ActionRecord, type BuildSettings } from "../build.js";
import type { LoadedConfig } from "../config/load.js";
import { RegistryError } from "../../registry/errors.js";
import { parseOciReference } from "../../registry/reference.js";
import type { TransportOptions } from "../../registry/transport.js";
import { RemoteCache } from "../remote/remote-cache.js";
import { SharedCache } from "../remote/shared-cache.js";
import { resolveCached } from "../resolve-cached.js";
import { ConfigError } from "../errors.js";
import { pruneCompiled } from "../config/compiled.js";
import type { Digest } from "../key.js";
import { Store, otherUsers } from "../store.js";
import { discardKeptTrees } from "../rootfs.js";
import { formatSize, plainSink } from "./progress.js";

export interface CacheCommandOptions {
  all: boolean;
  olderThanDays?: string;
  /** prune: what the config no longer uses (registries only). */
  unused: boolean;
  transport: TransportOptions;
  /** The config and its settings, for --unused. */
  usedBy: () => Promise<{ config: LoadedConfig; settings: BuildSettings }>;
}

export async function cacheCommand(args: string[], cacheDir: string, options: CacheCommandOptions): Promise<number> {
  const [action, where] = args;
  if (where !== undefined) return remoteCacheCommand(action, where, options);
  if (options.unused) throw new ConfigError("--unused prunes a registry: osbuild cache prune oci://HOST/REPOSITORY --unused", undefined, "the local cache is pruned by age (--older-than DAYS) or emptied (--all)");
  if (!existsSync(cacheDir) && action !== "prune") {
    process.stdout.write(`${cacheDir}: empty (no cache yet)\n`);
    return 0;
  }
  switch (action) {
    case "ls":
      return list(Store.open(cacheDir));
    case "verify":
      return verify(Store.open(cacheDir));
    case "prune":
      return prune(cacheDir, options);
    default:
      throw new ConfigError(`unknown cache command '${action ?? ""}'`, undefined, "use: osbuild cache ls | verify | prune [--all | --older-than DAYS], or osbuild cache ls | prune oci://HOST/REPOSITORY [--all | --older-than DAYS | --unused]");
  }
}

async function list(store: Store): Promise<number> {
  const entries = await store.list();
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  const actions = entries.filter((entry) => entry.key.startsWith("osbuild:action:"));
  const layers = entries.filter((entry) => entry.key.startsWith("osbuild:layer:"));
  const blobs = entries.filter((entry) => entry.key.startsWith("osbuild:blob:"));
  out(`cache ${store.dir}`);
  out(`  ${actions.length} step results, ${layers.length} layers (${formatSize(sum(layers))}), ${blobs.length} blobs (${formatSize(sum(blobs))}), ${treeCount(store)} materialized trees`);
  const rows = actions
    .map((entry) => ({ entry, meta: entry.metadata as { stepId?: string; kind?: string } | undefined }))
    .sort((a, b) => b.entry.time - a.entry.time);
  if (rows.length > 0) out("  step results (newest first):");
  for (const { entry, meta } of rows) {
    const key = entry.key.slice("osbuild:action:".length, "osbuild:action:".length + 16);
    out(`    ${new Date(entry.time).toISOString()}  ${key}…  ${meta?.stepId ?? "?"} (${meta?.kind ?? "?"})`);
  }
  return 0;
}

async function verify(store: Store): Promise<number> {
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  // Its garbage collection would take content a running build has put in but not yet indexed.
  await waitForIdle(store.dir);
  const stats = await store.verify();
  out(`checked ${stats.verifiedContent} content files: ${stats.badContentCount} corrupted (removed), ${stats.reclaimedCount} unreferenced (removed, ${formatSize(stats.reclaimedSize)})`);
  // Step results whose content is gone (or was just removed) are dropped so they rebuild.
  let dropped = 0;
  for (const entry of await store.list()) {
    if (!entry.key.startsWith("osbuild:action:")) continue;
    let record: ActionRecord | undefined;
    try {
      record = (await store.getJson<ActionRecord>(entry.key))?.value;
    } catch {
      record = undefined;
    }
    const complete = record !== undefined && contentOf(record).every((digest) => store.hasContent(digest));
    if (!complete) {
      await store.removeEntry(entry.key);
      dropped++;
    }
  }
  await discardKeptTrees(store); // derived data: rebuilt from layers on demand
  out(`${dropped} step result(s) referred to missing content and were dropped; materialized trees cleared`);
  return stats.badContentCount > 0 ? 1 : 0;
}

async function prune(cacheDir: string, options: { all: boolean; olderThanDays?: string }): Promise<number> {
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  if (options.all) {
    if (existsSync(cacheDir)) for (const name of readdirSync(cacheDir)) rmSync(join(cacheDir, name), { recursive: true, force: true });
    out(`emptied ${cacheDir}`);
    return 0;
  }
  const days = options.olderThanDays === undefined ? 30 : Number(options.olderThanDays);
  if (!Number.isFinite(days) || days < 0) throw new ConfigError(`--older-than ${options.olderThanDays}: expected a number of days`);
  if (!existsSync(cacheDir)) return 0;
  const store = Store.open(cacheDir);
  const cutoff = Date.now() - days * 86_400_000;
  const entries = await store.list();
  const live = new Set<Digest>();
  let removedActions = 0;
  for (const entry of entries) {
    if (!/^osbuild:(action|history|part):/.test(entry.key)) continue;
    if (entry.time < cutoff) {
      await store.removeEntry(entry.key);
      if (entry.key.startsWith("osbuild:action:")) removedActions++;
      continue;
    }
    if (!entry.key.startsWith("osbuild:action:")) continue;
    const record = (await store.getJson<ActionRecord>(entry.key).catch(() => undefined))?.value;
    if (record) for (const digest of contentOf(record)) live.add(digest);
  }
  let removedContent = 0;
  const busy = otherUsers(cacheDir);
  for (const entry of busy > 0 ? [] : entries) {
    const match = /^osbuild:(layer|toc|file-sha1|blob):(sha256:[0-9a-f]{64})$/.exec(entry.key);
    // A step's provenance record lives as long as the step result that refers to it.
    const unreferenced = match ? !live.has(match[2] as Digest) : entry.key.startsWith("osbuild:provenance:") && !live.has(entry.digest);
    if (unreferenced) {
      await store.removeEntry(entry.key);
      removedContent++;
    }
  }
  await discardKeptTrees(store);
  if (busy > 0) {
    // A build puts layers in before the step result naming them: unreferenced content is
    // only unreferenced for good when no build runs.
    out(`removed ${removedActions} step result(s) unused for ${days} days; ${busy} build(s) are using the cache, so unused layers and blobs are left for a prune when none is`);
    return 0;
  }
  const stats = await store.verify();
  const compiled = pruneCompiled(join(cacheDir, "compiled"), join(cacheDir, "memo", "compiled.json"));
  out(`removed ${removedActions} step result(s) unused for ${days} days and ${removedContent} layer/blob entries; freed ${formatSize(stats.reclaimedSize)}${compiled > 0 ? `; removed ${compiled} outdated compiled config(s)` : ""}`);
  return 0;
}

/** Waits until no build uses the cache at `dir`, saying so once. */
async function waitForIdle(dir: string): Promise<void> {
  let said = false;
  for (let busy = otherUsers(dir); busy > 0; busy = otherUsers(dir)) {
    if (!said) process.stderr.write(`waiting for ${busy} build(s) using ${dir} to finish\n`);
    said = true;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** ls and prune of a registry's osbuild entries. */
async function remoteCacheCommand(action: string | undefined, where: string, options: CacheCommandOptions): Promise<number> {
  let ref;
  try {
    ref = parseOciReference(where);
  } catch (error) {
    if (error instanceof RegistryError) throw new ConfigError(error.message, undefined, error.hint);
    throw error;
  }
  if (action !== "ls" && action !== "prune") throw new ConfigError(`cache ${action ?? ""} works on the local cache only`, undefined, "a registry can be listed (osbuild cache ls oci://...) or pruned (osbuild cache prune oci://... --older-than DAYS | --unused | --all)");
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  const remote = new RemoteCache(ref, { access: action === "ls" ? ["pull"] : ["pull", "push", "delete"], transport: options.transport, concurrency: 8 });
  try {
    const entries = await remote.list();
    if (action === "ls") {
      const blobs = new Map(entries.flatMap((entry) => entry.blobs.map((digest) => [digest, entry] as const)));
      out(`cache ${remote.display}`);
      out(`  ${entries.length} step results, ${blobs.size} blobs (${formatSize(entries.reduce((total, entry) => total + entry.size, 0))} before sharing)`);
      if (entries.length > 0) out("  step results (newest first):");
      for (const entry of entries) out(`    ${entry.created}  ${entry.key.slice(0, 16)}…  ${entry.step} (${entry.kind})  ${formatSize(entry.size)}`);
      return 0;
    }
    let doomed = entries;
    let reason = "every entry";
    if (options.unused) {
      const { config, settings } = await options.usedBy();
      const context = new BuildContext(settings);
      const shared = new SharedCache({ from: [where], registryCa: options.transport.caFile, plainHttp: options.transport.plainHttp }, { store: context.store, layers: context.layers, cacheDir: settings.cacheDir }, plainSink(process.stderr, process.stderr));
      try {
        const resolved = await resolveCached(context, config.graph, [...config.graph.steps.keys()], shared);
        const used = new Set([...resolved.values()].flatMap((step) => (step.record ? [step.record.key] : [])));
        doomed = entries.filter((entry) => !used.has(entry.key));
        reason = `entries ${config.file} does not use`;
      } finally {
        await shared.settle();
      }
    } else if (!options.all) {
      const days = options.olderThanDays === undefined ? 30 : Number(options.olderThanDays);
      if (!Number.isFinite(days) || days < 0) throw new ConfigError(`--older-than ${options.olderThanDays}: expected a number of days`);
      const cutoff = Date.now() - days * 86_400_000;
      doomed = entries.filter((entry) => !(Date.parse(entry.created) >= cutoff));
      reason = `entries pushed more than ${days} days ago`;
    }
    for (const entry of doomed) await remote.remove(entry.manifestDigest);
    out(`removed ${doomed.length} of ${entries.length} step results from ${remote.display} (${reason})`);
    if (doomed.length > 0) out("  the registry frees their blobs when it collects garbage (docker-registry: garbage-collect CONFIG)");
    return 0;
  } catch (error) {
    if (!(error instanceof RegistryError)) throw error;
    process.stderr.write(`osbuild: ${remote.display}: ${error.message}\n  hint: ${error.hint}\n`);
    return 1;
  } finally {
    remote.close();
  }
}

function sum(entries: ReadonlyArray<{ size: number }>): number {
  return entries.reduce((total, entry) => total + entry.size, 0);
}

function treeCount(store: Store): number {
  const dir = join(store.dir, "trees");
  return existsSync(dir) ? readdirSync(dir).filter((name) => !name.startsWith(".") && statSync(join(dir, name)).isDirectory()).length : 0;
}
