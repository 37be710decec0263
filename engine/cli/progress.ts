// How build events reach the user: NDJSON with --json, a live display on a terminal,
// plain lines otherwise.

import { formatDuration } from "./format.js";
import type { BuildEvent, EventSink, TransferEvent } from "../events.js";

export function jsonSink(write: (line: string) => void = (line) => process.stdout.write(line)): EventSink {
  return (event) => write(`${JSON.stringify(event)}\n`);
}

const STATUS_MARK = { built: "✓", cached: "·", failed: "✗" } as const;

/** Plain lines: one when a step starts building, one when any step finishes. */
export function plainSink(out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): EventSink {
  return (event) => {
    const line = describe(event);
    if (!line) return;
    (event.type === "warning" || (event.type === "step" && event.status === "failed") ? err : out).write(`${line}\n`);
  };
}

/** A terminal display: finished steps scroll up, running ones stay at the bottom with a timer. */
export function terminalSink(stream: NodeJS.WriteStream = process.stderr, out: NodeJS.WritableStream = process.stdout): { sink: EventSink; stop: () => void } {
  const running = new Map<string, { kind: string; since: number }>();
  const transfers = new Map<string, TransferEvent>();
  let drawnLines = 0;
  let frame = 0;
  const spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
  const clear = (): void => {
    if (drawnLines > 0) stream.write(`\x1b[${drawnLines}A\x1b[0J`);
    drawnLines = 0;
  };
  const draw = (): void => {
    clear();
    const now = performance.now();
    const lines = [...running].map(([id, { kind, since }]) => `${spinner[frame % spinner.length]} ${id} (${kind}) ${formatDuration(now - since)}`);
    for (const transfer of transfers.values()) lines.push(`${transfer.direction === "push" ? "↑" : "↓"} ${transfer.direction === "push" ? "pushing to" : "pulling from"} ${transfer.remote}: ${formatSize(transfer.bytes)} of ${formatSize(transfer.totalBytes)}, ${transfer.active} blob${transfer.active === 1 ? "" : "s"} moving`);
    if (lines.length > 0) stream.write(`${lines.join("\n")}\n`);
    drawnLines = lines.length;
    frame++;
  };
  const timer = setInterval(draw, 100);
  timer.unref();
  const sink: EventSink = (event) => {
    if (event.type === "step-start") running.set(event.id, { kind: event.kind, since: performance.now() });
    if (event.type === "step" || event.type === "step-skipped") running.delete(event.id);
    if (event.type === "transfer") {
      if (event.done || event.active === 0) transfers.delete(`${event.direction} ${event.remote}`);
      else transfers.set(`${event.direction} ${event.remote}`, event);
    }
    const line = event.type === "step-start" ? undefined : describe(event);
    if (line) {
      clear();
      (event.type === "warning" || (event.type === "step" && event.status === "failed") ? stream : out).write(`${line}\n`);
    }
    draw();
  };
  return {
    sink,
    stop: () => {
      clearInterval(timer);
      clear();
    },
  };
}

function describe(event: BuildEvent): string | undefined {
  switch (event.type) {
    case "step-start":
      return `→ ${event.id} (${event.kind}) building`;
    case "step": {
      const head = `${STATUS_MARK[event.status]} ${event.id} (${event.kind}) ${event.status}${event.remote ? ` in ${event.remote}` : ""} ${formatDuration(event.ms)}`;
      if (event.status !== "failed") return head;
      const details = [`  error: ${indent(event.error ?? "failed")}`];
      if (event.hint) details.push(`  hint: ${event.hint}`);
      if (event.log) details.push(`  log: ${event.log}`);
      return [head, ...details].join("\n");
    }
    case "step-skipped":
      return `- ${event.id} (${event.kind}) skipped: ${event.reason}`;
    case "log":
      return `  [${event.id}] ${event.message}`;
    case "warning":
      return `warning: ${event.id ? `${event.id}: ` : ""}${event.message}`;
    case "summary": {
      const built = event.steps.filter((step) => step.status === "built");
      const count = (status: string): number => event.steps.filter((step) => step.status === status).length;
      if (count("failed") + count("skipped") > 0) return `${count("failed")} step(s) failed, ${count("skipped")} skipped, ${built.length} built, ${count("cached")} cached in ${formatDuration(event.ms)}`;
      if (built.length === 0) return `nothing to build (${event.steps.length} steps cached) in ${formatDuration(event.ms)}`;
      const slowest = [...built].sort((a, b) => b.ms - a.ms);
      const rows = slowest.map((step) => `  ${formatDuration(step.ms).padStart(8)}  ${step.id} (${step.kind})`);
      return [`built ${built.length} of ${event.steps.length} steps in ${formatDuration(event.ms)}; time per step:`, ...rows].join("\n");
    }
    case "output":
      return `${event.written ? "wrote" : "up to date"} ${event.path} (${formatSize(event.size)})`;
    case "attestation":
      return `wrote ${event.path} (${event.kind === "sbom" ? "SBOM" : "provenance"} of ${event.target})`;
    case "transfer": {
      if (!event.done) return undefined;
      const moved = `${event.blobs} blob${event.blobs === 1 ? "" : "s"} (${formatSize(event.bytes)})`;
      if (event.direction === "pull") return `pulled ${moved} from ${event.remote}`;
      return `pushed ${moved} to ${event.remote}${event.skipped > 0 ? `; ${event.skipped} already there` : ""}`;
    }
    case "done":
      return event.ok ? undefined : `build failed${event.error ? `: ${event.error}` : ""}`;
    default:
      return undefined;
  }
}

function indent(text: string): string {
  return text.replace(/\n/g, "\n    ");
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}
