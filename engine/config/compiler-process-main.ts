// Entry of the process compiler-process.ts starts: one task from the parent, its result sent back.

import { compilerTask, type CompilerReply, type CompilerTask } from "./compiler-process.js";

process.once("message", (task: CompilerTask) => {
  let reply: CompilerReply;
  try {
    reply = { result: compilerTask(task) };
  } catch (error) {
    reply = { error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  process.send!(reply, () => process.disconnect());
});
