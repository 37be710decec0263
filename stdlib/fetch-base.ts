// fetchBase: the bottom of a rootfs. From a distribution (mmdebstrap, as osbuilder does,
// or the distro's OCI image plus its package manager), from any OCI image, or from a
// directory or tar archive on the host.

import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defineStep, type Arch, type RootfsStepContext, type Tree } from "../engine/index.js";
import { mirrorLinesFromHost, readHostAptSources } from "./bootstrap/apt-sources.js";
import { CA_BUNDLE_PATH, CA_PACKAGE, DOWNLOAD_CA_HOOK, OPENSSL_CERT_PATH, installCaBundle } from "./bootstrap/ca-bundle.js";
import { DPKG_UNSAFE_IO_HOOKS } from "./bootstrap/dpkg-unsafe-io.js";
import { MAKEDEV_LINKS, MAKEDEV_NODES } from "./bootstrap/makedev.js";
import { DISTROS, findDistro, type Distro, type DistroName } from "./distros/index.js";
import type { DebianBootstrap } from "./distros/types.js";
import { BASE_FACTS_PATH, type BaseFacts } from "./facts.js";
import { ociArchitecture } from "../formats/oci.js";
import { parseImageReference, pullImage, RegistryError } from "./oci/registry.js";
import { packageNameProblem } from "./distros/package-names.js";
import { readAptLists } from "./bootstrap/apt-lists.js";
import { recordInstalledPackages } from "./packages/index.js";
import { DPKG_STATUS, parseDpkgStatus } from "./packages/dpkg.js";
import { mmdebstrapRequirements, sandboxRequirements } from "./machine.js";
import { runInTree } from "./sandbox.js";
import { ensureForeignPrograms } from "./binfmt.js";

