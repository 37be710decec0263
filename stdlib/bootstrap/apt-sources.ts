// The host's apt sources (deb822 .sources and one-line .list files), as mirror lines for
// mmdebstrap, so that a base is fetched from the same mirror as the host's own packages.

import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

export interface AptSource {
  uri: string;
  suites: string[];
  components: string[];
}

export function readHostAptSources(root = "/etc/apt"): AptSource[] {
  const sources: AptSource[] = [];
  const list = join(root, "sources.list");
  if (existsSync(list)) sources.push(...parseOneLine(readFileSync(list, "utf8")));
  const dir = join(root, "sources.list.d");
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      const text = readFileSync(join(dir, name), "utf8");
      if (name.endsWith(".sources")) sources.push(...parseDeb822(text));
      else if (name.endsWith(".list")) sources.push(...parseOneLine(text));
    }
  }
  return sources;
}

function parseOneLine(text: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    const match = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (match) sources.push({ uri: match[1]!, suites: [match[2]!], components: match[3]!.split(/\s+/).filter(Boolean) });
  }
  return sources;
}

function parseDeb822(text: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split("\n")) {
      if (line.startsWith("#")) continue;
      const match = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (match) fields.set(match[1]!.toLowerCase(), match[2]!.trim());
    }
    if (!(fields.get("types") ?? "").split(/\s+/).includes("deb")) continue;
    if ((fields.get("enabled") ?? "yes") === "no") continue;
    for (const uri of (fields.get("uris") ?? "").split(/\s+/).filter(Boolean)) {
      sources.push({ uri, suites: (fields.get("suites") ?? "").split(/\s+/).filter(Boolean), components: (fields.get("components") ?? "main").split(/\s+/).filter(Boolean) });
    }
  }
  return sources;
}

/**
 * mmdebstrap mirror lines for `release` from the host's sources of the same distribution
 * (recognized by `archiveHint`, e.g. "debian"): the host's suites are renamed to the
 * requested release, keeping their -updates/-security variants.
 */
export function mirrorLinesFromHost(sources: readonly AptSource[], release: string, archiveHint: string, components: readonly string[]): string[] {
  const lines: string[] = [];
  const rolling = ["sid", "unstable", "experimental"].includes(release); // no -updates or -security suites
  for (const source of sources) {
    if (!source.uri.includes(archiveHint)) continue;
    for (const suite of source.suites) {
      const suffix = /-(updates|security|backports|proposed)$/.exec(suite)?.[0] ?? "";
      if (suffix === "-backports" || suffix === "-proposed" || (rolling && suffix !== "")) continue;
      const line = `deb ${source.uri} ${release}${suffix} ${components.join(" ")}`;
      if (!lines.includes(line)) lines.push(line);
    }
  }
  return lines;
}
