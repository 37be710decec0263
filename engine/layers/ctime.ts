// How a step's changes are found without reading files: every change to an inode moves its
// ctime, so a baseline taken before the step ran separates its changes from the rest.

import { lstatSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * The filesystem's current ctime, read off a probe file, after waiting until the clock has
 * moved on: every later change to an inode gets a strictly greater ctime.
 */
export async function ctimeBaseline(dir: string): Promise<number> {
  const probe = join(dir, `ctime-probe-${process.pid}-${Math.random().toString(36).slice(2)}`);
  try {
    writeFileSync(probe, "");
    const baseline = lstatSync(probe).ctimeMs;
    for (let attempt = 0; attempt < 200; attempt++) {
      await sleep(2);
      writeFileSync(probe, "x");
      if (lstatSync(probe).ctimeMs > baseline) return baseline;
    }
    return baseline;
  } finally {
    try {
      unlinkSync(probe);
    } catch {
      /* gone */
    }
  }
}
