#!/usr/bin/env python3
"""Compares what a packer wrote with a corpus manifest (see corpus.py), with tools that are
not osbuild's: a directory that GNU cpio or fsck.erofs extracted, or an ext4 filesystem read
with debugfs (every inode named as <N>, never by a name from the image).

  check_tree.py dir ROOT MANIFEST.json [--owners] [--xattrs] [--times] [--ignore NAME]...
  check_tree.py ext4 IMAGE MANIFEST.json [--ignore NAME]...   (IMAGE may be 'file?offset=N')
  check_tree.py erofs IMAGE MANIFEST.json

Prints one problem per line and exits 1 when there is any; exits 0 when every entry is exact.
Names are compared as bytes.
"""
import hashlib, json, os, re, stat, subprocess, sys, tempfile

KIND = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "sym", stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}


def load(manifest):
    with open(manifest) as source:
        entries = json.load(source)
    for entry in entries:
        entry["path"] = bytes.fromhex(entry["path"])
        if entry.get("link") is not None:
            entry["link"] = bytes.fromhex(entry["link"])
    by_path = {entry["path"]: entry for entry in entries}
    # A hardlink is a regular file with its target's content and metadata.
    for entry in entries:
        if entry["type"] == "hard":
            target = by_path[entry["link"]]
            while target["type"] == "hard":
                target = by_path[target["link"]]
            entry.update({key: target[key] for key in ("mode", "uid", "gid", "mtime", "sha256", "xattrs")}, type="file", group=target["path"])
            target.setdefault("group", target["path"])
    return entries


def compare(entries, found, options, problems):
    """found: path (bytes) → dict(type, mode, uid, gid, mtime, sha256, link, device, xattrs)."""
    wanted = {entry["path"] for entry in entries}
    for path in sorted(set(found) - wanted):
        if path.split(b"/")[0] not in options["ignore"]:
            problems.append(f"unexpected entry {path!r}")
    groups = {}
    for entry in entries:
        path = entry["path"]
        got = found.get(path)
        if got is None:
            problems.append(f"missing {path!r}")
            continue
        if got["type"] != entry["type"]:
            problems.append(f"{path!r} is a {got['type']}, expected a {entry['type']}")
            continue
        if entry["type"] != "sym" and got["mode"] != entry["mode"]:
            problems.append(f"{path!r} has mode {got['mode']:o}, expected {entry['mode']:o}")
        if options["owners"] and (got["uid"], got["gid"]) != (entry["uid"], entry["gid"]):
            problems.append(f"{path!r} is owned by {got['uid']}:{got['gid']}, expected {entry['uid']}:{entry['gid']}")
        # (GNU cpio gives the symlinks it makes the time of extraction: only debugfs reads theirs.)
        timed = ("file", "sym") if options.get("symlink_times") else ("file",)
        if options["times"] and entry["type"] in timed and got["mtime"] != entry["mtime"]:
            problems.append(f"{path!r} has mtime {got['mtime']}, expected {entry['mtime']}")
        if entry["type"] == "file" and got["sha256"] != entry["sha256"]:
            problems.append(f"{path!r} has other content (sha256 {got['sha256']})")
        if entry["type"] == "sym" and got["link"] != entry["link"]:
            problems.append(f"{path!r} points to {got['link']!r}, expected {entry['link']!r}")
        if entry["type"] in ("char", "block") and got["device"] != entry["device"]:
            problems.append(f"{path!r} is device {got['device']}, expected {entry['device']}")
        if options["xattrs"] and entry["type"] != "sym":
            expected = {name: bytes.fromhex(value) for name, value in entry["xattrs"].items()}
            if got["xattrs"] != expected:
                problems.append(f"{path!r} has xattrs {got['xattrs']!r}, expected {expected!r}")
        if "group" in entry and "inode" in got:
            groups.setdefault(entry["group"], set()).add(got["inode"])
    for group, inodes in groups.items():
        if len(inodes) != 1:
            problems.append(f"the hardlinks of {group!r} are {len(inodes)} inodes, expected one")


