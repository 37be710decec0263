// A time bound for synchronous code under test: a reader stuck in a loop blocks the event
// loop, so no timer of the test's own can fire. A watchdog thread waits on a counter the
// test bumps before each input; when it does not move for `limitMs`, the watchdog saves the
// input it was given to a file, says so, and ends the process (the test run fails loudly
// instead of hanging CI).

import { Worker } from "node:worker_threads";

const MAX_INPUT = 1 << 20;

export interface Watchdog {
  /** Call before each input: `label` says which reader, `input` is saved if it hangs. */
  beat(label: string, input: Uint8Array): void;
  stop(): Promise<void>;
}

const WATCHDOG_SOURCE = `
const { workerData } = require("node:worker_threads");
const { writeFileSync } = require("node:fs");
const counter = new Int32Array(workerData.shared, 0, 2);
const bytes = new Uint8Array(workerData.shared, 8);
let seen = Atomics.load(counter, 0);
for (;;) {
  const result = Atomics.wait(counter, 0, seen, workerData.limitMs);
  if (Atomics.load(counter, 1) === 1) break; // stopped
  const now = Atomics.load(counter, 0);
  if (result === "timed-out" && now === seen) {
    const length = new DataView(workerData.shared).getUint32(8, true);
    const labelLength = bytes[4];
    const label = Buffer.from(bytes.subarray(5, 5 + labelLength)).toString();
    const file = "/tmp/osbuild-property-hang-" + process.pid + ".bin";
    writeFileSync(file, bytes.subarray(5 + 64, 5 + 64 + length));
    process.stderr.write("watchdog: " + label + " ran for more than " + workerData.limitMs + " ms on one input (saved to " + file + ")\\n");
    process.exit(70);
  }
  seen = now;
}
`;

export function startWatchdog(limitMs: number): Watchdog {
  const shared = new SharedArrayBuffer(8 + 5 + 64 + MAX_INPUT);
  const counter = new Int32Array(shared, 0, 2);
  const bytes = new Uint8Array(shared, 8);
  const view = new DataView(shared);
  const worker = new Worker(WATCHDOG_SOURCE, { eval: true, workerData: { shared, limitMs } });
  worker.unref();
  return {
    beat(label, input) {
      const length = Math.min(input.length, MAX_INPUT);
      view.setUint32(8, length, true);
      const name = Buffer.from(label).subarray(0, 64);
      bytes[4] = name.length;
      bytes.set(name, 5);
      bytes.set(input.subarray(0, length), 5 + 64);
      Atomics.add(counter, 0, 1);
      Atomics.notify(counter, 0);
    },
    async stop() {
      Atomics.store(counter, 1, 1);
      Atomics.add(counter, 0, 1);
      Atomics.notify(counter, 0);
      await worker.terminate();
    },
  };
}
