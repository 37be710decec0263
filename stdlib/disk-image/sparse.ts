// Sparse copies: a filesystem built in a file of its own goes into the disk image at its
// partition's offset without writing its runs of zeros, so the image stays sparse.

import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync } from "node:fs";

import { isAllZero, writeAll } from "../../formats/io.js";
const MiB = 1024 * 1024;

/**
 * Copies the filesystem file into `image` at `offset`, skipping runs of zeros so that the
 * image stays sparse. The image's range must read as zeros already (a fresh, truncated file,
 * or past its end: the image is created or extended as needed). Returns the bytes copied.
 */
export function copyIntoImage(source: string, image: string, offset: number): number {
  const chunk = Buffer.alloc(MiB);
  const input = openSync(source, "r");
  const output = openSync(image, constants.O_RDWR | constants.O_CREAT, 0o644);
  let position = 0;
  try {
    for (;;) {
      const read = readSync(input, chunk, 0, chunk.length, position);
      if (read === 0) break;
      for (let start = 0; start < read; start += SPARSE_BLOCK) {
        const piece = chunk.subarray(start, Math.min(start + SPARSE_BLOCK, read));
        if (!isAllZero(piece)) writeAll(output, piece, offset + position + start);
      }
      position += read;
    }
    // A trailing run of zeros was skipped: the image must still reach the filesystem's end.
    if (fstatSync(output).size < offset + position) ftruncateSync(output, offset + position);
  } finally {
    closeSync(input);
    closeSync(output);
  }
  return position;
}

const SPARSE_BLOCK = 64 * 1024;

/** Copies `length` bytes at `offset` of `image` into a new file, sparse. */
export function copyOutOfImage(image: string, offset: number, length: number, target: string): void {
  const chunk = Buffer.alloc(MiB);
  const input = openSync(image, "r");
  const output = openSync(target, "w", 0o644);
  try {
    for (let position = 0; position < length; ) {
      const read = readSync(input, chunk, 0, Math.min(chunk.length, length - position), offset + position);
      if (read === 0) break;
      for (let start = 0; start < read; start += SPARSE_BLOCK) {
        const piece = chunk.subarray(start, Math.min(start + SPARSE_BLOCK, read));
        if (!isAllZero(piece)) writeAll(output, piece, position + start);
      }
      position += read;
    }
    ftruncateSync(output, length);
  } finally {
    closeSync(input);
    closeSync(output);
  }
}
