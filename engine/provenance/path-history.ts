// One path's story in a rootfs: every layer that added, changed or removed it, which step
// made that layer and what put the path there (a host file, a package, a command, the
// step's own code), and what it is in the end. Read from the layers' TOCs and the steps'
// provenance records only: nothing is built, nothing fetched.

import { sha256Hex } from "../key.js";
import { MergedView, type MergedFile } from "../layers/merge.js";
import { resolveSymlinks } from "../layers/paths.js";
import { RootfsInputImpl } from "../inputs.js";
import { rootfsOf, type Layers } from "../rootfs.js";
import type { Component, FileType } from "../types.js";
import { PathOwners, type OwnedBy } from "./contents.js";
import type { ChainStep, Lineage } from "./lineage.js";
import type { HostFileRecord } from "./record.js";

export type PathChange = "added" | "changed" | "removed";

export type Origin =
  | { type: "host-file"; option: string; hostPath: string; via: HostFileRecord["kind"]; sha256?: string }
  | {
      type: "package";
      database: string;
      name: string;
      version: string;
      architecture?: string;
      source?: Component["source"];
      purl?: string;
      /** How many other packages also list it (a shared directory). */
      alsoListedBy?: number;
      /** Not listed itself, but inside a directory only this package has: made by its install scripts. */
      inDirectory?: string;
    }
  | { type: "component"; name: string; version: string; digests?: Component["digests"] }
  | { type: "command"; command: string }
  /** Nothing more specific was recorded: the step's own code did it. */
  | { type: "step" };

export interface PathEvent {
  /** Index of the layer, bottom first. */
  layer: number;
  layerDigest: string;
  step: ChainStep;
  change: PathChange;
  origins: Origin[];
}

export interface FinalEntry {
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkTarget?: string;
  sha256?: string;
}

export interface PathHistory {
  /** The path as layers spell it, symlinks in its parents resolved inside the tree. */
  path: string;
  events: PathEvent[];
  /** Undefined when the rootfs no longer has it. */
  final?: FinalEntry;
}

export async function pathHistory(lineage: Lineage, layers: Layers, requested: string): Promise<PathHistory> {
  const rootfs = lineage.rootfs!;
  const tocs = await Promise.all(rootfs.layers.map((layer) => layers.toc(layer)));
  const finalView = await layers.view(rootfs);
  const path = treePath(finalView, requested);

  const owners = new PathOwners(lineage.chain);
  const events: PathEvent[] = [];
  let previous: MergedFile | undefined;
  for (let index = 0; index < tocs.length; index++) {
    const state = (index === tocs.length - 1 ? finalView : MergedView.of(tocs.slice(0, index + 1))).get(path);
    const change: PathChange | undefined = !previous && state ? "added" : previous && !state ? "removed" : state && state.layer === index ? "changed" : undefined;
    previous = state;
    if (!change) continue;
    const position = lineage.chain.findIndex((step) => step.layers.includes(index));
    const step = lineage.chain[position]!;
    // The content as this layer left it, to tell a copy of a host directory's file from one the step rewrote.
    const contentSha256 = async (): Promise<string | undefined> => (state?.type === "file" ? (state.sha256 ?? sha256Hex(await new RootfsInputImpl(rootfsOf(rootfs.layers.slice(0, index + 1)), layers).readFile(path))) : undefined);
    const origins = change === "removed" ? [] : await originsOf(step, position, owners, path, change, rootfs.layers[index]!.digest, contentSha256);
    events.push({ layer: index, layerDigest: rootfs.layers[index]!.digest, step, change, origins });
  }

  const entry = finalView.get(path);
  let final: FinalEntry | undefined;
  if (entry) {
    final = { type: entry.type, mode: entry.mode, uid: entry.uid, gid: entry.gid, size: entry.size, ...(entry.linkTarget !== undefined ? { linkTarget: entry.linkTarget } : {}) };
    if (entry.type === "file") final.sha256 = entry.sha256 ?? sha256Hex(await new RootfsInputImpl(rootfs, layers).readFile(path));
  }
  return { path, events, ...(final ? { final } : {}) };
}

