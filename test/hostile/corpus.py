#!/usr/bin/env python3
"""The hostile corpus: tar archives of root filesystems that try everything a base from
someone else could try, written with Python's tarfile (a writer independent of osbuild's).

  corpus.py legal OUT.tar MANIFEST.json HOSTFILE SENTINEL_DIR
      names, links, devices, modes, owners and xattrs that are all legal: a packer must pack
      them exactly; MANIFEST.json says what each entry is (names as hex bytes).
  corpus.py big OUT.tar MANIFEST.json COUNT
      COUNT entries in one layer.
  corpus.py refused NAME OUT.tar HOSTFILE SENTINEL_DIR
      one archive that must be refused; NAME is one of REFUSED below.
  corpus.py layers OUT_PREFIX MANIFEST.json
      three layers with hardlink chains across them (OUT_PREFIX-1.tar ...), for an image.
"""
import hashlib, io, json, sys, tarfile

SDE = 1700000000
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")


class Corpus:
    def __init__(self, path):
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
        self.manifest = []
        self.known = set()

    def add(self, name, kind="file", data=b"", link=b"", mode=None, uid=0, gid=0, mtime=SDE - 100, major=0, minor=0, xattrs=None, expect=True):
        info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
        info.uid, info.gid, info.mtime = uid, gid, mtime
        info.uname = info.gname = ""
        types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
        info.type = types[kind]
        info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o777 if kind == "sym" else 0o644)
        if kind in ("sym", "hard"):
            info.linkname = link.decode("utf-8", "surrogateescape")
        if kind in ("char", "block"):
            info.devmajor, info.devminor = major, minor
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{key}": value.decode("latin-1") for key, value in xattrs.items()}
        if kind == "file":
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))
        else:
            self.tar.addfile(info)
        if expect:
            # Parents the archive leaves out are made by the importer: root's, 0755.
            parts = name.split(b"/")
            for depth in range(1, len(parts)):
                parent = b"/".join(parts[:depth])
                if parent not in self.known:
                    self.manifest.append({"path": parent.hex(), "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": SDE, "sha256": None, "link": None, "device": None, "xattrs": {}})
                    self.known.add(parent)
            self.known.add(name)
            self.manifest.append({
                "path": name.hex(), "type": kind, "mode": info.mode & 0o7777, "uid": uid, "gid": gid,
                "mtime": min(mtime, SDE), "sha256": hashlib.sha256(data).hexdigest() if kind == "file" else None,
                "link": link.hex() if kind in ("sym", "hard") else None,
                "device": [major, minor] if kind in ("char", "block") else None,
                "xattrs": {key: value.hex() for key, value in (xattrs or {}).items()},
            })

    def close(self, manifest_path=None):
        self.tar.close()
        if manifest_path:
            with open(manifest_path, "w") as out:
                json.dump(self.manifest, out, indent=1)


