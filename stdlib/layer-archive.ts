// A layer's events (entries, their data, the end of each file's data) as an archive's bytes,
// for the formats that put a header before each entry and pad each file's data (cpio newc,
// tar). One buffer per batch read, so that pigz/zstd get large writes and backpressure is
// awaited once per batch.

import type { FileEntry, LayerEvent } from "../engine/index.js";

export interface ArchiveFormat {
  /** The entry's header, and whatever the format puts right after it (a symlink's target). */
  header(entry: FileEntry): readonly Buffer[];
  /** The zero bytes after `dataSize` bytes of a file's data. */
  padding(dataSize: number): number;
}

export async function* archiveLayer(batches: AsyncIterable<readonly LayerEvent[]>, format: ArchiveFormat): AsyncGenerator<Buffer> {
  let dataSize = 0;
  for await (const batch of batches) {
    const out: Buffer[] = [];
    for (const event of batch) {
      if (event.type === "data") {
        out.push(event.chunk);
        continue;
      }
      if (event.type === "end") {
        const padding = format.padding(dataSize);
        if (padding > 0) out.push(Buffer.alloc(padding));
        dataSize = 0;
        continue;
      }
      out.push(...format.header(event.entry));
      // Only a file's own entry carries data (a hardlink's goes with the file it links to).
      if (event.entry.type === "file") dataSize = event.entry.size;
    }
    if (out.length > 0) yield Buffer.concat(out);
  }
}
