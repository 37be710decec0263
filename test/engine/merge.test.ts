// MergedView.extend (a step's output view from its input's, merging only the new layer) must
// give exactly what a full merge of the stack gives: checked on random stacks of whiteouts,
// opaque directories, replaced subtrees and hardlinks across layers, and refused where the
// base's hardlinks were rewritten (the one case a top layer could resolve differently).

import { describe, expect, it } from "vitest";
import { MergedView } from "../../engine/layers/merge.js";
import type { Toc, TocEntry, TocFile } from "../../engine/layers/toc.js";
import { seededRandom as random } from "../helpers.js";

const PATHS = ["a", "a/b", "a/b/c", "a/b/d", "a/e", "f", "f/g", "h", "h/i", "h/j", "k"];

function file(path: string, layer: number, size: number, extra: Partial<TocFile> = {}): TocFile {
  return { path, type: "file", mode: 0o644, uid: 0, gid: 0, size, mtime: 1_700_000_000 + layer, offset: 512 * (size + 1), sha256: `${layer}-${path}`.padEnd(64, "0"), ...extra };
}

function randomLayer(next: () => number, layer: number): Toc {
  const entries: TocEntry[] = [];
  const pick = (): string => PATHS[Math.floor(next() * PATHS.length)]!;
  const used = new Set<string>();
  for (let count = 1 + Math.floor(next() * 6); count > 0; count--) {
    const path = pick();
    if (used.has(path)) continue;
    used.add(path);
    const roll = next();
    if (roll < 0.3) entries.push(file(path, layer, Math.floor(next() * 9)));
    else if (roll < 0.5) entries.push({ path, type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1_700_000_000 + layer });
    else if (roll < 0.65) entries.push({ path, type: "hardlink", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1_700_000_000 + layer, linkTarget: pick() });
    else if (roll < 0.75) entries.push({ path, type: "symlink", mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 1_700_000_000 + layer, linkTarget: "../x" });
    else if (layer > 0 && roll < 0.9) entries.push({ path, type: "whiteout" });
    else if (layer > 0) entries.push({ path, type: "opaque" });
  }
  return { version: 1, entries };
}

const shape = (view: MergedView): string => JSON.stringify(view.entries());

describe("MergedView.extend", () => {
  it("gives a full merge's entries on 3,000 random stacks, or refuses", () => {
    let extended = 0;
    let refused = 0;
    for (let seed = 1; seed <= 3000; seed++) {
      const next = random(seed);
      const tocs = Array.from({ length: 2 + Math.floor(next() * 4) }, (_, layer) => randomLayer(next, layer));
      const base = MergedView.of(tocs.slice(0, -1));
      const view = MergedView.extend(base, tocs[tocs.length - 1]!);
      if (!view) {
        refused++;
        continue;
      }
      extended++;
      expect(shape(view), `seed ${seed}`).toBe(shape(MergedView.of(tocs)));
      // The base is untouched (extending copies what it changes), so it can be extended again
      // with another top layer, as a step's input is for each new agent.
      expect(shape(base), `seed ${seed}`).toBe(shape(MergedView.of(tocs.slice(0, -1))));
      const other = randomLayer(next, tocs.length - 1);
      const again = MergedView.extend(base, other);
      if (again) expect(shape(again), `seed ${seed}, another top`).toBe(shape(MergedView.of([...tocs.slice(0, -1), other])));
    }
    expect(extended).toBeGreaterThan(2000);
    expect(refused).toBeGreaterThan(0);
  });

  // Layer after layer: an extended view's children and link data must serve the next layer's
  // whiteouts, opaque markers and hardlinks as a full merge's would.
  it("stays exact when extended views are extended again, layer after layer", () => {
    let chained = 0;
    for (let seed = 1; seed <= 1000; seed++) {
      const next = random(seed * 7919);
      const tocs = Array.from({ length: 4 + Math.floor(next() * 4) }, (_, layer) => randomLayer(next, layer));
      let view = MergedView.of(tocs.slice(0, 1));
      for (let count = 2; count <= tocs.length; count++) {
        const extended = MergedView.extend(view, tocs[count - 1]!);
        if (extended) chained++;
        view = extended ?? MergedView.of(tocs.slice(0, count));
        expect(shape(view), `seed ${seed * 7919}, ${count} layers`).toBe(shape(MergedView.of(tocs.slice(0, count))));
      }
    }
    expect(chained).toBeGreaterThan(2000);
  });

  it("resolves a lower layer's hardlink whose target the top layer deletes, as a full merge does", () => {
    const tocs: Toc[] = [
      { version: 1, entries: [file("bin/perl", 0, 7), { path: "bin/perl5", type: "hardlink", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1, linkTarget: "bin/perl" }] },
      { version: 1, entries: [file("etc/motd", 1, 3)] },
      { version: 1, entries: [{ path: "bin/perl", type: "whiteout" }] },
    ];
    const base = MergedView.of(tocs.slice(0, 2));
    expect(base.get("bin/perl5")?.type).toBe("hardlink");
    const view = MergedView.extend(base, tocs[2]!)!;
    expect(view.get("bin/perl5")).toMatchObject({ type: "file", size: 7, dataLayer: 0 });
    expect(shape(view)).toBe(shape(MergedView.of(tocs)));
    expect(base.get("bin/perl5")?.type).toBe("hardlink");
  });

  it("refuses a base whose hardlinks were rewritten", () => {
    const tocs: Toc[] = [
      { version: 1, entries: [file("bin/perl", 0, 7), { path: "bin/perl5", type: "hardlink", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1, linkTarget: "bin/perl" }] },
      { version: 1, entries: [{ path: "bin/perl", type: "whiteout" }] },
    ];
    const base = MergedView.of(tocs);
    expect(base.get("bin/perl5")?.type).toBe("file");
    expect(MergedView.extend(base, { version: 1, entries: [file("etc/motd", 2, 3)] })).toBeUndefined();
  });
});
