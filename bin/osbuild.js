#!/usr/bin/env node
// The osbuild command. The engine is compiled to dist/ by `npm run build`, which npm runs
// itself when it packs osbuild or installs it from git (the prepack and prepare scripts).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/cli.js", import.meta.url);
if (!existsSync(entry)) {
  const installed = fileURLToPath(new URL("..", import.meta.url)).includes("/node_modules/");
  process.stderr.write(
    installed
      ? "osbuild: this copy has no dist/: it was installed without running its build (--ignore-scripts?): install it again with scripts enabled\n"
      : "osbuild: not built yet: run `bash scripts/setup.sh` (or `npm ci && npm run build`) in the osbuild checkout\n",
  );
  process.exit(2);
}
const { runCli } = await import(entry.href);
process.exitCode = await runCli(process.argv.slice(2));
