// Paths inside a tree never leave it: absolute symlinks restart at the tree's root and ".."
// stops there, as the kernel does inside a chroot.

import { mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveInRoot } from "../../engine/layers/tree.js";
import { tempDir } from "../helpers.js";

describe("resolveInRoot", () => {
  const root = tempDir("paths");
  mkdirSync(join(root, "usr/lib"), { recursive: true });
  mkdirSync(join(root, "etc"));
  symlinkSync("usr/lib", join(root, "lib"));
  symlinkSync("/etc", join(root, "usr/lib/abs-etc")); // absolute: the tree's /etc, not the host's
  symlinkSync("../../../../..", join(root, "usr/lib/up")); // climbs past the root
  symlinkSync("/run/systemd/resolve/stub-resolv.conf", join(root, "etc/resolv.conf"));
  symlinkSync("loop-b", join(root, "loop-a"));
  symlinkSync("loop-a", join(root, "loop-b"));

  it("follows relative and absolute links inside the tree", () => {
    expect(resolveInRoot(root, "lib/modules/6.1")).toBe(join(root, "usr/lib/modules/6.1"));
    expect(resolveInRoot(root, "/lib/abs-etc/passwd")).toBe(join(root, "etc/passwd"));
    expect(resolveInRoot(root, "etc/resolv.conf")).toBe(join(root, "run/systemd/resolve/stub-resolv.conf"));
  });

  it("never leaves the tree", () => {
    expect(resolveInRoot(root, "lib/up/etc/shadow")).toBe(join(root, "etc/shadow"));
    expect(resolveInRoot(root, "../../../../etc/passwd")).toBe(join(root, "etc/passwd"));
  });

  it("returns a final symlink itself when asked", () => {
    expect(resolveInRoot(root, "etc/resolv.conf", false)).toBe(join(root, "etc/resolv.conf"));
  });

  it("stops on symlink loops", () => {
    expect(() => resolveInRoot(root, "loop-a/x")).toThrow(/too many levels of symbolic links/);
  });
});
