// Kata's real osbuilder, the other side of every benchmark: the command lines that run it
// here as root without Docker.
//
// KATA_OSBUILDER names a kata-containers checkout; it is run as ../shared/osbuilder/run.sh
// runs its own copy (make in tools/osbuilder, or the image and initrd builders, with
// USE_DOCKER empty, Debian bookworm from the host's mirror). Without it, run.sh itself
// (the workplace's shared/ folder: $OSBUILD_SHARED, else beside this repository, else
// /work/shared, as the tests look for it; osbuilder at 7c6ba40, unmodified).

import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { REPO } from "./lib.js";

const SHARED_RUNNER = [process.env.OSBUILD_SHARED, resolve(REPO, "..", "shared"), "/work/shared"]
  .filter((dir): dir is string => dir !== undefined)
  .map((dir) => join(dir, "osbuilder", "run.sh"))
  .find((path) => existsSync(path)) ?? resolve(REPO, "..", "shared", "osbuilder", "run.sh");

export interface OsbuilderCommand {
  command: string;
  args: string[];
  env: Record<string, string | undefined>;
  /** What is run, for the report. */
  describe: string;
}

/** What runs the osbuilder of this machine, or why there is none. */
export function osbuilderRunner(): { ok: true; describe: string } | { ok: false; reason: string } {
  const checkout = process.env.KATA_OSBUILDER;
  if (checkout) {
    if (!existsSync(join(checkout, "tools", "osbuilder", "Makefile"))) return { ok: false, reason: `KATA_OSBUILDER=${checkout} is not a kata-containers checkout (no tools/osbuilder/Makefile)` };
    if (!existsSync(SHARED_RUNNER)) return { ok: false, reason: `KATA_OSBUILDER needs ${SHARED_RUNNER} for its shims (yq, sudo)` };
    return { ok: true, describe: `osbuilder of ${resolve(checkout)}` };
  }
  if (!existsSync(SHARED_RUNNER)) return { ok: false, reason: `no osbuilder: set KATA_OSBUILDER to a kata-containers checkout, or put run.sh at ${SHARED_RUNNER}` };
  return { ok: true, describe: `Kata's osbuilder (kata-containers tools/osbuilder at 7c6ba40) through ${SHARED_RUNNER}` };
}

/**
 * `make TARGET... VAR=VALUE...` in osbuilder, with WORKDIR as ROOTFS_BUILD_DEST and
 * IMAGES_BUILD_DEST (run.sh's interface), or `image-builder ARGS` / `initrd-builder ARGS`.
 */
export function osbuilder(workDir: string, args: readonly string[], env: Record<string, string> = {}): OsbuilderCommand {
  const checkout = process.env.KATA_OSBUILDER;
  if (!checkout) return { command: "bash", args: [SHARED_RUNNER, workDir, ...args], env, describe: `run.sh ${args.join(" ")}` };
  // The same recipe as run.sh, on the user's checkout: its shims, no Docker, the host's mirror.
  const tools = join(resolve(checkout), "tools", "osbuilder");
  const script = `set -euo pipefail
export PATH=${JSON.stringify(join(SHARED_RUNNER, "..", "shims"))}:$PATH USE_DOCKER= USE_PODMAN=
mkdir -p "$1"; work=$(cd "$1" && pwd); shift
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
case \${1:-} in
  image-builder) shift; exec ${JSON.stringify(tools)}/image-builder/image_builder.sh "$@" ;;
  initrd-builder) shift; exec ${JSON.stringify(tools)}/initrd-builder/initrd_builder.sh "$@" ;;
esac
make -C ${JSON.stringify(tools)} DISTRO=debian OS_VERSION=bookworm REPO_URL_X86_64="$mirror" ROOTFS_BUILD_DEST="$work" IMAGES_BUILD_DEST="$work" "$@"
if [[ -f ${JSON.stringify(tools)}/kata-containers-initrd.img ]]; then mv -f ${JSON.stringify(tools)}/kata-containers-initrd.img "$work/"; fi
`;
  return { command: "bash", args: ["-c", script, "osbuilder", workDir, ...args], env, describe: `make ${args.join(" ")} in ${tools}` };
}
