#!/usr/bin/env python3
"""Splits a gzip file into its members and checks each one ends where a newc cpio entry ends
(the kernel's initramfs unpacker refuses a member that stops inside an entry). Prints one
line per member: compressed size, uncompressed size, whether the header has a name or a time.
Written apart from osbuild's own cpio and gzip code, on purpose."""
import sys, zlib

data = open(sys.argv[1], "rb").read()
members = []
pos = 0
while pos < len(data):
    if data[pos:pos + 2] != b"\x1f\x8b":
        sys.exit(f"no gzip member at byte {pos}")
    flags, mtime = data[pos + 3], int.from_bytes(data[pos + 4:pos + 8], "little")
    d = zlib.decompressobj(31)
    out = d.decompress(data[pos:]) + d.flush()
    used = len(data) - pos - len(d.unused_data)
    members.append((used, out, flags, mtime))
    pos += used

cpio = b"".join(m[1] for m in members)
boundaries = {0}
off = 0
while True:
    if cpio[off:off + 6] != b"070701":
        sys.exit(f"no newc header at {off}")
    fields = [int(cpio[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
    size, namesize = fields[6], fields[11]
    name = cpio[off + 110: off + 110 + namesize - 1]
    off = (off + 110 + namesize + 3) & ~3
    off = (off + size + 3) & ~3
    boundaries.add(off)
    if name == b"TRAILER!!!":
        break
end = 0
for used, out, flags, mtime in members:
    end += len(out)
    if end not in boundaries and end < off:
        sys.exit(f"a member ends at {end}, inside an entry")
    print(used, len(out), "name" if flags & 0x08 else "-", mtime)