/** mmdebstrap's variants (its --variant). */
const MMDEBSTRAP_VARIANTS = ["extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "-", "standard"];

export type InitSystem = "agent" | "systemd";

export interface DistroBase {
  /** A distribution osbuild knows (see stdlib/distros). */
  distro: DistroName;
  /** Release codename or version, e.g. "bookworm" or "12". Default: the distro's default. */
  release?: string;
  /** Packages on top of the distro's defaults (osbuilder's EXTRA_PKGS). */
  packages?: readonly string[];
  /** Who is PID 1: the agent, or systemd (which adds the distro's init packages). Default "systemd". */
  init?: InitSystem;
  /** mmdebstrap variant. Default: the distro's ("required", as osbuilder). */
  variant?: string;
  /**
   * Archive URLs (or full "deb URI suite components" lines) to bootstrap from. Default: the
   * host's apt sources for the same distribution, else the distro's default archive.
   */
  mirror?: string | readonly string[];
  /**
   * The guest's CA bundle at /etc/ssl/certs/ca-certificates.crt, and OpenSSL's
   * /usr/lib/ssl/cert.pem link to it, where osbuilder puts the build machine's bundle: made
   * from the release's own ca-certificates package (downloaded, not installed), so the same
   * on every machine. Default true for the mmdebstrap distros (Debian, Ubuntu), as osbuilder.
   */
  caCertificates?: boolean;
  /** Start from this OCI image instead of mmdebstrap, then install the packages in it. */
  image?: string;
  directory?: never;
  tarball?: never;
}

export interface ImageBase {
  /** An OCI image, "REGISTRY/REPO:TAG" or "REGISTRY/REPO@sha256:...", pulled as it is. */
  image: string;
  distro?: never;
  directory?: never;
  tarball?: never;
}

export interface DirectoryBase {
  /** A directory holding a root filesystem; copied with owners (when root), modes, links and xattrs. */
  directory: string;
  distro?: never;
  image?: never;
  tarball?: never;
}

export interface TarballBase {
  /** A tar archive (plain, gzip, zstd, xz or bzip2) of a root filesystem. */
  tarball: string;
  distro?: never;
  image?: never;
  directory?: never;
}

export type FetchBaseOptions = DistroBase | ImageBase | DirectoryBase | TarballBase;

export const fetchBase = defineStep({
  kind: "fetch-base",
  version: 7,
  inputs: [],
  output: "rootfs",
  hostPaths: ["directory", "tarball"],
  tools: (options: FetchBaseOptions, { arch, hostArch }) => {
    if (options.directory !== undefined) return [{ command: "cp", package: "coreutils" }];
    if (options.distro !== undefined && options.image === undefined && findDistro(options.distro)?.bootstrap.kind === "mmdebstrap") {
      const bootstrap = [
        { command: "mmdebstrap", package: "mmdebstrap" },
        { command: "unshare", package: "util-linux" },
        // mmdebstrap checks with it that the foreign architecture's programs run here.
        ...(arch === hostArch ? [] : [{ command: "arch-test", package: "arch-test" }]),
      ];
      if (!wantsCaBundle(options)) return bootstrap;
      return [...bootstrap, { command: "apt-get", package: "apt" }, { command: "dpkg-deb", package: "dpkg" }];
    }
    return [];
  },
  requirements(options: FetchBaseOptions, machine) {
    if (options.distro === undefined) return []; // an image, a directory or a tarball is only unpacked
    // An image bootstrap installs the packages by running the image's package manager.
    if (options.image !== undefined || findDistro(options.distro)?.bootstrap.kind === "image") return sandboxRequirements(machine);
    return mmdebstrapRequirements(machine);
  },
  validate(options: FetchBaseOptions) {
    const sources = (["distro", "image", "directory", "tarball"] as const).filter((name) => options[name] !== undefined);
    const onlyDistroAndImage = sources.length === 2 && sources.includes("distro") && sources.includes("image");
    if (sources.length !== 1 && !onlyDistroAndImage) {
      return `give exactly one of 'distro', 'image', 'directory' or 'tarball' (got ${sources.length === 0 ? "none" : sources.join(" and ")})`;
    }
    if (options.distro === undefined) return undefined;
    const distro = findDistro(options.distro);
    if (!distro) return `unknown distro '${options.distro}' (known: ${Object.keys(DISTROS).sort().join(", ")})`;
    const release = options.release ?? distro.defaultRelease;
    if (!Object.hasOwn(distro.releases, release)) {
      return `unknown ${distro.name} release '${release}' (known: ${Object.keys(distro.releases).filter((name) => !/^\d/.test(name)).join(", ")})`;
    }
    if (options.init === "systemd" && distro.initProcess !== "systemd") return `${distro.name} has no systemd: use init: "agent"`;
    if (options.packages !== undefined && !Array.isArray(options.packages)) return "packages must be an array of package names";
    for (const spec of options.packages ?? []) {
      const problem = packageNameProblem(distro.packageManager.format, spec);
      if (problem) return problem;
    }
    if (options.variant !== undefined && !MMDEBSTRAP_VARIANTS.includes(options.variant)) return `variant must be one of mmdebstrap's: ${MMDEBSTRAP_VARIANTS.join(", ")}`;
    return undefined;
  },
  async run(options: FetchBaseOptions, ctx) {
    if (options.tarball !== undefined) return ctx.appendLayer(options.tarball);
    if (options.directory !== undefined) {
      const tree = await ctx.tree();
      // The tree is empty, so cp cannot be led through a symlink already in it.
      await ctx.exec("cp", ["-a", "--no-target-directory", `${options.directory}/.`, tree.root]);
      ctx.provenance.hostFile("/", options.directory);
      recordInstalledPackages(ctx.provenance, tree);
      return;
    }
    if (options.distro === undefined) {
      await appendImage(ctx, options.image);
      return;
    }
    await bootstrapDistro(ctx, options);
  },
});

async function bootstrapDistro(ctx: RootfsStepContext<readonly []>, options: DistroBase): Promise<void> {
  const distro = findDistro(options.distro)!;
  if (!distro.architectures.includes(ctx.arch)) ctx.fail(`${distro.name} is not supported on ${ctx.arch} (supported: ${distro.architectures.join(", ")})`);
  const release = options.release ?? distro.defaultRelease;
  const init = options.init ?? (distro.initProcess === "systemd" ? "systemd" : "agent");
  const defaults = [...distro.packages.base, ...(init === "systemd" ? distro.packages.systemd : [])];
  const extra = [...(options.packages ?? [])];
  const facts: BaseFacts = {
    distro: distro.name,
    prettyName: distro.prettyName,
    release,
    version: distro.releases[release]!,
    architecture: ctx.arch,
    init,
    packages: { default: [...new Set(defaults)].sort(), extra: [...new Set(extra)].sort() },
  };
  const bootstrap = distro.bootstrap;
  if (options.image !== undefined || bootstrap.kind === "image") {
    const image = options.image ?? (bootstrap.kind === "image" ? bootstrap.image(release) : "");
    await appendImage(ctx, image);
    const tree = await ctx.tree();
    const packages = [...defaults, ...extra];
    ctx.log(`installing ${packages.join(" ")} in ${image}`);
    // The packages are the script's arguments: data, never a part of the command.
    await runInTree(ctx, tree, ["/bin/sh", "-ec", distro.packageManager.installScript, "install-packages", ...packages]);
    finishBase(tree, distro, facts);
    recordInstalledPackages(ctx.provenance, tree);
    return;
  }
  await mmdebstrap(ctx, distro, bootstrap, options, release, [...defaults, ...extra], facts);
}

async function mmdebstrap(
  ctx: RootfsStepContext<readonly []>,
  distro: Distro,
  bootstrap: DebianBootstrap,
  options: DistroBase,
  release: string,
  packages: readonly string[],
  facts: BaseFacts,
): Promise<void> {
  const asRoot = process.getuid?.() === 0;
  // The packages' maintainer scripts run in the new tree: another architecture's need QEMU.
  await ensureForeignPrograms(ctx, `bootstrapping ${distro.name} ${release} for ${ctx.arch}`);
  const mirrors = mirrorLines(distro, bootstrap, options, release, ctx.arch, ctx.hostArch);
  const caBundle = wantsCaBundle(options);
  const args = [
    `--mode=${asRoot ? "root" : "unshare"}`,
    `--variant=${options.variant ?? bootstrap.variant}`,
    `--architectures=${distro.archName(ctx.arch)}`,
    `--components=${bootstrap.components.join(",")}`,
    `--include=${packages.join(",")}`,
    ...(bootstrap.keyring ? [`--keyring=${bootstrap.keyring}`] : []),
    ...(caBundle ? [`--customize-hook=${DOWNLOAD_CA_HOOK}`] : []),
    ...DPKG_UNSAFE_IO_HOOKS,
  ];
  // apt's lists, copied out before mmdebstrap cleans them up: which snapshot of each mirror
  // the packages came from (mmdebstrap splits a hook's words on spaces: plain paths only).
  const listsDir = await ctx.tempDir();
  if (/^[A-Za-z0-9_./-]+$/.test(listsDir)) args.push(`--customize-hook=copy-out /var/lib/apt/lists ${listsDir}`);
  const record = (tree: Tree): void => recordBootstrap(ctx, tree, mirrors, join(listsDir, "lists"), distro.archName(ctx.arch));
  // Steps' tools start from a clean environment; a proxy the user set is what apt needs to reach the mirror.
  const env = { SOURCE_DATE_EPOCH: String(ctx.sourceDateEpoch), ...proxyEnvironment() };
  const finish = async (tree: Tree): Promise<void> => {
    finishBase(tree, distro, facts);
    if (!caBundle) return;
    const bundle = await installCaBundle(ctx.exec, tree, await ctx.tempDir());
    ctx.log(`/${CA_BUNDLE_PATH}: ${bundle.certificates} certificates of the release's ${CA_PACKAGE} ${bundle.version} package (osbuilder copies the build machine's bundle)`);
    ctx.provenance.component({ name: CA_PACKAGE, version: bundle.version, architecture: bundle.architecture, digests: { sha256: bundle.sha256 }, files: [CA_BUNDLE_PATH, OPENSSL_CERT_PATH] });
  };
  ctx.log(`mirrors:\n  ${mirrors.join("\n  ")}`);
  try {
    if (asRoot) {
      // As root, mmdebstrap writes straight into the tree: no tar to write, read and unpack.
      // It mounts /proc, /sys and /dev files inside the tree for the maintainer scripts: in a
      // mount and PID namespace of its own, those mounts exist only there, and the whole
      // bootstrap (apt, dpkg, the scripts) dies with osbuild (a mount namespace alone left
      // them running as orphans, writing into the dead build's tree). A build killed at any moment
      // leaves no mount in the cache and nothing still writing into it.
      const tree = await ctx.tree();
      const ownNamespaces = ["--pdeathsig", "KILL", "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--"];
      await ctx.exec("setpriv", [...ownNamespaces, "mmdebstrap", ...args, "--format=directory", release, tree.root, ...mirrors], { env, stdout: "log" });
      await finish(tree);
      record(tree);
      return;
    }
    // Without root: a tar made inside a user namespace (needs /etc/subuid), unpacked into the
    // step's tree (owners and devices kept as metadata) and finished as above, so that both
    // ways give the same layer.
    const tarball = join(await ctx.tempDir(), "base.tar");
    await ctx.exec("mmdebstrap", [...args, "--format=tar", release, tarball, ...mirrors], { env, stdout: "log" });
    const tree = await ctx.tree();
    await tree.extract(tarball);
    rmSync(tarball);
    await finish(tree);
    record(tree);
  } catch (error) {
    explainAptFailure(ctx, error, mirrors, release, packages);
  }
}

/** The proxy settings of osbuild's own environment, for the tools that download. */
function proxyEnvironment(): Record<string, string> {
  const names = ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];
  return Object.fromEntries(names.flatMap((name) => (process.env[name] ? [[name, process.env[name]!]] : [])));
}

