// Sparse copies: a filesystem built in a file of its own goes into the disk image at its
// partition's offset without writing its runs of zeros, so the image stays sparse.

import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync } from "node:fs";
import { isAllZero, writeAll } from "../../formats/io.js";

const MiB = 1024 * 1024;
const SPARSE_BLOCK = 64 * 1024;

/**
 * Copies the filesystem file into `image` at `offset`, skipping runs of zeros so that the
 * image stays sparse. The image's range must read as zeros already (a fresh, truncated file,
 * or past its end: the image is created or extended as needed). Returns the bytes copied.
 */
export function copyIntoImage(source: string, image: string, offset: number): number {
  const input = openSync(source, "r");
  const output = openSync(image, constants.O_RDWR | constants.O_CREAT, 0o644);
  try {
    const copied = sparseCopy(input, 0, output, offset);
    // A trailing run of zeros was skipped: the image must still reach the filesystem's end.
    if (fstatSync(output).size < offset + copied) ftruncateSync(output, offset + copied);
    return copied;
  } finally {
    closeSync(input);
    closeSync(output);
  }
}

/** Copies `length` bytes at `offset` of `image` into a new file, sparse. */
export function copyOutOfImage(image: string, offset: number, length: number, target: string): void {
  const input = openSync(image, "r");
  const output = openSync(target, "w", 0o644);
  try {
    sparseCopy(input, offset, output, 0, length);
    ftruncateSync(output, length);
  } finally {
    closeSync(input);
    closeSync(output);
  }
}

/**
 * Copies from `input` at `from` to `output` at `to`, `length` bytes or up to the input's end,
 * leaving 64 KiB runs of zeros unwritten. Returns the bytes read.
 */
function sparseCopy(input: number, from: number, output: number, to: number, length = Infinity): number {
  const chunk = Buffer.alloc(MiB);
  let position = 0;
  while (position < length) {
    const read = readSync(input, chunk, 0, Math.min(chunk.length, length - position), from + position);
    if (read === 0) break;
    for (let start = 0; start < read; start += SPARSE_BLOCK) {
      const piece = chunk.subarray(start, Math.min(start + SPARSE_BLOCK, read));
      if (!isAllZero(piece)) writeAll(output, piece, to + position + start);
    }
    position += read;
  }
  return position;
}
