// `osbuild verify-reproducible [TARGET...]`: builds the targets twice from nothing, each time
// with its own empty cache and output directory, and compares the results byte for byte;
// when they differ, says where in the artifact's own structure.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, type CommandSpec } from "../../engine/index.js";
import { firstDifference } from "../reproducibility/compare.js";

/** What `osbuild verify-reproducible` does; its name and options are in ./index.ts. */
export const verifyReproducible: Pick<CommandSpec, "run"> = {
  async run(args, options, ctx) {
    const targets = args.length > 0 ? [...args] : await ctx.targetNames();
    const work = mkdtempSync(join(tmpdir(), "osbuild-reproducible-"));
    try {
      const outputs: Array<Record<string, string>> = [];
      for (const round of [1, 2]) {
        ctx.log(`build ${round} of 2 (cache and output in ${join(work, String(round))})`);
        const built = await ctx.build(targets, { cacheDir: join(work, String(round), "cache"), outDir: join(work, String(round), "out") });
        if (!built.ok) throw new ConfigError(`build ${round} failed: nothing to compare`);
        outputs.push(built.outputs);
      }
      let differing = 0;
      for (const target of targets) {
        const difference = await firstDifference(outputs[0]![target]!, outputs[1]![target]!);
        if (difference === undefined) process.stdout.write(`${target}: identical\n`);
        else {
          differing++;
          process.stdout.write(`${target}: DIFFERS: ${difference}\n`);
        }
      }
      process.stdout.write(differing === 0 ? `reproducible: ${targets.length} target(s) byte-identical across two builds\n` : `not reproducible: ${differing} of ${targets.length} target(s) differ\n`);
      return differing === 0 ? 0 : 1;
    } finally {
      if (options.keep) ctx.log(`kept ${work}`);
      else rmSync(work, { recursive: true, force: true });
    }
  },
};