/** What the bootstrap fetched (each mirror suite's release file) and the packages it installed, for the SBOM and provenance. */
function recordBootstrap(ctx: RootfsStepContext<readonly []>, tree: Tree, mirrors: readonly string[], listsDir: string, debianArch: string): void {
  let installed: string[] = [];
  try {
    installed = parseDpkgStatus(readFileSync(tree.path(DPKG_STATUS), "utf8")).map((pkg) => pkg.name);
  } catch {
    /* no dpkg database: nothing to match the lists against */
  }
  const lists = readAptLists(listsDir, mirrors, debianArch, new Set(installed));
  for (const snapshot of lists.snapshots) ctx.provenance.dependency(snapshot);
  const count = recordInstalledPackages(ctx.provenance, tree, lists.downloads);
  ctx.log(`${count} installed packages recorded (${lists.downloads.size} with their download location) from ${lists.snapshots.filter((snapshot) => snapshot.digest).length} mirror release file(s)`);
}

/** What osbuilder's build_rootfs does after the bootstrap, and the facts later steps read. */
function finishBase(tree: Tree, distro: Distro, facts: BaseFacts): void {
  for (const path of distro.prunePaths) rmSync(tree.path(path, { followSymlink: false }), { recursive: true, force: true });
  if (distro.bootstrap.kind === "mmdebstrap") {
    const varRun = tree.path("var/run", { followSymlink: false });
    rmSync(varRun, { recursive: true, force: true });
    symlinkSync("/run", varRun);
    makeDevices(tree);
    sandboxedAptOwners(tree);
  }
  const factsPath = tree.path(BASE_FACTS_PATH);
  mkdirSync(join(factsPath, ".."), { recursive: true });
  writeFileSync(factsPath, `${JSON.stringify(facts, null, 2)}\n`);
}