def legal(out, manifest, hostfile, sentinel):
    host = hostfile.encode()
    c = Corpus(out)
    for d in (b"etc", b"usr", b"usr/bin", b"dev", b"tmp", b"weird", b"sbin"):
        c.add(d, "dir", mode=0o1777 if d == b"tmp" else 0o755)
    c.add(b"sbin/init", data=b"#!/bin/sh\necho init\n", mode=0o755)
    # Names every Linux filesystem allows; each must come out as these exact bytes.
    names = [
        b'evil"\nwrite ' + host + b' stolen\nsif "/x',  # the debugfs injection of issue 9
        b"dump " + host + b" out", b"rdump / " + sentinel.encode(),
        b"new\nline", b"tab\there", b"car\rriage", b'quote"d', b"single'q", b"back\\slash", b"sp ace", b" leading space", b"trailing space ",
        b"-leading-dash", b"--help", b"-rf", b"sys\\x2dname.service", b"dev-disk-by\\x2dlabel.mount",
        b"non-utf8-\xff\xfe", b"latin1-\xe9t\xe9", b"overlong-\xc0\xaf", b"surrogate-\xed\xa0\x80", b"a=b", b"$", b":colon", b"#hash", b"\x01ctrl\x1f",
        b"semi;colon && touch " + sentinel.encode() + b"/pwned", b"$(touch " + sentinel.encode() + b"/pwned2)", b"`id`", b"star*", b"qu?estion", b"[bracket]",
        b"x" * 254,  # (255, the longest Linux allows, is a case of its own: mkfs.erofs 1.5 can't write it)
    ]
    for index, name in enumerate(names):
        c.add(b"weird/" + name, data=b"content %d of " % index + name, mode=0o640, uid=1000 + index, gid=2000 + index)
    c.add(b"weird/dir\nwith newline", "dir", mode=0o750, uid=7, gid=8)
    c.add(b"weird/dir\nwith newline/inner \xff", data=b"inner", mode=0o600)
    # Symlinks: out of the tree, to the host file, loops, chains, odd bytes in targets.
    c.add(b"weird/to-host", "sym", link=host)
    c.add(b"weird/to-sentinel", "sym", link=sentinel.encode())
    c.add(b"weird/escape", "sym", link=b"../../../../../../../../etc/shadow")
    c.add(b"weird/loop-a", "sym", link=b"loop-b")
    c.add(b"weird/loop-b", "sym", link=b"loop-a")
    c.add(b"weird/self", "sym", link=b"self")
    c.add(b"weird/chain-1", "sym", link=b"chain-2")
    c.add(b"weird/chain-2", "sym", link=b"/weird/chain-3")
    c.add(b"weird/chain-3", "sym", link=b"../../../..//" + host)
    c.add(b"weird/target\nnewline", "sym", link=b"new\nline")
    c.add(b"weird/target-\xff", "sym", link=b"non-utf8-\xff\xfe")
    c.add(b"weird/long-target", "sym", link=b"y/" * 1000 + b"end")
    c.add(b"sbin/shell", "sym", link=b"/../../../bin/sh")
    # Hardlinks, one with a hostile name, and a link to a link.
    c.add(b"weird/hard\n1", "hard", link=b"weird/" + names[0])
    c.add(b"weird/hard-2", "hard", link=b"weird/hard\n1")
    # Devices and fifos in odd places, one with a hostile name.
    c.add(b"dev/null", "char", mode=0o666, major=1, minor=3)
    c.add(b"etc/passwd", "char", mode=0o644, major=1, minor=3)
    c.add(b"usr/bin/sh", "block", mode=0o660, gid=6, major=8, minor=0)
    c.add(b"weird/dev\nice", "char", mode=0o600, major=4095, minor=0xFFFFF)
    c.add(b"weird/fifo\tname", "fifo", mode=0o620)
    # Modes and owners at their edges.
    c.add(b"usr/bin/setuid", data=b"s", mode=0o4755)
    c.add(b"usr/bin/setgid", data=b"g", mode=0o2711, gid=42)
    c.add(b"usr/bin/nothing", data=b"", mode=0o000)
    c.add(b"usr/bin/big-ids", data=b"ids", uid=100000, gid=4294967294)
    c.add(b"usr/bin/future", data=b"future", mtime=SDE + 10**6)
    # Extended attributes, names with odd bytes included.
    # (A pax record's key ends at the first "=": no tar can hold an xattr name with one.)
    c.add(b"usr/bin/ping", data=b"ping", mode=0o755, xattrs={"security.capability": CAPABILITY, "user.a b\tc": b"\x00\n=", "trusted.t": b"t"})
    c.add(b"weird/xattr\nfile", data=b"x", xattrs={"user.name": b"value\nwith newline"})
    c.close(manifest)


def longest(out, manifest):
    """The longest name Linux allows (255 bytes), in a directory with the longest such names."""
    c = Corpus(out)
    c.add(b"n" * 255, "dir")
    c.add(b"n" * 255 + b"/" + b"\xff" * 255, data=b"longest")
    c.add(b"n" * 255 + b"/l", "sym", link=b"/".join([b"y" * 255] * 15))
    c.close(manifest)


def protofile(out, manifest, hostfile):
    """Names without spaces or tabs that mkfs.xfs's protofile reader would still split
    (it splits at isspace: \\v, \\f, \\r too), spelling "my content is the host's file"."""
    c = Corpus(out)
    c.add(b"sbin", "dir")
    c.add(b"sbin/init", data=b"#!/bin/sh\n", mode=0o755)
    c.add(b"x\v----644\v0\v0\v" + hostfile.encode(), data=b"innocent")
    c.close(manifest)


