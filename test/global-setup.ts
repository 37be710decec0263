// Integration tests run the real `osbuild` command, which runs the compiled dist/.
import { spawnSync } from "node:child_process";

export default function setup(): void {
  const build = spawnSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: new URL("..", import.meta.url).pathname, encoding: "utf8" });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);
}
