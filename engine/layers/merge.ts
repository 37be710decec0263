// The merged view of a layer stack with OCI semantics: upper entries replace lower ones,
// whiteouts delete, opaque markers hide a directory's lower contents, and a non-directory
// replaces a whole lower subtree. Linear in the number of entries.

import { resolveSymlinks } from "./paths.js";
import { type Toc, type TocFile, isFile, sortByPath } from "./toc.js";

export interface MergedFile extends TocFile {
  /** Index (from the bottom) of the layer this entry comes from. */
  layer: number;
  /** For regular files: the layer and offset holding the data (differs for promoted hardlinks). */
  dataLayer?: number;
  /** For directories: the lowest layer of the run of layers that have it as a directory. */
  firstLayer?: number;
}

export class MergedView {
  private readonly byPath = new Map<string, MergedFile>();
  private readonly children = new Map<string, Set<string>>();
  private sorted?: MergedFile[];

  /** Layers merged into this view. */
  private layerCount = 0;
  /** Whether resolveHardlinks rewrote an entry (a link promoted or pointed elsewhere). */
  private rewroteLinks = false;

  static of(tocs: readonly Toc[]): MergedView {
    const view = new MergedView();
    tocs.forEach((toc, layer) => {
      view.recordLinkData(toc, layer);
      view.apply(toc, layer);
    });
    view.layerCount = tocs.length;
    view.resolveHardlinks();
    return view;
  }

  /**
   * The view of `base`'s layers with `toc` on top: what `of` gives for the whole stack, for
   * the cost of the top layer, a copy of the base's maps and one sort of the entries (which
   * resolving hardlinks walks in order): for a two-entry layer on 6,300 entries, ~5 ms
   * instead of ~27 ms for a full merge here. Undefined when `base` had a
   * hardlink rewritten after its merge: its entries no longer hold what the layers said, and
   * the top layer could change how that link resolves, so only a full merge is exact.
   */
  static extend(base: MergedView, toc: Toc): MergedView | undefined {
    if (base.rewroteLinks) return undefined;
    const view = new MergedView();
    // Copies of the entries: resolveHardlinks rewrites entries in place.
    for (const [path, entry] of base.byPath) view.byPath.set(path, { ...entry });
    for (const [dir, children] of base.children) view.children.set(dir, new Set(children));
    for (const [key, data] of base.linkData) view.linkData.set(key, data);
    view.recordLinkData(toc, base.layerCount);
    view.apply(toc, base.layerCount);
    view.layerCount = base.layerCount + 1;
    view.resolveHardlinks();
    return view;
  }

  get size(): number {
    return this.byPath.size;
  }

  get(path: string): MergedFile | undefined {
    return this.byPath.get(path);
  }

  /**
   * Follows symlinks in `path` inside the merged tree, as the kernel would in a chroot.
   * Returns the entry reached, or undefined when a component is missing.
   */
  resolve(path: string, followFinal = true): MergedFile | undefined {
    let resolved: string[] | undefined;
    try {
      resolved = resolveSymlinks(path, (candidate) => {
        const entry = this.byPath.get(candidate);
        return entry && { symlinkTarget: entry.type === "symlink" ? entry.linkTarget : undefined };
      }, { followFinal, missing: "stop" });
    } catch {
      return undefined; // a symlink loop
    }
    return resolved && this.byPath.get(resolved.join("/"));
  }

  /** All entries, sorted by path (parents before children). */
  entries(): readonly MergedFile[] {
    this.sorted ??= sortByPath([...this.byPath.values()]);
    return this.sorted;
  }

  private apply(toc: Toc, layer: number): void {
    // Whiteouts and opaque markers act on the layers below only, so apply them first.
    for (const entry of toc.entries) {
      if (entry.type === "whiteout") this.removeSubtree(entry.path);
      else if (entry.type === "opaque") for (const child of [...(this.children.get(entry.path) ?? [])]) this.removeSubtree(child);
    }
    for (const entry of toc.entries) {
      if (!isFile(entry) || entry.path === "") continue;
      const existing = this.byPath.get(entry.path);
      if (existing && !(existing.type === "dir" && entry.type === "dir")) this.removeSubtree(entry.path);
      this.ensureParents(entry.path, layer);
      const merged: MergedFile = { ...entry, layer };
      if (entry.type === "file") merged.dataLayer = layer;
      if (entry.type === "dir") merged.firstLayer = existing?.type === "dir" ? (existing.firstLayer ?? existing.layer) : layer;
      this.byPath.set(entry.path, merged);
      this.childSet(parentOf(entry.path)).add(entry.path);
    }
  }