def walk_dir(root):
    found = {}
    root_bytes = os.fsencode(root)
    for current, dirs, files in os.walk(root_bytes):
        for name in dirs + files:
            full = os.path.join(current, name)
            info = os.lstat(full)
            path = os.path.relpath(full, root_bytes)
            kind = KIND.get(stat.S_IFMT(info.st_mode), "other")
            item = {"type": kind, "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid, "mtime": int(info.st_mtime), "inode": info.st_ino, "sha256": None, "link": None, "device": None, "xattrs": {}}
            if kind == "file":
                with open(full, "rb") as data:
                    item["sha256"] = hashlib.sha256(data.read()).hexdigest()
            elif kind == "sym":
                item["link"] = os.readlink(full)
            elif kind in ("char", "block"):
                item["device"] = [os.major(info.st_rdev), os.minor(info.st_rdev)]
            if kind != "sym":
                item["xattrs"] = {name: os.getxattr(full, name, follow_symlinks=False) for name in os.listxattr(full, follow_symlinks=False)}
            found[path] = item
    return found


def debugfs(image, commands):
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        run = subprocess.run(["debugfs", "-f", script.name, image], capture_output=True)
    if run.returncode != 0:
        sys.exit(f"debugfs failed: {run.stderr.decode(errors='replace')}")
    # -f echoes each command as "debugfs: COMMAND" before its output.
    blocks = re.split(rb"^debugfs: (.*)\n", run.stdout, flags=re.M)
    return {blocks[i].decode(): blocks[i + 1] for i in range(1, len(blocks) - 1, 2)}


# (debugfs prints owners as signed numbers: 4294967294 comes out as -2.)
LS_RECORD = re.compile(rb"/(\d+)/(\d+)/(-?\d+)/(-?\d+)/([^/]*)/(\d*)/\n")


def walk_ext4(image):
    found = {}
    pending = [(2, b"")]
    inodes = {}
    while pending:
        listings = debugfs(image, [f"ls -p <{ino}>" for ino, _ in pending])
        following = []
        for ino, prefix in pending:
            for match in LS_RECORD.finditer(listings[f"ls -p <{ino}>"]):
                child, mode, uid, gid, name = int(match[1]), int(match[2], 8), int(match[3]) & 0xFFFFFFFF, int(match[4]) & 0xFFFFFFFF, match[5]
                if name in (b".", b"..") or child == 0:  # (0: an unused slot of the directory)
                    continue
                path = prefix + name
                kind = KIND.get(stat.S_IFMT(mode), "other")
                found[path] = {"type": kind, "mode": stat.S_IMODE(mode), "uid": uid, "gid": gid, "inode": child, "sha256": None, "link": None, "device": None, "xattrs": {}}
                inodes[path] = child
                if kind == "dir":
                    following.append((child, path + b"/"))
        pending = following
    stats = debugfs(image, [command for ino in sorted(set(inodes.values())) for command in (f"stat <{ino}>", f"ea_list <{ino}>")])
    with tempfile.TemporaryDirectory() as out:
        debugfs(image, [f"rdump / {out}"])
        dumped = walk_dir(os.path.join(out, ""))
    for path, item in found.items():
        ino = inodes[path]
        text = stats[f"stat <{ino}>"].decode(errors="replace")
        item["mtime"] = int(re.search(r"^\s*mtime: 0x([0-9a-f]+)", text, re.M)[1], 16)
        device = re.search(r"Device major/minor number: ([0-9a-f]+):([0-9a-f]+)", text)
        if item["type"] in ("char", "block") and device:
            item["device"] = [int(device[1]), int(device[2])]
        for line in stats[f"ea_list <{ino}>"].split(b"\n")[1:]:
            attribute = re.match(rb"^  (.*) \((\d+)\)(?: = (.*))?$", line)
            if attribute:
                item["xattrs"][unescape_c(attribute[1]).decode("utf-8", "surrogateescape")] = ea_value(attribute[3] or b"", int(attribute[2]))
        if path in dumped:
            item["sha256"] = dumped[path]["sha256"]
            item["link"] = dumped[path]["link"]
    return found


def unescape_c(text):
    """debugfs writes control characters of names and values as C escapes (\\t, \\n, \\ooo)."""
    return re.sub(rb"\\(?:([0-7]{3})|(.))", lambda m: bytes([int(m[1], 8)]) if m[1] else {b"n": b"\n", b"t": b"\t", b"r": b"\r"}.get(m[2], m[2]), text)


def walk_erofs(image):
    """fsck.erofs unpacks names, types, owners, contents, links and devices; it drops setuid
    bits and unpacks hardlinks as copies, so modes and inode numbers come from the inodes."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["fsck.erofs", f"--extract={out}/tree", image], check=True, capture_output=True)
        found = walk_dir(os.path.join(out, "tree"))
    summary = subprocess.run(["dump.erofs", "-s", image], capture_output=True, check=True).stdout
    meta = int(re.search(rb"inode metadata start block:\s+(\d+)", summary)[1]) * 4096
    with open(image, "rb") as data:
        for path, item in found.items():
            shown = subprocess.run([b"dump.erofs", b"--path=/" + path, os.fsencode(image)], capture_output=True, check=True).stdout
            nid = int(re.search(rb"NID: (\d+)", shown)[1])
            data.seek(meta + nid * 32 + 4)  # after i_format and i_xattr_icount: i_mode
            item["mode"] = stat.S_IMODE(int.from_bytes(data.read(2), "little"))
            item["inode"] = nid
    return found


def ea_value(shown, length):
    """debugfs shows a value as hex bytes, or as a C-quoted string when it is printable."""
    shown = shown.strip()
    if shown.startswith(b'"'):
        value = unescape_c(shown[1:-1])
    else:
        value = bytes(int(byte, 16) for byte in shown.split())
    return value if len(value) == length else b"<unreadable %d bytes>" % length


def main():
    mode, source, manifest, *rest = sys.argv[1:]
    options = {"owners": "--owners" in rest, "xattrs": "--xattrs" in rest, "times": "--times" in rest, "ignore": {os.fsencode(rest[i + 1]) for i, arg in enumerate(rest) if arg == "--ignore"}}
    entries = load(manifest)
    if mode == "dir":
        found = walk_dir(source)
    elif mode == "erofs":
        found = walk_erofs(source)
        options.update(owners=True)
    else:
        found = walk_ext4(source)
        options.update(owners=True, xattrs=True, times=True, symlink_times=True)
    problems = []
    compare(entries, found, options, problems)
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
