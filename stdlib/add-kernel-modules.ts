// addKernelModules: copies a kernel's modules into /lib/modules/<version> and runs depmod,
// so that they load in the guest. With `modules`, takes only those modules and what they
// depend on (from modules.dep): a few hundred kilobytes instead of the whole tree.

import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { defineStep } from "../engine/index.js";
import { builtinModules, kernelVersionProblem, moduleName, modulesArchitectureProblem } from "./kernel-modules.js";

export interface AddKernelModulesOptions {
  /** /lib/modules/<version> of a kernel build, or a directory holding <version>/. */
  from: string;
  /** The kernel release (`uname -r`) the modules are for, e.g. "6.1.0-56-amd64". */
  kernelVersion: string;
  /** Only these modules (names as modinfo/modprobe use them) and their dependencies. */
  modules?: readonly string[];
}

/** Files of a modules tree that are not modules but that depmod and modprobe read. */
const METADATA = ["modules.order", "modules.builtin", "modules.builtin.modinfo"];

export const addKernelModules = defineStep({
  kind: "add-kernel-modules",
  version: 3,
  inputs: ["rootfs"],
  output: "rootfs",
  hostPaths: ["from"],
  tools: [{ command: "depmod", versionArgs: ["--version"], package: "kmod" }],
  validate(options: AddKernelModulesOptions) {
    const versionProblem = kernelVersionProblem(options.kernelVersion);
    if (versionProblem) return versionProblem;
    if (options.modules?.length === 0) return "modules is empty: leave it out to copy every module";
    return undefined;
  },
  async run(options: AddKernelModulesOptions, ctx) {
    const source = modulesDirectory(options.from, options.kernelVersion, ctx.fail);
    const wrongArch = await modulesArchitectureProblem(source, ctx.arch, "rootfs", ctx.exec);
    if (wrongArch) ctx.fail(wrongArch);
    const tree = await ctx.tree();
    // Its parents resolved inside the tree (lib → usr/lib), then replaced as a whole: whatever
    // the base had there, a symlink pointing anywhere included, is never written through.
    const target = tree.path(`lib/modules/${options.kernelVersion}`, { followSymlink: false });
    rmSync(target, { recursive: true, force: true });
    mkdirSync(dirname(target), { recursive: true });
    if (options.modules === undefined) {
      await ctx.exec("cp", ["-a", "--no-preserve=ownership", "--no-target-directory", source, target]);
    } else {
      const files = selectModules(source, options.modules, ctx.fail);
      ctx.log(`${options.modules.length} module(s) asked for, ${files.length} with dependencies: ${files.join(" ")}`);
      for (const file of [...files, ...METADATA.filter((name) => existsSync(join(source, name)))]) {
        mkdirSync(dirname(join(target, file)), { recursive: true });
        copyFileSync(join(source, file), join(target, file));
      }
    }
    // depmod -b BASE works on BASE/lib/modules/<version>; with /lib → usr/lib, BASE is the
    // tree itself as long as the resolved directory is inside it.
    const suffix = `/lib/modules/${options.kernelVersion}`;
    if (!target.endsWith(suffix) || !target.startsWith(tree.root)) ctx.fail(`cannot place modules at ${target}`);
    const base = target.slice(0, -suffix.length);
    // An empty configuration directory: the host's /etc/depmod.d must not change the output.
    const config = await ctx.tempDir();
    await ctx.exec("depmod", ["-b", base, "-C", config, options.kernelVersion]);
    // The modules came from the host directory; what depmod wrote is the step's own.
    ctx.provenance.hostFile(`lib/modules/${options.kernelVersion}`, source);
  },
});

/** The modules directory for `version` in `from`, or a clear error. */
function modulesDirectory(from: string, version: string, fail: (message: string) => never): string {
  if (!existsSync(from) || !statSync(from).isDirectory()) fail(`modules directory ${from} does not exist`);
  const nested = join(from, version);
  if (existsSync(join(nested, "modules.order")) || existsSync(join(nested, "kernel"))) return nested;
  if (existsSync(join(from, "modules.order")) || existsSync(join(from, "kernel"))) {
    // `from` is a version directory itself: check it is the one asked for.
    const found = vermagicVersion(from);
    if (found && found !== version) fail(`the modules in ${from} are for kernel ${found}, not ${version}: set kernelVersion to ${found} or point 'from' at the right kernel`);
    return from;
  }
  const versions = readdirSync(from).filter((name) => existsSync(join(from, name, "modules.order")) || existsSync(join(from, name, "kernel")));
  fail(`no modules for kernel ${version} in ${from}${versions.length > 0 ? ` (it has: ${versions.join(", ")})` : " (it holds no modules tree)"}`);
}

/** The kernel version a module was built for, from the vermagic of the first module found. */
function vermagicVersion(dir: string): string | undefined {
  const order = join(dir, "modules.order");
  const first = existsSync(order) ? readFileSync(order, "utf8").split("\n").find((line) => line.trim()) : undefined;
  if (!first) return undefined;
  const file = join(dir, first.trim());
  if (!existsSync(file) || !file.endsWith(".ko")) return undefined; // compressed modules: not checked here
  const match = /vermagic=(\S+)/.exec(readFileSync(file).toString("latin1"));
  return match?.[1];
}

/** The module files (relative paths) for `names` and everything they depend on. */
function selectModules(source: string, names: readonly string[], fail: (message: string) => never): string[] {
  const depFile = join(source, "modules.dep");
  if (!existsSync(depFile)) fail(`${source} has no modules.dep: run depmod for that kernel first, or copy all modules`);
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of readFileSync(depFile, "utf8").split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const file = line.slice(0, colon);
    const dependencies = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean);
    for (const path of [file, ...dependencies]) {
      if (path.startsWith("/") || path.split("/").includes("..")) fail(`${depFile} names the module '${path}', which is outside the modules directory: refusing it`);
    }
    deps.set(file, dependencies);
    byName.set(moduleName(file), file);
  }
  const builtin = builtinModules(source);
  const selected = new Set<string>();
  const visit = (file: string): void => {
    if (selected.has(file)) return;
    selected.add(file);
    for (const dependency of deps.get(file) ?? []) visit(dependency);
  };
  for (const name of names) {
    const key = name.replace(/-/g, "_");
    const file = byName.get(key);
    if (file) visit(file);
    else if (!builtin.has(key)) {
      const similar = [...byName.keys()].filter((candidate) => candidate.includes(key) || key.includes(candidate)).slice(0, 5);
      fail(`kernel module '${name}' is not in ${source}${similar.length > 0 ? ` (did you mean ${similar.join(", ")}?)` : ""}`);
    }
  }
  return [...selected].sort();
}
