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
  for await (const piece of archiveLayerRuns(batches, format, Number.POSITIVE_INFINITY)) yield piece.bytes;
}

/** Bytes of the archive; `runEnds` when they end a run (see archiveLayerRuns). */
export interface ArchivePiece {
  bytes: Buffer;
  runEnds: boolean;
}

/**
 * The same bytes, cut into runs of about `runBytes` that each end where an entry ends (after
 * its padding), for compressors that take a run at a time (a gzip member must end on an entry
 * boundary for the kernel's initramfs unpacker). A run is longer only when one entry is. The
 * bytes come a batch at a time (large writes, backpressure awaited once a batch), a batch cut
 * in two where a run ends in it.
 */
export async function* archiveLayerRuns(batches: AsyncIterable<readonly LayerEvent[]>, format: ArchiveFormat, runBytes: number): AsyncGenerator<ArchivePiece> {
  let dataSize = 0;
  let runSize = 0;
  for await (const batch of batches) {
    let out: Buffer[] = [];
    const push = (buffer: Buffer): void => {
      out.push(buffer);
      runSize += buffer.length;
    };
    const pieces: ArchivePiece[] = [];
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
      if (runSize >= runBytes) {
        pieces.push({ bytes: Buffer.concat(out), runEnds: true });
        out = [];
        runSize = 0;
      }
      for (const buffer of format.header(event.entry)) push(buffer);
      // Only a file's own entry carries data (a hardlink's goes with the file it links to).
      if (event.entry.type === "file") dataSize = event.entry.size;
    }
    if (out.length > 0) pieces.push({ bytes: Buffer.concat(out), runEnds: false });
    yield* pieces;
  }
}
