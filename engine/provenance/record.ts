// What a step records about where its result came from (ctx.provenance), checked as it is
// said and stored beside the step's cached result: the packages and components it holds,
// the inputs it fetched, the host files it put where, the commands it ran.

import { resolve } from "node:path";
import type { PreparedStep } from "../build.js";
import { StepFailure } from "../errors.js";
import type { DirectoryListing, Fingerprint } from "../fingerprint.js";
import type { Digest } from "../key.js";
import type { Store } from "../store.js";
import type { Component, ResolvedInput, StepProvenance } from "../types.js";

/** Where some of a step's files came from on the host. */
export interface HostFileRecord {
  /** The step option that named it. */
  option: string;
  /** Absolute host path. */
  hostPath: string;
  kind: "file" | "directory" | "archive";
  /** Of a file or an archive. */
  sha256?: string;
  /** Where it landed, as layers spell paths ("" is the root). */
  treePath: string;
  /** A directory's files: path relative to it → sha256. */
  files?: Record<string, string>;
  /** An archive's entries, where they were unpacked to. */
  paths?: string[];
  /** An archive appended as a whole layer. */
  layer?: string;
}

export interface StepProvenanceRecord {
  schema: 1;
  databases?: Record<string, Component[]>;
  components?: Component[];
  dependencies?: ResolvedInput[];
  hostFiles?: HostFileRecord[];
  commands?: string[];
}

export interface HostInput {
  option: string;
  /** Its place in the option's list, when the option takes several paths. */
  index?: number;
  /** Absolute path. */
  path: string;
  fingerprint: Fingerprint;
  listing?: DirectoryListing;
}

/** The host paths of a step's options, resolved, with the fingerprints its key holds. */
export function hostInputsOf(prepared: PreparedStep): HostInput[] {
  const inputs: HostInput[] = [];
  const keyed = prepared.optionsForKey as Record<string, unknown>;
  for (const [option, written] of Object.entries(prepared.hostPaths)) {
    const paths = prepared.options[option] as string | string[];
    const fingerprints = keyed[option] as Fingerprint | Fingerprint[];
    const list = Array.isArray(paths) ? paths : [paths];
    const writtenList = Array.isArray(written) ? written : [written];
    list.forEach((path, index) => {
      const fingerprint = Array.isArray(fingerprints) ? fingerprints[index]! : fingerprints;
      const listing = prepared.listings[writtenList[index]!];
      inputs.push({ option, path, fingerprint, ...(Array.isArray(paths) ? { index } : {}), ...(listing ? { listing } : {}) });
    });
  }
  return inputs;
}

/** The sha256 of each file of a directory listing, by path relative to the directory (`under` it, when given). */
function listedFiles(listing: DirectoryListing, under = ""): Record<string, string> {
  const files: Record<string, string> = {};
  const prefix = under === "" ? "" : `${under}/`;
  for (const [path, line] of Object.entries(listing)) {
    if (!line.startsWith("f ") || !path.startsWith(prefix)) continue;
    files[path.slice(prefix.length)] = line.slice(line.lastIndexOf(" ") + 1);
  }
  return files;
}

/** The step's side of `ctx.provenance`. */
export class ProvenanceRecorder implements StepProvenance {
  private readonly record: StepProvenanceRecord = { schema: 1 };
  private readonly inputs: HostInput[];

  constructor(
    prepared: PreparedStep,
    /** The layer path of a tree path, parent symlinks resolved (rootfs steps, once their tree exists). */
    private readonly layerPath: (path: string) => string,
  ) {
    this.inputs = hostInputsOf(prepared);
  }

  packages(database: string, packages: readonly Component[]): void {
    if (typeof database !== "string" || database === "") throw new StepFailure("provenance.packages: name the database, e.g. \"dpkg\"");
    (this.record.databases ??= {})[database] = packages.map(checkedComponent);
  }

