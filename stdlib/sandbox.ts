// Runs commands inside a rootfs tree, like a Dockerfile RUN: in a private mount and PID
// namespace (a user namespace too when not root), with /proc, a minimal /dev and the
// host's DNS set up there. Nothing is mounted on the host, and the namespace takes every
// mount and process with it when the command ends.

import { existsSync, lstatSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecResult, RootfsStepContext, Tree } from "../engine/index.js";

export interface SandboxOptions {
  /** Keep the network (default true; false runs in an empty network namespace). */
  network?: boolean;
  env?: Record<string, string>;
  /** Working directory inside the tree. Default "/". */
  cwd?: string;
}

const DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];

/** The shell that prepares the namespace and then chroots into the tree. */
const PREPARE = `set -eu
root=$1; cwd=$2; shift 2
mkdir -p "$root/proc" "$root/dev" "$root/sys"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
for device in ${DEVICES.join(" ")}; do
  touch "$root/dev/$device"
  mount --bind "/dev/$device" "$root/dev/$device"
done
ln -s /proc/self/fd "$root/dev/fd"
mkdir -p "$root/dev/pts" "$root/dev/shm"
if [ -n "\${OSBUILD_RESOLV_CONF:-}" ] && [ -f "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ]; then
  mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
fi
unset OSBUILD_RESOLV_CONF
exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' osbuild "$cwd" "$@"
`;

export async function runInTree(
  ctx: Pick<RootfsStepContext<readonly never[]>, "exec" | "tempDir" | "sourceDateEpoch" | "fail">,
  tree: Tree,
  command: readonly string[],
  options: SandboxOptions = {},
): Promise<ExecResult> {
  const network = options.network ?? true;
  // tree.path resolves the tree's own symlinks inside it (Alpine's /bin/sh → /bin/busybox).
  if (!existsSync(tree.path("bin/sh"))) ctx.fail("the rootfs has no /bin/sh to run commands with (is it empty?)");
  // DNS: the host's resolv.conf is bind-mounted over the tree's file for the run only; when
  // the tree has none, an empty one is put there for the mount and removed afterwards.
  const resolvConf = tree.path("etc/resolv.conf", { followSymlink: false });
  const createdResolvConf = network && !pathExists(resolvConf) && existsSync(tree.path("etc"));
  if (createdResolvConf) writeFileSync(resolvConf, "");
  const missingMountPoints = ["proc", "dev", "sys"].filter((dir) => !pathExists(join(tree.root, dir)));
  const script = join(await ctx.tempDir(), "prepare.sh");
  writeFileSync(script, PREPARE);
  const asRoot = process.getuid?.() === 0;
  const namespaces = ["--mount", "--pid", "--fork", "--kill-child", ...(asRoot ? [] : ["--map-root-user"]), ...(network ? [] : ["--net"])];
  try {
    return await ctx.exec("unshare", [...namespaces, "sh", script, tree.root, options.cwd ?? "/", ...command], {
      env: {
        PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: "/root",
        LANG: "C.UTF-8",
        DEBIAN_FRONTEND: "noninteractive",
        SOURCE_DATE_EPOCH: String(ctx.sourceDateEpoch),
        OSBUILD_RESOLV_CONF: network ? "1" : "",
        ...options.env,
      },
      stdout: "log",
    });
  } catch (error) {
    const message = (error as Error).message;
    if (/Exec format error/.test(message)) ctx.fail(`${message}\nthe rootfs's programs are for another architecture: install qemu-user-static (binfmt) to run them here`);
    throw error;
  } finally {
    if (createdResolvConf) rmSync(resolvConf, { force: true });
    // Mount points the run had to create stay out of the layer.
    for (const dir of missingMountPoints) rmdirIfEmpty(join(tree.root, dir));
  }
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
