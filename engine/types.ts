// The public API of osbuild, in one file: what a config and a step author can use.
// Everything here is re-exported from "osbuild". Nothing else of the engine is public.

import type { Readable } from "node:stream";
import type { ResourceDescriptor } from "../formats/in-toto.js";

export type { ResourceDescriptor } from "../formats/in-toto.js";

// ---------------------------------------------------------------------------
// Artifacts: the values that flow along the edges of the build graph.

declare const rootfsBrand: unique symbol;
declare const blobBrand: unique symbol;

/** A tree of files (an ordered stack of OCI layers). Made by steps such as fetchBase. */
export interface Rootfs {
  readonly kind: "rootfs";
  readonly [rootfsBrand]: true;
}

/** One file: an initrd, a disk image, a root-hash file. */
export interface Blob {
  readonly kind: "blob";
  readonly [blobBrand]: true;
}

export type Artifact = Rootfs | Blob;
export type ArtifactKind = Artifact["kind"];

/** Target architectures, in `uname -m` spelling. */
export type Arch = "x86_64" | "aarch64" | "ppc64le" | "s390x";

// ---------------------------------------------------------------------------
// Configs

/** What a config's build function returns: target name → artifact. */
export type Targets = Record<string, Artifact>;

// ---------------------------------------------------------------------------
// Commands: more `osbuild` subcommands, written like steps against this API.

export interface CommandOption {
  type: "string" | "boolean";
  multiple?: boolean;
  description: string;
}

export type CommandOptionValues = Readonly<Record<string, string | boolean | string[] | undefined>>;

export interface CommandSpec {
  /** The subcommand, e.g. "boot". */
  name: string;
  /** One line for `osbuild --help`. */
  summary: string;
  /** e.g. "boot TARGET [--kernel PATH] [--expect TEXT]" */
  usage: string;
  options?: Readonly<Record<string, CommandOption>>;
  /**
   * The command parses its own arguments (a getopt-style front door, make-style VAR=VALUE):
   * `run` gets everything after the command's name as it was given, and no options. Only
   * osbuild's own options written before the name (`osbuild --cache-dir DIR NAME ...`) apply.
   */
  rawArguments?: boolean;
  /** Returns the exit status. Throw ConfigError-like errors for bad usage. */
  run(args: readonly string[], options: CommandOptionValues, ctx: CommandContext): Promise<number>;
}

export interface BuiltOutputs {
  ok: boolean;
  /** The architecture the outputs are for (the config's, or what the command asked for). */
  arch: Arch;
  /** target name → path of the written output */
  outputs: Record<string, string>;
  /**
   * target name → the SBOM (SPDX 2.3 JSON) and the provenance (in-toto Statement v1, SLSA
   * Provenance v1) written beside it, as `<target>.spdx.json` and `<target>.intoto.json`.
   * A command that renames an output (the osbuilder drop-in) copies these beside it; one
   * that pushes it attaches them as referrers (see formats/oci.ts `referrerManifest`).
   */
  attestations: Record<string, Attestations>;
}

export interface Attestations {
  /** Path of the SBOM: every rootfs target and every blob packed from a rootfs has one. */
  sbom?: string;
  /** Path of the provenance statement. */
  provenance?: string;
}

/** How `CommandContext.build` may differ from `osbuild run` with the config as it is. */
export interface BuildOverrides {
  outDir?: string;
  cacheDir?: string;
  /**
   * Parameter values instead of the config's defaults, as a provenance statement records
   * them (`externalParameters.parameters`): paths relative to the config's directory.
   */
  params?: Readonly<Record<string, string | number | boolean>>;
  /** Instead of the config's `sourceDateEpoch` (and SOURCE_DATE_EPOCH). */
  sourceDateEpoch?: number;
  /** Instead of the config's `arch` (and `--arch`): what the osbuilder drop-in's ARCH= asks for. */
  arch?: Arch;
}