  component(component: Component): void {
    const checked = checkedComponent(component);
    if (checked.files) checked.files = checked.files.map((path) => this.layerPath(path));
    (this.record.components ??= []).push(checked);
  }

  dependency(input: ResolvedInput): void {
    if (typeof input?.name !== "string" || typeof input.uri !== "string") throw new StepFailure("provenance.dependency: give at least a name and a uri");
    (this.record.dependencies ??= []).push(structuredClone(input) as ResolvedInput);
  }

  command(text: string): void {
    (this.record.commands ??= []).push(String(text));
  }

  hostFile(treePath: string, hostPath: string): void {
    const absolute = resolve(hostPath);
    const input = this.inputs.find((candidate) => candidate.path === absolute) ?? this.inputs.find((candidate) => candidate.fingerprint.type === "dir" && absolute.startsWith(`${candidate.path}/`));
    if (!input) {
      const options = [...new Set(this.inputs.map((candidate) => candidate.option))];
      throw new StepFailure(`provenance.hostFile: ${hostPath} is not named by the step's host path options${options.length > 0 ? ` (${options.join(", ")})` : " (it has none)"}`);
    }
    const landed = this.layerPath(treePath);
    const base = { option: input.option, hostPath: absolute, treePath: landed };
    if (absolute === input.path && input.fingerprint.type === "file") {
      this.pushHost({ ...base, kind: "file", sha256: input.fingerprint.sha256 });
      return;
    }
    const relative = absolute === input.path ? "" : absolute.slice(input.path.length + 1);
    const fileLine = relative === "" ? undefined : input.listing?.[relative];
    if (fileLine?.startsWith("f ")) {
      this.pushHost({ ...base, kind: "file", sha256: fileLine.slice(fileLine.lastIndexOf(" ") + 1) });
      return;
    }
    // A directory: its files by path below it (unknown past the fingerprint's listing limit).
    this.pushHost({ ...base, kind: "directory", ...(input.listing ? { files: listedFiles(input.listing, relative) } : {}) });
  }

  /** `tree.extract` of an archive: recorded when the archive is one of the step's host paths. */
  extracted(archive: string, paths: readonly string[]): void {
    const input = this.archiveInput(archive);
    if (input) this.pushHost({ option: input.option, hostPath: input.path, kind: "archive", sha256: input.fingerprint.sha256, treePath: "", paths: [...paths] });
  }

  /** `appendLayer` of an archive: the whole layer came from it when it is a host path. */
  appended(archive: string, layer: Digest): void {
    const input = this.archiveInput(archive);
    if (input) this.pushHost({ option: input.option, hostPath: input.path, kind: "archive", sha256: input.fingerprint.sha256, treePath: "", layer });
  }

  private archiveInput(archive: string): HostInput | undefined {
    const absolute = resolve(archive);
    return this.inputs.find((candidate) => candidate.path === absolute && candidate.fingerprint.type === "file");
  }

  private pushHost(record: HostFileRecord): void {
    (this.record.hostFiles ??= []).push(record);
  }

  /** Stores what was said (nothing when nothing was), returning its digest for the action record. */
  async save(store: Store, key: string): Promise<Digest | undefined> {
    if (Object.keys(this.record).length === 1) return undefined;
    return (await store.putJson(`osbuild:provenance:${key}`, this.record)).digest;
  }
}

function checkedComponent(component: Component): Component {
  if (typeof component?.name !== "string" || component.name === "" || typeof component.version !== "string") {
    throw new StepFailure(`provenance: a component needs a name and a version (got ${JSON.stringify(component)?.slice(0, 120)})`);
  }
  return structuredClone(component) as Component;
}

/** The record stored under `digest`. Throws CorruptContentError when it does not match. */
export function readProvenance(store: Store, digest: Digest): StepProvenanceRecord | undefined {
  const data = store.readBytesSync(digest);
  return data ? (JSON.parse(data.toString("utf8")) as StepProvenanceRecord) : undefined;
}
