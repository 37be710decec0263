#!/usr/bin/env node
// The osbuild command. The engine is compiled to dist/ by `npm run build`.
import { existsSync } from "node:fs";

const entry = new URL("../dist/engine/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("osbuild: not built yet: run `npm ci && npm run build` in the osbuild checkout\n");
  process.exit(2);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
