// `osbuild cache ls|verify|prune`: what the cache holds, checking it, trimming it.

import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { contentOf, type ActionRecord } from "../build.js";
import { ConfigError } from "../errors.js";
import type { Digest } from "../key.js";
import { Store, otherUsers } from "../store.js";
import { discardKeptTrees } from "../rootfs.js";
import { formatSize } from "./progress.js";

export async function cacheCommand(args: string[], cacheDir: string, options: { all: boolean; olderThanDays?: string }): Promise<number> {
  const [action] = args;
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
      throw new ConfigError(`unknown cache command '${action ?? ""}'`, undefined, "use: osbuild cache ls | verify | prune [--all | --older-than DAYS]");
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
    const match = /^osbuild:(layer|toc|blob):(sha256:[0-9a-f]{64})$/.exec(entry.key);
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
  out(`removed ${removedActions} step result(s) unused for ${days} days and ${removedContent} layer/blob entries; freed ${formatSize(stats.reclaimedSize)}`);
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

function sum(entries: ReadonlyArray<{ size: number }>): number {
  return entries.reduce((total, entry) => total + entry.size, 0);
}

function treeCount(store: Store): number {
  const dir = join(store.dir, "trees");
  return existsSync(dir) ? readdirSync(dir).filter((name) => statSync(join(dir, name)).isDirectory()).length : 0;
}
