// The guest's CA bundle, from the guest release's own ca-certificates package. osbuilder's
// Debian/Ubuntu builder copies the build machine's /etc/ssl/certs/ca-certificates.crt into
// the guest (with whatever local CAs that machine trusts) and points OpenSSL's default CA
// file at it. osbuild puts the same two paths in the guest, but the bundle is the one
// `update-ca-certificates` makes on a fresh install of the release's package: every
// certificate under /usr/share/ca-certificates, in C order, each ending with a newline. So
// it is the same bytes on every build machine, and no host file reaches the guest.

import { createHash } from "node:crypto";
import { lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, Tree } from "../../engine/index.js";

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

export const CA_PACKAGE = "ca-certificates";
export const CA_BUNDLE_PATH = "etc/ssl/certs/ca-certificates.crt";
/** OpenSSL's default CA file, linked to the bundle as osbuilder links it. */
export const OPENSSL_CERT_PATH = "usr/lib/ssl/cert.pem";
const OPENSSL_CERT_TARGET = "../../../etc/ssl/certs/ca-certificates.crt";

/** Where the package's certificates are, inside it. */
const CERTIFICATES_DIR = "usr/share/ca-certificates";

/**
 * Where the hook below leaves the package: in the new tree itself, which mmdebstrap's hooks
 * can write in both modes (without root they run as the user namespace's root, which cannot
 * reach the build user's private directories). `installCaBundle` takes it out again.
 */
export const CA_DOWNLOAD_DIR = ".osbuild-ca-download";

/**
 * An mmdebstrap customize hook that downloads the release's ca-certificates package into
 * the tree's CA_DOWNLOAD_DIR with the bootstrap's own apt configuration (so: the guest's
 * release and mirror, never the host's sources). Nothing in it comes from the base.
 */
export const DOWNLOAD_CA_HOOK = `mkdir "$1/${CA_DOWNLOAD_DIR}" && cd "$1/${CA_DOWNLOAD_DIR}" && APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get download --quiet --quiet -o APT::Sandbox::User=root ${CA_PACKAGE}`;

/** What the bundle was made from: for the log and the step's provenance. */
export interface CaBundleSource {
  certificates: number;
  /** The package as apt-get download named it: ca-certificates_VERSION_ARCH.deb (the version URL-encoded). */
  version: string;
  architecture: string;
  sha256: string;
}

/**
 * Writes the bundle made from the package DOWNLOAD_CA_HOOK left in the tree into it, and
 * OpenSSL's link to it; the package itself leaves the tree.
 */
export async function installCaBundle(exec: Exec, tree: Tree, workDir: string): Promise<CaBundleSource> {
  const downloadDir = tree.path(CA_DOWNLOAD_DIR, { followSymlink: false });
  try {
    return await bundleFrom(exec, tree, downloadDir, workDir);
  } finally {
    rmSync(downloadDir, { recursive: true, force: true });
  }
}

async function bundleFrom(exec: Exec, tree: Tree, downloadDir: string, workDir: string): Promise<CaBundleSource> {
  const debs = readdirSync(downloadDir).filter((name) => name.startsWith(`${CA_PACKAGE}_`) && name.endsWith(".deb"));
  if (debs.length !== 1) throw new Error(`expected one ${CA_PACKAGE} package from the bootstrap's apt, found ${debs.length}: ${debs.join(", ") || "none"}`);
  const unpacked = join(workDir, "ca-certificates");
  await exec("dpkg-deb", ["--extract", join(downloadDir, debs[0]!), unpacked]);
  const certificates = certificateFiles(join(unpacked, CERTIFICATES_DIR));
  if (certificates.length === 0) throw new Error(`the ${CA_PACKAGE} package ${debs[0]} holds no certificates under /${CERTIFICATES_DIR}`);
  const bundle = certificates.map((file) => {
    const pem = readFileSync(file);
    return pem.length === 0 || pem[pem.length - 1] === 0x0a ? pem : Buffer.concat([pem, Buffer.from("\n")]);
  });
  const bundlePath = tree.path(CA_BUNDLE_PATH);
  mkdirSync(join(bundlePath, ".."), { recursive: true });
  rmSync(bundlePath, { force: true });
  writeFileSync(bundlePath, Buffer.concat(bundle), { mode: 0o644 });
  const link = tree.path(OPENSSL_CERT_PATH, { followSymlink: false });
  mkdirSync(join(link, ".."), { recursive: true });
  rmSync(link, { force: true });
  symlinkSync(OPENSSL_CERT_TARGET, link);
  rmSync(unpacked, { recursive: true, force: true });
  const [, version = "unknown", architecture = "all"] = debs[0]!.slice(0, -".deb".length).split("_");
  const sha256 = createHash("sha256").update(readFileSync(join(downloadDir, debs[0]!))).digest("hex");
  return { certificates: certificates.length, version: decodeURIComponent(version), architecture, sha256 };
}

/** Every regular *.crt file below `dir` (symlinks not followed), by path in C order. */
function certificateFiles(dir: string): string[] {
  const found: Array<{ relative: string; path: string }> = [];
  const visit = (relative: string): void => {
    const here = relative === "" ? dir : join(dir, relative);
    for (const name of readdirSync(here)) {
      const path = relative === "" ? name : `${relative}/${name}`;
      const stats = lstatSync(join(dir, path));
      if (stats.isDirectory()) visit(path);
      else if (stats.isFile() && name.endsWith(".crt")) found.push({ relative: path, path: join(dir, path) });
    }
  };
  visit("");
  return found.sort((a, b) => Buffer.compare(Buffer.from(a.relative), Buffer.from(b.relative))).map((entry) => entry.path);
}