/** `requested` as layers spell it: no leading "/", parent symlinks resolved in the final tree (the last component is not followed). */
function treePath(view: MergedView, requested: string): string {
  const resolved = resolveSymlinks(
    requested,
    (candidate) => {
      const entry = view.get(candidate);
      return entry && { symlinkTarget: entry.type === "symlink" ? entry.linkTarget : undefined };
    },
    { followFinal: false, missing: "literal" },
  );
  return resolved!.join("/");
}

async function originsOf(
  step: ChainStep,
  position: number,
  owners: PathOwners,
  path: string,
  change: PathChange,
  layerDigest: string,
  contentSha256: () => Promise<string | undefined>,
): Promise<Origin[]> {
  const origins: Origin[] = [];
  let host: HostFileRecord | undefined;
  for (const record of [...(step.provenance?.hostFiles ?? [])].reverse()) {
    if (!hostCovers(record, path, layerDigest)) continue;
    // A directory's file counts as the host's only as a copy of it (not, say, depmod's modules.dep).
    const copied = record.kind !== "directory" || record.files === undefined || record.files[relativeTo(record.treePath, path)!] === (await contentSha256());
    if (copied) host = record;
    break;
  }
  if (host) origins.push({ type: "host-file", option: host.option, hostPath: host.hostPath, via: host.kind, ...hostSha256(host, path) });

  // A package installed the path when it first appears, or when the package changed there (an
  // upgrade); from a host archive too, when that was a root filesystem with its database.
  {
    const listed = owners.atOrAbove(position, path);
    const before = owners.below(position, path);
    const upgraded = before !== undefined && listed.some((owner) => !before.some((earlier) => earlier.component.name === owner.component.name && earlier.component.version === owner.component.version));
    const packageOrigin = (owner: OwnedBy, extra: { alsoListedBy?: number; inDirectory?: string }): Origin => {
      const { name, version, architecture, source, purl } = owner.component;
      return { type: "package", database: owner.database, name, version, ...(architecture ? { architecture } : {}), ...(source ? { source } : {}), ...(purl ? { purl } : {}), ...extra };
    };
    if (listed.length > 0 && (change === "added" || upgraded)) origins.push(packageOrigin(listed[0]!, listed.length > 1 ? { alsoListedBy: listed.length - 1 } : {}));
    else if (listed.length === 0 && change === "added") {
      // Files a package's install scripts made (chrony's postinst writes /etc/chrony/chrony.conf) are in no list, but in its own directory.
      const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
      const parentOwners = parent === "" ? [] : owners.atOrAbove(position, parent);
      if (parentOwners.length === 1) origins.push(packageOrigin(parentOwners[0]!, { inDirectory: parent }));
    }
  }
  for (const component of step.provenance?.components ?? []) {
    if (component.files?.includes(path)) origins.push({ type: "component", name: component.name, version: component.version, ...(component.digests ? { digests: component.digests } : {}) });
  }
  for (const command of step.provenance?.commands ?? []) origins.push({ type: "command", command });
  if (origins.length === 0) origins.push({ type: "step" });
  return origins;
}

function hostCovers(record: HostFileRecord, path: string, layerDigest: string): boolean {
  switch (record.kind) {
    case "file":
      return record.treePath === path;
    case "directory": {
      const relative = relativeTo(record.treePath, path);
      return relative !== undefined && (record.files === undefined || relative in record.files);
    }
    case "archive":
      return record.layer === layerDigest || (record.paths?.includes(path) ?? false);
  }
}

/** The host file's sha256, and for a directory the host path of the file itself. */
function hostSha256(record: HostFileRecord, path: string): { sha256?: string; hostPath?: string } {
  if (record.kind !== "directory") return record.sha256 ? { sha256: record.sha256 } : {};
  const relative = relativeTo(record.treePath, path)!;
  const sha256 = record.files?.[relative];
  return { hostPath: relative === "" ? record.hostPath : `${record.hostPath}/${relative}`, ...(sha256 ? { sha256 } : {}) };
}

function relativeTo(dir: string, path: string): string | undefined {
  if (dir === "") return path;
  if (path === dir) return "";
  return path.startsWith(`${dir}/`) ? path.slice(dir.length + 1) : undefined;
}
