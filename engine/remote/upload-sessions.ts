// Where interrupted chunked uploads stand, kept in the cache's memo directory so that the next
// `osbuild run --cache-to` goes on from the last chunk the registry took. Only a memo: a lost
// or stale session costs the upload of that blob again, nothing else.

import type { UploadSession, UploadSessions } from "../../registry/client.js";
import { readMemoFile, writeMemoFile } from "../memo.js";

/** Sessions older than this are forgotten (registries purge abandoned uploads after a while). */
const MAX_AGE_MS = 24 * 3600 * 1000;

export class MemoUploadSessions implements UploadSessions {
  constructor(private readonly file: string) {}

  get(key: string): UploadSession | undefined {
    const session = this.read()[key];
    return session && Date.now() - session.time < MAX_AGE_MS ? { location: session.location, offset: session.offset } : undefined;
  }

  set(key: string, session: UploadSession): void {
    this.update((all) => (all[key] = { ...session, time: Date.now() }));
  }

  delete(key: string): void {
    this.update((all) => delete all[key]);
  }

  private read(): Record<string, UploadSession & { time: number }> {
    return readMemoFile<Record<string, UploadSession & { time: number }>>(this.file, {});
  }

  private update(change: (all: Record<string, UploadSession & { time: number }>) => void): void {
    const all = this.read();
    change(all);
    for (const [key, session] of Object.entries(all)) if (Date.now() - session.time >= MAX_AGE_MS) delete all[key];
    writeMemoFile(this.file, all);
  }
}