export interface CommandContext {
  readonly cacheDir: string;
  readonly outDir: string;
  /** The config's target names (loads and type-checks it). */
  targetNames(): Promise<string[]>;
  /**
   * Builds targets of the config as `osbuild run` would, reporting progress on stderr. With
   * `cacheDir`, from that cache alone (no --cache-from/--cache-to registries either).
   */
  build(targets?: readonly string[], overrides?: BuildOverrides): Promise<BuiltOutputs>;
  /**
   * What a build of these targets would record as its inputs in the provenance, found
   * without building: the config's files and every host file or directory the steps name,
   * by digest (`resolvedDependencies` named "config:…" and "host:…"). What steps fetch
   * themselves (a mirror, an image) is known only after a build.
   */
  buildInputs(targets?: readonly string[], overrides?: BuildOverrides): Promise<ResourceDescriptor[]>;
  /**
   * Builds artifacts made by steps called in code (not in the config), cached like any
   * other, into a directory of their own under the cache (or `settings.outDir`).
   */
  buildArtifacts(name: string, targets: () => Targets, settings?: ArtifactBuildSettings): Promise<BuiltOutputs>;
  /** A line on stderr, so that stdout stays the command's own. */
  log(message: string): void;
}

/** How `buildArtifacts` builds: what a config would say, for artifacts made in code. */
export interface ArtifactBuildSettings {
  /** Seconds; default 0. */
  sourceDateEpoch?: number;
  /** Default: the machine's. */
  arch?: Arch;
  /** Where the targets are written. Default: a directory of its own under the cache. */
  outDir?: string;
  /** Show step logs as they come (as `--verbose`). */
  verbose?: boolean;
  /**
   * Write the SBOM and provenance beside the outputs, as `osbuild run` does, with
   * `parameters` as how the build was asked for (a drop-in's command line and variables).
   */
  attest?: { parameters: Readonly<Record<string, unknown>> };
}

export interface ParamSpec<T> {
  readonly type: "string" | "path" | "number" | "boolean" | "choice";
  readonly default: T;
  readonly description?: string;
  /** Allowed values of a `choice` parameter. */
  readonly choices?: readonly string[];
}

export type ParamSpecs = Record<string, ParamSpec<unknown>>;
export type ParamValues<P extends ParamSpecs> = { readonly [K in keyof P]: P[K] extends ParamSpec<infer T> ? T : never };

export interface ConfigOptions<P extends ParamSpecs> {
  /** Typed parameters, overridable with `osbuild run --set NAME=VALUE`. */
  params?: P;
  /**
   * The time every file's mtime is clamped to, in seconds since the epoch. The
   * `SOURCE_DATE_EPOCH` environment variable overrides it. Default 0.
   */
  sourceDateEpoch?: number;
  /** The architecture the artifacts are for. Default: the machine's. */
  arch?: Arch;
  /** Write `out/<target>.spdx.json` beside every rootfs-derived target. Default true (`osbuild run --no-sbom` turns it off). */
  sbom?: boolean;
  /** Write `out/<target>.intoto.json` (SLSA provenance) beside every target. Default true (`--no-provenance`). */
  provenance?: boolean;
  /**
   * A cache shared through OCI registries, as `oci://HOST[:PORT]/REPOSITORY`: step results are
   * looked up in `from` (in order) after the local cache, and pushed to `to`. The flags
   * --cache-from/--cache-to and OSBUILD_CACHE_FROM/OSBUILD_CACHE_TO override these.
   */
  cache?: { from?: string | readonly string[]; to?: string };
  /** Builds the graph: calls steps and returns the named targets. */
  targets: (params: ParamValues<P>) => Targets;
}

// ---------------------------------------------------------------------------
// Steps

/** Options every step accepts. */
export interface CommonStepOptions {
  /** The step's id in `osbuild graph`, `explain` and the events. Default: its kind, numbered when repeated. */
  id?: string;
}

