// dpkg's database (Debian, Ubuntu): var/lib/dpkg/status for every installed package's
// version, architecture and source package, and info/<package>.list for the paths it
// installed. Read before provision removes var/lib; kept in the step's provenance.

import { existsSync, readFileSync } from "node:fs";
import type { Component, Tree } from "../../engine/index.js";
import { TreePaths } from "./tree-paths.js";

export const DPKG_STATUS = "var/lib/dpkg/status";
const DPKG_INFO = "var/lib/dpkg/info";

/** Debian policy's package names and architectures: nothing else may name a file to read. */
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const ARCHITECTURE = /^[a-z0-9][a-z0-9-]*$/;

export interface DpkgPackage {
  name: string;
  version: string;
  architecture: string;
  source: { name: string; version: string };
}

/** Every installed package of a dpkg status file, sorted by name. */
export function parseDpkgStatus(content: string): DpkgPackage[] {
  const packages: DpkgPackage[] = [];
  for (const block of content.split(/\n\n+/)) {
    const field = (name: string): string | undefined => new RegExp(`^${name}: (.*)$`, "m").exec(block)?.[1]?.trim();
    const status = field("Status");
    const name = field("Package");
    if (!name || !status?.endsWith(" installed")) continue;
    const version = field("Version") ?? "";
    // "Source: glibc (2.36-9+deb12u9)", "Source: chrony", or none (the source is named as the package)
    const source = /^(\S+)(?:\s+\((.+)\))?$/.exec(field("Source") ?? "");
    packages.push({ name, version, architecture: field("Architecture") ?? "", source: { name: source?.[1] ?? name, version: source?.[2] ?? version } });
  }
  return packages.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface DpkgReading {
  /** The os-release ID ("debian", "ubuntu"): the purl's namespace. */
  vendor: string;
  /** For the purl's distro qualifier, e.g. "debian-12". */
  distro?: string;
  /** Where each package (name, version, architecture) was fetched from, when the bootstrap knew. */
  downloads?: ReadonlyMap<string, { url: string; sha256?: string }>;
}

export function downloadKey(name: string, version: string, architecture: string): string {
  return `${name}\0${version}\0${architecture}`;
}

/** The packages dpkg says are installed in `tree`, with their files; undefined when it has no dpkg database. */
export function readDpkgDatabase(tree: Tree, reading: DpkgReading): Component[] | undefined {
  const statusPath = tree.path(DPKG_STATUS);
  if (!existsSync(statusPath)) return undefined;
  const paths = new TreePaths(tree);
  const components: Component[] = [];
  for (const pkg of parseDpkgStatus(readFileSync(statusPath, "utf8"))) {
    if (!PACKAGE_NAME.test(pkg.name) || !ARCHITECTURE.test(pkg.architecture)) continue;
    const files: string[] = [];
    const list = [`${pkg.name}:${pkg.architecture}.list`, `${pkg.name}.list`].map((name) => tree.path(`${DPKG_INFO}/${name}`)).find((path) => existsSync(path));
    if (list) {
      for (const line of readFileSync(list, "utf8").split("\n")) {
        const path = line === "" ? undefined : paths.installed(line);
        if (path !== undefined) files.push(path);
      }
    }
    const download = reading.downloads?.get(downloadKey(pkg.name, pkg.version, pkg.architecture));
    const qualifiers = `arch=${encodeURIComponent(pkg.architecture)}${reading.distro ? `&distro=${encodeURIComponent(reading.distro)}` : ""}`;
    components.push({
      name: pkg.name,
      version: pkg.version,
      architecture: pkg.architecture,
      purl: `pkg:deb/${encodeURIComponent(reading.vendor)}/${encodeURIComponent(pkg.name)}@${encodeURIComponent(pkg.version)}?${qualifiers}`,
      source: pkg.source,
      ...(download ? { downloadLocation: download.url, ...(download.sha256 ? { digests: { sha256: download.sha256 } } : {}) } : {}),
      files: files.sort(),
    });
  }
  return components;
}
