// provision: the rest of osbuilder's setup_rootfs, the distro-independent Kata settings:
// var/ cleanup, chrony on the PTP clock, an empty resolv.conf, the pruned systemd units
// (rootfs.sh -d), the agent policy, guest hooks and extra tarballs, the confidential-guest
// fstab line. The installed packages go into the step's provenance (the SBOM), not the image.

import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from "node:fs";
import { basename, join } from "node:path";
import { defineStep, type Tree } from "../engine/index.js";
import { ALLOW_ALL_POLICY_NAME, allowAllPolicy } from "./agent-policy.js";
import type { InitSystem } from "./fetch-base.js";
import { OSBUILDER_DIR } from "./facts.js";
import { recordInstalledPackages } from "./packages/index.js";

export interface ProvisionOptions {
  /** Who will be PID 1 (decides what systemd-only settings apply). */
  init: InitSystem;
  /** Delete the systemd units Kata does not need (rootfs.sh -d; osbuilder's make targets pass -d). Default false, as rootfs.sh. */
  pruneSystemdUnits?: boolean;
  /** Point chrony at the PTP clock and drop network time sources. Default true. */
  chrony?: boolean;
  /** Confidential guest: mount /run as a tmpfs of 50% of memory (an /etc/fstab line). */
  confidential?: boolean;
  /** An agent policy (.rego) installed as /etc/kata-opa/<name> and default-policy.rego. */
  agentPolicy?: string;
  /**
   * Without `agentPolicy`: install osbuild's allow-all policy as /etc/kata-opa/allow-all.rego
   * and default-policy.rego, as osbuilder does for AGENT_POLICY=yes. Default false.
   */
  allowAllAgentPolicy?: boolean;
  /** A guest hooks tarball, unpacked at / (osbuilder's GUEST_HOOKS_TARBALL). */
  guestHooks?: string;
  /** More tarballs unpacked at / (the pause image, CoCo guest components, ...). */
  extraTarballs?: readonly string[];
}

/** rootfs.sh's systemd_units: deleted as NAME.service and NAME.socket. */
const PRUNED_UNITS = [
  "systemd-coredump@",
  "systemd-journald",
  "systemd-journald-dev-log",
  "systemd-journal-flush",
  "systemd-random-seed",
  "systemd-timesyncd",
  "systemd-tmpfiles-setup",
  "systemd-udevd",
  "systemd-udevd-control",
  "systemd-udevd-kernel",
  "systemd-udev-trigger",
  "systemd-update-utmp",
];

/** rootfs.sh's systemd_files: deleted by exact name. */
const PRUNED_FILES = ["systemd-bless-boot-generator", "systemd-fstab-generator", "systemd-getty-generator", "systemd-gpt-auto-generator", "systemd-tmpfiles-cleanup.timer"];

export const provision = defineStep({
  kind: "provision",
  version: 6,
  inputs: ["rootfs"],
  output: "rootfs",
  hostPaths: ["agentPolicy", "guestHooks", "extraTarballs"],
  validate(options: ProvisionOptions) {
    if (options.init !== "agent" && options.init !== "systemd") return `init must be "agent" or "systemd", got ${JSON.stringify(options.init)}`;
    if (options.agentPolicy !== undefined && ["", ".", "..", "default-policy.rego"].includes(basename(options.agentPolicy))) {
      return `agentPolicy ${JSON.stringify(options.agentPolicy)}: its file name becomes /etc/kata-opa/<name>, beside default-policy.rego: name a .rego file`;
    }
    return undefined;
  },
  async run(options: ProvisionOptions, ctx) {
    const tree = await ctx.tree();

    // The packages first, kept beside the layer for the SBOM: their database goes with var/lib.
    const packages = recordInstalledPackages(ctx.provenance, tree);
    ctx.log(packages > 0 ? `${packages} installed packages recorded for the SBOM` : "no package database found: the SBOM will list no packages of this rootfs");

    // rm -rf var/{cache,lib,log,tmp}; ln -s ../tmp var/tmp (keeping osbuilder's own record)
    for (const dir of ["var/cache", "var/log", "var/tmp"]) rmSync(tree.path(dir, { followSymlink: false }), { recursive: true, force: true });
    const varLib = tree.path("var/lib", { followSymlink: false });
    if (existsSync(varLib)) for (const name of readdirSync(varLib)) if (`var/lib/${name}` !== OSBUILDER_DIR) rmSync(join(varLib, name), { recursive: true, force: true });
    mkdirSync(tree.path("var"), { recursive: true });
    symlinkSync("../tmp", tree.path("var/tmp", { followSymlink: false }));

    if (options.chrony ?? true) configureChrony(tree, ctx.log);

    if (options.confidential && options.init === "systemd") {
      // sed -i '/\/run/d' then one line appended, as rootfs.sh: every other line stays as it was.
      const fstab = tree.path("etc/fstab");
      const kept = existsSync(fstab) ? readFileSync(fstab, "utf8").split(/(?<=\n)/).filter((line) => !line.includes("/run")) : [];
      const text = kept.join("");
      writeInTree(tree, "etc/fstab", `${text}${text === "" || text.endsWith("\n") ? "" : "\n"}tmpfs /run tmpfs nodev,nosuid,size=50% 0 0\n`);
    }

    if (options.agentPolicy !== undefined) {
      const name = basename(options.agentPolicy);
      installPolicy(tree, name, (path) => copyFileSync(options.agentPolicy!, path));
      ctx.provenance.hostFile(`etc/kata-opa/${name}`, options.agentPolicy);
    } else if (options.allowAllAgentPolicy) installPolicy(tree, ALLOW_ALL_POLICY_NAME, (path) => writeFileSync(path, allowAllPolicy()));

    for (const archive of [...(options.guestHooks !== undefined ? [options.guestHooks] : []), ...(options.extraTarballs ?? [])]) {
      ctx.log(`unpacking ${archive} at /`);
      await tree.extract(archive);
    }

    // An empty resolv.conf the agent can bind-mount the container's over: not a symlink,
    // and not the build machine's (which the bootstrap may have copied in).
    const resolvConf = tree.path("etc/resolv.conf", { followSymlink: false });
    rmSync(resolvConf, { force: true });
    writeInTree(tree, "etc/resolv.conf", "");
    chmodSync(resolvConf, 0o644);

    if (options.pruneSystemdUnits ?? false) {
      const removed = pruneSystemd(tree);
      ctx.log(`removed ${removed.length} systemd units and generators: ${removed.join(" ")}`);
    }
  },
});