/** An external program a step runs. Its version is part of the step's cache key. */
export interface ToolSpec {
  /** Program name looked up on PATH. */
  command: string;
  /** Arguments that print its version. Default `["--version"]`. */
  versionArgs?: readonly string[];
  /** The Debian package that provides it, named in the error when it is missing. */
  package: string;
  /**
   * The step does without it when it is not installed (`ctx.hasTool` says which): its
   * absence is then what the cache key records, so installing it later rebuilds the step.
   */
  optional?: boolean;
}

/** The machine a build runs on, as a step's `requirements` see it. */
export interface BuildMachine {
  /** The architecture the artifacts are for. */
  readonly arch: Arch;
  /** The build machine's own architecture. */
  readonly hostArch: Arch;
  /** Whether the build runs as root. */
  readonly root: boolean;
}

/**
 * Something a step needs of the build machine besides its programs (user namespaces,
 * subordinate ids, emulation of another architecture), checked by `osbuild doctor`.
 */
export interface MachineRequirement {
  /** What is needed, e.g. "user namespaces". Requirements with the same name are checked once. */
  readonly name: string;
  /** Looks at the machine: undefined when the requirement is met, else what is wrong. */
  check(): MachineProblem | undefined;
}

export interface MachineProblem {
  /** What is wrong, e.g. "no range for ci in /etc/subuid". */
  readonly problem: string;
  /** What to do about it, as a command when there is one. */
  readonly fix: string;
  /** Debian packages that are part of the fix (they join doctor's apt-get line). */
  readonly packages?: readonly string[];
}

/** What a step produces: a rootfs, one blob, or several named blobs. */
export type OutputSpec = "rootfs" | "blob" | { readonly blobs: readonly string[] };

export type OutputOf<O extends OutputSpec> = O extends "rootfs"
  ? Rootfs
  : O extends "blob"
    ? Blob
    : O extends { readonly blobs: readonly (infer N extends string)[] }
      ? { readonly [K in N]: Blob }
      : never;

type ArtifactOf<K extends ArtifactKind> = K extends "rootfs" ? Rootfs : Blob;
export type ArtifactsOf<I extends readonly ArtifactKind[]> = { [N in keyof I]: ArtifactOf<I[N]> };

/** Option keys whose values are host paths (string or string[]). */
export type PathOptionKeys<O> = {
  [K in keyof O]-?: NonNullable<O[K]> extends string | readonly string[] ? K : never;
}[keyof O] &
  string;

export interface StepSpec<Options, Inputs extends readonly ArtifactKind[], Output extends OutputSpec> {
  /** Kebab-case name, e.g. "mk-cpio". Also the default step id. */
  kind: string;
  /** Bump whenever the step's behaviour changes: old cache entries stop matching. */
  version: number;
  /** Artifact kinds of the positional inputs, e.g. `["rootfs"]`. */
  inputs: Inputs;
  output: Output;
  /**
   * Options that name files or directories on the host. They are resolved against the
   * config file's directory, and the cache key holds a hash of their content, not the path.
   */
  hostPaths?: readonly PathOptionKeys<Options>[];
  /** Programs the step runs; checked before the build starts, versions go into the key. */
  tools?: readonly ToolSpec[] | ((options: Options, machine: BuildMachine) => readonly ToolSpec[]);
  /** What the step needs of the machine besides its tools; `osbuild doctor` checks them. */
  requirements?: (options: Options, machine: BuildMachine) => readonly MachineRequirement[];
  /** Checks options when the config is evaluated; return an error message to reject them. */
  validate?: (options: Options) => string | undefined;
  /**
   * The media type of each blob output, by name ("out" for a single blob), for `osbuild push`.
   * Default application/octet-stream.
   */
  mediaTypes?: Readonly<Record<string, string>> | ((options: Options) => Readonly<Record<string, string>>);
  /** Does the work. Must be deterministic given its options, inputs and tools. */
  run(options: Options, ctx: StepContext<Inputs, Output>): Promise<void>;
}