  private ensureParents(path: string, layer: number): void {
    const parent = parentOf(path);
    if (parent === "") return;
    const existing = this.byPath.get(parent);
    if (existing?.type === "dir") return;
    if (existing) this.removeSubtree(parent);
    this.ensureParents(parent, layer);
    // A layer that omits a parent directory: assume the usual root-owned 0755 directory.
    this.byPath.set(parent, { path: parent, type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0, layer });
    this.childSet(parentOf(parent)).add(parent);
  }

  private removeSubtree(path: string): void {
    if (!this.byPath.delete(path)) return;
    this.children.get(parentOf(path))?.delete(path);
    const kids = this.children.get(path);
    if (kids) {
      this.children.delete(path);
      for (const child of kids) this.removeSubtree(child);
    }
  }

  private childSet(dir: string): Set<string> {
    let set = this.children.get(dir);
    if (!set) {
      set = new Set();
      this.children.set(dir, set);
    }
    return set;
  }

  /**
   * Hardlinks after the merge. A link to a file of its own layer, or to a lower layer's file
   * that is still there unchanged, stays a link: one inode. A link whose target did not
   * survive (whited out, or replaced since) becomes a regular file with the data and the
   * metadata the target had when the link was made (a tar link's own header says nothing
   * of the file); the other links of its group then point at it.
   */
  private resolveHardlinks(): void {
    const promotedFor = new Map<string, string>(); // original target → promoted path
    for (const entry of this.entries()) {
      if (entry.type !== "hardlink") continue;
      const original = entry.linkTarget!;
      const target = this.byPath.get(original);
      if (target && target.type === "file" && target.layer === entry.layer) continue;
      const promoted = promotedFor.get(`${entry.layer}:${original}`);
      if (promoted !== undefined) {
        entry.linkTarget = promoted;
        this.rewroteLinks = true;
        continue;
      }
      const data = this.linkData.get(`${entry.layer}:${original}`);
      if (!data) continue; // a link to a link below, or dangling: left as is (packers report dangling ones)
      if (target?.type === "file" && target.dataLayer === data.dataLayer && target.offset === data.offset) continue;
      this.rewroteLinks = true;
      entry.type = "file";
      entry.size = data.size;
      entry.offset = data.offset;
      entry.dataLayer = data.dataLayer;
      const { mode, uid, gid, mtime, xattrs, sha256 } = data.source;
      Object.assign(entry, { mode, uid, gid, mtime });
      if (xattrs) entry.xattrs = xattrs;
      else delete entry.xattrs;
      if (sha256 !== undefined) entry.sha256 = sha256;
      delete entry.linkTarget;
      promotedFor.set(`${entry.layer}:${original}`, entry.path);
    }
  }

  /** The file each hardlink of a layer points at when the layer is applied: the target in
   * the same layer, or else the file below it. */
  private readonly linkData = new Map<string, { size: number; offset: number; dataLayer: number; source: TocFile }>();

  private recordLinkData(toc: Toc, layer: number): void {
    const own = new Map<string, TocFile>();
    for (const entry of toc.entries) if (isFile(entry) && entry.type === "file") own.set(entry.path, entry);
    for (const entry of toc.entries) {
      if (!isFile(entry) || entry.type !== "hardlink") continue;
      const target = entry.linkTarget!;
      const inLayer = own.get(target);
      const below = inLayer ? undefined : this.byPath.get(target);
      if (inLayer) this.linkData.set(`${layer}:${target}`, { size: inLayer.size, offset: inLayer.offset ?? 0, dataLayer: layer, source: inLayer });
      else if (below?.type === "file") this.linkData.set(`${layer}:${target}`, { size: below.size, offset: below.offset ?? 0, dataLayer: below.dataLayer ?? below.layer, source: below });
    }
  }
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}
