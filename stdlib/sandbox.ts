// Runs commands inside a rootfs tree, like a Dockerfile RUN: always in a user namespace of
// its own, with private mount and PID namespaces, /proc, a minimal /dev and the host's DNS.
// The rootfs's root is root only inside: as root, the tree's ids 0–65535 are mapped to an
// unused host range (the tree's owners shifted there for the run), so that a hostile
// program that leaves the chroot holds no host privilege; without root, the rootfs's root
// is the building user. Nothing is mounted on the host, the namespace takes every mount and
// process with it when the command ends, and the environment is only what is named here.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Writable } from "node:stream";
import type { ExecResult, RootfsStepContext, Tree } from "../engine/index.js";
import { ensureForeignPrograms } from "./binfmt.js";

export interface SandboxOptions {
  /** Keep the network (default true; false runs in an empty network namespace). */
  network?: boolean;
  env?: Record<string, string>;
  /** Working directory inside the tree. Default "/". */
  cwd?: string;
}

const DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** How many ids the namespace maps (a rootfs's users and groups live below 65536). */
const MAPPED_IDS = 65536;

/**
 * Prepares the namespace and chroots into the tree, which is the working directory it
 * starts in (so no host path is walked once the ids are mapped). $1 is the working directory
 * inside the tree, the rest the command. Paths are all relative: nothing here names a host
 * path but the device nodes bound in.
 */
const PREPARE = `set -eu
cwd=$1; shift
mkdir -p proc dev sys
mount -t proc proc proc
mount -t tmpfs -o mode=0755,nosuid tmpfs dev
for device in ${DEVICES.join(" ")}; do
  touch "dev/$device"
  mount --bind "/dev/$device" "dev/$device"
done
ln -s /proc/self/fd dev/fd
mkdir -p dev/pts dev/shm
if [ -n "\${OSBUILD_RESOLV_CONF:-}" ] && [ -f etc/resolv.conf ] && [ ! -L etc/resolv.conf ]; then
  mount --bind /etc/resolv.conf etc/resolv.conf
fi
unset OSBUILD_RESOLV_CONF
exec chroot . /bin/sh -c 'cd "$1" && shift && exec "$@"' osbuild "$cwd" "$@"
`;

/**
 * As root, the namespace starts unmapped: this says so on fd 4, waits on fd 3 until osbuild
 * has written the id maps, then becomes the namespace's root and runs PREPARE.
 */
const MAPPED_STAGE = `set -eu
echo ready >&4
exec 4>&-
IFS= read -r go <&3
exec 3<&-
[ "$go" = go ]
exec setpriv --reuid=0 --regid=0 --clear-groups sh -c "$0" osbuild-sandbox "$@"
`;

type SandboxContext = Pick<RootfsStepContext<readonly never[]>, "sourceDateEpoch" | "fail" | "log" | "arch" | "hostArch" | "exec">;

export async function runInTree(ctx: SandboxContext, tree: Tree, command: readonly string[], options: SandboxOptions = {}): Promise<ExecResult> {
  const network = options.network ?? true;
  // tree.path resolves the tree's own symlinks inside it (Alpine's /bin/sh → /bin/busybox).
  if (!existsSync(tree.path("bin/sh"))) ctx.fail("the rootfs has no /bin/sh to run commands with (is it empty?)");
  // A rootfs of another architecture: its programs run through QEMU (binfmt with the F flag).
  await ensureForeignPrograms(ctx, `running commands in the ${ctx.arch} rootfs`);
  const asRoot = process.getuid?.() === 0;
  const missingMountPoints = ["proc", "dev", "sys"].filter((dir) => !pathExists(join(tree.root, dir)));
  const run = async (): Promise<ExecResult> => {
    // DNS: the host's resolv.conf is bound over the tree's file for the run only; when the
    // tree has none, an empty one is put there for the mount and removed afterwards.
    const resolvConf = tree.path("etc/resolv.conf", { followSymlink: false });
    const createdResolvConf = network && !pathExists(resolvConf) && existsSync(tree.path("etc"));
    if (createdResolvConf) writeFileSync(resolvConf, "");
    try {
      return await sandboxed(ctx, tree.root, asRoot ? idRangeFor(tree.root) : undefined, network, options.cwd ?? "/", command, {
        PATH,
        HOME: "/root",
        LANG: "C.UTF-8",
        DEBIAN_FRONTEND: "noninteractive",
        SOURCE_DATE_EPOCH: String(ctx.sourceDateEpoch),
        OSBUILD_RESOLV_CONF: network ? "1" : "",
        ...options.env,
      });
    } finally {
      if (createdResolvConf) rmSync(resolvConf, { force: true });
    }
  };
  try {
    return asRoot ? await tree.withShiftedOwners(idRangeFor(tree.root), run) : await run();
  } finally {
    // Mount points the run had to create stay out of the layer.
    for (const dir of missingMountPoints) rmdirIfEmpty(join(tree.root, dir));
  }
}

/**
 * The host ids the namespace maps the tree's 0–65535 to: a block between 2^30 and 2^31,
 * above any real user's, chosen by the tree's path so that concurrent runs differ.
 */
function idRangeFor(root: string): number {
  const slot = createHash("sha256").update(root).digest().readUInt32BE(0) % 16384;
  return 2 ** 30 + slot * MAPPED_IDS;
}

/** unshare with the namespaces; as root, the id maps written from here before the command starts. */
function sandboxed(ctx: SandboxContext, root: string, idRange: number | undefined, network: boolean, cwd: string, command: readonly string[], env: Record<string, string>): Promise<ExecResult> {
  const namespaces = ["--mount", "--pid", "--fork", "--kill-child", ...(network ? [] : ["--net"])];
  const mapped = idRange !== undefined;
  const args = mapped
    ? ["--user", "--keep-caps", ...namespaces, "--", "sh", "-c", MAPPED_STAGE, PREPARE, cwd, ...command]
    : ["--map-root-user", ...namespaces, "--", "sh", "-c", PREPARE, "osbuild-sandbox", cwd, ...command];
  ctx.log(`$ unshare ${mapped ? `(the rootfs's ids 0-65535 as host ${idRange}-${idRange + MAPPED_IDS - 1}) ` : ""}${command.map((word) => (/^[\w./=:@%+-]+$/.test(word) ? word : JSON.stringify(word))).join(" ")}`);
  return new Promise((resolve, reject) => {
    // The parent-death signal ends the namespace (unshare --kill-child takes the rest) when osbuild is killed outright.
    const child = spawn("setpriv", ["--pdeathsig", "KILL", "unshare", ...args], { cwd: root, env, stdio: mapped ? ["ignore", "pipe", "pipe", "pipe", "pipe"] : ["ignore", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout.push(chunk);
      ctx.log(chunk.toString().trimEnd());
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-65536);
      ctx.log(chunk.toString().trimEnd());
    });
    if (mapped) {
      const go = child.stdio[3] as Writable;
      go.on("error", () => undefined); // the child died first: its exit says why
      child.stdio[4]!.once("data", () => {
        writeIdMaps(child.pid!, idRange).then(
          () => go.end("go\n"),
          (error: Error) => {
            stderr += `cannot map the namespace's ids: ${error.message}\n`;
            go.end("no\n");
          },
        );
      });
    }
    child.on("error", (error) => reject(new Error(`cannot run unshare: ${error.message} (install the Debian package util-linux)`)));
    child.on("close", (code, signal) => {
      if (code === 0) return resolve({ stdout: Buffer.concat(stdout), stderr });
      const tail = stderr.trim().split("\n").slice(-8).join("\n");
      const message = `the command in the rootfs ${signal ? `was killed by ${signal}` : `exited with status ${code}`}${tail ? `:\n${tail}` : ""}`;
      const hint = /Exec format error/.test(stderr) ? `\nthe rootfs holds a program this machine cannot run (the build is for ${ctx.arch}): is the base for another architecture than the config's arch?` : "";
      try {
        ctx.fail(message + hint);
      } catch (error) {
        reject(error);
      }
    });
  });
}

/** Maps the namespace's 0–65535 to `first`..: root in the parent namespace may write any map. */
async function writeIdMaps(pid: number, first: number): Promise<void> {
  const line = `0 ${first} ${MAPPED_IDS}\n`;
  await writeFile(`/proc/${pid}/uid_map`, line);
  await writeFile(`/proc/${pid}/gid_map`, line);
}

function pathExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function rmdirIfEmpty(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    /* the command put something there: keep it */
  }
}