/** The function a step definition returns: calling it adds a node to the graph. */
export type StepFunction<Options, Inputs extends readonly ArtifactKind[], Output extends OutputSpec> = (
  ...args: {} extends Options
    ? [...ArtifactsOf<Inputs>, options?: Options & CommonStepOptions]
    : [...ArtifactsOf<Inputs>, options: Options & CommonStepOptions]
) => OutputOf<Output>;

// ---------------------------------------------------------------------------
// What a running step sees

/**
 * Software a step's result holds: a package of the distribution, or a program a step
 * installed. Recorded through `ctx.provenance`, kept beside the result in the cache (never
 * in the image), listed in the SBOM and named by `osbuild why`.
 */
export interface Component {
  name: string;
  version: string;
  /** As the package manager spells it ("amd64", "all", "x86_64"). */
  architecture?: string;
  /** A package URL, e.g. "pkg:deb/debian/chrony@4.3-2%2Bdeb12u1?arch=amd64&distro=debian-12". */
  purl?: string;
  /** What it was built from, e.g. Debian's source package and its version. */
  source?: { readonly name: string; readonly version: string };
  /** SPDX form: "Person: NAME (EMAIL)" or "Organization: NAME". */
  supplier?: string;
  /** Where the package file can be fetched (a mirror's pool URL). */
  downloadLocation?: string;
  /** Of the package file it came in (a .deb), or of the program itself: algorithm → hex. */
  digests?: Readonly<Record<string, string>>;
  /** The paths it installed, directories too, as layers spell them ("usr/sbin/chronyd"): `osbuild why` matches on them. */
  files?: readonly string[];
}

/** Something a step fetched that its cache key does not hold by content: a mirror's release file, an image by digest. */
export interface ResolvedInput {
  /** e.g. "http://deb.debian.org/debian bookworm" or "docker.io/library/alpine:3.19" */
  name: string;
  /** Where it was fetched from. */
  uri: string;
  /** algorithm → hex, e.g. { sha256: "…" } of the release file or the image manifest. */
  digest?: Readonly<Record<string, string>>;
  annotations?: Readonly<Record<string, string>>;
}

/**
 * What a step tells about where its result came from, beyond what the engine sees itself
 * (which step made which layer, the host files named in options, by digest). Read by
 * `osbuild why`, the SBOM and the provenance; stored beside the step's cached result.
 * Archives the step unpacks with `tree.extract` and layers it appends with `appendLayer`
 * are recorded by the engine when they are host paths of its options.
 */
export interface StepProvenance {
  /**
   * A reading of a package database (`database`: "dpkg", "apk", "rpm"): every package the
   * result holds. It stands for the whole database: a later step's reading of the same one
   * replaces it (keeping fields such as download locations that the later one lacks).
   */
  packages(database: string, packages: readonly Component[]): void;
  /** One more component, e.g. the agent the step installed (with its sha256 and version). */
  component(component: Component): void;
  /** Something the step fetched: a mirror's release file, an image manifest, by digest. */
  dependency(input: ResolvedInput): void;
  /**
   * `treePath` (a file, or a directory and what is below it) came from `hostPath`, a file
   * or directory given in one of the step's `hostPaths` options (or inside one). Say it after
   * the file is in place; a final symlink in `treePath` is not followed. A file may have been
   * processed on the way (a stripped binary); below a directory, only files that are still
   * copies of the host's count as coming from it.
   */
  hostFile(treePath: string, hostPath: string): void;
  /** The commands that made the step's changes, e.g. the script of a `run` step. */
  command(text: string): void;
}

/** The type of a file in a rootfs. */
export type FileType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/** One file of a rootfs, with the metadata that packers need (owners come from here, not from disk). */
export interface FileEntry {
  /** Path without a leading "/", e.g. "usr/bin/env". */
  readonly path: string;
  readonly type: FileType;
  /** Permission bits, including setuid/setgid/sticky. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** Regular files: the sha256 (hex) of the content. */
  readonly sha256?: string;
  /** Seconds since the epoch, already clamped to the build's source date. */
  readonly mtime: number;
  /** Symlink target, or for a hardlink the path of the file it shares data with. */
  readonly linkTarget?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** Extended attributes, e.g. "security.capability". */
  readonly xattrs?: Readonly<Record<string, Buffer>>;
}

