// Errors a user can act on: what failed, where (config file:line:col or step id), what to do.

import type { Digest } from "./key.js";

export interface SourceLocation {
  file: string;
  line: number;
  column: number;
}

export function formatLocation(location: SourceLocation | undefined, cwd = process.cwd()): string {
  if (!location) return "";
  const file = location.file.startsWith(cwd + "/") ? location.file.slice(cwd.length + 1) : location.file;
  return `${file}:${location.line}:${location.column}`;
}

/** A problem with the config or the command line: exit status 2, nothing was built. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly location?: SourceLocation,
    readonly hint?: string,
    /** Lines printed before the message, e.g. compiler diagnostics that carry their own positions. */
    readonly details: readonly string[] = [],
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A step that could not do its work: exit status 1. */
export class StepError extends Error {
  constructor(
    message: string,
    readonly stepId: string,
    readonly hint?: string,
    /** The step's full log. */
    readonly logPath?: string,
  ) {
    super(message);
    this.name = "StepError";
  }
}

/** Content in the store did not match its digest. The engine drops it and rebuilds. */
export class CorruptContentError extends Error {
  constructor(
    readonly digest: Digest,
    detail: string,
  ) {
    super(`cache content ${digest} is corrupted (${detail})`);
    this.name = "CorruptContentError";
  }
}

/** Thrown by a step's `fail()`; carries the user's message as is. */
export class StepFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StepFailure";
  }
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
