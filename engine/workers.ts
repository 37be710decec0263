// CPU- and syscall-heavy layer work (extracting, diffing, writing tars) runs in worker
// threads so that the event loop keeps scheduling other steps and streaming output.

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { CorruptContentError } from "./errors.js";
import type { Digest } from "./key.js";
import { UnsafeArchiveError } from "./layers/import.js";
import type * as Tasks from "./worker-tasks.js";

type TaskName = keyof typeof Tasks;
type TaskArgs<N extends TaskName> = Parameters<(typeof Tasks)[N]>[0];
type TaskResult<N extends TaskName> = Awaited<ReturnType<(typeof Tasks)[N]>>;

interface SerializedError {
  name: string;
  message: string;
  digest?: string;
  entry?: string;
  stack?: string;
}

interface PooledWorker {
  worker: Worker;
  busy: boolean;
  /** Fails the task it runs (see stopWorkers). */
  abort?: (error: Error) => void;
  /** Ends the worker when it has been idle for IDLE_MS. */
  retireTimer?: NodeJS.Timeout;
}

const taskModuleUrl = new URL(`./worker-tasks${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url);
// Under vitest the sources are TypeScript, which a plain worker cannot load: run in-process.
const inProcess = import.meta.url.endsWith(".ts");

const pool: PooledWorker[] = [];
/** Tasks waiting for a worker; given none when the workers are stopped. */
const waiting: Array<(worker: PooledWorker | undefined) => void> = [];
/** Set by stopWorkers: tasks fail with it from then on. */
let stopped: Error | undefined;
const maxWorkers = Math.max(2, availableParallelism());
let nextRequest = 0;
/**
 * An idle worker ends after this long. A worker's heap and its thread's malloc arena hold
 * 50-100 MB resident after a commit (measured: the process's anonymous memory grew by ~70 MB
 * with the first worker and kept it), and after the last commit of a build the packers, which
 * work on the main thread and in child processes, run beside it to the end. Starting a worker
 * again costs ~30 ms, which tasks that follow one another closely (the commits of a chain of
 * steps) do not pay.
 */
const IDLE_MS = Number(process.env.OSBUILD_WORKER_IDLE_MS ?? 300);
/** A worker started ahead of its task waits longer (the step before the task may take a while), unless told otherwise. */
const PRESTARTED_IDLE_MS = process.env.OSBUILD_WORKER_IDLE_MS ? IDLE_MS : 2000;

export async function runTask<N extends TaskName>(name: N, args: TaskArgs<N>): Promise<TaskResult<N>> {
  if (inProcess) {
    const tasks = (await import(taskModuleUrl.href)) as typeof Tasks;
    const task = tasks[name] as (input: TaskArgs<N>) => Promise<TaskResult<N>>;
    return task(args);
  }
  if (stopped) throw stopped;
  const pooled = await acquire();
  if (!pooled) throw stopped!;
  const id = nextRequest++;
  try {
    return await new Promise<TaskResult<N>>((resolve, reject) => {
      if (stopped) return reject(stopped);
      pooled.abort = (error) => {
        cleanup();
        reject(error);
      };
      const onMessage = (message: { id: number; result?: TaskResult<N>; error?: SerializedError }): void => {
        if (message.id !== id) return;
        cleanup();
        if (message.error) reject(reviveError(message.error));
        else resolve(message.result as TaskResult<N>);
      };
      const onError = (error: Error): void => {
        cleanup();
        leavePool(pooled);
        reject(error);
      };
      const cleanup = (): void => {
        pooled.abort = undefined;
        pooled.worker.off("message", onMessage);
        pooled.worker.off("error", onError);
      };
      pooled.worker.on("message", onMessage);
      pooled.worker.on("error", onError);
      pooled.worker.postMessage({ id, name, args });
    });
  } finally {
    release(pooled);
  }
}

/**
 * Starts a worker ahead of a task known to come (a rootfs step's: extracting its tree, or
 * committing its changes once it has run), so that the ~40 ms a worker takes to start and
 * load its modules pass while this thread prepares the tree. It retires, later than an idle
 * worker does, if no task comes.
 */
export function prestartWorker(): void {
  if (inProcess || stopped) return;
  const idle = pool.find((pooled) => !pooled.busy);
  if (idle) return waitLonger(idle); // one is there already: it must not retire before the task comes
  if (pool.length >= maxWorkers) return;
  void acquire().then((pooled) => {
    if (!pooled) return;
    release(pooled);
    if (!pooled.busy) waitLonger(pooled); // else a waiting task took it
  });
}

function waitLonger(pooled: PooledWorker): void {
  clearTimeout(pooled.retireTimer);
  pooled.retireTimer = setTimeout(() => retire(pooled), PRESTARTED_IDLE_MS).unref();
}

/**
 * Ends every worker thread at once (an interrupted build): the tasks they run fail with
 * `reason`, and so does every task asked for later.
 */
export async function stopWorkers(reason: Error): Promise<void> {
  stopped = reason;
  const workers = pool.splice(0);
  for (const pooled of workers) pooled.abort?.(reason);
  for (const next of waiting.splice(0)) next(undefined);
  await Promise.all(workers.map((pooled) => pooled.worker.terminate()));
}

async function acquire(): Promise<PooledWorker | undefined> {
  const idle = pool.find((candidate) => !candidate.busy);
  if (idle) {
    clearTimeout(idle.retireTimer);
    idle.busy = true;
    idle.worker.ref();
    return idle;
  }
  if (pool.length < maxWorkers) {
    const worker = new Worker(new URL("./worker-main.js", import.meta.url));
    const pooled: PooledWorker = { worker, busy: true };
    // A worker that fails or ends while idle (a prestarted one that could not start) leaves
    // the pool; a task's own listeners report what happens while it runs one.
    worker.on("error", () => leavePool(pooled));
    worker.once("exit", (code) => {
      leavePool(pooled);
      pooled.abort?.(new Error(`a layer worker ended (exit code ${code}) before its task did`));
    });
    pool.push(pooled);
    return pooled;
  }
  return new Promise((resolve) => waiting.push(resolve));
}

function release(pooled: PooledWorker): void {
  if (!pool.includes(pooled)) {
    // It died: a waiting task gets a new worker in its place.
    const next = waiting.shift();
    if (next) void acquire().then(next);
    return;
  }
  const next = waiting.shift();
  if (next) {
    next(pooled);
    return;
  }
  pooled.busy = false;
  pooled.worker.unref(); // idle workers never keep the process alive
  pooled.retireTimer = setTimeout(() => retire(pooled), IDLE_MS).unref();
}

function retire(pooled: PooledWorker): void {
  if (pooled.busy || !pool.includes(pooled)) return;
  leavePool(pooled);
  void pooled.worker.terminate();
}

function leavePool(pooled: PooledWorker): void {
  const index = pool.indexOf(pooled);
  if (index >= 0) pool.splice(index, 1);
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof CorruptContentError) return { name: error.name, message: error.message, digest: error.digest };
  if (error instanceof UnsafeArchiveError) return { name: error.name, message: error.message, entry: error.entry };
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack };
  return { name: "Error", message: String(error) };
}

function reviveError(error: SerializedError): Error {
  if (error.name === "CorruptContentError") {
    const revived = new CorruptContentError(error.digest as Digest, "");
    revived.message = error.message;
    return revived;
  }
  if (error.name === "UnsafeArchiveError") {
    const revived = new UnsafeArchiveError(error.entry ?? "", "");
    revived.message = error.message;
    return revived;
  }
  const revived = new Error(error.message);
  revived.name = error.name;
  if (error.stack) revived.stack = error.stack;
  return revived;
}