/** install -m 0644 POLICY /etc/kata-opa/NAME; ln -sf NAME /etc/kata-opa/default-policy.rego */
function installPolicy(tree: Tree, name: string, write: (path: string) => void): void {
  const dir = tree.path("etc/kata-opa");
  mkdirSync(dir, { recursive: true });
  rmSync(join(dir, name), { force: true });
  write(join(dir, name));
  chmodSync(join(dir, name), 0o644);
  tree.chown(`etc/kata-opa/${name}`, 0, 0);
  rmSync(join(dir, "default-policy.rego"), { force: true });
  symlinkSync(name, join(dir, "default-policy.rego"));
}

/** setup_rootfs's chrony edits: the PTP clock as reference, no network sources. */
function configureChrony(tree: Tree, log: (message: string) => void): void {
  // Debian and Ubuntu keep chrony's files under chrony/ and name the unit chrony; the others chronyd.
  const confPath = ["etc/chrony/chrony.conf", "etc/chrony.conf"].find((path) => existsSync(tree.path(path)));
  if (!confPath) {
    log("chrony is not installed (no /etc/chrony/chrony.conf or /etc/chrony.conf): not configured");
    return;
  }
  const conf = tree.path(confPath);
  // The distro's servers commented out, the PTP clock of the host added (as rootfs.sh).
  const ptp = "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0\n# Step the system clock instead of slewing it if the adjustment is larger than\n# one second, at any time\nmakestep 1 -1\n";
  writeFileSync(conf, readFileSync(conf, "utf8").replace(/^(server |pool |peer )/gm, "# $1") + ptp);
  const servicePath = ["lib/systemd/system/chrony.service", "usr/lib/systemd/system/chrony.service", "usr/lib/systemd/system/chronyd.service"].find((path) => existsSync(tree.path(path)));
  if (!servicePath) return;
  const service = tree.path(servicePath);
  const edited = readFileSync(service, "utf8")
    .split("\n")
    .flatMap((line) => {
      if (/^ExecStart=/.test(line)) return [line.replace(/-u [A-Za-z0-9]*/, "")]; // the user may not exist in the guest
      if (/^\[Unit\]$/.test(line)) return [line, "ConditionPathExists=/dev/ptp0"];
      if (/^ReadWritePaths=.+ \/var\/lib\/chrony .+$/.test(line)) return [line.replace(" /var/lib/chrony ", " -/var/lib/chrony ")];
      if (/^(StateDirectory|LogsDirectory)=/.test(line)) return [`#${line}`];
      return [line];
    })
    .join("\n");
  writeFileSync(service, edited);
}

/** rootfs.sh -d: delete the listed units (files or links) wherever they are. */
function pruneSystemd(tree: Tree): string[] {
  const names = new Set([...PRUNED_UNITS.flatMap((unit) => [`${unit}.service`, `${unit}.socket`]), ...PRUNED_FILES]);
  const removed: string[] = [];
  const visit = (relative: string): void => {
    const dir = relative === "" ? tree.root : join(tree.root, relative);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = relative === "" ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) {
        if (!["proc", "sys", "dev"].includes(path)) visit(path);
      } else if ((entry.isFile() || entry.isSymbolicLink()) && names.has(entry.name)) {
        rmSync(join(tree.root, path));
        removed.push(`/${path}`);
      }
    }
  };
  visit("");
  return removed.sort();
}

function writeInTree(tree: Tree, path: string, content: string): void {
  const host = tree.path(path);
  mkdirSync(join(host, ".."), { recursive: true });
  writeFileSync(host, content);
}
