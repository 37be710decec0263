# Makes and lists trees for the round-trip property tests, with names as bytes throughout:
# a writer and a reader apart from osbuild's own, on the same system calls GNU tools use.
#   tree_tool.py make SPEC.json ROOT   creates the tree SPEC describes under ROOT
#   tree_tool.py list ROOT             prints every entry below ROOT as JSON (names in hex)
import hashlib, json, os, stat, sys


def make(spec_file, root):
    spec = json.load(open(spec_file))
    root = os.fsencode(root)
    later = []  # directory modes and times go last: creating entries changes them
    for entry in spec:
        path = os.path.join(root, bytes.fromhex(entry["path"]))
        kind = entry["type"]
        if kind == "dir":
            os.mkdir(path, 0o700)
            later.append(entry)
            continue
        if kind == "file":
            with open(path, "wb") as out:
                out.write(bytes.fromhex(entry["content"]))
        elif kind == "hardlink":
            os.link(os.path.join(root, bytes.fromhex(entry["linkTo"])), path)
            continue
        elif kind == "symlink":
            os.symlink(bytes.fromhex(entry["target"]), path)
        elif kind == "fifo":
            os.mkfifo(path, 0o600)
        else:
            bits = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            os.mknod(path, bits | 0o600, os.makedev(entry["major"], entry["minor"]))
        finish(path, entry)
    for entry in reversed(later):
        finish(os.path.join(root, bytes.fromhex(entry["path"])), entry)


def finish(path, entry):
    symlink = entry["type"] == "symlink"
    os.chown(path, entry["uid"], entry["gid"], follow_symlinks=False)
    for name, value in entry.get("xattrs", {}).items():
        os.setxattr(path, name, bytes.fromhex(value), follow_symlinks=False)
    if not symlink:
        os.chmod(path, entry["mode"])  # after chown, which clears setuid and setgid
    os.utime(path, (entry["mtime"], entry["mtime"]), follow_symlinks=False)


def listing(root):
    root = os.fsencode(root)
    entries = {}
    first = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            info = os.lstat(path)
            item = {"mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid, "mtime": int(info.st_mtime)}
            if stat.S_ISDIR(info.st_mode):
                item["type"] = "dir"
            elif stat.S_ISLNK(info.st_mode):
                item["type"] = "symlink"
                item["target"] = os.readlink(path).hex()
                del item["mode"]
            elif stat.S_ISREG(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if info.st_nlink > 1 and key in first:
                    item["type"] = "hardlink"
                    item["linkTo"] = first[key].hex()
                else:
                    first.setdefault(key, relative)
                    item["type"] = "file"
                    item["size"] = info.st_size
                    item["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
            elif stat.S_ISFIFO(info.st_mode):
                item["type"] = "fifo"
            else:
                item["type"] = "char" if stat.S_ISCHR(info.st_mode) else "block"
                item["major"] = os.major(info.st_rdev)
                item["minor"] = os.minor(info.st_rdev)
            try:
                names = os.listxattr(path, follow_symlinks=False)
            except OSError:
                names = []
            xattrs = {name: os.getxattr(path, name, follow_symlinks=False).hex() for name in names if not name.startswith("system.")}
            if xattrs:
                item["xattrs"] = xattrs
            entries[relative.hex()] = item
    # os.walk meets hardlinks in directory order; the first name in byte order is the file
    json.dump(entries, sys.stdout, sort_keys=True)


if sys.argv[1] == "make":
    make(sys.argv[2], sys.argv[3])
else:
    listing(sys.argv[2])
