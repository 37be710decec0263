// Counts what goes to and from each registry, for the progress line on a terminal and the
// summary at the end of a build (`transfer` events).

import type { EventSink, TransferEvent } from "../events.js";

export type Direction = TransferEvent["direction"];

/** What a transfer event reports, per registry and direction. */
type Tally = Omit<TransferEvent, "type" | "done">;

const EVERY_MS = 250;

export class TransferMeter {
  private readonly tallies = new Map<string, Tally>();
  private lastReport = 0;

  constructor(private readonly emit: EventSink) {}

  started(direction: Direction, remote: string, size: number): void {
    const tally = this.tally(direction, remote);
    tally.active++;
    tally.totalBytes += size;
    this.report();
  }

  moved(direction: Direction, remote: string, bytes: number): void {
    this.tally(direction, remote).bytes += bytes;
    this.report();
  }

  finished(direction: Direction, remote: string): void {
    const tally = this.tally(direction, remote);
    tally.active--;
    tally.blobs++;
    this.report();
  }

  /** A transfer that failed: it no longer counts as running. */
  abandoned(direction: Direction, remote: string): void {
    this.tally(direction, remote).active--;
  }

  skipped(direction: Direction, remote: string): void {
    this.tally(direction, remote).skipped++;
  }

  /** The totals of every registry and direction that saw traffic. */
  summary(): void {
    for (const tally of this.tallies.values()) {
      if (tally.blobs + tally.skipped + tally.bytes === 0) continue;
      this.emit({ type: "transfer", ...tally, active: 0, done: true });
    }
  }

  private report(): void {
    const now = performance.now();
    if (now - this.lastReport < EVERY_MS) return;
    this.lastReport = now;
    for (const tally of this.tallies.values()) if (tally.active > 0) this.emit({ type: "transfer", ...tally, done: false });
  }

  private tally(direction: Direction, remote: string): Tally {
    const id = `${direction} ${remote}`;
    let tally = this.tallies.get(id);
    if (!tally) {
      tally = { direction, remote, blobs: 0, bytes: 0, totalBytes: 0, skipped: 0, active: 0 };
      this.tallies.set(id, tally);
    }
    return tally;
  }
}
