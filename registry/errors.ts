// What goes wrong talking to a registry, said so that the user can act on it.

/**
 * Why a registry request failed. Callers decide on it: a cache skips a registry that is
 * `unreachable` (or fails TLS) or `denied`, refuses an entry whose content is `tampered`, and
 * treats `not-found` as a miss. Only `unreachable` is worth retrying.
 */
export type RegistryErrorCode = "unreachable" | "tls" | "denied" | "not-found" | "tampered" | "unsupported" | "failed";

/** A registry operation that failed for a reason the user can act on; `hint` says what to do. */
export class RegistryError extends Error {
  constructor(
    message: string,
    readonly hint: string,
    readonly code: RegistryErrorCode = "failed",
  ) {
    super(message);
    this.name = "RegistryError";
  }
}

export const TAMPERED_HINT = "the registry, or something between it and this machine, altered the data; try again, and report it to the registry's operator if it persists";

/** fetch and sockets say little ("fetch failed"); the system error (ECONNREFUSED, ENOTFOUND) is in `cause` or `code`. */
export function describeCause(error: unknown): string {
  const { message, cause, code } = error as { message?: string; code?: string; cause?: { message?: string; code?: string } };
  return cause?.message || cause?.code || (code && message && !message.includes(code) ? `${message} (${code})` : message) || code || String(error);
}
