// An erofs filesystem from a tree, as osbuilder makes it (mkfs.erofs -zlz4hc -Enoinline_data),
// without root, mounts or loop devices. erofs is read-only and as big as its content, so it
// is built into a file of its own, copied into the image at the offset (sparse), and its
// size returned for the caller to lay out the rest.
//
// Reproducible: -T gives every inode the same time (mkfs.erofs would otherwise copy each
// file's mtime, and use the clock for the superblock), -U fixes the UUID; directories are
// sorted and hardlinks found by inode, so two copies of a tree give the same bytes.
// Every inode is the extended (64-byte) kind, as in osbuilder's images: mkfs.erofs writes a
// compact one only for a file whose mtime is the build time, which -T makes every file, and
// that would make the image smaller than osbuilder's by 32 bytes a file (its size and
// partitions are osbuilder's only with the same inodes).
//
// mkfs.erofs 1.5 takes owners, modes, device nodes and xattrs from the files on disk and has
// no manifest to take them from instead. It runs in a fakeroot session that answers from the
// layers (see fakeroot.ts), as root too: the image is the same whoever builds it and whatever
// the host's filesystem says (its order of xattrs, say), security xattrs included.

import { rmSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, FileEntry } from "../../engine/index.js";
import { encodeName } from "../../formats/names.js";
import { withLayerMetadata } from "./fakeroot.js";
import { copyIntoImage } from "./sparse.js";

type Exec = (command: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

export interface ErofsOptions {
  uuid: string;
  /** Seconds: every inode's time and the superblock's build time. */
  time: number;
  /** Default "lz4hc", as osbuilder. */
  compression?: "lz4hc" | "none";
  workDir: string;
  /** The layers' metadata: what mkfs.erofs sees of each file, whatever the tree on disk has. */
  entries: readonly FileEntry[];
}

/** Makes the erofs image of `tree`, writes it into `image` at `layout.offset`, returns its size in bytes. */
export async function makeErofs(exec: Exec, image: string, layout: { offset: number }, tree: string, options: ErofsOptions): Promise<number> {
  const entries = options.entries;
  // mkfs.erofs 1.5 fails on a name of 255 bytes (the longest Linux allows) with "Could not
  // format the device": say which entry instead.
  const tooLong = entries.find((entry) => encodeName(entry.path.slice(entry.path.lastIndexOf("/") + 1)).length >= 255);
  if (tooLong) throw new Error(`erofs: mkfs.erofs 1.5 can't write the name of '${tooLong.path}' (255 bytes; it takes up to 254): rename it, or use ext4`);
  const anyXattrs = entries.some((entry) => Object.keys(entry.xattrs ?? {}).length > 0);
  const file = join(options.workDir, "erofs.img");
  rmSync(file, { force: true });
  const args = [
    "--quiet",
    ...((options.compression ?? "lz4hc") === "lz4hc" ? ["-zlz4hc"] : []),
    "-Enoinline_data,force-inode-extended",
    `-T${options.time}`,
    `-U${options.uuid}`,
    // When the layers have no xattrs, the host's (an SELinux label) must not slip in.
    ...(anyXattrs ? [] : ["-x-1"]),
    file,
    tree,
  ];
  await withLayerMetadata(exec, tree, entries, options.workDir, (session) => exec("mkfs.erofs", args, { env: { LC_ALL: "C", ...session } }));
  const bytes = copyIntoImage(file, image, layout.offset);
  rmSync(file, { force: true });
  return bytes;
}
