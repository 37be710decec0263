// Exact reads and writes at an offset, and the zero test of sparse copies: for the format
// modules and the steps that read or patch images in place.

import { ftruncateSync, readSync, writeSync } from "node:fs";

/** `length` bytes at `offset`; throws, naming `what`, when the file ends before them. */
export function readExact(fd: number, offset: number, length: number, what: string): Buffer {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const read = readSync(fd, buffer, done, length - done, offset + done);
    if (read === 0) throw new Error(`${what}: the image ends before byte ${offset + length}`);
    done += read;
  }
  return buffer;
}

/** Writes all of `data` at `offset` (writeSync may write less than asked). */
export function writeAll(fd: number, data: Uint8Array, offset: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, offset + done);
}

const ZEROS = Buffer.alloc(64 * 1024);

/** True when every byte is zero: a run a sparse copy can leave as a hole. */
export function isAllZero(bytes: Uint8Array): boolean {
  for (let start = 0; start < bytes.length; start += ZEROS.length) {
    const piece = bytes.subarray(start, start + ZEROS.length);
    if (Buffer.compare(piece, ZEROS.subarray(0, piece.length)) !== 0) return false;
  }
  return true;
}

/**
 * Writes a stream of bytes to a new file, leaving 64 KiB runs of zeros as holes (a pulled disk
 * image stays as sparse as the one that was pushed). `finish` sets the file's size.
 */
export class SparseWriter {
  private readonly buffer = Buffer.allocUnsafe(1 << 20);
  private used = 0;
  private position = 0;

  constructor(private readonly fd: number) {}

  write(chunk: Uint8Array): void {
    let input = chunk;
    while (input.length > 0) {
      const take = Math.min(this.buffer.length - this.used, input.length);
      this.buffer.set(input.subarray(0, take), this.used);
      this.used += take;
      input = input.subarray(take);
      if (this.used === this.buffer.length) this.flush();
    }
  }

  /** Writes what is buffered and sets the size; returns it. */
  finish(): number {
    this.flush();
    ftruncateSync(this.fd, this.position);
    return this.position;
  }

  private flush(): void {
    for (let start = 0; start < this.used; start += ZEROS.length) {
      const piece = this.buffer.subarray(start, Math.min(start + ZEROS.length, this.used));
      if (!isAllZero(piece)) writeAll(this.fd, piece, this.position + start);
    }
    this.position += this.used;
    this.used = 0;
  }
}
