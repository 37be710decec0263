// Integration tests run the real `osbuild` command (the compiled dist/) and install the
// project's test agent: both are made here once, as scripts/setup.sh makes them.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const repo = fileURLToPath(new URL("..", import.meta.url));
  const build = spawnSync("npx", ["tsc", "-b", "tsconfig.json"], { cwd: repo, encoding: "utf8" });
  if (build.status !== 0) throw new Error(`compiling osbuild failed:\n${build.stdout}${build.stderr}`);
  const agent = join(repo, "build/agent/kata-agent");
  const source = join(repo, "agent/test-agent.c");
  if (!existsSync(agent) || statSync(source).mtimeMs > statSync(agent).mtimeMs) {
    mkdirSync(join(repo, "build/agent"), { recursive: true });
    const gcc = spawnSync("gcc", ["-static", "-O2", "-Wall", "-o", agent, source], { encoding: "utf8" });
    if (gcc.status !== 0) throw new Error(`building the test agent failed:\n${gcc.stderr}`);
  }
}
