#!/usr/bin/env node
// The osbuild command. The engine is compiled to dist/ by `npm run build`.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("osbuild: not built yet: run `bash scripts/setup.sh` (or `npm ci && npm run build`) in the osbuild checkout\n");
  process.exit(2);
}
const { runCli } = await import(entry.href);
process.exitCode = await runCli(process.argv.slice(2));
