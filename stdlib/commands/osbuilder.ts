// `osbuild osbuilder`: Kata's osbuilder as a drop-in. `osbuild osbuilder TARGET... VAR=VALUE...`
// does what `make -C tools/osbuilder TARGET... VAR=VALUE...` does, and `osbuild osbuilder
// image-builder|initrd-builder|rootfs-builder ARGS` what its scripts do, with their
// variables: a graph of standard-library steps (cached, reproducible, no root or Docker
// needed) whose outputs go where osbuilder puts them, under its names.
// `--print-config` prints the equivalent osbuild.config.ts instead of building.

import { createHash } from "node:crypto";
import { existsSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { CommandContext, CommandSpec } from "../../engine/index.js";
import { configSource } from "../osbuilder/config-source.js";
import { distroList, MAKE_TARGETS, planMake, type RootfsOutput } from "../osbuilder/make.js";
import type { Plan, PlannedTarget } from "../osbuilder/plan.js";
import { removeTree, writeRootfsDir } from "../osbuilder/rootfs-dir.js";
import { planImageBuilder, planInitrdBuilder, planRootfsBuilder, type ScriptPlan } from "../osbuilder/scripts.js";
import { parseMakeArguments, Variables } from "../osbuilder/variables.js";

const USAGE = `usage: osbuild osbuilder [--print-config] [TARGET...] [VAR=VALUE...]
       osbuild osbuilder image-builder [-o IMAGE] [-r FREE_MB] [-f ext4|xfs|erofs] ROOTFS_DIR
       osbuild osbuilder initrd-builder [-o IMAGE] ROOTFS_DIR
       osbuild osbuilder rootfs-builder [-r DIR] [-o VERSION] [-d] DISTRO

Does what Kata's osbuilder 4.1 does (make -C tools/osbuilder, or its scripts), with its
variables from the arguments and the environment, and writes its files under its names.
Targets: ${MAKE_TARGETS}. Without root, the rootfs directory holds what a
plain directory can (no device nodes, your own owners), and its OCI layout is kept beside it.
--print-config prints the equivalent osbuild.config.ts.
`;

/** What `osbuild osbuilder` does; its name and options are in ./index.ts. */
export const osbuilder: Pick<CommandSpec, "run"> = {
  async run(args, _options, ctx) {
    // --print-config may come anywhere before the script's own arguments
    const printConfig = args.includes("--print-config");
    const given = args.filter((arg) => arg !== "--print-config");
    const [first, ...rest] = given;
    if (first === "-h" || first === "--help" || first === "help") {
      process.stdout.write(USAGE);
      return 0;
    }
    const env = process.env as Record<string, string | undefined>;
    const script = { "image-builder": planImageBuilder, "initrd-builder": planInitrdBuilder, "rootfs-builder": planRootfsBuilder }[first ?? ""];
    if (script) {
      const vars = new Variables(new Map(), env, ctx.log, false);
      const planned = script(rest, vars);
      if (planned.print !== undefined) {
        process.stdout.write(planned.print);
        return 0;
      }
      if (printConfig) return printed(planned.plan, `osbuild osbuilder ${given.join(" ")}`, planned.rootfsDirs);
      return build(ctx, planned, vars.get("DEBUG") !== undefined, { command: `osbuild osbuilder ${first}`, arguments: rest, variables: vars.values() });
    }

    const { targets, assignments } = parseMakeArguments(given);
    const vars = new Variables(assignments, env, ctx.log, true);
    const make = planMake(targets, vars);
    if (printConfig) return printed(make.plan, `osbuild osbuilder ${given.join(" ")}`, make.rootfsDirs);
    if (make.listDistros) process.stdout.write(distroList());
    for (const path of make.clean) {
      if (!existsSync(path)) continue;
      removeTree(path);
      ctx.log(`removed ${path}`);
    }
    if (make.clean.length > 0) ctx.log("the cache is kept: `osbuild cache prune` trims it");
    if (make.rootfsDirs.length === 0 && make.plan.targets.length === 0) return 0;
    return build(ctx, { plan: make.plan, filesDir: make.imagesDir, rootfsDirs: make.rootfsDirs }, vars.get("DEBUG") !== undefined, { command: "osbuild osbuilder", arguments: given, variables: vars.values() });
  },
};

function printed(plan: Plan, command: string, rootfsDirs: readonly RootfsOutput[]): number {
  const rootfsTargets: PlannedTarget[] = rootfsDirs.map((output) => ({ name: basename(output.dir), from: output.from }));
  process.stdout.write(configSource(plan, command, rootfsTargets));
  return 0;
}

/**
 * Builds the plan: the rootfs directories first (as make does), then the images into their
 * directory, each with its SBOM and provenance beside it (`parameters`: how it was asked for).
 */
async function build(ctx: CommandContext, planned: Pick<ScriptPlan, "plan" | "filesDir" | "rootfsDirs">, verbose: boolean, parameters: Record<string, unknown>): Promise<number> {
  const { plan } = planned;
  const settings = { sourceDateEpoch: plan.sourceDateEpoch, ...(plan.arch ? { arch: plan.arch } : {}), verbose };
  const asRoot = process.getuid?.() === 0;
  const written: string[] = [];

  if (planned.rootfsDirs.length > 0) {
    const archives = planned.rootfsDirs.map((output) => {
      const name = `${basename(output.dir)}.tar`;
      return { output, name, from: plan.call("mkTar", `${output.from}Archive`, output.from, {}) };
    });
    // A directory of archives per destination: two builds for different places never share a file.
    const place = createHash("sha256").update(planned.rootfsDirs.map((output) => output.dir).join("\0")).digest("hex").slice(0, 16);
    const tars = await ctx.buildArtifacts(`osbuilder-rootfs-${place}`, () => plan.instantiate(archives.map(({ name, from }) => ({ name, from }))), settings);
    if (!tars.ok) return failed(ctx, "the rootfs");
    for (const { output, name } of archives) {
      const memo = join(ctx.cacheDir, "memo", "osbuilder-rootfs.json");
      const { written: changed, missing } = await writeRootfsDir(tars.outputs[name]!, output.dir, asRoot, memo);
      if (output.marker) writeFileSync(output.marker, "");
      written.push(`${output.dir}/${changed ? "" : " (unchanged)"}`);
      if (!asRoot) {
        const layout = await ctx.buildArtifacts("osbuilder-layout", () => plan.instantiate([{ name: `${basename(output.dir)}.oci`, from: output.from }]), { ...settings, outDir: dirname(output.dir) });
        if (!layout.ok) return failed(ctx, "the rootfs's OCI layout");
        if (missing) {
          ctx.log(
            `without root, ${output.dir} is a plain directory: ${missing.devicePaths.length} device node(s) are missing and every file is yours (${missing.notRootOwned} of ${missing.entries} belong to another owner); ` +
              `the exact rootfs, owners and devices included, is the OCI layout ${output.dir}.oci`,
          );
        }
      }
    }
  }

  if (plan.targets.length > 0) {
    const files = await ctx.buildArtifacts("osbuilder", () => plan.instantiate(), { ...settings, outDir: planned.filesDir, attest: { parameters } });
    if (!files.ok) return failed(ctx, plan.targets.map((target) => target.name).join(", "));
    for (const target of plan.targets) written.push(`${files.outputs[target.name]!} (${mib(files.outputs[target.name]!)})`);
  }
  for (const line of written) ctx.log(`osbuilder: ${line}`);
  return 0;
}

function failed(ctx: CommandContext, what: string): number {
  ctx.log(`osbuilder: building ${what} failed (see above)`);
  return 1;
}

function mib(path: string): string {
  const bytes = statSync(path).size;
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${bytes} bytes`;
}
