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
  for await (const run of archiveLayerRuns(batches, format, Number.POSITIVE_INFINITY)) yield* run;
}

/**
 * The same bytes, as runs of about `runBytes` that each end where an entry ends (after its
 * padding), for compressors that take a whole buffer (a gzip member must end on an entry
 * boundary for the kernel's initramfs unpacker). A run is longer only when one entry is.
 * With an infinite `runBytes`, one run a batch.
 */
export async function* archiveLayerRuns(batches: AsyncIterable<readonly LayerEvent[]>, format: ArchiveFormat, runBytes: number): AsyncGenerator<Buffer[]> {
  let dataSize = 0;
  let run: Buffer[] = [];
  let runSize = 0;
  const push = (buffer: Buffer): void => {
    run.push(buffer);
    runSize += buffer.length;
  };
  const take = (): Buffer[] => {
    const taken = run;
    run = [];
    runSize = 0;
    return taken;
  };
  for await (const batch of batches) {
    for (const event of batch) {
      if (event.type === "data") {
        push(event.chunk);
        continue;
      }
      if (event.type === "end") {
        const padding = format.padding(dataSize);
        if (padding > 0) push(Buffer.alloc(padding));
        dataSize = 0;
        continue;
      }
      // An entry starts here: the run so far ends on a boundary.
      if (runSize >= runBytes) yield take();
      for (const buffer of format.header(event.entry)) push(buffer);
      // Only a file's own entry carries data (a hardlink's goes with the file it links to).
      if (event.entry.type === "file") dataSize = event.entry.size;
    }
    // One buffer a batch, so that a streaming compressor gets large writes.
    if (runBytes === Number.POSITIVE_INFINITY && run.length > 0) yield [Buffer.concat(take())];
  }
  if (run.length > 0) yield take();
}