/** What `RootfsInput.readLayer` yields: each entry, then its data in order, then its end. */
export type LayerEvent = { readonly type: "entry"; readonly entry: FileEntry } | { readonly type: "data"; readonly chunk: Buffer } | { readonly type: "end" };

/** A rootfs given to a step as input. */
export interface RootfsInput {
  readonly kind: "rootfs";
  /** sha256 digest of the layer list. */
  readonly digest: string;
  readonly layers: readonly { readonly digest: string; readonly size: number }[];
  /** Every file of the merged tree, sorted by path. */
  entries(): Promise<readonly FileEntry[]>;
  /** Looks up one path of the merged tree; symlinks in it are resolved inside the tree, the final one only with `follow`. */
  stat(path: string, options?: { follow?: boolean }): Promise<FileEntry | undefined>;
  /** The content of one regular file of the merged tree. */
  readFile(path: string): Promise<Buffer>;
  /**
   * The rootfs split by layer, bottom first: for each layer, the entries of the merged tree
   * that it provides, in path order. Every path appears once: a directory in the lowest
   * layer that has it, with its final metadata, so parents always come before children.
   * Whited-out and overwritten files appear nowhere.
   */
  layerParts(): Promise<ReadonlyArray<{ readonly digest: string; readonly entries: readonly FileEntry[] }>>;
  /**
   * Streams one layer's part (see `layerParts`) with file contents, verifying the layer's
   * integrity as it is read (the iteration throws if it does not match). Events come in
   * batches, one per chunk read: handle a batch, then await your output's backpressure.
   */
  readLayer(index: number): AsyncIterable<readonly LayerEvent[]>;
  /**
   * A directory holding the merged tree, for tools that read directories (mke2fs -d).
   * Shared and read-only: never modify it. Owners on disk are exact only when running as root.
   */
  materialize(): Promise<string>;
}

/** A blob given to a step as input. */
export interface BlobInput {
  readonly kind: "blob";
  readonly digest: string;
  readonly size: number;
  /** A path to read the blob from (read-only). */
  path(): Promise<string>;
}

export type InputOf<K extends ArtifactKind> = K extends "rootfs" ? RootfsInput : BlobInput;
export type InputsOf<I extends readonly ArtifactKind[]> = { [N in keyof I]: InputOf<I[N]> };

/** The rootfs a rootfs-producing step writes. */
/** A device node or fifo to create in a tree. */
export interface SpecialNodeSpec {
  type: "char" | "block" | "fifo";
  major?: number;
  minor?: number;
  mode: number;
  uid?: number;
  gid?: number;
}

export interface Tree {
  /** The directory holding the tree. Prefer `path()` for writing: it never leaves the tree. */
  readonly root: string;
  /**
   * The host path of `path` inside the tree, resolving symlinks as a chroot would, so that
   * writing to it never leaves the tree. With `followSymlink: false` a final symlink is
   * returned itself (to remove or replace it; don't write through it).
   */
  path(path: string, options?: { followSymlink?: boolean }): string;
  /** Sets the owner recorded in the layer (works without root). */
  chown(path: string, uid: number, gid: number): void;
  /** Creates a device node or fifo (recorded in the layer; on disk only when root). */
  mknod(path: string, node: SpecialNodeSpec): void;
  /** Creates many at once: as root, one mknod process for all of them instead of one each. */
  mknodAll(nodes: ReadonlyArray<SpecialNodeSpec & { path: string }>): void;
  /** Sets an extended attribute recorded in the layer. */
  setXattr(path: string, name: string, value: Buffer): void;
  /**
   * Unpacks a tar archive (plain, gzip, zstd, xz, bzip2) into the tree at `to` (default
   * "/"), keeping numeric owners, modes, links, devices and xattrs. Symlinks already in the
   * tree are followed as in a chroot (so "lib/x" lands in usr/lib when lib → usr/lib);
   * entries that would leave the tree are refused.
   */
  extract(archive: string, options?: { to?: string }): Promise<void>;
  /**
   * Runs `fn` while every owner on disk is shifted up by `offset` (uid + offset, gid +
   * offset), for a program in a user namespace that maps the tree's ids 0–65535 to
   * offset–offset+65535, so that it never holds the host's real ids, root's included.
   * What `fn` changes is recorded as usual; owners (and the setuid bits and file
   * capabilities a chown clears) are put back after it. Without root the tree's owners live
   * in the layer, not on disk: `fn` just runs.
   */
  withShiftedOwners<T>(offset: number, fn: () => Promise<T>): Promise<T>;
}

