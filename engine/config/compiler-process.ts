// The TypeScript compiler's work on a config (type-checking it, compiling it for loading) in a
// process of its own that ends with it. The compiler and the program it builds (the config,
// osbuild's declarations, often @types/node) take ~70 MB of heap; left in the build's own
// process, they stayed resident for the whole build (garbage a quiet process never collects,
// and the module itself), beside mmdebstrap and the packers. A worker thread's heap goes
// with the thread, but what the compiler had from malloc stays in the process's arenas
// (~40 MB more resident through the build, measured); a process returns all of it. ~60 ms
// of start-up, only when the config's files changed (an unchanged config is neither checked
// nor compiled again).

import { fork } from "node:child_process";
import { compileConfig, compiledEntry, type CompileSettings } from "./compiled.js";
import { typecheckWithCompiler, type TypecheckOptions, type TypecheckResult } from "./typecheck.js";

export interface CompilerTask {
  configFile: string;
  typecheck: TypecheckOptions;
  /** Also compile the config for loading (compiled.ts) when it type-checks clean. */
  compile?: CompileSettings;
}

/** What the process sends back: the result, or why there is none. */
export type CompilerReply = { result: TypecheckResult } | { error: string };

/** Runs the task in a new process (in this one under vitest, whose TypeScript sources plain node cannot load). */
export function runCompilerTask(task: CompilerTask): Promise<TypecheckResult> {
  if (import.meta.url.endsWith(".ts")) return Promise.resolve(compilerTask(task));
  return new Promise((resolve, reject) => {
    const child = fork(new URL("./compiler-process-main.js", import.meta.url), [], { stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced" });
    let reply: CompilerReply | undefined;
    child.once("message", (message: CompilerReply) => (reply = message));
    child.once("error", (error) => reject(new Error(`cannot start the process that type-checks the config: ${error.message}`)));
    child.once("exit", (code, signal) => {
      if (reply && "result" in reply) return resolve(reply.result);
      reject(new Error(reply ? `type-checking the config failed: ${reply.error}` : `the process type-checking the config ${signal ? `was killed by ${signal}` : `exited with status ${code}`} without a result`));
    });
    child.send(task);
  });
}

export function compilerTask(task: CompilerTask): TypecheckResult {
  const result = typecheckWithCompiler(task.configFile, task.typecheck);
  if (task.compile && result.diagnostics.length === 0) compiledEntry(task.configFile, task.compile) ?? compileConfig(task.configFile, task.compile);
  return result;
}