/**
 * apt gives its download directories to its sandbox user _apt, but only when that user can
 * reach the target directory: as root into a private cache directory it cannot, and the
 * owners would depend on where the cache lives. Set them as apt does when it can.
 */
function sandboxedAptOwners(tree: Tree): void {
  let passwd: string;
  try {
    passwd = readFileSync(tree.path("etc/passwd"), "utf8");
  } catch {
    return;
  }
  const aptUid = /^_apt:[^:]*:(\d+):/m.exec(passwd)?.[1];
  if (aptUid === undefined) return;
  for (const dir of ["var/cache/apt/archives/partial", "var/lib/apt/lists/partial"]) {
    if (existsSync(tree.path(dir, { followSymlink: false }))) tree.chown(dir, Number(aptUid), 0);
  }
}

/** What osbuilder's `MAKEDEV -v console tty ttyS null zero fd` makes in the guest's /dev. */
function makeDevices(tree: Tree): void {
  mkdirSync(tree.path("dev"), { recursive: true });
  tree.mknodAll(MAKEDEV_NODES.map((node) => ({ path: `dev/${node.name}`, type: node.type, major: node.major, minor: node.minor, mode: node.mode, uid: 0, gid: node.gid })));
  for (const [name, target] of MAKEDEV_LINKS) {
    const path = tree.path(`dev/${name}`, { followSymlink: false });
    rmSync(path, { recursive: true, force: true });
    symlinkSync(target, path);
  }
}