export interface ExecOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Data for the program's standard input (a stream is piped with backpressure). */
  input?: string | Buffer | Readable;
  /** Where stdout goes: into the result (default), the step log, or a file. */
  stdout?: "capture" | "log" | { file: string };
}

export interface ExecResult {
  stdout: Buffer;
  stderr: string;
}

interface StepContextBase<Inputs extends readonly ArtifactKind[]> {
  /** The step's id, as in `osbuild graph`. */
  readonly id: string;
  /**
   * The step's cache key (hex): equal exactly when kind, version, options, inputs, tool
   * versions, architecture and source date are. Ids an output must hold (UUIDs, salts) are
   * derived from it, so that two builds with one key make the same bytes.
   */
  readonly key: string;
  readonly arch: Arch;
  /** The build machine's architecture (programs of other architectures need emulation). */
  readonly hostArch: Arch;
  /** Clamp every time you write to this (seconds). */
  readonly sourceDateEpoch: number;
  /** How many CPU cores the step may use. */
  readonly cores: number;
  readonly inputs: InputsOf<Inputs>;
  /** A line for the step's log (shown with --verbose and when the step fails). */
  log(message: string): void;
  /** Whether a tool the step declared is installed (always true for one that is not `optional`). */
  hasTool(command: string): boolean;
  /** Runs a program; a non-zero exit fails the step with its stderr. */
  exec(command: string, args: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** A fresh private directory, removed when the step ends. */
  tempDir(): Promise<string>;
  /** Fails the step with a message telling the user what to do. */
  fail(message: string): never;
  /**
   * A file made once and kept in the store: `make` writes it at the path it is given; later
   * calls with an equal `key` (in this build or any other; scoped to the step's kind and
   * version) return the stored file, read-only, without running `make` again. For the parts
   * of a step's work that survive small input changes, such as an initrd's lower layers.
   */
  reuse(key: unknown, make: (path: string) => Promise<void>): Promise<string>;
  /** Where the result came from (packages, host files, fetched inputs), for `osbuild why`, the SBOM and the provenance. */
  readonly provenance: StepProvenance;
}

export interface RootfsStepContext<Inputs extends readonly ArtifactKind[]> extends StepContextBase<Inputs> {
  /**
   * The tree to change: a private copy of the first rootfs input (empty when there is
   * none) plus any layers appended before. When the step ends, the engine records what
   * changed as one new layer.
   */
  tree(): Promise<Tree>;
  /**
   * Adds a tar archive (plain, gzip, zstd, xz or bzip2; OCI whiteouts honoured) as a new
   * layer on top, as it is. Must come before `tree()`.
   */
  appendLayer(tarPath: string): Promise<void>;
}

export interface BlobStepContext<Inputs extends readonly ArtifactKind[]> extends StepContextBase<Inputs> {
  /** Where the step writes its blob (or, with several outputs, the named one). */
  outputPath(name?: string): string;
}

export type StepContext<Inputs extends readonly ArtifactKind[], Output extends OutputSpec> = Output extends "rootfs"
  ? RootfsStepContext<Inputs>
  : BlobStepContext<Inputs>;
