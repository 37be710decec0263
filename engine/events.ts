// Build events: what `--json` prints one per line, and what the progress display renders.
// The `step` and `done` shapes are part of the command-line contract: only add fields.

export type StepStatus = "built" | "cached" | "failed";

export interface PlanEvent {
  type: "plan";
  targets: string[];
  steps: Array<{ id: string; kind: string }>;
}

export interface StepStartEvent {
  type: "step-start";
  id: string;
  kind: string;
  key: string;
}

export interface StepEvent {
  type: "step";
  id: string;
  kind: string;
  status: StepStatus;
  key: string;
  ms: number;
  /** Set when status is "failed". */
  error?: string;
  hint?: string;
  /** Path of the step's full log. */
  log?: string;
  /** Set when the result came from a registry of the shared cache: its oci:// reference. */
  remote?: string;
}

export interface StepSkippedEvent {
  type: "step-skipped";
  id: string;
  kind: string;
  reason: string;
}

export interface LogEvent {
  type: "log";
  id: string;
  message: string;
}

export interface WarningEvent {
  type: "warning";
  message: string;
  id?: string;
}

export interface OutputEvent {
  type: "output";
  target: string;
  path: string;
  digest: string;
  size: number;
  /** False when the file in the output directory was already up to date. */
  written: boolean;
}

/** An SBOM or provenance statement written beside a target's output. */
export interface AttestationEvent {
  type: "attestation";
  target: string;
  kind: "sbom" | "provenance";
  path: string;
}

/** Blobs moving to or from a registry of the shared cache: while they move, and a last one per registry (`done`). */
export interface TransferEvent {
  type: "transfer";
  direction: "pull" | "push";
  /** oci://HOST/REPOSITORY */
  remote: string;
  /** Blobs moved so far. */
  blobs: number;
  /** Bytes on the wire so far. */
  bytes: number;
  /** The sizes of the blobs started so far. */
  totalBytes: number;
  /** Blobs that did not need to move (already in the registry, or already here). */
  skipped: number;
  /** Blobs moving now. */
  active: number;
  done: boolean;
}

export interface SummaryEvent {
  type: "summary";
  ms: number;
  steps: Array<{ id: string; kind: string; status: StepStatus | "skipped"; ms: number }>;
}

export interface DoneEvent {
  type: "done";
  ok: boolean;
  outputs: Record<string, string>;
  error?: string;
}

export type BuildEvent = PlanEvent | StepStartEvent | StepEvent | StepSkippedEvent | LogEvent | WarningEvent | OutputEvent | AttestationEvent | TransferEvent | SummaryEvent | DoneEvent;

export type EventSink = (event: BuildEvent) => void;