/** osbuilder's builders for these distros put a CA bundle in the guest; not when the package itself is asked for. */
function wantsCaBundle(options: DistroBase): boolean {
  if (options.image !== undefined || findDistro(options.distro)?.bootstrap.kind !== "mmdebstrap") return false;
  return (options.caCertificates ?? true) && !(options.packages ?? []).includes(CA_PACKAGE);
}

function mirrorLines(distro: Distro, bootstrap: DebianBootstrap, options: DistroBase, release: string, arch: Arch, hostArch: Arch): string[] {
  const components = bootstrap.components;
  if (options.mirror !== undefined) {
    const given = typeof options.mirror === "string" ? [options.mirror] : [...options.mirror];
    return given.map((mirror) => (mirror.startsWith("deb ") ? mirror : `deb ${mirror} ${release} ${components.join(" ")}`));
  }
  // The host's archive serves the host's architecture; another one only where the distro says so.
  const hostSources = readHostAptSources().filter((source) => arch === hostArch || (bootstrap.archiveServes?.(source.uri, arch) ?? true));
  const fromHost = mirrorLinesFromHost(hostSources, release, distro.name === "ubuntu" ? "ubuntu" : "debian", components);
  return fromHost.length > 0 ? fromHost : [`deb ${bootstrap.defaultMirror(arch)} ${release} ${components.join(" ")}`];
}

/** Turns apt's failure lines into what went wrong and what to do. */
function explainAptFailure(ctx: RootfsStepContext<readonly []>, error: unknown, mirrors: readonly string[], release: string, packages: readonly string[]): never {
  const message = (error as Error).message ?? String(error);
  const missing = /Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate/.exec(message);
  if (missing) ctx.fail(`package '${missing[1] ?? missing[2]}' does not exist in ${release} (asked for: ${packages.join(", ")})\n${message}`);
  if (/Could not connect|Could not resolve|Temporary failure resolving|Connection refused|Failed to fetch|Unable to connect|No route to host/.test(message)) {
    ctx.fail(`could not reach the mirror (${mirrors.map((line) => line.split(" ")[1]).join(", ")}): check the network or the 'mirror' option\n${message}`);
  }
  if (/does not have a Release file|Release' does not|404\s+Not Found/.test(message)) ctx.fail(`the mirror has no release '${release}': check 'release' and 'mirror'\n${message}`);
  if (/subuid|newuidmap|unshare/.test(message)) ctx.fail(`${message}\nwithout root, mmdebstrap needs subordinate ids: add a range for your user to /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER)`);
  throw error;
}

async function appendImage(ctx: RootfsStepContext<readonly []>, image: string): Promise<void> {
  const downloadDir = await ctx.tempDir();
  let pulled;
  try {
    pulled = await pullImage(image, { architecture: ociArchitecture(ctx.arch), downloadDir, log: (message) => ctx.log(message) });
  } catch (error) {
    if (error instanceof RegistryError) ctx.fail(`${error.message}${error.hint ? `\n${error.hint}` : ""}`);
    throw error;
  }
  for (const layer of pulled.layers) {
    await ctx.appendLayer(layer.path);
    rmSync(layer.path, { force: true });
  }
  const ref = parseImageReference(image);
  ctx.provenance.dependency({ name: image, uri: `docker://${ref.registry}/${ref.repository}@${pulled.manifestDigest}`, digest: { sha256: pulled.manifestDigest.replace(/^sha256:/, "") } });
}
