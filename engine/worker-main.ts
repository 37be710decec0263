// Entry point of a layer worker thread: runs tasks from worker-tasks by name.

import { parentPort } from "node:worker_threads";
import * as tasks from "./worker-tasks.js";
import { serializeError } from "./workers.js";

type Request = { id: number; name: keyof typeof tasks; args: unknown };

parentPort!.on("message", (request: Request) => {
  const task = tasks[request.name] as (args: unknown) => Promise<unknown>;
  task(request.args).then(
    (result) => parentPort!.postMessage({ id: request.id, result }),
    (error: unknown) => parentPort!.postMessage({ id: request.id, error: serializeError(error) }),
  );
});