def big(out, manifest, count):
    c = Corpus(out)
    c.add(b"many", "dir")
    per_dir = 1000
    for d in range((count + per_dir - 1) // per_dir):
        c.add(b"many/%04d" % d, "dir")
    for i in range(count):
        c.add(b"many/%04d/f%06d" % (i // per_dir, i), data=b"%d\n" % i if i % 7 else b"")
    c.close(manifest)


def layers(prefix, manifest):
    """Three layers: a file and a hardlink to it; a whiteout of the file; a link to the link."""
    one = Corpus(prefix + "-1.tar")
    one.add(b"data", "dir")
    one.add(b"data/original", data=b"shared bytes\n", mode=0o640, uid=5, gid=6)
    one.add(b"data/alias\xffname", "hard", link=b"data/original")
    one.add(b"data/other", "hard", link=b"data/original")
    one.close()
    two = Corpus(prefix + "-2.tar")
    two.add(b"data/.wh.original", data=b"", expect=False)
    two.close()
    three = Corpus(prefix + "-3.tar")
    three.add(b"data/third", "hard", link=b"data/alias\xffname", expect=False)
    three.close()
    with open(manifest, "w") as out:
        json.dump([
            {"path": b"data".hex(), "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime": SDE - 100, "sha256": None, "link": None, "device": None, "xattrs": {}},
            *({"path": p.hex(), "type": "file", "mode": 0o640, "uid": 5, "gid": 6, "mtime": SDE - 100, "sha256": hashlib.sha256(b"shared bytes\n").hexdigest(), "link": None, "device": None, "xattrs": {}, "group": "shared"} for p in (b"data/alias\xffname", b"data/other", b"data/third")),
        ], out, indent=1)


REFUSED = {
    "dotdot": lambda c, host, sentinel: (c.add(b"etc", "dir"), c.add(b"../escaped")),
    "absolute": lambda c, host, sentinel: c.add(sentinel.encode() + b"/absolute"),
    "through-symlink": lambda c, host, sentinel: (c.add(b"link", "sym", link=sentinel.encode()), c.add(b"link/through")),
    "hardlink-to-host": lambda c, host, sentinel: c.add(b"stolen", "hard", link=host),
    "hardlink-out": lambda c, host, sentinel: c.add(b"stolen", "hard", link=b"../../../../" + host.lstrip(b"/")),
    "whiteout-dotdot": lambda c, host, sentinel: (c.add(b"d", "dir"), c.add(b"d/.wh...", data=b"")),
    "whiteout-dot": lambda c, host, sentinel: c.add(b".wh..", data=b""),
    "whiteout-root": lambda c, host, sentinel: c.add(b".wh.", data=b""),
    "device-numbers": lambda c, host, sentinel: c.add(b"dev", "char", major=4096, minor=1),
    "below-a-file": lambda c, host, sentinel: (c.add(b"f", data=b"x"), c.add(b"f/below", data=b"y")),
}


def raw_header(name, size=0, typeflag=b"0", mode=b"0000644", uid=b"0000000", gid=b"0000000", mtime=b"14507111000", size_field=None):
    """A ustar header written byte by byte, so that it can say what no tar library would."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = mode.ljust(7, b"0")[:7] + b"\0" if len(mode) <= 7 else mode[:8]
    block[108:116] = uid if len(uid) == 8 else uid + b"\0"
    block[116:124] = gid if len(gid) == 8 else gid + b"\0"
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[136:148] = mtime + b"\0"
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax(records):
    # (a pax length counts its own digits: fix each record until it does)
    out = b""
    for key, value in records:
        rest = b" %s=%s\n" % (key, value)
        length = len(rest) + 1
        while len(str(length)) + len(rest) != length:
            length = len(str(length)) + len(rest)
        out += str(length).encode() + rest
    return raw_header(b"PaxHeader", size=len(out), typeflag=b"x") + out + b"\0" * (-len(out) % 512)


LYING = {
    # A header whose size runs past the end of the archive.
    "size-past-end": lambda: raw_header(b"big", size=10**6) + b"only ten b" + b"\0" * 502 + b"\0" * 1024,
    # GNU base-256 with the sign bit: a negative uid.
    "negative-uid": lambda: raw_header(b"neg", uid=b"\xff" * 8) + b"\0" * 1024,
    "octal-junk": lambda: raw_header(b"junk", mode=b"0009999") + b"\0" * 1024,
    "pax-mtime-nan": lambda: pax([(b"mtime", b"NaN")]) + raw_header(b"nan") + b"\0" * 1024,
    "pax-size-junk": lambda: pax([(b"size", b"12abc")]) + raw_header(b"sizejunk") + b"\0" * 1024,
    "pax-uid-huge": lambda: pax([(b"uid", b"99999999999999999999")]) + raw_header(b"huge") + b"\0" * 1024,
    "pax-length-lie": lambda: raw_header(b"PaxHeader", size=20, typeflag=b"x") + b"99 path=x\n" + b"\0" * 502 + raw_header(b"f") + b"\0" * 1024,
}


def refused(name, out, hostfile, sentinel):
    if name in LYING:
        with open(out, "wb") as archive:
            archive.write(LYING[name]())
        return
    c = Corpus(out)
    REFUSED[name](c, hostfile.encode(), sentinel)
    c.close()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "legal":
        legal(*sys.argv[2:6])
    elif command == "protofile":
        protofile(*sys.argv[2:5])
    elif command == "longest":
        longest(sys.argv[2], sys.argv[3])
    elif command == "big":
        big(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "layers":
        layers(sys.argv[2], sys.argv[3])
    elif command == "refused":
        refused(*sys.argv[2:6])
    elif command == "list-refused":
        print("\n".join([*REFUSED, *LYING]))
    else:
        sys.exit(f"unknown command {command}")
